"""`get_trace`: why one run failed — a bounded summary, and any step's events on request."""

from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, ResourceLink, TextContent, ToolAnnotations
from pydantic import Field

from molar_mcp.client import TraceClient
from molar_mcp.mcp.conversation import build_conversation, fit_conversation, is_agent_run
from molar_mcp.mcp.errors import store_errors
from molar_mcp.mcp.images import Screenshot, pick_screenshot, read_screenshot
from molar_mcp.mcp.pages import build_events_page, page_size
from molar_mcp.mcp.render import link_block, structured
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.summary import TraceSummary
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET, estimate_tokens
from molar_mcp.mcp.tools.registry import add_tool
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.viewer_app import UI_META, viewer_meta, wants_viewer
from molar_mcp.mcp.views import TraceView
from molar_mcp.models import EventsResponse, TraceDetail

SPEC = ToolSpec(
    name="get_trace",
    scope="mcp:trace:read",
    rest=("GET /v1/traces/{id}", "GET /v1/traces/{id}/events"),
)

DESCRIPTION = """Explain one recorded run: status, failing step with expected vs actual, steps, failed events,
artifacts.

step=N (number, path 3.2 or id) or events=true: a page of events instead; offset=next_offset for
more. trace_id from list_traces; get_event reads one event whole. An agent run reads as its
conversation too."""

NOTABLE_LIMIT = 12
CONVERSATION_LIMIT = 60


CONVERSATION_MARGIN = 48
# The least budget: a run's tightest summary (its header, the failure with its message, expected and actual
# cut short, and the notes on what was left out, each with the call that brings it back) takes ~450–600
# tokens on the demo's runs; below that nothing is left to cut. A run whose tightest summary needs more is
# refused with the figure it needs.
LEAST_BUDGET = 800


