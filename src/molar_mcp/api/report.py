"""`GET /v1/traces/{id}/report.md`: the forensic markdown report, as an attachment; and
`GET /v1/traces/{id}/view`: what a trace viewer shows, as JSON (the MCP App viewer reads it).

`load_trace` and `load_facts` are also what the share viewer (`api/viewer.py`) reads a trace with.
"""

from __future__ import annotations

from datetime import UTC, datetime

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.openapi import documented
from molar_mcp.debugger.detectors import analyze
from molar_mcp.models import AnalysisFinding, Event, TraceDetail
from molar_mcp.reports import TraceFacts, build_facts, render_report

# A report reads the events it renders in pages of the store's own size, up to this many: enough for
# any recorded run we know (the demo's longest has 10,000); past it, the report says what it read.
REPORT_MAX_EVENTS = 20_000
_PAGE = 5_000


def load_trace(ctx: ApiContext, org_id: str, trace_ref: str) -> tuple[TraceDetail, list[Event], int]:
    """The trace's detail, its first `REPORT_MAX_EVENTS` events in seq order, and its event total.
    Blocking: run it in a worker thread. Raises `TraceNotFound`, and `TraceIsCold` for archived events."""
    detail = ctx.store.get_trace(org_id, trace_ref)
    ctx.tiers.require_hot(org_id, detail.id)
    events: list[Event] = []
    total = 0
    while len(events) < REPORT_MAX_EVENTS:
        page = ctx.store.list_events(
            org_id, detail.id, limit=min(_PAGE, REPORT_MAX_EVENTS - len(events)), offset=len(events)
        )
        events.extend(page.events)
        total = page.total
        if not page.events or len(events) >= total:
            break
    return detail, events, total


def load_facts(ctx: ApiContext, org_id: str, trace_ref: str) -> TraceFacts:
    """What a viewer shows of the trace: its facts and the detectors' findings (run here, deterministic
    and stored nowhere: reading a trace writes nothing). Blocking, raises as `load_trace`."""
    detail, events, total = load_trace(ctx, org_id, trace_ref)
    findings = [AnalysisFinding.model_validate(f.model_dump()) for f in analyze(events, detail.status)]
    return build_facts(detail, events, events_total=total, findings=findings)


@documented(
    summary="What a trace viewer shows, as JSON: steps, the failure, findings, the causal request and bodies",
    response=TraceFacts,
    errors=(404, 409),
)
async def trace_view(request: Request) -> JSONResponse:
    ctx = api_context(request)
    facts = await anyio.to_thread.run_sync(load_facts, ctx, org_of(request), request.path_params["trace_id"])
    return JSONResponse(facts.model_dump(mode="json"), headers={"cache-control": "private, no-store"})


@documented(
    summary="The forensic markdown report of a trace, as an attachment (secrets masked)",
    media_type="text/markdown",
    errors=(404, 409),
)
async def report_md(request: Request) -> Response:
    ctx = api_context(request)
    org = org_of(request)
    trace_ref = request.path_params["trace_id"]
    detail, events, total = await anyio.to_thread.run_sync(load_trace, ctx, org, trace_ref)
    text = render_report(detail, events, events_total=total, generated_at=datetime.now(UTC))
    return Response(
        text,
        media_type="text/markdown; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="trace-{detail.short_id}.md"',
            "x-content-type-options": "nosniff",
            "cache-control": "private, no-store",
        },
    )


def routes() -> list[Route]:
    return [
        Route("/v1/traces/{trace_id}/report.md", report_md, methods=["GET"]),
        Route("/v1/traces/{trace_id}/view", trace_view, methods=["GET"]),
    ]
