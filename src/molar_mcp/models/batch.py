"""Building thousands of models at once without the cyclic garbage collector walking them.

Validating a chunk of 2,000 events allocates some 10,000 objects the collector tracks (each model,
its `__dict__`, its fields-set, its payload's dicts). Every 700 of them start a collection, and the
chunk, still alive while it is stored, is walked again and again as it is promoted through the
generations (and every object of the process with it, at each full collection): 40% of a bundle's
ingest CPU went to collections that never found anything to free (bench/README.md, issue 16). Events
hold no reference cycles, so refcounting frees them; `gc_paused` turns the cyclic collector off
while one chunk (or one append batch) is validated, numbered and written, and back on after it.

A pause lasts one chunk (tens of milliseconds); the process's other threads run meanwhile and any
cyclic garbage they make is collected once it ends. No I/O here.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside the block, back on after it (also on an error). A block
    entered while it is already off (by the caller, or by another thread's pause) leaves it as found:
    only the pause that turned it off turns it on again."""
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
