"""Signed exports of a trace, served by the store
itself: `GET /v1/signed/traces/{id}/{events.ndjson|summary.json|report.md}?org&exp&kid&sig`."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from molar_mcp.api.context import ApiContext, api_context
from molar_mcp.api.errors import ApiError
from molar_mcp.api.openapi import Param, documented, string
from molar_mcp.api.report import load_trace
from molar_mcp.models import TraceDetail
from molar_mcp.reports import render_report

EXPORTS = {"ndjson": "events.ndjson", "summary": "summary.json", "report": "report.md"}
_NDJSON_PAGE = 1000


def export_path(trace_id: str, name: str) -> str:
    return f"/v1/signed/traces/{trace_id}/{name}"


def export_urls(ctx: ApiContext, base: str, detail: TraceDetail) -> dict[str, str]:
    """Signed URLs of the exports the trace has: events and report only while its events are hot."""
    kinds = ["summary"] if detail.tier == "cold" else ["ndjson", "summary", "report"]
    return {kind: base + ctx.signer.sign(export_path(detail.id, EXPORTS[kind]), detail.org_id) for kind in kinds}


def checked_org(request: Request) -> str:
    """The org a signed URL was issued for; 403 when the URL is tampered with or expired."""
    ctx = api_context(request)
    q = request.query_params
    org = q.get("org", "")
    problem = ctx.signer.check(request.url.path, org, q.get("exp", ""), q.get("kid", ""), q.get("sig", ""))
    if problem == "expired":
        raise ApiError(403, "forbidden", "this signed URL has expired; GET the trace again for a fresh one")
    if problem is not None:
        raise ApiError(403, "forbidden", "this signed URL is not valid")
    return org


# On every response of a signed URL (exports and artifacts): no sniffing a type into HTML, and a CSP
# sandbox so nothing served there runs as this origin (the authorization server's).
SIGNED_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'",
}


@documented(
    summary="Download a trace export through a signed URL (events.ndjson, summary.json, report.md)",
    media_type="application/octet-stream",
    query=[Param(n, string(), required=True) for n in ("org", "exp", "kid", "sig")],
    errors=(403, 404, 409),
)
async def signed_export(request: Request) -> Response:
    ctx = api_context(request)
    org = checked_org(request)
    trace_ref, name = request.path_params["trace_id"], request.path_params["name"]
    if name == "summary.json":
        detail = await anyio.to_thread.run_sync(ctx.store.get_trace, org, trace_ref)
        return JSONResponse(detail.model_dump(mode="json", exclude={"signed_urls"}), headers=SIGNED_HEADERS)
    if name == "report.md":
        detail, events, total = await anyio.to_thread.run_sync(load_trace, ctx, org, trace_ref)
        text = render_report(detail, events, events_total=total, generated_at=datetime.now(UTC))
        return Response(text, media_type="text/markdown; charset=utf-8", headers=SIGNED_HEADERS)
    if name != "events.ndjson":
        raise ApiError(404, "not_found", f"no export {name!r}; exports are {', '.join(EXPORTS.values())}")
    await anyio.to_thread.run_sync(ctx.tiers.require_hot, org, trace_ref)

    async def lines() -> AsyncIterator[bytes]:
        offset = 0
        while True:
            page = await anyio.to_thread.run_sync(
                functools.partial(ctx.store.list_events, org, trace_ref, limit=_NDJSON_PAGE, offset=offset)
            )
            for ev in page.events:
                yield ev.model_dump_json(exclude={"step"}, exclude_none=True).encode() + b"\n"
            offset += len(page.events)
            if not page.events or offset >= page.total:
                return

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=SIGNED_HEADERS)


def routes() -> list[Route]:
    return [Route("/v1/signed/traces/{trace_id}/{name}", signed_export, methods=["GET"])]
