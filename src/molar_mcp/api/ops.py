"""Operations: `/healthz` (liveness), `/readyz` (the store answers and blobs are writable), `/metrics`
(Prometheus text: requests, latencies, ingest counts), and the per-org rate limits."""

from __future__ import annotations

import math
import tempfile
import time

import anyio.to_thread
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molar_mcp import __version__
from molar_mcp.api.context import api_context, org_of
from molar_mcp.api.errors import ApiError, error_response
from molar_mcp.api.telemetry import in_process, limit_class
from molar_mcp.store import TraceQuery
from molar_mcp.store.port import org_scope


def _route_name(scope: Scope) -> str:
    """The route template (`/v1/traces/{trace_id}`), so metrics don't get one series per trace id: the
    first of the app's routes that matches the request in full. The route the router picked (`scope["route"]`,
    the first full match of its routes) is that one when it is one of the app's own routes and matches in
    full; only otherwise are the routes tried one by one (each a regular expression)."""
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", [])
    picked = scope.get("route")
    if picked is not None and any(route is picked for route in routes) and picked.matches(scope)[0] == Match.FULL:
        return str(getattr(picked, "path", "unmatched"))
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


class OpsMiddleware:
    """Rate limits (429 + Retry-After) and request metrics around the /v1 app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Each request starts unscoped; `org_of` scopes it to its org (store.port.org_scope).
        with org_scope(None):
            await self._call(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        ctx = api_context(request)
        method, path = scope["method"], scope["path"]
        # The server's own in-process calls are not counted: the request that caused them was (an MCP
        # tool call counts once against `tool`, whatever it reads; see tool_budget.py).
        cls = None if in_process(scope) else limit_class(method, path)
        if cls is not None:
            try:
                org = org_of(request)
            except ApiError:
                org = "invalid"
            wait = await ctx.rate_limiter.spend(org, cls)
            if wait > 0:
                ctx.metrics.rate_limited.labels(cls).inc()
                response = error_response(
                    request,
                    429,
                    "rate_limited",
                    f"more than {getattr(ctx.rate_limiter.limits, cls)} {cls} requests a minute for this org; "
                    "retry after the number of seconds in Retry-After",
                )
                response.headers["retry-after"] = str(max(1, math.ceil(wait)))
                await response(scope, receive, send)
                return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                ctx.metrics.served(method, _route_name(scope), status, time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, observe)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> JSONResponse:
    ctx = api_context(request)

    def check() -> dict[str, str]:
        problems: dict[str, str] = {}
        try:
            ctx.store.list_traces("org_readyz", TraceQuery(limit=1))
        except Exception as exc:  # any failure means not ready; say which
            problems["store"] = str(exc)
        try:
            with tempfile.NamedTemporaryFile(dir=ctx.blob_root):
                pass
        except OSError as exc:
            problems["blobs"] = str(exc)
        return problems

    problems = await anyio.to_thread.run_sync(check)
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    ctx = api_context(request)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
