"""`McpScopeGuard`: per-tool scopes in front of the SDK's streamable HTTP app.

The SDK's built-in auth knows one global scope list and sends no `scope=` in its challenges. This
ASGI middleware authenticates the bearer token (audience checked by the verifier), reads the
JSON-RPC body of each POST, works out every scope the call needs, and answers 403
`insufficient_scope` with all of them so the client can step up (MCP authorization, RFC 6750 §3.1).
The body is replayed unchanged to the SDK, which also checks that a modern request's `Mcp-Name`
header matches it.

`tools/list` lists every tool whatever the token's scopes (each tool names its scope in its description
and `_meta`): a model never calls a tool it never saw, so a read-only sign-in could never step up.
A policy may still ask for it filtered (`filter_tools_list`), in JSON and SSE responses alike (other
SSE events stream through untouched). The caller is exposed to the MCP
layer three ways: `get_principal()`, `request.state.principal`, and the SDK's own
`get_access_token()` (so SDK session ownership binds to the user).

A long response (an SSE stream: a listen, a legacy GET stream, a slow tool) outlives the moment its
credential was checked, so the guard checks it again every `recheck_seconds` while the response runs:
once the key is revoked or the token expired, the response is ended (within seconds).
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from starlette.authentication import AuthCredentials
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molar_mcp.asgi_replay import replayed_body
from molar_mcp.auth.config import SCOPE_TRACE_READ
from molar_mcp.auth.resource import (
    PRINCIPAL_STATE_KEY,
    ProtectedResource,
    authenticate,
    challenge_response,
    insufficient_scope,
    reset_principal,
    set_principal,
)
from molar_mcp.auth.verify import BearerVerifier, Principal

MAX_BODY_BYTES: Final = 4 * 1024 * 1024
_TRACE_READ: Final = frozenset({SCOPE_TRACE_READ})
DEFAULT_METHOD_SCOPES: Final[Mapping[str, frozenset[str]]] = {
    "resources/read": _TRACE_READ,
    "resources/list": _TRACE_READ,
    "resources/templates/list": _TRACE_READ,
    "resources/subscribe": _TRACE_READ,
}
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class ScopePolicy:
    """Which scopes each MCP request needs. Methods not listed (initialize, tools/list, ping, …)
    need only a valid token; a tool missing from `tool_scopes` needs `unknown_tool_scopes`.
    `filter_tools_list` hides from `tools/list` the tools the token may not call (off: clients step up
    only for tools they can see)."""

    tool_scopes: Mapping[str, frozenset[str]]
    method_scopes: Mapping[str, frozenset[str]] = field(default_factory=lambda: dict(DEFAULT_METHOD_SCOPES))
    unknown_tool_scopes: frozenset[str] = _TRACE_READ
    filter_tools_list: bool = False

    @classmethod
    def of(cls, tool_scopes: Mapping[str, Iterable[str]], **kwargs: Any) -> ScopePolicy:
        return cls(tool_scopes={name: frozenset(scopes) for name, scopes in tool_scopes.items()}, **kwargs)

    def tool(self, name: str) -> frozenset[str]:
        return self.tool_scopes.get(name, self.unknown_tool_scopes)

    def required(self, message: Mapping[str, Any], name_header: str | None) -> frozenset[str]:
        method = message.get("method")
        if method == "tools/call":
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            return self.tool(name if isinstance(name, str) else (name_header or ""))
        return self.method_scopes.get(method, frozenset()) if isinstance(method, str) else frozenset()


def _json_messages(body: bytes) -> list[dict[str, Any]]:
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return []  # not JSON (or nested past the parser): the SDK answers with a parse error and runs nothing
    items = decoded if isinstance(decoded, list) else [decoded]
    return [item for item in items if isinstance(item, dict)]


def _header(scope: Scope, name: str) -> str | None:
    raw = next((v for k, v in scope.get("headers", []) if k.decode("latin-1").lower() == name), None)
    return decode_header_value(raw.decode("latin-1")) if raw is not None else None


class McpScopeGuard:
    """Wrap `mcp.streamable_http_app()` (or anything serving MCP over streamable HTTP)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: BearerVerifier,
        resource: ProtectedResource,
        policy: ScopePolicy,
        recheck_seconds: float = 2.0,
        sessions_per_credential: int = 64,
        session_idle_seconds: float = 5 * 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = SessionQuota(sessions_per_credential, session_idle_seconds, clock)
        self._app = app
        self._verifier = verifier
        self._resource = resource
        self._policy = policy
        self._recheck = recheck_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self._app(scope, receive, send)
            return
        principal, token, refusal = authenticate(scope, self._verifier, self._resource)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        assert principal is not None
        assert token is not None
        list_ids: list[Any] = []
        if scope.get("method") == "POST":
            body = await _read_body(receive)
            if body is None:
                await Response("request body too large", status_code=413)(scope, receive, send)
                return
            messages = _json_messages(body)
            name_header = _header(scope, MCP_NAME_HEADER)
            required = frozenset().union(*(self._policy.required(m, name_header) for m in messages))
            if principal.missing_scopes(required):
                await insufficient_scope(self._resource, required)(scope, receive, send)
                return
            if self._policy.filter_tools_list:
                list_ids = [m["id"] for m in messages if m.get("method") == "tools/list" and "id" in m]
            receive = replayed_body(body, receive)
            opening = any(m.get("method") == "initialize" for m in messages)
            if opening and _header(scope, "mcp-session-id") is None and self._sessions.full(principal):
                await self._sessions.refusal()(scope, receive, send)
                return
        if list_ids:
            send = _ToolsListFilter(send, list_ids, lambda name: principal.has_scopes(self._policy.tool(name)))
        send = self._sessions.track(principal, scope, send)
        await self._call_as(principal, token, scope, receive, send)

    async def _call_as(self, principal: Principal, token: str, scope: Scope, receive: Receive, send: Send) -> None:
        user = AuthenticatedUser(principal.to_access_token(token))
        scope = dict(scope)
        scope["user"] = user
        scope["auth"] = AuthCredentials(sorted(principal.scopes))
        scope["state"] = {**scope.get("state", {}), PRINCIPAL_STATE_KEY: principal}
        principal_token = set_principal(principal)
        user_token = auth_context_var.set(user)
        state = {"started": False, "ended": False}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["ended"] = True
            await send(message)

        revoked = False
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal revoked
                    while True:
                        await anyio.sleep(self._recheck)
                        if self._verifier.verify(token) is None:
                            revoked = True
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                await self._app(scope, receive, tracked)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the app's own error, as it raised it
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            auth_context_var.reset(user_token)
            reset_principal(principal_token)
        if revoked:
            # The credential was revoked or expired while the response ran: end it here.
            if not state["started"]:
                refusal = challenge_response(
                    self._resource, 401, error="invalid_token", description="the token was revoked or expired"
                )
                await refusal(scope, receive, send)
            elif not state["ended"]:
                await send({"type": "http.response.body", "body": b"", "more_body": False})


