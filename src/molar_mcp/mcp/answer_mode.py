"""Which of two SDK session managers answers a POST to `/mcp`: one in SSE mode, one in JSON mode.

A 2026-07-28 request is one POST in, one answer out. In its default SSE mode the SDK runs each such request
as a sibling task beside a disconnect watcher, with a memory stream for the request's notifications (a task
group, cancel scopes and a stream per request), and still answers plain JSON when the handler emits nothing
in its first 15 s. In JSON mode it runs the handler in the request's own task and drops every notification
(MCP-NOTES.md). A request that cannot be sent a notification therefore gets the same answer either way, at
less CPU in JSON mode: no `progressToken` in `params._meta`, not `subscriptions/listen` (its answer is a
notification stream), and not a tool that may run long (those keep the SSE mode's keepalive pings and the
cancellation when the client goes). Everything else stays on the SSE manager: 2025-11-25 sessions (their
transport is chosen per session, and JSON mode would take away their back-channel), GET and DELETE,
notifications, batches, bodies that do not parse (its answers to those are the same either way).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

from mcp.server.streamable_http import check_accept_headers
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molar_mcp.asgi_replay import replayed

AnswerMode = Literal["json", "sse"]

# Bodies larger than this, or of no stated length, go to the SSE manager unread (a tool call is ~300 bytes).
MAX_PEEK_BYTES: Final = 64 * 1024
_VERSION_HEADER: Final = b"mcp-protocol-version"
_LENGTH_HEADER: Final = b"content-length"


def answers_alone(body: bytes, streaming_tools: frozenset[str]) -> bool:
    """Whether this 2026-07-28 request body is one request that no notification can belong to."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return False
    if not isinstance(decoded, dict) or "id" not in decoded:
        return False  # a batch, or a notification: the SSE manager answers those as it always did
    method = decoded.get("method")
    if not isinstance(method, str) or method == "subscriptions/listen":
        return False
    params: Any = decoded.get("params")
    if params is None:
        return True
    if not isinstance(params, dict):
        return False
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return False
    if method != "tools/call":
        return True
    name = params.get("name")
    return isinstance(name, str) and name not in streaming_tools


class AnswerModeRouter:
    """Send each POST to `json_app` (a session manager in JSON mode) when its answer can be the same
    as `sse_app`'s (the default SSE mode) without the per-request streams; everything else to `sse_app`.
    `streaming_tools`: tools that may run long, kept on SSE. `counted` is told which mode took each POST."""

    def __init__(
        self,
        sse_app: ASGIApp,
        json_app: ASGIApp,
        *,
        streaming_tools: Iterable[str],
        counted: Callable[[AnswerMode], None] | None = None,
    ) -> None:
        self.sse_app = sse_app
        self.json_app = json_app
        self.streaming_tools = frozenset(streaming_tools)
        self.counted = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._may_answer_alone(scope):
            await self._to(self.sse_app, "sse", scope, receive, send)
            return
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went: the SSE manager sees that as it would have
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                break
            if len(body) > MAX_PEEK_BYTES:
                break
        alone = messages[-1]["type"] == "http.request" and not messages[-1].get("more_body", False)
        if alone and answers_alone(bytes(body), self.streaming_tools):
            await self._to(self.json_app, "json", scope, replayed(messages, receive), send)
        else:
            await self._to(self.sse_app, "sse", scope, replayed(messages, receive), send)

    async def _to(self, app: ASGIApp, mode: AnswerMode, scope: Scope, receive: Receive, send: Send) -> None:
        if self.counted is not None and scope["type"] == "http" and scope.get("method") == "POST":
            self.counted(mode)
        await app(scope, receive, send)

    @staticmethod
    def _may_answer_alone(scope: Scope) -> bool:
        """A modern POST (the SDK routes on this header the same way) that accepts both answer types
        (the SSE manager refuses one that does not, with 406: it still will), of a small stated length."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            return False
        version = length = None
        for name, value in scope["headers"]:
            if name == _VERSION_HEADER:
                version = value
            elif name == _LENGTH_HEADER:
                length = value
        if version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS:
            return False
        if length is None or not length.isdigit() or int(length) > MAX_PEEK_BYTES:
            return False
        has_json, has_sse = check_accept_headers(Request(scope))
        return has_json and has_sse
