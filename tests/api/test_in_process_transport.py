"""The in-process transport the MCP tools reach the /v1 app through: a caller that leaves mid-request
(its call cancelled) takes the app's task down with it and returns only once that task has unwound, so no
request of the app is left running behind a call that has already returned."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import httpx2
import pytest

from molar_mcp.client.asgi_stream import READ_WHOLE, StreamingASGITransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the transport runs the app as an asyncio task, as under uvicorn


async def test_a_cancelled_whole_read_returns_after_the_app_has_unwound() -> None:
    started, unwound = anyio.Event(), anyio.Event()
    steps: list[str] = []

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            steps.append("cleaning up")
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(0.05)  # e.g. a transaction rolled back in a worker thread
            steps.append("unwound")
            unwound.set()

    async with httpx2.AsyncClient(transport=StreamingASGITransport(slow_app), base_url="http://molar.test") as http:
        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await http.get("/v1/traces", extensions={READ_WHOLE: True})

                tg.start_soon(call)
                await started.wait()
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught  # the cancelled call came back well before the deadline
        assert steps == ["cleaning up", "unwound"]  # ...and only after the app had finished unwinding
        assert unwound.is_set()


async def test_a_whole_read_answers_what_the_app_sent() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await receive()
        await send(
            {"type": "http.response.start", "status": 201, "headers": [(b"x-seen", str(len(request["body"])).encode())]}
        )
        await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})

    async with httpx2.AsyncClient(transport=StreamingASGITransport(app), base_url="http://molar.test") as http:
        answer = await http.post("/v1/x", content=b"12345", extensions={READ_WHOLE: True})
    assert (answer.status_code, answer.headers["x-seen"], answer.text) == (201, "5", "part one, part two")
