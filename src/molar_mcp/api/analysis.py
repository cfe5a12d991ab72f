"""Analysis and incidents: `POST /v1/traces/{id}/analyze` runs the deterministic
detectors over all of a trace's events and stores the findings; `GET /v1/traces/{id}/analysis` reads
them; `GET /v1/incidents` lists the org's failures clustered by cause (the signature without its
step); `PATCH /v1/incidents/{id}` sets an incident's status or owner."""

from __future__ import annotations

import functools
import logging
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from molar_mcp.api.analysis_worker import AnalysisFailed, AnalysisWorker
from molar_mcp.api.bodies import parse_json
from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError
from molar_mcp.api.openapi import Param, documented, string
from molar_mcp.debugger.detectors import ANALYZER_VERSION, Finding, analyze, failure_signature
from molar_mcp.debugger.suggest import suggest_replay
from molar_mcp.models import INCIDENT_STATUSES, Analysis, AnalysisFinding, IncidentUpdate
from molar_mcp.store.analysis import KEEP, AnalysisSubject, IncidentNotFound

log = logging.getLogger("molar_mcp.api")

MAX_INCIDENTS_LIMIT = 200
MAX_PATCH_BYTES = 64 * 1024
MAX_FAILURES = 1_000


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _query(request: Request, name: str, max_len: int = 200) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise _bad(f"{name} is longer than {max_len} characters")
    return raw


def _limit(request: Request, default: int = 50) -> int:
    raw = _query(request, "limit", 12)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_INCIDENTS_LIMIT:
        raise _bad(f"limit must be an integer between 1 and {MAX_INCIDENTS_LIMIT}, got {raw!r}")
    return int(raw)


def _flag(request: Request, name: str) -> bool:
    raw = _query(request, name, 8)
    if raw is None or raw.lower() in ("false", "0"):
        return False
    if raw.lower() in ("true", "1"):
        return True
    raise _bad(f"{name} must be true or false; got {raw!r}")


def run_analysis(
    ctx: ApiContext, org: str, trace_ref: str, *, rerun: bool = False, findings: list[Finding] | None = None
) -> Analysis:
    """Analyse a trace and store the result (blocking: run it in a worker thread). A stored analysis of
    the same events and status by the same analyzer version is returned as it is (the detectors are
    deterministic) unless `rerun`; `findings` the caller already has are stored without a second run.
    Saving also fills a missing failure signature and the incident. A big trace is analysed in the
    worker process (api/analysis_worker.py); an analysis that did not finish raises 503 `analysis_failed`."""
    subject, stored = ctx.analysis.reusable(org, trace_ref, ANALYZER_VERSION)
    if stored is not None and not rerun and findings is None:
        return stored
    worker = ctx.analysis_worker
    if findings is None and worker is not None and worker.wanted(subject.event_count):
        with worker.turn():  # stored before the turn ends, so that the next in line finds it
            # The analysis this request waited behind (the one after the ingest) may be this one.
            subject, stored = ctx.analysis.reusable(org, trace_ref, ANALYZER_VERSION)
            if stored is not None and not rerun:
                return stored
            return _save(ctx, org, subject, _in_worker(ctx, worker, org, subject))
    if findings is None:
        # Light rows, not models: the detectors read a few fields of most events (bench/bench_debug_run.py).
        findings = analyze(ctx.store.stored_events(org, subject.trace_id), subject.status)
    return _save(ctx, org, subject, findings)


def _save(ctx: ApiContext, org: str, subject: AnalysisSubject, findings: list[Finding]) -> Analysis:
    analysis = ctx.analysis.save_analysis(
        org,
        subject,
        analyzer_version=ANALYZER_VERSION,
        findings=[AnalysisFinding.model_validate(f.model_dump()) for f in findings],
        signature=failure_signature(findings),
        suggested_replay=suggest_replay(findings),
    )
    ctx.analysis_failures.pop((org, subject.trace_id), None)
    return analysis


def _in_worker(ctx: ApiContext, worker: AnalysisWorker, org: str, subject: AnalysisSubject) -> list[Finding]:
    """Off this process's GIL and memory: the same detectors over the same rows, in the worker."""
    try:
        return worker.analyse(org, subject.trace_id, subject.status)
    except AnalysisFailed as exc:
        failed(ctx, org, subject.trace_id, str(exc))
        raise ApiError(503, "analysis_failed", str(exc)) from None


def failed(ctx: ApiContext, org: str, trace_id: str, message: str) -> None:
    """Remember why the analysis of a trace did not finish (the latest `MAX_FAILURES` traces), until one does."""
    failures = ctx.analysis_failures
    failures.pop((org, trace_id), None)
    failures[(org, trace_id)] = message
    while len(failures) > MAX_FAILURES:
        failures.pop(next(iter(failures)))


