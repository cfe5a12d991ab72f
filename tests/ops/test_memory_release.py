"""After a big ingest the server gives freed memory back to the system (api/memory.py): the C heap's
free pages, which glibc would otherwise keep, so RSS returns near where it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from molar_mcp.api.memory import release_memory
from tests.bundles import make_bundle, summary


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_freed_heap_goes_back_to_the_system() -> None:
    # 48 MB in 4 KB objects (from the C heap, not mmap), every tenth kept: the heap cannot shrink from
    # its top, so the freed pages stay in RSS until they are released.
    blocks = [bytes(4000) + n.to_bytes(4, "little") for n in range(12_000)]
    kept = blocks[::10]
    del blocks
    held = rss_mb()
    assert release_memory() is True  # Linux with glibc: CI and the server's images
    assert rss_mb() < held - 20
    assert len(kept) == 1_200


_PARSE = """
import gc, sys
from molar_mcp.api.memory import release_memory
from molar_mcp.ingest.bundle import open_bundle

def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

data = open(sys.argv[1], "rb").read()
before = rss_mb()
bundle = open_bundle(data, max_bytes=1 << 30)
assert sum(len(chunk) for chunk in bundle.trace.event_chunks) == int(sys.argv[2])
del bundle
gc.collect()
release_memory()
print(before, rss_mb())
"""


def test_parsing_a_big_bundle_leaves_no_memory_behind(tmp_path: Path) -> None:
    """60,000 events, each string different, parsed, validated and dropped: RSS returns to where it was.
    (pydantic's cache of parsed strings, holding values too, kept ~7 MB of its survivors' arenas.)"""
    rows = [
        {"seq": n, "ts": 1_763_629_200_000 + n, "kind": "log", "message": f"line {n} of the run", "step_id": f"s{n}"}
        for n in range(60_000)
    ]
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(make_bundle(summary(), rows))
    done = subprocess.run(
        [sys.executable, "-c", _PARSE, str(bundle), "60000"], capture_output=True, text=True, check=True
    )
    before, after = (float(x) for x in done.stdout.split())
    assert after - before < 3, (before, after)
