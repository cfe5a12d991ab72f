"""An append's work runs on an append thread (`api/append_threads.py in_append_thread`): in the request's
context (its org scope: on PostgreSQL the transaction's row-level scope comes from it), its result or error given
back, and, when the request is cancelled, run to its end before the cancellation goes on (as
`anyio.to_thread.run_sync` did it: a batch is stored whole or not at all, never left running unawaited)."""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar

import pytest

from molar_mcp.api.append_threads import APPEND_THREADS, in_append_thread
from molar_mcp.store.port import current_org_scope, org_scope

pytestmark = pytest.mark.anyio

_SEEN: ContextVar[str] = ContextVar("seen", default="unset")


async def test_the_work_runs_on_another_thread_in_the_requests_context() -> None:
    _SEEN.set("request")
    here = threading.get_ident()
    with org_scope("org_a"):
        seen = await in_append_thread(lambda: (current_org_scope(), _SEEN.get(), threading.get_ident()))
    assert seen[:2] == ("org_a", "request")
    assert seen[2] != here


async def test_its_error_is_raised_in_the_request() -> None:
    def fail() -> None:
        raise LookupError("no such trace")

    with pytest.raises(LookupError, match="no such trace"):
        await in_append_thread(fail)


async def test_a_cancelled_request_waits_for_its_append_to_end_then_is_cancelled() -> None:
    started, release, ended = threading.Event(), threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        release.wait(10)
        ended.set()
        return "stored"

    task = asyncio.ensure_future(in_append_thread(work))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # the append is still running: the request waits for it
    task.cancel()  # a second cancellation does not cut the wait short either
    await asyncio.sleep(0.05)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()


async def test_a_request_cancelled_before_its_work_started_waits_for_it_to_run_and_end() -> None:
    started, release = threading.Semaphore(0), threading.Event()
    ran: list[str] = []

    def busy() -> None:
        started.release()
        release.wait(10)

    def queued() -> None:
        ran.append("stored")

    busy_tasks = [asyncio.ensure_future(in_append_thread(busy)) for _ in range(APPEND_THREADS)]
    for _ in range(APPEND_THREADS):  # every append thread is busy: the next work waits in the queue
        assert await asyncio.to_thread(started.acquire, True, 10)
    task = asyncio.ensure_future(in_append_thread(queued))
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # not run yet, not dropped: the request waits for it
    assert ran == []
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == ["stored"]
    await asyncio.gather(*busy_tasks)