class SessionQuota:
    """2025-11-25 sessions per credential: at most `limit` open at once (an `initialize` past it gets
    429), counting a session as open until it is deleted or unused for `idle_seconds` (the SDK closes
    it then too). One key cannot exhaust the server's sessions for everyone else."""

    def __init__(self, limit: int, idle_seconds: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._open: dict[str, OrderedDict[str, float]] = {}

    @staticmethod
    def _key(principal: Principal) -> str:
        return principal.credential_id or f"{principal.kind}:{principal.subject}:{principal.client_id}"

    def _live(self, principal: Principal) -> OrderedDict[str, float]:
        sessions = self._open.setdefault(self._key(principal), OrderedDict())
        cutoff = self._clock() - self.idle_seconds
        while sessions and next(iter(sessions.values())) < cutoff:
            sessions.popitem(last=False)
        return sessions

    def full(self, principal: Principal) -> bool:
        return len(self._live(principal)) >= self.limit

    def refusal(self) -> Response:
        minutes = max(1, int(self.idle_seconds // 60))
        return JSONResponse(
            {
                "jsonrpc": "2.0",
                "id": None,
                "error": {
                    "code": -32000,
                    "message": f"this credential has {self.limit} open sessions; end one (DELETE /mcp with its "
                    f"Mcp-Session-Id) or wait: unused sessions close after {minutes} min",
                },
            },
            status_code=429,
            headers={"Retry-After": str(int(self.idle_seconds))},
        )

    def track(self, principal: Principal, scope: Scope, send: Send) -> Send:
        sessions = self._live(principal)
        existing = _header(scope, "mcp-session-id")
        if existing is not None and existing in sessions:
            if scope.get("method") == "DELETE":
                sessions.pop(existing, None)
            else:
                sessions[existing] = self._clock()
                sessions.move_to_end(existing)
            return send
        if existing is not None:
            return send

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status", 500) < 400:
                opened = next((v for k, v in message.get("headers", []) if k.lower() == b"mcp-session-id"), None)
                if opened is not None:
                    sessions[opened.decode("latin-1")] = self._clock()
            await send(message)

        return noting


async def _read_body(receive: Receive) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body.extend(message.get("body", b""))
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            break
    return bytes(body)


class _ToolsListFilter:
    """Rewrites the tools/list results in a response; everything else passes through as it comes."""

    def __init__(self, send: Send, ids: list[Any], allowed: Any) -> None:
        self._send = send
        self._ids = ids
        self._allowed = allowed
        self._mode = "pass"
        self._start: Message | None = None
        self._buffer = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"").lower()
            self._mode = (
                "sse" if b"text/event-stream" in content_type else "json" if b"json" in content_type else "pass"
            )
            if self._mode == "pass":
                await self._send(message)
                return
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            self._start = {**message, "headers": headers}
            if self._mode == "sse":
                await self._send(self._start)
            return
        if message["type"] != "http.response.body" or self._mode == "pass":
            await self._send(message)
            return
        self._buffer.extend(message.get("body", b""))
        more = bool(message.get("more_body", False))
        if self._mode == "json":
            if more:
                return
            body = self._filter_json(bytes(self._buffer))
            assert self._start is not None
            start_headers = [*self._start["headers"], (b"content-length", str(len(body)).encode())]
            await self._send({**self._start, "headers": start_headers})
            await self._send({"type": "http.response.body", "body": body, "more_body": False})
            return
        out = bytearray()
        while match := _EVENT_END.search(self._buffer):
            event = bytes(self._buffer[: match.start()])
            out.extend(self._filter_event(event, match.group()))
            del self._buffer[: match.end()]
        if not more:
            out.extend(self._buffer)
            self._buffer.clear()
        await self._send({"type": "http.response.body", "body": bytes(out), "more_body": more})

    def _filter_result(self, message: Any) -> bool:
        """Filter in place; True if `message` was one of our tools/list responses."""
        if not isinstance(message, dict) or message.get("id") not in self._ids:
            return False
        result = message.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return False
        result["tools"] = [t for t in result["tools"] if isinstance(t, dict) and self._allowed(t.get("name", ""))]
        return True

    def _filter_json(self, body: bytes) -> bytes:
        try:
            decoded = json.loads(body)
        except ValueError:
            return body
        items = decoded if isinstance(decoded, list) else [decoded]
        changed = [self._filter_result(item) for item in items]
        return json.dumps(decoded, separators=(",", ":")).encode() if any(changed) else body

    def _filter_event(self, event: bytes, end: bytes) -> bytes:
        lines = _LINE_END.split(event)
        data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
        if not data:
            return event + end
        try:
            decoded = json.loads(b"\n".join(data))
        except ValueError:
            return event + end
        if not self._filter_result(decoded):
            return event + end
        newline = end[: len(end) // 2]
        kept = [line for line in lines if not line.startswith(b"data:")]
        payload = b"data: " + json.dumps(decoded, separators=(",", ":")).encode()
        return newline.join([*kept, payload]) + end
