"""The MCP server's lifespan state: the typed client it reaches the trace store through."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context

from molar_mcp.client import TraceClient
from molar_mcp.mcp.live import TraceWatcher

ClientFactory = Callable[[], AbstractAsyncContextManager[TraceClient]]


@dataclass(frozen=True)
class AppState:
    client: TraceClient
    watcher: TraceWatcher


def client_of(ctx: Context[Any, Any]) -> TraceClient:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState), "the MCP server was started without its lifespan"
    return state.client
