"""`get_trace`: why one run failed — a bounded summary, and any step's events on request."""

from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ContentBlock, ResourceLink, TextContent, ToolAnnotations
from pydantic import Field

from molar_mcp.client import TraceClient
from molar_mcp.mcp.conversation import build_conversation, fit_conversation, is_agent_run
from molar_mcp.mcp.errors import store_errors
from molar_mcp.mcp.pages import build_events_page, page_size
from molar_mcp.mcp.render import build_trace_view, cost, link_block, structured
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import TraceView
from molar_mcp.models import EventsResponse, TraceDetail

SPEC = ToolSpec(
    name="get_trace",
    scope="mcp:trace:read",
    rest=("GET /v1/traces/{id}", "GET /v1/traces/{id}/events"),
)

DESCRIPTION = """Explain one recorded run: status, failure signature, the failing step with its
failing assertion or error (expected vs actual), a steps overview, failed events across the run
(HTTP ≥ 400, console errors, exceptions), event counts by kind, and artifacts as resource links.

Call it with a trace_id (short_id or UUID) from list_traces. To read one step's events (requests,
responses with bodies, assertions, logs), call again with step=N; page with offset. The answer fits
a token budget and its `omitted` list says exactly what was left out and which call returns it.
An agent run also reads as a conversation: each model call (model, tokens, cost, its answer or the
tools it asked for) and tool call (arguments, result or error), and the model's last output."""

NOTABLE_LIMIT = 12
CONVERSATION_LIMIT = 60


async def get_trace(
    ctx: Context,
    trace_id: Annotated[str, Field(min_length=1, max_length=64, description="short_id or UUID of the trace")],
    step: Annotated[
        int | str | None,
        Field(
            description="a step number or nested path (3.2) as in the steps overview, or a step id: that step's events"
        ),
    ] = None,
    kind: Annotated[
        str | None,
        Field(
            max_length=64,
            description="only events of this kind in the step page, e.g. 'network' or 'assertion'",
        ),
    ] = None,
    events: Annotated[bool, Field(description="with no step: also return a page of the whole trace's events")] = False,
    offset: Annotated[int, Field(ge=0, description="first event of the page (from next_offset)")] = 0,
    max_tokens: Annotated[
        int, Field(ge=500, le=20000, description="token budget of this answer")
    ] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, TraceView]:
    client = client_of(ctx)
    step_arg = None if step is None else str(step)
    if step is not None or events or kind is not None:
        return await _page(client, trace_id, step_arg, kind, offset, max_tokens)
    detail: TraceDetail | None = None
    failing: EventsResponse | None = None
    model_calls: EventsResponse | None = None
    tool_calls: EventsResponse | None = None

    async with store_errors(trace_id=trace_id):
        # The reads are independent: run them together.
        async def load_detail() -> None:
            nonlocal detail
            detail = await client.get_trace(trace_id)

        async def load_failing() -> None:
            nonlocal failing
            failing = await client.get_events(trace_id, ok=False, limit=NOTABLE_LIMIT)

        async def load_calls() -> None:
            nonlocal model_calls, tool_calls
            model_calls = await client.get_events(trace_id, kind="llm.response", limit=CONVERSATION_LIMIT)
            tool_calls = await client.get_events(trace_id, kind="tool", limit=2 * CONVERSATION_LIMIT)

        async with anyio.create_task_group() as tg:
            tg.start_soon(load_detail)
            tg.start_soon(load_failing)
            tg.start_soon(load_calls)
    assert detail is not None
    assert failing is not None
    # An agent run reads as a conversation: its model and tool calls get part of the budget.
    agent = model_calls is not None and tool_calls is not None and is_agent_run(detail.event_counts)
    reserve = min(max_tokens // 2, 1000) if agent else 0
    view, text = build_trace_view(detail, failing.events, failing.total, None, 0, offset, None, max_tokens - reserve)
    if agent and model_calls is not None and tool_calls is not None:
        conversation, lines, cut = fit_conversation(
            build_conversation(model_calls.events, tool_calls.events), max_tokens - cost(view, text), detail.short_id
        )
        view = view.model_copy(
            update={"conversation": conversation, "omitted": [*view.omitted, *([cut] if cut else [])]}
        )
        text = "\n".join([text, *lines, *([f"Left out: {cut}"] if cut else [])])
    content: list[ContentBlock] = [TextContent(type="text", text=text)]
    content.extend(ResourceLink.model_validate(link_block(a)) for a in view.artifacts)
    return CallToolResult(content=content, structured_content=structured(view))


async def _page(
    client: TraceClient, trace_id: str, step_arg: str | None, kind: str | None, offset: int, max_tokens: int
) -> CallToolResult:
    """A page of events: what was asked, without the summary again."""
    detail: TraceDetail | None = None
    page: EventsResponse | None = None
    async with store_errors(trace_id=trace_id):

        async def load_detail() -> None:
            nonlocal detail
            detail = await client.get_trace(trace_id)

        async def load_page() -> None:
            nonlocal page
            page = await client.get_events(
                trace_id, step=step_arg, kind=kind, limit=page_size(max_tokens), offset=offset
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(load_detail)
            tg.start_soon(load_page)
    assert detail is not None
    assert page is not None
    view, text = build_events_page(detail, page.events, page.total, offset, step_arg, kind, max_tokens)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured(view))


def register(server: MCPServer[Any]) -> None:
    server.add_tool(
        get_trace,
        name=SPEC.name,
        title="Get trace",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Get trace", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
