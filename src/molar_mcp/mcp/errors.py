"""Client exceptions → the `ToolError` text a model reads. Each message says what to do next."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver.exceptions import ToolError

from molar_mcp.client import (
    ApiClientError,
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
)


def tool_error(exc: ApiClientError, *, trace_id: str | None = None) -> ToolError:
    rid = f" (request id {exc.request_id})" if exc.request_id else ""
    if isinstance(exc, NotFoundError) and trace_id is not None:
        return ToolError(f"No trace {trace_id!r} — call list_traces to find trace ids.{rid}")
    if isinstance(exc, NotFoundError):
        return ToolError(f"Not found: {exc.message}{rid}")
    if isinstance(exc, BadRequestError):
        return ToolError(f"Invalid argument: {exc.message}. Fix the argument and call again.{rid}")
    if isinstance(exc, ForbiddenError):
        return ToolError(f"Not allowed: {exc.message}. This credential cannot read that.{rid}")
    if isinstance(exc, UnavailableError):
        return ToolError(f"The trace store is unavailable: {exc.message}. Try again shortly.{rid}")
    return ToolError(f"The trace store refused the call: {exc.status} {exc.error}: {exc.message}{rid}")


@asynccontextmanager
async def store_errors(*, trace_id: str | None = None) -> AsyncIterator[None]:
    """Turn client errors raised inside the block into authored `ToolError`s."""
    try:
        yield
    except ApiClientError as exc:
        raise tool_error(exc, trace_id=trace_id) from exc
    except BaseExceptionGroup as group:
        # Concurrent reads fail together: report the first store error, which is what the model can fix.
        matched, _ = group.split(ApiClientError)
        if matched is None:
            raise
        first = _first_leaf(matched)
        raise tool_error(first, trace_id=trace_id) from group


def _first_leaf(group: BaseExceptionGroup[ApiClientError]) -> ApiClientError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, ApiClientError)
    return exc
