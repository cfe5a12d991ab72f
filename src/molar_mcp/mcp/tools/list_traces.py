"""`list_traces`: find runs by status, scenario, source, signature, commit, time and text."""

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from molar_mcp.client import TraceFilters
from molar_mcp.mcp.errors import store_errors
from molar_mcp.mcp.render import describe_filters, fit_rows, list_text, structured, trace_row
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.timeparse import parse_time
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import TraceList
from molar_mcp.models import TraceStatus

SPEC = ToolSpec(name="list_traces", scope="mcp:trace:read", rest=("GET /v1/traces",))

DESCRIPTION = """List recorded test runs and agent runs, newest first, with filters.

Use it to answer "which runs failed since yesterday?", "has this signature happened before?",
"what ran on commit a1b2c3d?". Each row gives the trace's short_id, status, scenario, failure
signature, duration and time. Then call get_trace(trace_id=<short_id>) to see why one failed.
Pages: pass next_cursor back as `cursor` with the same filters."""


async def list_traces(
    ctx: Context,
    status: Annotated[
        TraceStatus | None,
        Field(description="only runs with this status; 'failed' for test failures, 'flaky' for passed retries"),
    ] = None,
    scenario: Annotated[str | None, Field(description="scenario slug, e.g. 'checkout-coupon'")] = None,
    scenario_id: Annotated[str | None, Field(description="scenario UUID")] = None,
    source: Annotated[
        Literal["pr", "schedule", "manual", "shadow_diff", "agent"] | None,
        Field(description="what started the run; 'agent' for agent runs received over OpenTelemetry"),
    ] = None,
    signature: Annotated[
        str | None, Field(description="exact failure signature, e.g. 'webhook-404', to find repeats")
    ] = None,
    tier: Annotated[Literal["hot", "warm", "cold"] | None, Field(description="storage tier")] = None,
    commit: Annotated[str | None, Field(description="code sha or its prefix (≥ 4 characters)")] = None,
    q: Annotated[
        str | None,
        Field(description="full-text search over titles, signatures, assertion and error messages"),
    ] = None,
    since: Annotated[str | None, Field(description="created at or after: ISO 8601, or an age like '24h', '7d'")] = None,
    until: Annotated[str | None, Field(description="created before: ISO 8601, or an age like '1h'")] = None,
    flaky: Annotated[
        bool | None, Field(description="true: runs of flaky tests (passed only on retry, or pass and fail by turns)")
    ] = None,
    newly_failing: Annotated[
        bool | None, Field(description="true: failing runs of tests that passed on the runs before (regressions)")
    ] = None,
    limit: Annotated[int, Field(ge=1, le=50, description="rows per page (fewer if the token budget needs)")] = 20,
    cursor: Annotated[str | None, Field(description="next_cursor from the previous page")] = None,
    max_tokens: Annotated[
        int, Field(ge=500, le=20000, description="token budget of this answer")
    ] = DEFAULT_TOKEN_BUDGET,
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
        page = await client.list_traces(filters, limit=limit, cursor=cursor)
        keep = fit_rows(page.items, max_tokens, desc)
        omitted: list[str] = []
        if keep < len(page.items):
            # Ask again for exactly what fits, so the store's cursor resumes at the first row left out.
            page = await client.list_traces(filters, limit=keep, cursor=cursor)
            omitted.append(
                f"this page holds {keep} of the {limit} rows asked for, to stay within {max_tokens} tokens; "
                "next_cursor continues from there"
            )
    view = TraceList(items=[trace_row(i) for i in page.items], next_cursor=page.next_cursor, omitted=omitted)
    text = list_text(view, desc)
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured(view),
    )


def register(server: MCPServer[Any]) -> None:
    server.add_tool(
        list_traces,
        name=SPEC.name,
        title="List traces",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="List traces", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