async def get_trace(
    ctx: Context,
    trace_id: Annotated[str, Field(min_length=1, max_length=64)],
    step: Annotated[
        int | str | None,
        Field(),
    ] = None,
    kind: Annotated[
        str | None,
        Field(max_length=64, description="e.g. network, assertion"),
    ] = None,
    events: Annotated[bool, Field()] = False,
    offset: Annotated[int, Field(ge=0)] = 0,
    max_tokens: Annotated[int, Field(ge=LEAST_BUDGET, le=20000)] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, TraceView]:
    client = client_of(ctx)
    step_arg = None if step is None else str(step)
    if step is not None or events or kind is not None:
        return await _page(client, trace_id, step_arg, kind, offset, max_tokens)
    model_calls: EventsResponse | None = None
    tool_calls: EventsResponse | None = None

    async with store_errors(trace_id=trace_id):
        # The trace and its first failed events in one read.
        detail = await client.get_trace_with_failures(trace_id, NOTABLE_LIMIT)
    failing = detail.failed_events
    # An agent run (its event counts say so) reads as a conversation: its model and tool calls.
    agent = is_agent_run(detail.event_counts)
    if agent:
        async with store_errors(trace_id=trace_id):

            async def load_model_calls() -> None:
                nonlocal model_calls
                model_calls = await client.get_events(trace_id, kind="llm.response", limit=CONVERSATION_LIMIT)

            async def load_tool_calls() -> None:
                nonlocal tool_calls
                tool_calls = await client.get_events(trace_id, kind="tool", limit=2 * CONVERSATION_LIMIT)

            async with anyio.create_task_group() as tg:
                tg.start_soon(load_model_calls)
                tg.start_soon(load_tool_calls)
    failed_events = list(failing.events)
    final = [s for s in detail.steps if s.depth == 0 and s.ok is False]
    if final and failing.total > len(failed_events) and not any(e.step == final[-1].step for e in failed_events):
        # The first failures of a long run may all be ones it went on from: read the final step's too.
        async with store_errors(trace_id=trace_id):
            extra = await client.get_events(trace_id, step=str(final[-1].step), ok=False, limit=NOTABLE_LIMIT)
        failed_events = sorted({e.seq: e for e in [*failed_events, *extra.events]}.values(), key=lambda e: e.seq)
    # The conversation gets part of the budget.
    reserve = min(max_tokens // 2, 1000) if agent else 0
    # A screenshot is shown as an image: its cost (as a vision model counts it) is set aside first.
    artifact = pick_screenshot(detail.artifacts)
    shot = None if artifact is None else await read_screenshot(client, detail.id, artifact)
    room = max_tokens - reserve
    # Every part of the summary rendered and estimated once; each fit below is arithmetic.
    summary = TraceSummary(detail, failed_events, failing.total)

    if shot is None:
        fitted = summary.fit(room)
    else:
        # The image takes its share from what the rest can spare (its step events and failed events),
        # never the rest's floor: a view that would lose artifacts or steps it keeps at the full budget
        # tries a smaller image, then none.
        full = summary.fit(room)
        need = [a.uri for a in full.view.artifacts[:2]]
        reserves = shot.reserves(max_tokens)
        for n, aside in enumerate(reserves):
            fitted = summary.fit(room - aside)
            # An image comes with its own link: the screenshot's place in the artifact list is kept.
            kept = {a.uri for a in fitted.view.artifacts} | ({shot.link.uri} if n < len(reserves) - 1 else set())
            if all(uri in kept for uri in need) and len(fitted.view.steps) >= len(full.view.steps[:1]):
                break
        else:  # not even the line saying why: the answer as without a screenshot, which stays linked
            fitted = full
    conversation_built = None
    beside = 0  # what must fit beside the summary: for an agent run, at least the line leaving its conversation out
    if agent and model_calls is not None and tool_calls is not None:
        conversation_built = build_conversation(model_calls.events, tool_calls.events)
        beside = CONVERSATION_MARGIN + fit_conversation(conversation_built, -1, detail.short_id)[3]
        if fitted.tokens > room:
            # The summary does not fit beside the conversation's share: it gets all but that line.
            fitted = summary.fit(max_tokens - beside)
    view, text, spent = fitted.view, fitted.text, fitted.tokens
    if spent + beside > max_tokens:
        asked = -(-(spent + beside) // 100) * 100
        raise ToolError(
            f"Trace {detail.short_id}'s smallest summary (its header, failure and what was left out) takes "
            f'{spent + beside} tokens, more than max_tokens={max_tokens}: call get_trace(trace_id="{detail.short_id}", '
            f'max_tokens={asked}), or get_trace(trace_id="{detail.short_id}", step=N) for one step\'s events.'
        )
    if conversation_built is not None:
        # A margin for what joining the two costs (the `conversation` key, the newline between them)
        # beyond the parts' own estimates: the whole answer must stay within budget.
        room = max_tokens - spent - CONVERSATION_MARGIN - (shot.reserves(max_tokens)[-1] if shot else 0)
        conversation, lines, cut, said = fit_conversation(conversation_built, room, detail.short_id)
        view = view.model_copy(
            update={"conversation": conversation, "omitted": [*view.omitted, *([cut] if cut else [])]}
        )
        text = "\n".join([text, *lines, *([f"Left out: {cut}"] if cut else [])])
        spent += said + CONVERSATION_MARGIN
    links = [ResourceLink.model_validate(link_block(a)) for a in view.artifacts]
    image: list[ContentBlock] = []
    if shot is not None:
        # The image gets what the rest left, at most its share; what does not fit is left out whole.
        linked = any(existing.uri == shot.link.uri for existing in links)
        left = max_tokens - spent
        got = shot.show(left - shot.overhead(with_link=not linked), max_tokens)
        if isinstance(got, Screenshot):
            image.append(got.block)
            view = view.model_copy(update={"omitted": [*view.omitted, got.omitted]})
            text = f"{text}\n{got.note}"
            if not linked:
                links.append(shot.link)
        elif shot.image is None and shot.overhead(with_link=not linked) <= left:
            text = f"{text}\n{got}"  # unreadable: why, and the file
            if not linked:
                links.append(shot.link)
        elif estimate_tokens(got) + 2 <= left:
            text = f"{text}\n{got}"  # no room: says so, and how to see it
    content: list[ContentBlock] = [TextContent(type="text", text=text), *image, *links]
    # A client that renders MCP Apps gets the viewer's facts beside the answer (not for the model).
    meta = await viewer_meta(client, trace_id) if wants_viewer(ctx) else None
    return CallToolResult(content=content, structured_content=structured(view), _meta=meta)


async def _page(
    client: TraceClient, trace_id: str, step_arg: str | None, kind: str | None, offset: int, max_tokens: int
) -> CallToolResult:
    """A page of events: what was asked, without the summary again."""
    detail: TraceDetail | None = None
    page: EventsResponse | None = None
    async with store_errors(trace_id=trace_id):

        async def load_detail() -> None:
            nonlocal detail
            detail = await client.get_trace(trace_id, signed_urls=False)  # a page links no artifact

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
    add_tool(
        server,
        get_trace,
        SPEC,
        title="Get trace",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Get trace", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
        meta=UI_META,
    )
