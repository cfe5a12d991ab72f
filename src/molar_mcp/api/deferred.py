"""An ASGI app built on its first request: what `molar-mcp stdio` serves its MCP tools from, so the
process answers `initialize` and `tools/list` (which never reach the store) without first importing the
/v1 app and opening the store, about a third of its start-up CPU (bench/bench_startup.py).

Light on purpose: it imports nothing of the API it stands for.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("molar_mcp.api")


class DeferredApp:
    """Calls `build()` on the first HTTP request (on the event loop: nothing else can run meanwhile, so it
    runs once) and hands every request to the app it returned. When `build()` raises, that request and the
    next ones until a build succeeds get `503 {error: "unavailable", message, request_id}` saying why, and
    the next request tries again."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None

    @property
    def built(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            if scope["type"] != "http":  # a lifespan event: nothing is built for it
                return
            try:
                app = self._app = self._build()
            except Exception as exc:
                log.error("the trace store could not be opened: %s", exc)
                await _unavailable(send, f"the trace store could not be opened: {exc}")
                return
        await app(scope, receive, send)


async def _unavailable(send: Send, message: str) -> None:
    rid = uuid.uuid4().hex
    body = json.dumps({"error": "unavailable", "message": message, "request_id": rid}).encode()
    headers = [(b"content-type", b"application/json"), (b"x-request-id", rid.encode())]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
