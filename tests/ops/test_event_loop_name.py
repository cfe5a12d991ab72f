"""`serve` and `stdio` name the event loop for anyio once (cli.name_event_loop), as `anyio.run` does."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import anyio
import sniffio

from molar_mcp.cli import name_event_loop


def _served() -> dict[str, object]:
    """What a server's tasks, worker threads and replay threads see after `name_event_loop`."""
    seen: dict[str, object] = {}

    def in_worker() -> str | None:
        return sniffio.current_async_library_cvar.get()

    def replay_thread() -> None:  # replays run their own loop in a thread of their own (anyio.run)
        try:
            seen["replay thread"] = anyio.run(anyio.sleep, 0)
        except RuntimeError as exc:
            seen["replay thread"] = exc

    async def serve() -> None:
        seen["task"] = sniffio.current_async_library_cvar.get()
        seen["anyio"] = sniffio.current_async_library()
        seen["worker"] = await anyio.to_thread.run_sync(in_worker)
        thread = threading.Thread(target=replay_thread)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)

    name_event_loop()
    asyncio.run(serve())
    return seen


def test_tasks_and_workers_know_the_loop_without_sniffing() -> None:
    seen = contextvars.copy_context().run(_served)  # the test's own context stays as it was
    assert seen["task"] == "asyncio"  # answered from the context: no lookup of the current task
    assert seen["anyio"] == "asyncio"
    assert seen["worker"] is None  # anyio clears it in its worker threads: no loop runs there
    assert seen["replay thread"] is None  # a new thread starts clean: its own anyio.run still works
    assert sniffio.current_async_library_cvar.get() is None
