"""`diff_traces`: compare two runs step by step — usually a replay with the run it replayed."""

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from molar_mcp.mcp.render import structured
from molar_mcp.mcp.replay_calls import replay_errors
from molar_mcp.mcp.replay_render import build_diff_view
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.registry import add_tool
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import DiffView

SPEC = ToolSpec(name="diff_traces", scope="mcp:trace:read", rest=("GET /v1/traces/diff",))

DESCRIPTION = """Compare run b with run a (b may be a replay_id), step by step.

Outcome, first divergence, assertions now passing or failing, changed steps, requests, console lines;
next_offset pages on."""


async def diff_traces(
    ctx: Context,
    a: Annotated[str, Field(min_length=1, max_length=64)],
    b: Annotated[str, Field(min_length=1, max_length=64)],
    dimension: Annotated[Literal["overview", "steps", "network", "console"], Field()] = "overview",
    max_tokens: Annotated[int, Field(ge=500, le=20000)] = DEFAULT_TOKEN_BUDGET,
    offset: Annotated[int, Field(ge=0)] = 0,
) -> Annotated[CallToolResult, DiffView]:
    client = client_of(ctx)
    async with replay_errors(trace_id=f"{a} or {b}"):
        diff = await client.diff_traces(a, b, dimension=dimension, offset=offset)
    view, text = build_diff_view(diff, max_tokens)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured(view))


def register(server: MCPServer[Any]) -> None:
    add_tool(
        server,
        diff_traces,
        SPEC,
        title="Diff traces",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Diff traces", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