async def analyze_in_background(ctx: ApiContext, org: str, trace_id: str) -> None:
    """After an ingest: have the analysis (and the incident) ready before an agent asks for it. One that
    does not finish is logged, and `GET /v1/traces/{id}/analysis` answers why (503 `analysis_failed`)."""
    try:
        await anyio.to_thread.run_sync(functools.partial(run_analysis, ctx, org, trace_id))
    except ApiError as exc:
        log.error("background analysis of trace %s failed: %s", trace_id, exc.message)
    except Exception as exc:  # a background job must not fail silently, nor take the server down
        log.exception("background analysis of trace %s failed", trace_id)
        failed(ctx, org, trace_id, f"the detectors failed on trace {trace_id!r}: {type(exc).__name__}: {exc}")


@documented(
    summary="Run the detectors over every event of the trace and store the findings",
    response=Analysis,
    query=(
        Param(
            "rerun",
            string(["true", "false", "1", "0"]),
            "run the detectors even when a stored analysis of the same events exists",
        ),
    ),
    errors=(400, 404, 503),
)
async def analyze_trace(request: Request) -> JSONResponse:
    """Run the detectors over every event of the trace and store the findings. A stored analysis made
    from the same events and status by the same analyzer version is returned as it is (the detectors
    are deterministic); `?rerun=true` runs them anyway."""
    ctx = api_context(request)
    org = org_of(request)
    trace_ref = request.path_params["trace_id"]
    rerun = _flag(request, "rerun")
    analysis = await anyio.to_thread.run_sync(functools.partial(run_analysis, ctx, org, trace_ref, rerun=rerun))
    return JSONResponse(analysis.model_dump(mode="json"))


@documented(summary="The trace's stored analysis", response=Analysis, errors=(400, 404, 503))
async def get_analysis(request: Request) -> JSONResponse:
    ctx = api_context(request)
    trace_ref = request.path_params["trace_id"]
    org = org_of(request)
    analysis = await anyio.to_thread.run_sync(ctx.analysis.get_analysis, org, trace_ref)
    if analysis is None and ctx.analysis_failures:
        subject, _ = await anyio.to_thread.run_sync(ctx.analysis.reusable, org, trace_ref, ANALYZER_VERSION)
        why = ctx.analysis_failures.get((org, subject.trace_id))
        if why is not None:
            raise ApiError(503, "analysis_failed", why)
    if analysis is None:
        raise ApiError(
            404,
            "not_analyzed",
            f"trace {trace_ref!r} has not been analysed yet; POST /v1/traces/{trace_ref}/analyze runs the detectors",
        )
    return JSONResponse(analysis.model_dump(mode="json"))


async def list_incidents(request: Request) -> JSONResponse:
    ctx = api_context(request)
    status = _query(request, "status", 32)
    if status is not None and status not in INCIDENT_STATUSES:
        raise _bad(f"status must be one of {', '.join(INCIDENT_STATUSES)}; got {status!r}")
    limit = _limit(request)
    cursor = _query(request, "cursor", 200)
    org = org_of(request)
    page = await anyio.to_thread.run_sync(
        lambda: ctx.analysis.list_incidents(org, status=status, limit=limit, cursor=cursor)
    )
    return JSONResponse(page.model_dump(mode="json"))


async def update_incident(request: Request) -> JSONResponse:
    ctx = api_context(request)
    body = await _json_object(request)
    if "status" in body and body["status"] is None:
        raise ApiError(422, "validation_error", f"status cannot be null; send one of {', '.join(INCIDENT_STATUSES)}")
    try:
        update = IncidentUpdate.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(422, "validation_error", f"{where}: {err['msg']}") from None
    if not update.model_fields_set:
        raise ApiError(422, "validation_error", "send status and/or owner to change")
    org = org_of(request)
    incident_id = request.path_params["incident_id"]
    owner = update.owner if "owner" in update.model_fields_set else KEEP
    try:
        incident = await anyio.to_thread.run_sync(
            lambda: ctx.analysis.update_incident(org, incident_id, status=update.status, owner=owner)
        )
    except IncidentNotFound:
        raise ApiError(
            404, "not_found", f"no incident {incident_id!r} in this org; GET /v1/incidents lists them"
        ) from None
    return JSONResponse(incident.model_dump(mode="json"))


async def _json_object(request: Request) -> dict[str, Any]:
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PATCH_BYTES:
            raise ApiError(413, "payload_too_large", f"the body is larger than {MAX_PATCH_BYTES} bytes")
    data = parse_json(body)
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", 'send a JSON object such as {"status": "acknowledged"}')
    return data


def routes() -> list[Route]:
    return [
        Route("/v1/traces/{trace_id}/analyze", analyze_trace, methods=["POST"]),
        Route("/v1/traces/{trace_id}/analysis", get_analysis, methods=["GET"]),
        Route("/v1/incidents", list_incidents, methods=["GET"]),
        Route("/v1/incidents/{incident_id}", update_incident, methods=["PATCH"]),
    ]
