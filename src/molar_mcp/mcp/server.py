"""`create_mcp_server`: the MCP server over one injected trace-store client factory."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.request_state import RequestStateSecurity
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, SubscribeRequestParams, UnsubscribeRequestParams

from molar_mcp import __version__
from molar_mcp.mcp import prompts, resources, viewer_app
from molar_mcp.mcp.live import OrgBus, listen_middleware, on_subscribe, on_unsubscribe, running_watcher
from molar_mcp.mcp.state import AppState, ClientFactory
from molar_mcp.mcp.tools import debug_run, diff_traces, get_event, get_replay, get_trace, list_traces, replay_trace
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.tracing import spans_when_traced

TOOL_MODULES = (list_traces, get_trace, get_event, debug_run, replay_trace, get_replay, diff_traces)
TOOL_SPECS: tuple[ToolSpec, ...] = tuple(m.SPEC for m in TOOL_MODULES)

INSTRUCTIONS = """Molar MCP gives you the recorded traces of test runs and agent runs.
Start with list_traces (e.g. status="failed", since="24h") to find runs, then get_trace with a
trace's short_id to see why it failed; get_trace with step=N shows one step's events, and
get_event(trace_id, seq) one event whole (a body narrowed by path=, searched by find=).
debug_run gives the detectors' findings (critical step, cited events) and a replay to try.
replay_trace runs that replay (it starts the app under test with your patches) and says whether the
failing assertion now passes; get_replay follows a long replay; diff_traces compares two runs.
Every answer fits a token budget and lists what it left out and how to get it."""


async def prompt_errors_middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """An unknown prompt (or bad prompt arguments) is the caller's mistake: -32602, not -32603."""
    if ctx.method != "prompts/get":
        return await call_next(ctx)
    try:
        return await call_next(ctx)
    except ValueError as exc:
        raise MCPError(INVALID_PARAMS, str(exc)) from exc


def create_mcp_server(
    client_factory: ClientFactory, *, request_state_keys: Sequence[bytes] | None = None, shared_state: bool = False
) -> MCPServer[AppState]:
    """Build the server. `client_factory` opens the `TraceClient` for the server's lifetime;
    `request_state_keys` seal MCP request state (a per-process key when absent; replicas share theirs).
    `shared_state`: the lifespan opens its state once however many times it is entered, for several
    session managers of one server entered nested in one task (`molar-mcp serve`, mcp/answer_mode.py)."""

    bus = OrgBus()

    @asynccontextmanager
    async def open_state() -> AsyncIterator[AppState]:
        async with client_factory() as client, running_watcher(client, bus) as watcher:
            yield AppState(client=client, watcher=watcher)

    opened: list[AppState] = []  # the state while the outermost entry of a shared lifespan is open

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        if shared_state and opened:
            yield opened[-1]
            return
        async with open_state() as state:
            if not shared_state:
                yield state
                return
            opened.append(state)
            try:
                yield state
            finally:
                opened.clear()

    server: MCPServer[AppState] = MCPServer(
        "molar-mcp",
        title="Molar MCP",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        subscriptions=bus,
        middleware=[listen_middleware, prompt_errors_middleware],
        request_state_security=RequestStateSecurity(keys=list(request_state_keys)) if request_state_keys else None,
        # MCP Apps: the trace viewer (`ui://molar/viewer`) that get_trace and debug_run link to.
        extensions=[viewer_app.extension()],
    )
    spans_when_traced(server)  # the SDK's span a request only when a tracer or trace context is there
    # Legacy clients (2025-11-25) subscribe per resource; MCPServer has no decorator for it, so the
    # handlers go on its low-level server (as the SDK's own in-memory client reaches it).
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, on_subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, on_unsubscribe)
    for module in TOOL_MODULES:
        module.register(server)
    resources.register(server)
    prompts.register(server)
    return server


def tool_scopes() -> dict[str, str]:
    return {spec.name: spec.scope for spec in TOOL_SPECS}
