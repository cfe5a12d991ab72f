"""Memory given back to the system after a big ingest.

A bundle of 100,000 events and its analysis allocate and free hundreds of megabytes. CPython frees them
to the C allocator, but glibc's malloc keeps freed heap pages for reuse, so a server's RSS would stay at
its peak long after the work is done. `release_memory` asks glibc to return what it holds free
(`malloc_trim(0)`); elsewhere (another C library) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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
