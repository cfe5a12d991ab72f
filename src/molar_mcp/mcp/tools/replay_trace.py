"""`replay_trace`: re-run a recorded run from a step with edits — it starts the app under test and runs
its code — and compare the result with the original."""

from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from molar_mcp.mcp.replay_calls import answer_result, follow, replay_errors
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.registry import add_tool
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import ReplayView
from molar_mcp.models.replays import MAX_DIFF_CHARS, MAX_SOURCE_DIFFS

SPEC = ToolSpec(
    name="replay_trace",
    scope="mcp:run",
    rest=("POST /v1/traces/{id}/replay", "GET /v1/replays/{id}", "GET /v1/traces/diff"),
    long_running=True,
)

DESCRIPTION = """Replay a recorded run from a step, with edits, and compare it with the original.

EXECUTES CODE on the server: starts the app under test with source_diffs applied (unified diffs, paths
relative to the app's source), restores steps before from_step, runs the rest, records a child trace.
scenario_diff edits the test scenario. Returns whether it passed and the diff; past wait_seconds, a
replay_id for get_replay."""


class SourceDiffArg(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=500)
    diff: str = Field(min_length=1, max_length=MAX_DIFF_CHARS)


class EditsArg(BaseModel):
    """`POST /v1/traces/{id}/replay`'s `edits`, accepted as such: a model that read the REST API sends it."""

    model_config = ConfigDict(extra="forbid")

    scenario_diff: str | None = Field(default=None, max_length=MAX_DIFF_CHARS)
    source_diffs: list[SourceDiffArg] = Field(default_factory=list, max_length=MAX_SOURCE_DIFFS)


class ConfirmReplay(BaseModel):
    run: bool = Field(default=True, description="Start the app under test and run it with these edits")


def confirm_run(ctx: Context, trace_id: str, from_step: int) -> Elicit[ConfirmReplay] | ConfirmReplay:
    """Ask the user before running code, when the client can ask (form elicitation); otherwise go ahead:
    the tool's annotations already tell the client it executes code."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return ConfirmReplay(run=True)
    return Elicit(
        f"Replay trace {trace_id} from step {from_step}? This starts the app under test on the server's "
        "machine and runs its code with the given patches.",
        ConfirmReplay,
    )


async def replay_trace(
    ctx: Context,
    confirmation: Annotated[ElicitationResult[ConfirmReplay], Resolve(confirm_run)],
    trace_id: Annotated[str, Field(min_length=1, max_length=64)],
    from_step: Annotated[int, Field(ge=1, le=10_000, description="debug_run's suggested from_step")],
    source_diffs: Annotated[
        list[SourceDiffArg] | None,
        Field(max_length=MAX_SOURCE_DIFFS),
    ] = None,
    scenario_diff: Annotated[str | None, Field(max_length=MAX_DIFF_CHARS)] = None,
    edits: Annotated[EditsArg | None, Field(description="{source_diffs, scenario_diff}: the REST body's shape")] = None,
    wait_seconds: Annotated[
        float,
        Field(ge=0, le=50),
    ] = 40,
    max_tokens: Annotated[int, Field(ge=500, le=20000)] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, ReplayView]:
    if not isinstance(confirmation, AcceptedElicitation) or not confirmation.data.run:
        raise ToolError("Not run: the user did not confirm running the app under test. Nothing was started.")
    if edits is not None:
        if source_diffs or scenario_diff is not None:
            raise ToolError(
                "Give the edits once: source_diffs and scenario_diff, or edits={source_diffs, scenario_diff}. "
                "Nothing was started."
            )
        source_diffs, scenario_diff = edits.source_diffs, edits.scenario_diff
    client = client_of(ctx)
    diffs = [(d.path, d.diff) for d in source_diffs or []]
    async with replay_errors(trace_id=trace_id):
        status = await client.create_replay(
            trace_id, from_step=from_step, scenario_diff=scenario_diff, source_diffs=diffs, triggered_via="mcp"
        )
        status = await follow(client, status, wait_seconds, ctx.report_progress)
        return await answer_result(client, status, max_tokens)


def register(server: MCPServer[Any]) -> None:
    add_tool(
        server,
        replay_trace,
        SPEC,
        title="Replay trace (runs the app)",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Replay trace (runs the app)",
            # It runs the app under test with the caller's patches: not read-only, and each call starts a
            # new run. It only adds a child trace, losing nothing, and stays on this machine.
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
    )
