"""`list_traces`: find runs by status, scenario, source, signature, commit, time and text."""

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from molar_mcp.client import TraceFilters
from molar_mcp.mcp.errors import store_errors
from molar_mcp.mcp.render import (
    RowCosts,
    cut_note,
    describe_filters,
    fit_rows,
    list_frame_cost,
    list_text,
    page_cost,
    row_array,
    structured,
)
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.timeparse import parse_time
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.registry import add_tool
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import TraceList
from molar_mcp.models import TraceStatus

SPEC = ToolSpec(name="list_traces", scope="mcp:trace:read", rest=("GET /v1/traces",))

DESCRIPTION = """List recorded test and agent runs, newest first, with filters.

Then get_trace(trace_id=<short_id>) explains one. Next page: cursor=next_cursor, same filters."""


async def list_traces(
    ctx: Context,
    status: Annotated[
        TraceStatus | None,
        Field(),
    ] = None,
    scenario: Annotated[str | None, Field(max_length=200, description="scenario slug")] = None,
    scenario_id: Annotated[str | None, Field(max_length=64)] = None,
    source: Annotated[Literal["pr", "schedule", "manual", "shadow_diff", "agent"] | None, Field()] = None,
    signature: Annotated[str | None, Field(max_length=500)] = None,
    tier: Annotated[Literal["hot", "warm", "cold"] | None, Field()] = None,
    run: Annotated[str | None, Field(max_length=64, description="a run's id or short id")] = None,
    commit: Annotated[str | None, Field(max_length=64, description="sha prefix")] = None,
    q: Annotated[str | None, Field(max_length=500, description="full-text search")] = None,
    since: Annotated[str | None, Field(max_length=64, description="ISO 8601 or an age: 24h, 7d")] = None,
    until: Annotated[str | None, Field(max_length=64, description="ISO 8601 or an age")] = None,
    flaky: Annotated[bool | None, Field(description="flaky tests")] = None,
    newly_failing: Annotated[bool | None, Field(description="regressions")] = None,
    limit: Annotated[int, Field(ge=1, le=50)] = 50,
    cursor: Annotated[str | None, Field(max_length=200)] = None,
    max_tokens: Annotated[int, Field(ge=500, le=20000)] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, TraceList]:
    try:
        created_from = parse_time(since) if since else None
        created_to = parse_time(until) if until else None
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    if commit is not None and len(commit) < 4:
        raise ToolError("commit must be at least 4 characters of the sha")
    filters = TraceFilters(
        status=status,
        scenario_id=scenario_id,
        scenario=scenario,
        source=source,
        signature=signature,
        tier=tier,
        run=run,
        commit=commit,
        q=q,
        created_from=created_from,
        created_to=created_to,
        flaky=flaky,
        newly_failing=newly_failing,
    )
    args: dict[str, Any] = {
        "status": status,
        "scenario": scenario,
        "scenario_id": scenario_id,
        "source": source,
        "signature": signature,
        "tier": tier,
        "run": run,
        "commit": commit,
        "q": q,
        "since": since,
        "until": until,
        "flaky": flaky,
        "newly_failing": newly_failing,
    }
    desc = describe_filters(args)
    client = client_of(ctx)
    async with store_errors():
        # One read: the page, and the store's cursor after each of its rows, so a page cut to the budget
        # resumes at the first row left out.
        page = await client.list_traces(filters, limit=limit, cursor=cursor, row_cursors=True)
    after = page.row_cursors or []  # the store answers them when asked (it refuses a parameter it does not know)
    costs = RowCosts()
    # At most this many fit (the frame counted at its least), and their rows: none made past them.
    keep, rows = fit_rows(page.items, max_tokens, desc, costs)
    while True:
        # The page is checked by arithmetic: its rows' costs (known) and its frame with the real cursor (the
        # store's cursor after the last row kept, when rows are left out) and the note on a cut.
        cut = keep < len(page.items)
        next_cursor = after[keep - 1] if cut else page.next_cursor
        omitted = [cut_note(keep, limit, max_tokens)] if cut else []
        spent = page_cost(list_frame_cost(next_cursor, omitted, desc, keep), [costs(r) for r in rows[:keep]])
        if keep == 1 or spent <= max_tokens:
            rows = rows[:keep]
            break
        keep -= 1
    # Built from values of the store's validated models (and our strings): not validated again.
    view = TraceList.model_construct(rows=[row_array(r) for r in rows], next_cursor=next_cursor, omitted=omitted)
    text = list_text(view, desc)
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured(view),
    )


def register(server: MCPServer[Any]) -> None:
    add_tool(
        server,
        list_traces,
        SPEC,
        title="List traces",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="List traces", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
