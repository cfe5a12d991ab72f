"""McpScopeGuard in process, around a scripted inner ASGI app: the body is replayed unchanged,
SSE events stream through as they come, and tools/list results are filtered even when an event
is split across chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from molar_mcp.auth import McpScopeGuard, Principal, ProtectedResource, ScopePolicy

pytestmark = pytest.mark.anyio

TOOLS = [{"name": "list_traces"}, {"name": "debug_run"}, {"name": "replay_trace"}]
RESOURCE = ProtectedResource(
    resource="http://127.0.0.1:1/mcp",
    authorization_servers=("http://127.0.0.1:1",),
    scopes_supported=("mcp:trace:read", "mcp:debug", "mcp:run"),
    challenge_scopes=("mcp:trace:read",),
)
SCOPES = {"list_traces": ["mcp:trace:read"], "debug_run": ["mcp:debug"], "replay_trace": ["mcp:run"]}
POLICY = ScopePolicy.of(SCOPES, filter_tools_list=True)


class StaticVerifier:
    """A BearerVerifier that knows one token."""

    def verify(self, token: str) -> Principal | None:
        if token != "good":
            return None
        return Principal(
            subject="usr_1",
            org_id="org_local",
            scopes=frozenset({"mcp:trace:read", "mcp:run"}),
            client_id="c1",
            kind="oauth",
            credential_id="at_1",
            expires_at=None,
        )


class ScriptedApp:
    """Records what it received and answers with the given start headers and body chunks."""

    def __init__(self, content_type: bytes, chunks: list[bytes]) -> None:
        self.content_type = content_type
        self.chunks = chunks
        self.body = b""
        self.scope: Scope | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        message = await receive()
        self.body = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", self.content_type)]})
        for index, chunk in enumerate(self.chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < len(self.chunks) - 1})


async def run(app: Any, body: bytes, token: str = "good", policy: ScopePolicy = POLICY) -> list[Message]:
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")],
    }
    sent: list[Message] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    guard = McpScopeGuard(app, verifier=StaticVerifier(), resource=RESOURCE, policy=policy)
    await guard(scope, receive, send)
    return sent


def sse(payload: Any) -> bytes:
    return b"event: message\r\ndata: " + json.dumps(payload).encode() + b"\r\n\r\n"


async def test_sse_tools_list_is_filtered_while_other_events_stream_through() -> None:
    progress = sse({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
    result = sse({"jsonrpc": "2.0", "id": 5, "result": {"tools": TOOLS}})
    app = ScriptedApp(b"text/event-stream", [progress + result[:20], result[20:], b""])
    request = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}).encode()

    sent = await run(app, request)

    assert app.body == request  # replayed unchanged
    assert app.scope is not None
    assert app.scope["state"]["principal"].subject == "usr_1"
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert bodies[0] == progress  # forwarded before the split event was complete
    events = b"".join(bodies).split(b"\r\n\r\n")
    listed = json.loads(events[1].split(b"data: ", 1)[1])
    assert [tool["name"] for tool in listed["result"]["tools"]] == ["list_traces", "replay_trace"]
    assert events[1].startswith(b"event: message\r\n")


async def test_json_tools_list_is_filtered_and_content_length_recomputed() -> None:
    payload = json.dumps({"jsonrpc": "2.0", "id": "a", "result": {"tools": TOOLS}}).encode()
    app = ScriptedApp(b"application/json", [payload[:10], payload[10:]])
    sent = await run(app, json.dumps({"jsonrpc": "2.0", "id": "a", "method": "tools/list"}).encode())
    start, body = sent[0], sent[1]["body"]
    assert dict(start["headers"])[b"content-length"] == str(len(body)).encode()
    assert [tool["name"] for tool in json.loads(body)["result"]["tools"]] == ["list_traces", "replay_trace"]


async def test_by_default_tools_list_lists_every_tool_whatever_the_tokens_scopes() -> None:
    payload = json.dumps({"jsonrpc": "2.0", "id": "a", "result": {"tools": TOOLS}}).encode()
    app = ScriptedApp(b"application/json", [payload])
    request = json.dumps({"jsonrpc": "2.0", "id": "a", "method": "tools/list"}).encode()
    sent = await run(app, request, policy=ScopePolicy.of(SCOPES))
    assert json.loads(b"".join(m.get("body", b"") for m in sent))["result"]["tools"] == TOOLS


async def test_other_responses_are_passed_through_untouched() -> None:
    payload = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": []}}).encode()
    app = ScriptedApp(b"application/json", [payload])
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "replay_trace"}}
    sent = await run(app, json.dumps(call).encode())
    assert sent[1]["body"] == payload


async def test_refusals_never_reach_the_inner_app() -> None:
    app = ScriptedApp(b"application/json", [b"{}"])
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "debug_run"}}
    forbidden = await run(app, json.dumps(call).encode())
    unauthenticated = await run(app, b"{}", token="bad")
    assert forbidden[0]["status"] == 403
    assert unauthenticated[0]["status"] == 401
    assert app.scope is None
