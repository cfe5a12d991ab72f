"""The append's hop to a worker thread and back (`in_append_thread`), cheaper than an executor's.

`loop.run_in_executor` makes a `concurrent.futures.Future`, a work item and (when the pool is idle) a
thread-count check, then chains the future to an asyncio future through two callbacks, one of which crosses
back to the loop; `asyncio.shield` adds a third future. In batches of 100 the hop was ~6% of a live
append's server CPU (bench/README.md, `bench_live.py`). Here the loop's own future is settled by the worker
with one `call_soon_threadsafe`: ~50–70 against ~100–150 µs of CPU a hop (uvloop, a loop of empty hops;
the wall time of a hop halves too). No I/O here but the threads'."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

# Appends take the store's one writer in turn (group commit gathers the ones that wait), so a few threads
# are enough.
APPEND_THREADS = 4


class _Hop:
    """One piece of work handed to an append thread: its loop's future, and whether it has ended (what a
    cancelled request waits for)."""

    __slots__ = ("ended", "future", "loop", "waiter", "work")

    def __init__(self, loop: asyncio.AbstractEventLoop, work: Callable[[], Any]) -> None:
        self.loop = loop
        self.work = work
        self.future: asyncio.Future[Any] = loop.create_future()
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None  # set while a cancelled request waits for the end


def _settle(hop: _Hop, ok: bool, value: Any) -> None:
    """On the loop: the outcome into the request's future (unless the request was cancelled meanwhile),
    and the end of the work to a cancelled request waiting for it."""
    hop.ended = True
    if not hop.future.done():
        if ok:
            hop.future.set_result(value)
        else:
            hop.future.set_exception(value)
    if hop.waiter is not None and not hop.waiter.done():
        hop.waiter.set_result(None)


class _Threads:
    """The append threads, started on first use (daemons: an append in flight at exit ends with the
    process, as the server waited for its requests before)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.queue: SimpleQueue[_Hop] = SimpleQueue()
        self.started = False
        self.lock = threading.Lock()

    def put(self, hop: _Hop) -> None:
        if not self.started:
            with self.lock:
                if not self.started:
                    for n in range(self.count):
                        threading.Thread(target=self._run, name=f"molar-append_{n}", daemon=True).start()
                    self.started = True
        self.queue.put(hop)

    def _run(self) -> None:
        while True:
            hop = self.queue.get()
            ok, value = True, None
            try:
                value = hop.work()
            except BaseException as exc:  # the request's error, raised there
                ok, value = False, exc if not isinstance(exc, StopIteration) else RuntimeError(repr(exc))
            del hop.work
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                hop.loop.call_soon_threadsafe(_settle, hop, ok, value)


_THREADS = _Threads(APPEND_THREADS)


async def in_append_thread(work: Callable[[], T]) -> T:
    """`work()` on an append thread, in the request's context (its org scope), as `anyio.to_thread.run_sync`
    does it but cheaper. Like it, a started append runs to its end, stored or not, when the request is
    cancelled; the cancellation goes on after (and so does one that came before the work started: it is
    never left running unawaited)."""
    loop = asyncio.get_running_loop()
    hop = _Hop(loop, functools.partial(contextvars.copy_context().run, work))
    _THREADS.put(hop)
    try:
        result: T = await hop.future
        return result
    except asyncio.CancelledError:
        while not hop.ended:
            hop.waiter = loop.create_future()
            with contextlib.suppress(asyncio.CancelledError):
                await hop.waiter
        raise
