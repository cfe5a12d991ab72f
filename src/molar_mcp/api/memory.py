"""Memory given back to the system after a big ingest.

A bundle of 100,000 events and its analysis allocate and free hundreds of megabytes. CPython frees them
to the C allocator, but glibc's malloc keeps freed heap pages for reuse, so a server's RSS would stay at
its peak long after the work is done. `release_memory` asks glibc to return what it holds free
(`malloc_trim(0)`); elsewhere (another C library) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable

# Stored events past which an ingest's memory is worth giving back (the call costs a few milliseconds).
RELEASE_AFTER_EVENTS = 10_000


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim  # ctypes releases the GIL during the call
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return trim


_TRIM = _malloc_trim()


def release_memory() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


# The cyclic collector's thresholds for a serving process (CPython's default is (700, 10, 10)).
SERVE_GC_THRESHOLDS = (10_000, 20, 20)


def settle_heap() -> None:
    """Once start-up is done: keep what it built out of the cyclic collector's sight and collect young
    objects less often. A server holds a few hundred thousand objects from start-up (modules, schemas,
    the app) that never become garbage; with the default thresholds every full collection walks all of
    them again, and an OTLP trace's finish (tens of thousands of event dicts alive at once) set one off
    every few hundred spans: ~50 µs of CPU a span, a fifth of the whole pipeline (bench/README.md).
    Frozen, they are skipped; a gen-0 collection every 10,000 allocations instead of 700 still finds
    cycles long before they add up (most objects here are freed by reference counting)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVE_GC_THRESHOLDS)
