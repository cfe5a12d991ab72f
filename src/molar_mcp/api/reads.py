"""Where a route's store read runs: in a worker thread (the default), or on the event loop itself for an
in-process caller that asked for it.

A read in a worker thread keeps a slow read from stalling everyone else the loop serves, at the cost of two
thread hops (~17% of the server's CPU on a small `get_trace` over stdio, measured with bench/bench_ab.py).
`molar-mcp stdio` serves one client on the embedded SQLite store, whose reads take a fraction of a
millisecond: its in-process client asks for them inline (`INLINE_READS_EXTENSION` in the ASGI scope's
extensions, which no network request can carry). `molar-mcp serve` asks the same for its MCP tools' reads
unless started with `--no-inline-reads`: under 50 looping MCP clients the thread hops cost ~2 ms of the
server's CPU a tool call (bench/README.md, `bench_load.py`). Everyone else keeps the thread.

A read that may hold the loop for long keeps its thread even when inline was asked for: a page of more than
`INLINE_EVENTS_LIMIT` events (a page of 1,000 took 12–23 ms on a loaded machine, against well under 1 ms for
the pages the MCP tools ask for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from starlette.requests import Request

INLINE_READS_EXTENSION = "molar.inline_reads"
# The most events a page read inline may hold: the MCP tools' pages (mcp/pages.py `page_size`) stay inline.
INLINE_EVENTS_LIMIT = 200

T = TypeVar("T")


def reads_inline(request: Request) -> bool:
    return INLINE_READS_EXTENSION in (request.scope.get("extensions") or {})


async def store_read(request: Request, read: Callable[[], T], *, short: bool = True) -> T:
    """`read()`: on the loop for a caller that asked for inline reads when the read is `short` (bounded to
    a fraction of a millisecond's work), else in a worker thread."""
    if short and reads_inline(request):
        return read()
    return await anyio.to_thread.run_sync(read)
