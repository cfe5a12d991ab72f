"""`debug_run`: why did this run fail — grounded findings with cited events, and a replay to try.

Without a model (today) the answer is the deterministic detectors' findings and the events they cite,
labelled "Analysis without a model:". With a model (`mcp/debug_model.py`, the debugger chats) the
model's answer comes beside the same findings and evidence.
"""

import math
import time
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from molar_mcp.client import ApiClientError, TraceClient
from molar_mcp.mcp.debug_model import answer_with_model
from molar_mcp.mcp.debug_render import EVIDENCE_MAX, build_debug_view, cited_seqs, debug_structured
from molar_mcp.mcp.errors import store_errors
from molar_mcp.mcp.sampling import ClientModel
from molar_mcp.mcp.state import client_of
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET, estimate_tokens
from molar_mcp.mcp.tools.registry import add_tool
from molar_mcp.mcp.tools.spec import ToolSpec
from molar_mcp.mcp.viewer_app import UI_META, viewer_meta, wants_viewer
from molar_mcp.mcp.views import DebugView, ToolCallRecord
from molar_mcp.models import Analysis, Event, TraceDetail

SPEC = ToolSpec(
    name="debug_run",
    scope="mcp:debug",
    rest=("POST /v1/traces/{id}/analyze", "POST /v1/traces/{id}/chats", "POST /v1/chats/{id}/messages"),
    long_running=True,
)

DESCRIPTION = """Why a failed run failed, where, and what to replay.

trace_id from list_traces; get_trace(step=N) reads the critical step. Findings best first (label,
confidence, critical step = the cause, cited events), a suggested replay, which model answered.
A question gets a model's answer; pass chat_id back to follow up."""

TOTAL_STAGES = 3
WINDOW = 40  # cited seqs this close together are read with one events call
WINDOW_TRIES = 3
WINDOW_LIMIT = 200

M = TypeVar("M", bound=BaseModel)


class CallLog:
    """Times each REST call and records it as the `tool_calls` of the answer."""

    def __init__(self) -> None:
        self.records: list[ToolCallRecord] = []

    async def call(self, tool: str, arguments: dict[str, Any], request: Awaitable[M]) -> M:
        start = time.perf_counter()
        try:
            result = await request
        except ApiClientError as exc:
            self._add(tool, arguments, 0, start, f"{exc.status} {exc.error}: {exc.message}")
            raise
        self._add(tool, arguments, estimate_tokens(result.model_dump_json()), start, None)
        return result

    def _add(self, tool: str, arguments: dict[str, Any], tokens: int, start: float, error: str | None) -> None:
        ms = round((time.perf_counter() - start) * 1000, 1)
        self.records.append(
            ToolCallRecord(tool=tool, arguments=arguments, result_tokens=tokens, duration_ms=ms, error=error)
        )


