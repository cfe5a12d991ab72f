"""`get_replay`: the status of a replay that `replay_trace` left running, and its outcome once done."""

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from molar_mcp.mcp.replay_calls import answer_result, follow, replay_errors
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.registry import add_tool
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import ReplayView

SPEC = ToolSpec(
    name="get_replay",
    scope="mcp:trace:read",
    rest=("GET /v1/replays/{id}", "GET /v1/traces/diff"),
    long_running=True,
)

DESCRIPTION = """Get a replay's status: queued, running (its phase), succeeded or failed.

For replay_trace's replay_id; wait_seconds waits for the end. Then: passed or not, trace id, diff; or
why it failed."""


async def get_replay(
    ctx: Context,
    replay_id: Annotated[str, Field(min_length=1, max_length=64)],
    wait_seconds: Annotated[float, Field(ge=0, le=50)] = 0,
    max_tokens: Annotated[int, Field(ge=500, le=20000)] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, ReplayView]:
    client = client_of(ctx)
    async with replay_errors():
        status = await client.get_replay(replay_id)
        if wait_seconds > 0:
            status = await follow(client, status, wait_seconds, ctx.report_progress)
        return await answer_result(client, status, max_tokens)


def register(server: MCPServer[Any]) -> None:
    add_tool(
        server,
        get_replay,
        SPEC,
        title="Get replay",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Get replay", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        ),
    )
