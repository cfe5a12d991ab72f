"""Building thousands of models at once without the cyclic garbage collector walking them.

Validating a chunk of 2,000 events allocates some 10,000 objects the collector tracks (each model,
its `__dict__`, its fields-set, its payload's dicts). Every 700 of them start a collection, and the
chunk, still alive while it is stored, is walked again and again as it is promoted through the
generations (and every object of the process with it, at each full collection): 40% of a bundle's
ingest CPU went to collections that never found anything to free (bench/README.md, issue 16). Events
hold no reference cycles, so refcounting frees them; `gc_paused` turns the cyclic collector off
while one chunk (or one append batch) is validated, numbered and written, and back on after it.

Pauses are counted across threads: the collector is off while at least one pause is in effect and
on again when the last one ends (if the first found it on). A pause lasts one chunk (tens of
milliseconds); cyclic garbage the process's other threads make meanwhile is collected once no pause is
in effect. No I/O here.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_pause_lock = threading.Lock()
_pauses = 0  # pauses in effect, every thread's
_resume = False  # whether the end of the last pause turns the collector on again


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside the block, back on after it (also on an error) once no
    other pause (of any thread) is in effect. A collector the first pause found off (turned off by
    someone else) is left off."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            if _resume:
                gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
