"""Where a route's store read runs: in a worker thread (the default), or on the event loop itself for an
in-process caller that asked for it.

A read in a worker thread keeps a slow read from stalling everyone else the loop serves, at the cost of two
thread hops (~17% of the server's CPU on a small `get_trace` over stdio, measured with bench/bench_ab.py).
`molar-mcp stdio` serves one client on the embedded SQLite store, whose reads take a fraction of a
millisecond: its in-process client asks for them inline (`INLINE_READS_EXTENSION` in the ASGI scope's
extensions, which no network request can carry). Everyone else keeps the thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from starlette.requests import Request

INLINE_READS_EXTENSION = "molar.inline_reads"

T = TypeVar("T")


def reads_inline(request: Request) -> bool:
    return INLINE_READS_EXTENSION in (request.scope.get("extensions") or {})


async def store_read(request: Request, read: Callable[[], T]) -> T:
    """`read()`: on the loop for a caller that asked for inline reads, else in a worker thread."""
    if reads_inline(request):
        return read()
    return await anyio.to_thread.run_sync(read)
