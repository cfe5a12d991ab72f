"""`create_api_app`: the Starlette app serving the /v1 Trace REST API (seed 000) over a store."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from molar_mcp import __version__
from molar_mcp.api import blobs, live, traces
from molar_mcp.api.context import ApiContext
from molar_mcp.api.errors import EXCEPTION_HANDLERS, RequestIdMiddleware


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


def api_routes() -> list[Route]:
    return [Route("/healthz", healthz, methods=["GET"]), *traces.routes(), *live.routes(), *blobs.routes()]


def create_api_app(ctx: ApiContext) -> Starlette:
    """The /v1 API as its own ASGI app: mounted by `serve`, or reached in process through ASGITransport."""
    app = Starlette(
        routes=api_routes(),
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.molar = ctx
    return app
