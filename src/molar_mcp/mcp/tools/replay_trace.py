"""`replay_trace`: re-run a recorded run from a step with edits — it starts the app under test and runs
its code — and compare the result with the original."""

from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from molar_mcp.mcp.replay_calls import answer_result, follow, replay_errors
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.views import ReplayView
from molar_mcp.models.replays import MAX_DIFF_CHARS, MAX_SOURCE_DIFFS

SPEC = ToolSpec(
    name="replay_trace",
    scope="mcp:run",
    rest=("POST /v1/traces/{id}/replay", "GET /v1/replays/{id}", "GET /v1/traces/diff"),
)

DESCRIPTION = """Replay a recorded run from a step, with edits, and compare it with the original.

This EXECUTES CODE on the server's machine: it starts the app under test from a fresh copy of its
source with your source_diffs applied, re-runs steps 1…from_step-1 to rebuild the app's state, runs
from_step to the end, records the result as a child trace, then stops the app.

Use it after debug_run or get_trace: from_step = the suggested or failing step; source_diffs = a fix
to the app (unified diffs, paths relative to the app's source directory); scenario_diff = an edit of
the test scenario itself. It waits up to wait_seconds, reporting progress, and returns whether the
replayed run passed plus a diff against the original (first divergence, assertions that now pass or
fail). A diff that does not apply is an error naming the hunk; nothing runs then. If the replay is
still running when the wait is over, it returns the replay_id: call get_replay(replay_id,
wait_seconds=30) or read molar://replays/{replay_id}."""


class SourceDiffArg(BaseModel):
    path: str = Field(
        min_length=1, max_length=500, description="the file the diff changes, relative to the app's source"
    )
    diff: str = Field(min_length=1, max_length=MAX_DIFF_CHARS, description="a unified diff (`git diff` output)")


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
    trace_id: Annotated[str, Field(min_length=1, max_length=64, description="short_id or UUID of the trace to replay")],
    from_step: Annotated[
        int, Field(ge=1, le=10_000, description="the first step to run again (debug_run's suggested from_step)")
    ],
    source_diffs: Annotated[
        list[SourceDiffArg] | None,
        Field(max_length=MAX_SOURCE_DIFFS, description="patches to the app's source, applied in order"),
    ] = None,
    scenario_diff: Annotated[
        str | None, Field(max_length=MAX_DIFF_CHARS, description="a unified diff of the trace's scenario file")
    ] = None,
    wait_seconds: Annotated[
        float,
        Field(ge=0, le=50, description="how long to wait for the result before returning the replay id to poll"),
    ] = 40,
    max_tokens: Annotated[
        int, Field(ge=500, le=20000, description="token budget of this answer")
    ] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, ReplayView]:
    if not isinstance(confirmation, AcceptedElicitation) or not confirmation.data.run:
        raise ToolError("Not run: the user did not confirm running the app under test. Nothing was started.")
    client = client_of(ctx)
    diffs = [(d.path, d.diff) for d in source_diffs or []]
    async with replay_errors(trace_id=trace_id):
        status = await client.create_replay(
            trace_id, from_step=from_step, scenario_diff=scenario_diff, source_diffs=diffs, triggered_via="mcp"
        )
        status = await follow(client, status, wait_seconds, ctx.report_progress)
        return await answer_result(client, status, max_tokens)


def register(server: MCPServer[Any]) -> None:
    server.add_tool(
        replay_trace,
        name=SPEC.name,
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
