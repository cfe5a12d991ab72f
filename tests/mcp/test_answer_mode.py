"""mcp/answer_mode.py: which POSTs to /mcp the SDK's JSON-mode session manager answers, and the body each
session manager is handed (the router reads it first)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from molar_mcp.mcp.answer_mode import MAX_PEEK_BYTES, AnswerModeRouter, answers_alone

pytestmark = pytest.mark.anyio

LONG = frozenset({"replay_trace"})
MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream"}


def call(name: str = "list_traces", meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": {"status": "failed"}}
    if meta is not None:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


@pytest.mark.parametrize(
    "body",
    [
        call(),
        call(meta={"io.modelcontextprotocol/protocolVersion": "2026-07-28"}),
        {"jsonrpc": "2.0", "id": "a", "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "molar://traces/x"}},
    ],
)
def test_a_request_no_notification_can_belong_to_is_answered_alone(body: dict[str, Any]) -> None:
    assert answers_alone(json.dumps(body).encode(), LONG)


@pytest.mark.parametrize(
    ("why", "body"),
    [
        ("asks for progress", call(meta={"progressToken": 3})),
        ("asks for progress with a string token", call(meta={"progressToken": "p"})),
        ("a tool that may run long", call("replay_trace")),
        ("a tool call without a tool name", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}),
        ("a listen stream", {"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen", "params": {}}),
        ("a notification", {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        ("a batch", [call(), call()]),
        ("params that are not an object", {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}),
        ("a _meta that is not an object", call(meta=[1])),  # type: ignore[arg-type]
        ("no method", {"jsonrpc": "2.0", "id": 1, "result": {}}),
    ],
)
def test_other_bodies_keep_the_sse_mode(why: str, body: Any) -> None:
    assert not answers_alone(json.dumps(body).encode(), LONG), why


def test_a_body_that_does_not_parse_keeps_the_sse_mode() -> None:
    assert not answers_alone(b'{"jsonrpc": "2.0", "id": 1,', LONG)
    assert not answers_alone(b"[" * 100_000, LONG)


class Recorder:
    """An ASGI app that answers with its name and the body it was handed."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-mode", self.name.encode())]})
        await send({"type": "http.response.body", "body": body})


async def post(body: bytes, headers: dict[str, str], *, method: str = "POST") -> tuple[str, bytes, list[str]]:
    counted: list[str] = []
    router = AnswerModeRouter(Recorder("sse"), Recorder("json"), streaming_tools=LONG, counted=counted.append)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=router), base_url="http://t") as http:
        response = await http.request(method, "/mcp", content=body, headers=headers)
    return response.headers["x-mode"], response.content, counted


async def test_a_plain_modern_tool_call_goes_to_the_json_manager_with_its_body_whole() -> None:
    body = json.dumps(call()).encode()
    assert await post(body, MODERN) == ("json", body, ["json"])


async def test_a_modern_call_asking_for_progress_goes_to_the_sse_manager_with_its_body_whole() -> None:
    body = json.dumps(call(meta={"progressToken": 1})).encode()
    assert await post(body, MODERN) == ("sse", body, ["sse"])


@pytest.mark.parametrize(
    ("why", "headers"),
    [
        ("a 2025-11-25 session", {**MODERN, "mcp-protocol-version": "2025-11-25"}),
        ("an initialize (no version header yet)", {"accept": MODERN["accept"]}),
        ("accepts JSON only (the SSE manager answers 406)", {**MODERN, "accept": "application/json"}),
        ("accepts SSE only", {**MODERN, "accept": "text/event-stream"}),
    ],
)
async def test_the_headers_keep_other_posts_on_the_sse_manager(why: str, headers: dict[str, str]) -> None:
    body = json.dumps(call()).encode()
    assert await post(body, headers) == ("sse", body, ["sse"]), why


async def test_a_wildcard_accept_is_both_answer_types() -> None:
    body = json.dumps(call()).encode()
    assert (await post(body, {**MODERN, "accept": "*/*"}))[0] == "json"


async def test_a_large_body_goes_to_the_sse_manager_unread_and_whole() -> None:
    body = json.dumps(call(meta={"pad": "x" * (MAX_PEEK_BYTES + 10)})).encode()
    assert await post(body, MODERN) == ("sse", body, ["sse"])


async def test_a_body_of_no_stated_length_goes_to_the_sse_manager_whole() -> None:
    body = json.dumps(call()).encode()

    async def chunks() -> Any:
        yield body[:10]
        yield body[10:]

    router = AnswerModeRouter(Recorder("sse"), Recorder("json"), streaming_tools=LONG)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=router), base_url="http://t") as http:
        response = await http.post("/mcp", content=chunks(), headers=MODERN)
    assert (response.headers["x-mode"], response.content) == ("sse", body)


async def test_get_and_delete_are_not_counted_and_go_to_the_sse_manager() -> None:
    assert await post(b"", MODERN, method="GET") == ("sse", b"", [])
    assert await post(b"", MODERN, method="DELETE") == ("sse", b"", [])


async def test_a_body_in_several_chunks_is_handed_on_whole() -> None:
    body = json.dumps(call()).encode()
    sent = [body[:5], body[5:40], body[40:]]
    handed: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = sent.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(sent)}

    async def json_app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            handed.append(message)
            if not message.get("more_body", False):
                break

    headers = [(b"mcp-protocol-version", b"2026-07-28"), (b"accept", b"application/json, text/event-stream")]
    scope = {"type": "http", "method": "POST", "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    await AnswerModeRouter(Recorder("sse"), json_app, streaming_tools=LONG)(scope, receive, _no_send)
    assert b"".join(m["body"] for m in handed) == body


async def _no_send(message: Any) -> None:
    raise AssertionError(f"nothing is sent here: {message}")
