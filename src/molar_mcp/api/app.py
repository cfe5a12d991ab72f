"""`create_api_app`: the Starlette app serving the /v1 Trace REST API over a store."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from molar_mcp.api import (
    analysis,
    blobs,
    chats,
    exports,
    live,
    openapi,
    ops,
    otlp,
    replays,
    report,
    runs,
    sharing,
    tiers,
    traces,
    uploads,
    viewer,
)
from molar_mcp.api.auth import ApiAuth, ApiAuthMiddleware
from molar_mcp.api.context import ApiContext
from molar_mcp.api.errors import EXCEPTION_HANDLERS, RequestIdMiddleware
from molar_mcp.api.ops import OpsMiddleware


def api_routes() -> list[Route]:
    return [
        *ops.routes(),
        *openapi.routes(),
        *replays.routes(),  # before traces: `/v1/traces/diff` is not a trace id
        *traces.routes(),
        *uploads.routes(),
        *live.routes(),
        *otlp.routes(),
        *blobs.routes(),
        *exports.routes(),
        *analysis.routes(),
        *chats.routes(),
        *tiers.routes(),
        *sharing.routes(),
        *report.routes(),
        *runs.routes(),
        *viewer.routes(),
    ]


def create_api_app(ctx: ApiContext, auth: ApiAuth | None = None) -> Starlette:
    """The /v1 API as its own ASGI app: mounted by `serve`, or reached in process through an ASGI
    transport. With `auth`, every non-public route needs a credential and a scope (api/auth.py)."""
    middleware = [Middleware(RequestIdMiddleware)]
    if auth is not None:
        middleware.append(Middleware(ApiAuthMiddleware, auth=auth))
    middleware.append(Middleware(OpsMiddleware))
    app = Starlette(
        routes=api_routes(),
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.molar = ctx
    return app