async def debug_run(
    ctx: Context,
    trace_id: Annotated[str, Field(min_length=1, max_length=64)],
    question: Annotated[
        str | None,
        Field(max_length=2000),
    ] = None,
    chat_id: Annotated[
        str | None,
        Field(max_length=64),
    ] = None,
    max_tokens: Annotated[int, Field(ge=1000, le=20000)] = DEFAULT_TOKEN_BUDGET,
) -> Annotated[CallToolResult, DebugView] | InputRequiredResult:
    client = client_of(ctx)
    log = CallLog()
    analysis: Analysis | None = None
    detail: TraceDetail | None = None

    await ctx.report_progress(0, TOTAL_STAGES, f"Running the detectors over trace {trace_id}")
    async with store_errors(trace_id=trace_id):
        # Independent: the analysis, and the trace's header and steps (status, step titles).
        async def load_analysis() -> None:
            nonlocal analysis
            analysis = await log.call("POST /v1/traces/{id}/analyze", {"trace_id": trace_id}, client.analyze(trace_id))

        async def load_detail() -> None:
            nonlocal detail
            detail = await log.call("GET /v1/traces/{id}", {"trace_id": trace_id}, client.get_trace(trace_id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(load_analysis)
            tg.start_soon(load_detail)
        assert analysis is not None
        found = len(analysis.findings)
        await ctx.report_progress(1, TOTAL_STAGES, f"{found} findings; reading the events they cite")
        assert detail is not None
        quoted = await quote_events(
            client,
            log,
            trace_id,
            cited_seqs(analysis)[:EVIDENCE_MAX],
            total=detail.event_count,
            max_seq=max((s.last_seq for s in detail.steps), default=None),
        )

    async def progress(message: str) -> None:
        await ctx.report_progress(2, TOTAL_STAGES, message)

    await progress("Asking a model, if one is configured")
    async with store_errors(trace_id=trace_id):
        reply = await answer_with_model(
            client,
            trace_id=trace_id,
            question=question,
            chat_id=chat_id,
            analysis=analysis,
            progress=progress,
            client_model=ClientModel(ctx),
        )
    if isinstance(reply, InputRequiredResult):
        return reply  # 2026-07-28: the client samples its model and calls again (mcp/sampling.py)
    calls = log.records + (reply.tool_calls if reply is not None else [])
    view, text = build_debug_view(
        analysis, detail, quoted, question=question, chat_id=chat_id, tool_calls=calls, budget=max_tokens, reply=reply
    )
    # A client that renders MCP Apps gets the viewer's facts beside the answer (not for the model).
    meta = await viewer_meta(client, trace_id) if wants_viewer(ctx) else None
    await ctx.report_progress(TOTAL_STAGES, TOTAL_STAGES, "Done")
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=debug_structured(view), _meta=meta
    )


async def quote_events(
    client: TraceClient, log: CallLog, trace_id: str, seqs: list[int], *, total: int, max_seq: int | None
) -> dict[int, Event]:
    """The events with these seqs, read in windows of nearby seqs (one events call each, concurrently).

    The events API pages by position, not by seq. Seqs usually count up from 0 without gaps (position =
    seq); otherwise a seq's position is estimated from how densely the trace's seqs are spread
    (`max_seq` over `total` events), and a window that misses moves by what the page it read shows,
    at most `WINDOW_TRIES` calls in all. A seq still not found is left out of the quotes."""
    found: dict[int, Event] = {}
    windows: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if windows and seq - windows[-1][0] < WINDOW:
            windows[-1].append(seq)
        else:
            windows.append([seq])
    density = max_seq / (total - 1) if max_seq is not None and total > 1 and max_seq >= total else 1.0

    def position(seq: int) -> int:
        return max(0, min(total - 1, int(seq / density)))

    async def read(window: list[int]) -> None:
        offset = position(window[0])
        limit = position(window[-1]) - offset + 1
        for _ in range(WINDOW_TRIES):
            limit = max(1, min(limit, WINDOW_LIMIT))
            page = await log.call(
                "GET /v1/traces/{id}/events",
                {"trace_id": trace_id, "offset": offset, "limit": limit},
                client.get_events(trace_id, offset=offset, limit=limit),
            )
            found.update((e.seq, e) for e in page.events if e.seq in window)
            missing = [seq for seq in window if seq not in found]
            if not missing:
                return
            if not page.events:  # past the end: read the trace's last events
                if offset == 0:
                    return
                offset = max(0, page.total - limit)
                continue
            first, last, n = page.events[0].seq, page.events[-1].seq, len(page.events)
            spread = max(1.0, (last - first) / (n - 1)) if n > 1 else density  # seqs per position here
            if missing[0] < first:
                back = math.ceil((first - missing[0]) / spread)
                offset, limit = max(0, offset - back), limit + back
            elif missing[-1] > last and n == limit:
                offset, limit = offset + n, math.ceil((missing[-1] - last) / spread)
            else:
                return  # the window was read through: the seqs not found do not exist

    async with anyio.create_task_group() as tg:
        for window in windows:
            tg.start_soon(read, window)
    return found


def register(server: MCPServer[Any]) -> None:
    add_tool(
        server,
        debug_run,
        SPEC,
        title="Debug run",
        description=DESCRIPTION,
        annotations=ToolAnnotations(
            title="Debug run",
            # It stores the analysis it runs (and links the failure to its incident): not read-only, but
            # nothing is lost and calling again with the same events changes nothing.
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        meta=UI_META,
    )
