"""What `replay_trace`, `get_replay` and the `molar://replays/{id}` resource share: following a replay
with progress until it finishes or the caller's wait is over, its error wording, and its answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, TextContent

from molar_mcp.client import ApiClientError, NotFoundError, TraceClient
from molar_mcp.mcp.errors import tool_error
from molar_mcp.mcp.render import structured
from molar_mcp.mcp.replay_render import build_replay_view
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.mcp.views import ReplayView
from molar_mcp.models.diffs import TraceDiff
from molar_mcp.models.replays import FINAL_REPLAY_STATES, REPLAY_PHASES, ReplayStatus

POLL_SLICE_S = 10.0  # one long poll of the store at most this long, so progress keeps flowing
PHASES_TOTAL = len(REPLAY_PHASES) - 1

Progress = Callable[[float, float, str], Awaitable[None]]


async def _no_progress(done: float, total: float, message: str) -> None:
    return None


def replay_tool_error(exc: ApiClientError, *, trace_id: str | None = None) -> ToolError:
    """The replay refusals a model can act on, worded with what to do; the rest as every tool words them."""
    rid = f" (request id {exc.request_id})" if exc.request_id else ""
    if exc.status == 409:
        return ToolError(f"Cannot replay: {exc.message}.{rid}")
    if exc.status == 429:
        return ToolError(f"Too many replays: {exc.message}. Wait for running replays (get_replay) and retry.{rid}")
    if exc.error == "diff_does_not_apply":
        return ToolError(
            f"A diff does not apply, so nothing ran: {exc.message}\nIts context lines must match the source "
            f"exactly; fix that hunk and call replay_trace again.{rid}"
        )
    if exc.error == "not_replayable":
        return ToolError(f"This trace cannot be replayed: {exc.message}.{rid}")
    if exc.status == 422:
        return ToolError(f"Invalid replay request: {exc.message}. Fix it and call again.{rid}")
    if exc.status == 404 and trace_id is None:
        return ToolError(f"Not found: {exc.message}. replay_trace returns replay ids.{rid}")
    return tool_error(exc, trace_id=trace_id)


@asynccontextmanager
async def replay_errors(*, trace_id: str | None = None) -> AsyncIterator[None]:
    try:
        yield
    except ApiClientError as exc:
        raise replay_tool_error(exc, trace_id=trace_id) from exc


async def follow(
    client: TraceClient, status: ReplayStatus, wait_s: float, progress: Progress = _no_progress
) -> ReplayStatus:
    """Long-poll the replay until it finishes or `wait_s` is spent, reporting each new phase once
    (progress values only grow, as the spec requires)."""
    deadline = anyio.current_time() + wait_s
    reported = REPLAY_PHASES.index(status.phase)
    await progress(reported, PHASES_TOTAL, _phase_message(status))
    while status.status not in FINAL_REPLAY_STATES:
        remaining = deadline - anyio.current_time()
        if remaining <= 0.05:
            break
        status = await client.get_replay(status.id, wait_s=min(remaining, POLL_SLICE_S), phase=status.phase)
        index = REPLAY_PHASES.index(status.phase)
        if index > reported:
            reported = index
            await progress(index, PHASES_TOTAL, _phase_message(status))
    return status


def _phase_message(status: ReplayStatus) -> str:
    if status.phase == "queued":
        position = f" (position {status.queue_position})" if status.queue_position else ""
        return f"replay {status.id} queued{position}"
    return status.message or status.phase


async def answer(client: TraceClient, status: ReplayStatus, budget: int) -> tuple[ReplayView, str]:
    """The replay's view and text; once it succeeded, with the overview diff against its source trace."""
    diff: TraceDiff | None = None
    if status.status == "succeeded" and status.replay_trace_id:
        diff = await client.diff_traces(status.trace_id, status.replay_trace_id)
    return build_replay_view(status, diff, budget)


async def answer_result(client: TraceClient, status: ReplayStatus, budget: int) -> CallToolResult:
    view, text = await answer(client, status, budget)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured(view))


async def replay_resource(replay_id: str, ctx: Context) -> str:
    """A replay's status, and once it succeeded the diff against its source (JSON of `ReplayView`)."""
    uri = f"molar://replays/{replay_id}"
    client = client_of(ctx)
    try:
        view, _ = await answer(client, await client.get_replay(replay_id), DEFAULT_TOKEN_BUDGET * 2)
    except NotFoundError as exc:
        raise ResourceNotFoundError(f"{uri}: no such replay; replay_trace returns replay ids") from exc
    except ApiClientError as exc:
        raise ResourceError(f"{uri}: {exc.message}") from exc
    return view.model_dump_json(exclude_none=True)
