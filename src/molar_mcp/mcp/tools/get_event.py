"""`get_event`: one event whole — the body the pages cut, pretty-printed, narrowed, searched, paged."""

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from molar_mcp.client import ApiClientError, NotFoundError
from molar_mcp.mcp.errors import tool_error
from molar_mcp.mcp.event_render import PathError, build_event_view
from molar_mcp.mcp.render import structured
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.registry import add_tool
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import EventView

SPEC = ToolSpec(name="get_event", scope="mcp:trace:read", rest=("GET /v1/traces/{id}/events/{seq}",))

DESCRIPTION = """Read one event whole: a request or response body, an assertion, an error with its stack.

For rows cut …[+N chars]. path narrows JSON ($.body.total, $..sku, or a key); find gives the lines
holding a substring; offset=next_offset pages."""


async def get_event(
    ctx: Context,
    trace_id: Annotated[str, Field(min_length=1, max_length=64)],
    seq: Annotated[int, Field(ge=0)],
    path: Annotated[str | None, Field(max_length=300)] = None,
    find: Annotated[str | None, Field(min_length=1, max_length=200)] = None,
    offset: Annotated[int, Field(ge=0)] = 0,
    max_tokens: Annotated[int, Field(ge=500, le=20000)] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, EventView]:
    client = client_of(ctx)
    try:
        event = await client.get_event(trace_id, seq)
    except NotFoundError as exc:
        raise ToolError(
            f"No event seq {seq} in trace {trace_id!r} (or no such trace): get_trace(trace_id=…, events=true) "
            "lists a trace's events with their seqs."
        ) from exc
    except ApiClientError as exc:
        raise tool_error(exc, trace_id=trace_id) from exc
    try:
        view, text = build_event_view(event, trace_id, path=path, find=find, offset=offset, budget=max_tokens)
    except PathError as exc:
        raise ToolError(str(exc)) from None
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured(view))


def register(server: MCPServer[Any]) -> None:
    add_tool(
        server,
        get_event,
        SPEC,
        title="Get event",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Get event", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
