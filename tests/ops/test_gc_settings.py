"""The serving process's cyclic-collector settings (api/memory.py `settle_heap`), checked in a fresh
interpreter so the test process's own collector is left as it is."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import gc
from molar_mcp.api.memory import SERVE_GC_THRESHOLDS, settle_heap
import molar_mcp.models  # (start-up builds objects like these: modules, pydantic schemas)
assert gc.get_freeze_count() == 0
settle_heap()
assert gc.get_threshold() == SERVE_GC_THRESHOLDS, gc.get_threshold()
assert SERVE_GC_THRESHOLDS[0] > 700  # young collections rarer than CPython's default
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen  # start-up's objects are out of the collector's sight
assert len(gc.get_objects()) < frozen / 10, (len(gc.get_objects()), frozen)  # a full collection walks few
a = []; a.append(a); del a  # a cycle made after start-up is still collected
assert gc.collect() >= 1
print("ok")
"""


def test_settle_heap_freezes_start_up_and_raises_thresholds() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
