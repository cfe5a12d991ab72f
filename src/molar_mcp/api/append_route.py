"""The live append (`POST /v1/traces/{id}/events`) served by one lean layer in front of `serve`'s app.

A live producer sends a batch every few hundred milliseconds, and in batches of 100 the request's fixed
cost is most of what the server spends on it (bench/README.md, `bench_live.py`). Through the full app a
request passes two Starlette apps — each with its error middleware, exception middleware and router
(the outer one's routes, the `/` mount, then the `/v1` app's routes tried one by one) — before the
endpoint runs. `LiveAppendRoute` takes the append requests before the outer app's router and runs them
through exactly the `/v1` app's own middleware (request id, authentication and scopes, rate limits and
metrics: the same classes, built from the app's own list) around the same endpoint, with the app's own
exception handlers: the same answers, the same errors with their request id, the same metrics series.
Every other request, and an append the router would not route here (a root path), goes to the app."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from molar_mcp.api import live

_APPEND_PATH = re.compile(r"^/v1/traces/(?P<trace_id>[^/]+)/events$")  # Starlette's `{trace_id}`: [^/]+

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def _append_route(api_app: Starlette) -> BaseRoute:
    """The route the `/v1` app's router picks for an append: the live append's, or this layer is wrong."""
    probe: Scope = {"type": "http", "method": "POST", "path": "/v1/traces/t/events", "root_path": ""}
    for route in api_app.router.routes:
        match, _ = route.matches(probe)
        if match == Match.FULL:
            if not (isinstance(route, Route) and route.endpoint is live.append_events):
                raise RuntimeError(f"POST /v1/traces/{{id}}/events is routed to {route!r}, not the live append")
            return route
    raise RuntimeError("the /v1 app has no route for POST /v1/traces/{id}/events")


class _Endpoint:
    """The append endpoint with the `/v1` app's exception handlers: what its router, `request_response` and
    its exception middleware do for this one route."""

    def __init__(self, handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.handlers = handlers

    def _handler(self, exc: Exception) -> ExceptionHandler | None:
        for cls in type(exc).__mro__:  # the most specific handler, as Starlette looks it up
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response: Response
        try:
            response = await live.append_events(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


class LiveAppendRoute:
    """ASGI middleware of `serve`'s app (inside its origin guard): appends to a live trace go through the
    `/v1` app's middleware straight to the endpoint; everything else goes on to `app`."""

    def __init__(self, app: ASGIApp, api_app: Starlette) -> None:
        self.app = app
        self.api_app = api_app
        self.route = _append_route(api_app)
        handlers: dict[Any, ExceptionHandler] = dict(api_app.exception_handlers)
        lean: ASGIApp = _Endpoint(handlers)
        for cls, args, kwargs in reversed(api_app.user_middleware):  # the app's own, in its order
            lean = cls(lean, *args, **kwargs)
        self.lean = lean

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            found = _APPEND_PATH.match(scope["path"])
            if found is not None:
                # What the mount and the `/v1` app's router would have set: the app (its context, its routes
                # for the metrics' route name), the route and its path parameter.
                scope = {
                    **scope,
                    "app": self.api_app,
                    "route": self.route,
                    "endpoint": live.append_events,
                    "path_params": {"trace_id": found["trace_id"]},
                }
                await self.lean(scope, receive, send)
                return
        await self.app(scope, receive, send)
