"""An httpx2 transport that calls an ASGI app in process and streams its response.

`httpx2.ASGITransport` collects the whole body before returning, so a long-lived response (an SSE
stream) never arrives. Here the app runs in a task owned by the transport, its body chunks flow through
a memory stream as they are sent, and closing the response tells the app the client left
(`http.disconnect`). A request marked `READ_WHOLE` (its caller reads the whole answer: the MCP tools'
reads) runs the app in the caller's own task and collects its body, the cheapest way to call it. Open it
with the client: `async with httpx2.AsyncClient(transport=t)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, MutableMapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import anyio
import httpx2
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.types import ASGIApp

# An ASGI scope extension of a read from `TraceClient` (`read_scope`): the caller would parse the answer's JSON
# into the model it was written from, so a route may hand it that model instead, under `MODEL_ANSWER` in its
# body message (the body then empty): `read_whole` returns it. No request over a network carries it.
MODEL_EXTENSION = "molar.model"
MODEL_ANSWER = "molar.model"
# A request extension: the caller reads the whole answer at once (`TraceClient`'s calls other than streams),
# so the app may run in the caller's task. Other transports ignore it.
READ_WHOLE = "molar.read_whole"
APP_EXIT_S = 5.0  # how long a cancelled caller waits for the app's task to unwind


@dataclass(frozen=True)
class WholeAnswer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    model: Any  # the model the answer was written from, when the app handed it over (`MODEL_ANSWER`)


class _BodyStream(httpx2.AsyncByteStream):
    def __init__(self, chunks: MemoryObjectReceiveStream[bytes], disconnected: anyio.Event) -> None:
        self._chunks = chunks
        self._disconnected = disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        self._disconnected.set()
        self._chunks.close()


class StreamingASGITransport(httpx2.AsyncBaseTransport):
    def __init__(
        self,
        app: ASGIApp,
        *,
        client: tuple[str, int] = ("127.0.0.1", 0),
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        """`extensions`: put in every request's ASGI scope (`scope["extensions"]`), which no network
        request can carry: how the app tells its own in-process calls from a client's."""
        self.app = app
        self.client = client
        self.extensions = dict(extensions or {})
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> StreamingASGITransport:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        assert self._tg is not None
        # Responses still streaming when the client closes are abandoned, as a closed socket would be.
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)
        self._tg = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._tg is None:
            raise RuntimeError("open the AsyncClient (async with) before sending through StreamingASGITransport")
        scope = self._scope(request)
        if request.extensions.get(READ_WHOLE):
            return await self._whole(scope, request)
        return await self._streamed(scope, request)

    def _scope(self, request: httpx2.Request) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or (443 if request.url.scheme == "https" else 80)),
            "client": self.client,
            "root_path": "",
            "extensions": dict(self.extensions),
        }

    async def _whole(self, scope: dict[str, Any], request: httpx2.Request) -> httpx2.Response:
        answer = await self.call_whole(scope, await request.aread())
        return httpx2.Response(answer.status, headers=answer.headers, content=answer.body)

    def read_scope(
        self, base: httpx2.URL, method: str, path: str, query: str, headers: list[tuple[bytes, bytes]]
    ) -> dict[str, Any]:
        """The scope of a request to `base` that no `httpx2.Request` was built for (`TraceClient`'s in-process
        reads): what `_scope` makes of that request — `path` percent-encoded as sent, `query` encoded."""
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "headers": [(k.lower(), v) for k, v in headers],
            "scheme": base.scheme,
            "path": unquote(path),
            "raw_path": path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "server": (base.host, base.port or (443 if base.scheme == "https" else 80)),
            "client": self.client,
            "root_path": "",
            "extensions": {**self.extensions, MODEL_EXTENSION: {}},
        }

    async def call_whole(self, scope: dict[str, Any], body: bytes) -> WholeAnswer:
        """A request whose answer is read whole: its body is collected as the app sends it, no channel and
        no task group between them. The app runs in a plain task of its own, so what it sets in context
        variables (the org a request acts in) stays in it, as with a request over a socket."""
        if self._tg is None:
            raise RuntimeError("open the AsyncClient (async with) before sending through StreamingASGITransport")
        sent = False
        status: list[int] = []
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        models: list[Any] = []
        finished = anyio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # nothing more will come: only an app that waits for the client to leave
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers.extend(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if MODEL_ANSWER in message:
                    models.append(message[MODEL_ANSWER])
                if not message.get("more_body", False):
                    finished.set()

        task = asyncio.ensure_future(self.app(scope, receive, send))
        try:
            try:
                # Waited for, not awaited: a caller's cancellation (delivered more than once) must not
                # reach the app's task more than once, or it would cut the app's own clean-up short.
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()  # the caller left: so does the app, once; the caller returns when it has
                with anyio.CancelScope(shield=True), anyio.move_on_after(APP_EXIT_S):
                    await asyncio.wait({task})
                raise
            task.result()
        except Exception:
            if not status:
                raise
            # The answer had started: the caller sees what was sent, as over a socket the app broke.
        finally:
            finished.set()
        if not status:
            raise httpx2.RemoteProtocolError("the ASGI app ended without a response")
        return WholeAnswer(status[0], headers, b"".join(chunks), models[0] if models else None)

    async def _streamed(self, scope: dict[str, Any], request: httpx2.Request) -> httpx2.Response:
        assert self._tg is not None
        body = request.stream
        assert isinstance(body, httpx2.AsyncByteStream)
        body_iter = body.__aiter__()
        request_done = False
        disconnected = anyio.Event()
        started = anyio.Event()
        status: list[int] = []
        headers: list[tuple[bytes, bytes]] = []
        failure: list[BaseException] = []
        send_chunks, recv_chunks = anyio.create_memory_object_stream[bytes](max_buffer_size=256)

        async def receive() -> dict[str, Any]:
            nonlocal request_done
            if not request_done:
                try:
                    chunk = await body_iter.__anext__()
                except StopAsyncIteration:
                    request_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return {"type": "http.request", "body": chunk, "more_body": True}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers.extend(message.get("headers", []))
                started.set()
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk and not disconnected.is_set():
                    try:
                        await send_chunks.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        disconnected.set()
                if not message.get("more_body", False):
                    send_chunks.close()

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:  # reported to the caller below when nothing was sent
                failure.append(exc)
            finally:
                send_chunks.close()
                started.set()

        self._tg.start_soon(run)
        await started.wait()
        if not status:
            if failure:
                raise failure[0]
            raise httpx2.RemoteProtocolError("the ASGI app ended without a response")
        return httpx2.Response(status[0], headers=headers, stream=_BodyStream(recv_chunks, disconnected))
