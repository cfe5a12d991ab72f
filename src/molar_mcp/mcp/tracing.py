"""The MCP SDK's OpenTelemetry span around each request, entered only when it can make a difference.

The SDK wraps every request in `OpenTelemetryMiddleware` (a SERVER span, the caller's W3C trace context
from `params._meta` made current), and says to drop it from `server.middleware` to opt out. With no tracer
provider installed its span records nothing, yet building the span's attributes, asking the proxy tracer and
making the span current cost ~3% of the server's CPU a tool call. `SpansWhenTraced` keeps the SDK's middleware
and enters it when it can matter: a tracer provider is installed (`opentelemetry.trace.set_tracer_provider`,
or `OTEL_PYTHON_TRACER_PROVIDER`, checked on each request, so one installed later counts), or the request
carries trace context (`traceparent` and the other fields the global propagator reads), which the span
would make current for the request's outbound messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap


def tracer_installed() -> bool:
    """Whether spans can be recorded: a tracer provider other than the API's default proxy (which
    records nothing until one is set) or its explicit no-op."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def carries_trace_context(meta: Mapping[str, Any] | None) -> bool:
    """Whether a request's `_meta` holds a field the global propagator reads (`traceparent`, …)."""
    return bool(meta) and any(field in meta for field in get_global_textmap().fields)  # type: ignore[operator]


class SpansWhenTraced(ServerMiddleware[Any]):
    """`spans` (the SDK's OpenTelemetry middleware) around a request when a tracer is installed or the
    request carries trace context; otherwise the request goes straight on."""

    def __init__(self, spans: ServerMiddleware[Any]) -> None:
        self.spans = spans

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if tracer_installed() or carries_trace_context(ctx.meta):
            return await self.spans(ctx, call_next)
        return await call_next(ctx)


# The SDK's middleware is known by its class's name: the class lives in a private module of the SDK, and a
# release that moves or renames it should leave the span on every request (as the SDK ships it), not stop the
# server from importing. tests/mcp/test_tracing.py fails if the wrapping no longer happens.
SDK_SPANS_CLASS = "OpenTelemetryMiddleware"


def spans_when_traced(server: MCPServer[Any]) -> None:
    """Put the SDK's OpenTelemetry middleware of `server` behind `SpansWhenTraced`, in its place."""
    chain = server.middleware
    for i, middleware in enumerate(chain):
        if type(middleware).__name__ == SDK_SPANS_CLASS:
            chain[i] = SpansWhenTraced(middleware)
