"""`get_event`: one event whole — the body the pages cut, pretty-printed, narrowed, searched, paged."""

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ContentBlock, TextContent, ToolAnnotations
from pydantic import Field

from molar_mcp.client import ApiClientError, NotFoundError
from molar_mcp.mcp.errors import tool_error
from molar_mcp.mcp.event_render import PathError, build_event_view
from molar_mcp.mcp.images import ReadScreenshot, Screenshot, is_screenshot, read_screenshot
from molar_mcp.mcp.render import cost, structured
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
    shot: ReadScreenshot | None = None
    sha = event.payload.get("sha256")
    if event.kind == "screenshot" and isinstance(sha, str) and path is None and find is None and offset == 0:
        # A screenshot event: the image itself, bounded, beside the link to the full one.
        try:
            detail = await client.get_trace(trace_id)
        except ApiClientError as exc:
            raise tool_error(exc, trace_id=trace_id) from exc
        artifact = next((a for a in detail.artifacts if a.sha256 == sha and is_screenshot(a)), None)
        shot = None if artifact is None else await read_screenshot(client, detail.id, artifact)
    reserve = 0 if shot is None else shot.reserves(max_tokens)[0]
    try:
        view, text = build_event_view(event, trace_id, path=path, find=find, offset=offset, budget=max_tokens - reserve)
    except PathError as exc:
        raise ToolError(str(exc)) from None
    content: list[ContentBlock] = [TextContent(type="text", text=text)]
    if shot is not None:
        got = shot.show(max_tokens - cost(view, text) - shot.overhead(), max_tokens)
        if isinstance(got, Screenshot):
            view = view.model_copy(update={"omitted": [*view.omitted, got.omitted]})
            content = [TextContent(type="text", text=f"{text}\n{got.note}"), got.block, got.link]
        else:
            content = [TextContent(type="text", text=f"{text}\n{got}"), shot.link]
    return CallToolResult(content=content, structured_content=structured(view))


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
