"""`serve --workers N` on the embedded store: N worker processes accept on one listening socket (SQLite in
WAL mode lets them all read at once and write in turn), so the server uses more than one core.

What must be one, or shared, and how:
- 2026-07-28 requests are stateless: any worker answers them.
- A 2025-11-25 session lives in the memory of the worker that opened it (the SDK keeps no shared session
  store). `SessionRouter` tags the `Mcp-Session-Id` a worker hands out with its index (`<index>.<id>`,
  visible ASCII as the spec asks) and relays a request naming another worker's session to that worker over
  its own Unix socket (`http-<index>.sock` in the run directory), the response streamed back (SSE too).
  A client's requests usually come on the connection it opened the session on, so most are not relayed.
- The live bus: `PeerLiveBus` (bus_peers.py) sends every append to the other workers' followers.
- Rate limits: `SharedRateLimiter` (ratelimit_shared.py) keeps the token buckets in one SQLite file of the
  run directory, so N workers allow an org its limit, not N times it.
- Secrets (signing keys, the internal token, the MCP request-state key) are files of the data dir, made by
  worker 0, which starts (migrations, demo data) before the others.
- What replicas on PostgreSQL already run side by side (the OTLP sweeper, the live reaper, replay claims,
  OAuth client expiry, analysis worker processes) runs in every worker the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molar_mcp.api.telemetry import Metrics

log = logging.getLogger("molar_mcp.workers")

SESSION_HEADER = b"mcp-session-id"
# Hop-by-hop headers (RFC 9110 §7.6.1) and the framing the relay's own connection sets.
_NOT_RELAYED = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"upgrade", b"te"}
# An MCP request body relayed to the worker holding its session is read whole first: at most this much.
MAX_RELAYED_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class WorkerPlace:
    """Worker `index` of `workers`, their sockets in `run_dir`."""

    run_dir: Path
    index: int
    workers: int

    def http_socket(self, index: int | None = None) -> Path:
        return self.run_dir / f"http-{self.index if index is None else index}.sock"


def _json_error(status: int, message: str) -> tuple[Message, Message]:
    body = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"' + message.encode() + b'"}}'
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class SessionRouter:
    """ASGI middleware in front of the MCP endpoint of worker `place.index` (see the module docstring)."""

    def __init__(self, app: ASGIApp, place: WorkerPlace, *, metrics: Metrics | None = None) -> None:
        self.app = app
        self.place = place
        self.metrics = metrics
        self._tag = f"{place.index}.".encode()
        self._relays: dict[int, httpx2.AsyncClient] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        for i, (name, value) in enumerate(headers):
            if name == SESSION_HEADER:
                owner, dot, session = value.partition(b".")
                if dot and owner.isdigit() and int(owner) != self.place.index:
                    if int(owner) < self.place.workers:
                        await self._relay(int(owner), scope, receive, send)
                        return
                elif dot and owner.isdigit():  # this worker's session: the SDK knows it by its own id
                    headers = [*headers[:i], (name, session), *headers[i + 1 :]]
                    scope = {**scope, "headers": headers}
                break  # an id of no worker goes on as it is: the SDK answers 404, as for any unknown session
        tag = self._tag

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [(k, tag + v) if k.lower() == SESSION_HEADER else (k, v) for k, v in message["headers"]],
                }
            await send(message)

        await self.app(scope, receive, tagged)

    def _client(self, owner: int) -> httpx2.AsyncClient:
        client = self._relays.get(owner)
        if client is None:
            transport = httpx2.AsyncHTTPTransport(uds=str(self.place.http_socket(owner)))
            client = self._relays[owner] = httpx2.AsyncClient(
                transport=transport,
                timeout=httpx2.Timeout(None, connect=10),  # a session's GET stream stays open for as long as it likes
                # Idle relay connections are dropped before the worker's own keep-alive timeout (uvicorn: 5 s)
                # closes them under a request being sent.
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=2),
                trust_env=False,
            )
        return client

    async def _relay(self, owner: int, scope: Scope, receive: Receive, send: Send) -> None:
        if self.metrics is not None:  # a client that opens a connection a call is relayed often (bench/README.md)
            self.metrics.mcp_relayed.labels(scope["method"]).inc()
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_RELAYED_BODY:
                for m in _json_error(413, "Request body too large"):
                    await send(m)
                return
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in _NOT_RELAYED]
        url = httpx2.URL(scheme="http", host="worker", path=scope["path"], query=scope.get("query_string", b""))
        client = self._client(owner)
        request = client.build_request(scope["method"], url, headers=headers, content=bytes(body))
        try:
            response = await client.send(request, stream=True)
        except httpx2.TransportError:  # the worker holding the session is gone, and its sessions with it
            log.warning("worker %d did not answer a relayed request", owner, exc_info=True)
            for m in _json_error(404, "Session not found"):
                await send(m)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _NOT_RELAYED],
                }
            )
            async with anyio.create_task_group() as tasks:

                async def until_disconnected() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tasks.cancel_scope.cancel()  # the client left: stop relaying (and close the upstream)

                tasks.start_soon(until_disconnected)
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def aclose(self) -> None:
        for client in self._relays.values():
            await client.aclose()
        self._relays.clear()
