"""`/v1/traces` routes: list, detail, events slice, bundle ingest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from molar_mcp.api.analysis import analyze_in_background
from molar_mcp.api.blobs import signed_urls
from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError, error_response
from molar_mcp.api.idempotency import (
    HEADER,
    REPLAYED_HEADER,
    IdempotentIngest,
    StillIngesting,
    idempotency_key,
    request_hash,
    run_idempotent,
)
from molar_mcp.api.memory import RELEASE_AFTER_EVENTS, release_memory
from molar_mcp.api.openapi import Param, documented, integer, string
from molar_mcp.api.reads import INLINE_EVENTS_LIMIT, store_read
from molar_mcp.api.runs import ingest_for_run
from molar_mcp.client.asgi_stream import MODEL_ANSWER, MODEL_EXTENSION
from molar_mcp.ingest import Overrides
from molar_mcp.ingest.formats import FORMATS
from molar_mcp.ingest.playwright import Attachment
from molar_mcp.ingest.results import TestResultInfo
from molar_mcp.ingest.service import IngestOutcome, StoredTrace, Upload
from molar_mcp.models import (
    TRACE_SOURCES,
    TRACE_STATUSES,
    TRACE_TIERS,
    Event,
    EventsResponse,
    IngestedTrace,
    IngestResponse,
    RejectedFile,
    TraceDetail,
    TraceListResponse,
    TraceWithFailures,
)
from molar_mcp.models.limits import MAX_INT64
from molar_mcp.store import TraceQuery
from molar_mcp.store.tiers import TraceIsCold

MAX_LIST_LIMIT = 200
MAX_EVENTS_LIMIT = 1000
_FORM_OVERHEAD = 64 * 1024  # room for multipart boundaries and the small fields beside the file
_MAX_ATTACHMENTS = 20
_ANALYZE_AT_INGEST = 50  # a report's first traces are analysed at once; the rest on first debug_run


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _bad(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _enum_param(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise _bad(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
    return raw


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{name} must be an ISO 8601 time such as 2026-05-31T10:22:00Z; got {raw!r}") from None
    # A time without an offset is UTC, as the store reads it; and `from` and `to` must compare.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _uuid_param(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise _bad(f"{name} must be a UUID; got {raw!r}") from None


def _str_param(request: Request, name: str, max_len: int = 500) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise _bad(f"{name} is longer than {max_len} characters")
    return raw


def _bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise _bad(f"{name} must be true or false; got {raw!r}")


def trace_query_from(request: Request) -> TraceQuery:
    """Read and validate every filter of `GET /v1/traces`; unknown values are a 400, not ignored."""
    query = TraceQuery(
        scenario_id=_uuid_param(request, "scenario_id"),
        scenario_slug=_str_param(request, "scenario", 200),
        status=_enum_param(request, "status", TRACE_STATUSES),
        source=_enum_param(request, "source", TRACE_SOURCES),
        signature=_str_param(request, "signature"),
        tier=_enum_param(request, "tier", TRACE_TIERS),
        code_sha=_str_param(request, "commit", 64),
        q=_str_param(request, "q"),
        created_from=_time_param(request, "from"),
        created_to=_time_param(request, "to"),
        flaky=_bool_param(request, "flaky"),
        newly_failing=_bool_param(request, "newly_failing"),
        run_id=_str_param(request, "run", 64),
        limit=_int_param(request, "limit", 50, 1, MAX_LIST_LIMIT),
        cursor=_str_param(request, "cursor", 200),
        row_cursors=_bool_param(request, "row_cursors") or False,
    )
    if query.created_from and query.created_to and query.created_from > query.created_to:
        raise _bad("from is after to")
    return query


@documented(
    summary="List traces, newest first, with filters",
    response=TraceListResponse,
    query=[
        Param("scenario_id", string(fmt="uuid")),
        Param("scenario", string(), "scenario slug"),
        Param("status", string(TRACE_STATUSES)),
        Param("source", string(TRACE_SOURCES)),
        Param("signature", string(), "exact failure signature"),
        Param("tier", string(TRACE_TIERS)),
        Param("commit", string(), "code sha or its prefix"),
        Param("q", string(), "full-text search"),
        Param("from", string(fmt="date-time")),
        Param("to", string(fmt="date-time")),
        Param(
            "flaky",
            {"type": "boolean"},
            "runs of tests that are flaky (passed only on retry, or pass and fail by turns)",
        ),
        Param("newly_failing", {"type": "boolean"}, "failing runs of tests that passed on the runs before"),
        Param("run", string(), "a run's id or short id: its traces"),
        Param("limit", integer(1, MAX_LIST_LIMIT, 50)),
        Param("cursor", string(), "next_cursor of the previous page"),
        Param("row_cursors", {"type": "boolean"}, "also answer the cursor after each row (row_cursors)"),
    ],
    errors=(400,),
)
async def list_traces(request: Request) -> Response:
    ctx = api_context(request)
    query = trace_query_from(request)
    page = await store_read(request, lambda: ctx.store.list_traces(org_of(request), query))
    # The list's shape is `items` and `next_cursor`; `row_cursors` only when asked for. Serialised in one
    # call (pydantic's JSON, the same bytes as dumping to dicts and then to JSON, in ~40% of the time).
    if query.row_cursors:
        return model_answer(request, page)
    return Response(page.model_dump_json(exclude={"row_cursors"}), media_type="application/json")


class _ModelAnswer(Response):
    """A model handed to the in-process reader that asked for it (`MODEL_EXTENSION`), beside an empty body."""

    def __init__(self, model: BaseModel) -> None:
        super().__init__(b"", media_type="application/json")
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": b"", MODEL_ANSWER: self.model})


def model_answer(request: Request, model: BaseModel) -> Response:
    """`model` as JSON (pydantic's, in one call); to the server's own in-process reader, which would parse
    that JSON back into this very model (client/asgi_stream.py `MODEL_EXTENSION`), the model itself."""
    if MODEL_EXTENSION in (request.scope.get("extensions") or {}):
        return _ModelAnswer(model)
    return Response(model.model_dump_json(), media_type="application/json")


@documented(
    summary="Get a trace (by UUID or short id), with signed artifact URLs",
    response=TraceDetail,
    query=[
        Param(
            "failed_events",
            integer(1, MAX_EVENTS_LIMIT),
            "also its first N failed events in the same read (`failed_events`: what "
            "GET /v1/traces/{id}/events?ok=false&limit=N answers; 409 while its events are archived)",
        ),
        Param(
            "signed_urls",
            {"type": "boolean", "default": True},
            "false: without signed URLs (`signed_urls` empty; nothing signed or presigned), for a reader "
            "that does not hand them on",
        ),
    ],
    errors=(400, 404, 409),
)
async def get_trace(request: Request) -> Response:
    ctx = api_context(request)
    failed = _int_param(request, "failed_events", 0, 1, MAX_EVENTS_LIMIT)
    sign = _bool_param(request, "signed_urls") is not False
    org = org_of(request)
    trace_ref = request.path_params["trace_id"]

    def run() -> tuple[TraceDetail, EventsResponse | None]:
        if not failed:
            detail, failing = ctx.store.get_trace(org, trace_ref), None
        else:
            # The detail and its failed events in one read (one transaction: a third of the round trips of
            # three reads); the trace's tier comes with its row.
            detail, failing = ctx.store.get_trace_with_failures(org, trace_ref, failed)
            if failing is None:
                raise TraceIsCold(detail.id)
        if detail.status == "running" and detail.source == "agent":
            # An OpenTelemetry run may hold spans not shown yet (api/otlp.py): say how many.
            detail.spans_waiting = ctx.otlp.spans_waiting(org, detail.id) or None
        return detail, failing

    detail, failing = await store_read(request, run)
    if sign:  # signed afresh on every read: refreshing the detail renews the URLs
        detail.signed_urls = signed_urls(ctx, request, detail)
    # Serialised in one call (pydantic's JSON: the same JSON as dumping to dicts and then to JSON, a float's
    # exponent written 1e-7 rather than 1e-07, in ~40% of the time); the failed events follow the detail's
    # fields, as `TraceWithFailures` says.
    # (`__dict__`: the detail's fields, as `dict(detail)` gives them — the model keeps no extras — in half the time)
    whole = detail if failing is None else TraceWithFailures.model_construct(**detail.__dict__, failed_events=failing)
    return model_answer(request, whole)


@documented(
    summary="A slice of a trace's ordered events",
    response=EventsResponse,
    query=[
        Param(
            "step",
            string(),
            "a top-level step number (3), a nested step path (3.2) or a step id: the step and its subtree",
        ),
        Param("kind", string(), "event kind, or a family such as 'network'"),
        Param("ok", {"type": "boolean"}),
        Param("limit", integer(1, MAX_EVENTS_LIMIT, 100)),
        Param("offset", integer(0, default=0)),
    ],
    errors=(400, 404, 409),
)
async def list_events(request: Request) -> JSONResponse:
    ctx = api_context(request)
    step = _str_param(request, "step", 128)
    kind = _str_param(request, "kind", 64)
    ok = _bool_param(request, "ok")
    limit = _int_param(request, "limit", 100, 1, MAX_EVENTS_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    org = org_of(request)
    trace_ref = request.path_params["trace_id"]

    def run() -> dict[str, Any]:
        ctx.tiers.require_hot(org, trace_ref)
        page = ctx.store.list_events(org, trace_ref, step=step, kind=kind, ok=ok, limit=limit, offset=offset)
        return page.model_dump(mode="json")

    return JSONResponse(await store_read(request, run, short=limit <= INLINE_EVENTS_LIMIT))


@documented(
    summary="One event of a trace, whole (payload and body uncut), by its seq",
    response=Event,
    errors=(400, 404, 409),
)
async def get_event(request: Request) -> JSONResponse:
    ctx = api_context(request)
    raw = request.path_params["seq"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise _bad(f"seq must be a non-negative integer, got {raw!r}")
    seq = int(raw)
    org = org_of(request)
    trace_ref = request.path_params["trace_id"]

    def run() -> dict[str, Any] | None:
        ctx.tiers.require_hot(org, trace_ref)
        event = ctx.store.get_event(org, trace_ref, seq)
        return event.model_dump(mode="json") if event is not None else None

    found = await store_read(request, run)
    if found is None:
        raise ApiError(
            404,
            "not_found",
            f"trace {trace_ref!r} has no event with seq {seq}; GET /v1/traces/{trace_ref}/events lists its events",
        )
    return JSONResponse(found)


@documented(
    summary="Ingest a file: a Molar bundle, a Playwright trace.zip, a Playwright JSON report or JUnit XML",
    response=IngestResponse,
    status=201,
    multipart={
        "file": {"type": "string", "format": "binary", "x-required": True, "description": "the upload"},
        "bundle": {"type": "string", "format": "binary", "deprecated": True, "description": "older name of `file`"},
        "format": {"type": "string", "enum": list(FORMATS), "description": "default: detected from the content"},
        "scenario_slug": {"type": "string", "description": "default: from the file (bundle summary, test identity)"},
        "run_id": {"type": "string", "description": "the run this upload belongs to (POST /v1/runs)"},
        "result": {"type": "string", "description": "JSON of the Playwright Test result of this attempt"},
        "attachment": {"type": "string", "format": "binary", "description": "failure screenshot, error-context.md…"},
        "keep_secrets": {"type": "boolean", "description": "store passwords, tokens and cookies unmasked"},
        "source": {"type": "string", "enum": list(TRACE_SOURCES)},
        "commit_sha": {"type": "string"},
        "pr_number": {"type": "integer"},
    },
    query=[
        Param(
            "Idempotency-Key",
            string(),
            "a retry with the same key (or the same upload sent again) answers 200 with the first answer, "
            "header Idempotent-Replayed: true, and stores nothing; the same key with another upload is 422",
            where="header",
        )
    ],
    errors=(400, 404, 409, 413, 415, 422, 503),
)
async def ingest(request: Request) -> JSONResponse:
    ctx = api_context(request)
    limit = ctx.max_bundle_bytes
    # Media types are case-insensitive (RFC 9110 §8.3.1).
    content_type = request.headers.get("content-type", "").lower()
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "POST /v1/traces/ingest takes multipart/form-data with a `file` field",
        )
    declared = request.headers.get("content-length")
    overall = limit + _FORM_OVERHEAD  # the file, its attachments and fields together
    if declared is not None and declared.isdigit() and int(declared) > overall:
        raise ApiError(413, "payload_too_large", f"the request is larger than the {limit}-byte upload limit")
    limited = Request(request.scope, _limited_receive(request, overall))
    attachments: list[Attachment] = []
    # Files: the upload, its attachments, and `result` (a reporter may send it as a file part).
    async with limited.form(max_files=2 + _MAX_ATTACHMENTS, max_fields=20) as form:
        upload = form.get("file") or form.get("bundle")
        if not isinstance(upload, UploadFile):
            raise ApiError(
                422, "validation_error", "the form has no `file` field (the upload; `bundle` is its older name)"
            )
        data = await upload.read()
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"the file is {len(data)} bytes; the limit is {limit} bytes")
        for part in form.getlist("attachment"):
            if isinstance(part, UploadFile):
                attachments.append(
                    Attachment(
                        part.filename or "attachment",
                        part.content_type or "application/octet-stream",
                        await part.read(),
                    )
                )
        result = await _result_part(form.get("result"))
        overrides = Overrides(
            scenario_slug=_form_str(form.get("scenario_slug")),
            source=_form_str(form.get("source")),
            commit_sha=_form_str(form.get("commit_sha")),
            pr_number=_form_int(form.get("pr_number")),
        )
        fmt = _form_str(form.get("format"))
        run_ref = _form_str(form.get("run_id"))
        keep = (_form_str(form.get("keep_secrets")) or "").lower() in ("1", "true", "yes")
        filename = upload.filename
    if fmt is not None and fmt not in FORMATS:
        raise ApiError(422, "validation_error", f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if overrides.scenario_slug is not None and len(overrides.scenario_slug) > 200:
        raise ApiError(422, "validation_error", "scenario_slug is longer than 200 characters")
    org = org_of(request)
    key = idempotency_key(request.headers.get(HEADER))
    digest = request_hash(
        {
            "scenario_slug": overrides.scenario_slug,
            "source": overrides.source,
            "commit_sha": overrides.commit_sha,
            "pr_number": None if overrides.pr_number is None else str(overrides.pr_number),
            "format": fmt,
            "run_id": run_ref,
            "keep_secrets": "true" if keep else None,
            "result": result.model_dump_json() if result is not None else None,
        },
        [("file", filename or "", data), *(("attachment", a.name, a.data) for a in attachments)],
    )
    job = Upload(
        data=data,
        filename=filename,
        format=fmt,
        overrides=overrides,
        result=result,
        attachments=attachments,
        keep_secrets=keep,
        max_bytes=limit,
    )

    def stored() -> tuple[dict[str, Any], list[StoredTrace]]:
        outcome = ingest_for_run(ctx, org, job, run_ref)
        return _ingest_answer(outcome), outcome.traces

    guard = IdempotentIngest(ctx.ingest_keys, ctx, org, key, digest)
    try:
        dumped, traces = await run_idempotent(guard, stored)
    except StillIngesting:
        busy = error_response(
            request,
            409,
            "idempotency_in_progress",
            "the first upload with this Idempotency-Key (or this content) is still being stored; retry in a few "
            "seconds for its answer",
        )
        busy.headers["retry-after"] = "5"
        return busy
    if traces is None:  # a retry, or the same upload again: the first answer, nothing stored
        return JSONResponse(dumped, status_code=200, headers={REPLAYED_HEADER: "true"})
    return _stored_response(ctx, org, dumped, traces)


def ingest_response(ctx: ApiContext, org: str, outcome: IngestOutcome) -> JSONResponse:
    """201 with the stored trace (a report: every trace and every file not stored); analysis after it."""
    return _stored_response(ctx, org, _ingest_answer(outcome), outcome.traces)


def _stored_response(ctx: ApiContext, org: str, dumped: dict[str, Any], traces: list[StoredTrace]) -> JSONResponse:
    # The metric's label is the ingest mode: `bundle` for uploaded files of any format (live traces: `live`).
    ctx.metrics.ingested_traces.labels("bundle").inc(len(traces))
    ctx.metrics.ingested_events.labels("bundle").inc(sum(t.event_count for t in traces))
    events = sum(t.event_count for t in traces)
    analysis = BackgroundTask(_analyze_all, ctx, org, [t.trace_id for t in traces], events)
    return JSONResponse(dumped, status_code=201, background=analysis)


def _ingest_answer(outcome: IngestOutcome) -> dict[str, Any]:
    first = outcome.traces[0]
    # A single trace answers `{trace_id, short_id, run_id?}`; a report adds every trace and every file not stored.
    many = outcome.format in ("playwright-report", "junit")
    body = IngestResponse(
        trace_id=first.trace_id,
        short_id=first.short_id,
        run_id=outcome.run_id,
        format=outcome.format if many else None,
        traces=[
            IngestedTrace(
                trace_id=t.trace_id, short_id=t.short_id, scenario_slug=t.scenario_slug, status=t.status, name=t.name
            )
            for t in outcome.traces
        ]
        if many
        else [],
        rejected=[RejectedFile(name=r.name, error=r.error, message=r.message) for r in outcome.rejected],
    )
    dumped = body.model_dump(exclude_none=True)
    if not many:
        dumped.pop("traces", None)
        dumped.pop("rejected", None)
    return dumped


async def _analyze_all(ctx: Any, org: str, trace_ids: list[str], events: int = 0) -> None:
    for trace_id in trace_ids[:_ANALYZE_AT_INGEST]:
        await analyze_in_background(ctx, org, trace_id)
    if events >= RELEASE_AFTER_EVENTS:
        # The ingest and the analysis are done: what they freed goes back to the system (api/memory.py).
        await anyio.to_thread.run_sync(release_memory)


async def _result_part(value: object) -> TestResultInfo | None:
    if value is None:
        return None
    raw = await value.read() if isinstance(value, UploadFile) else str(value).encode()
    if not raw.strip():
        return None
    try:
        return TestResultInfo.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "value"
        raise ApiError(422, "validation_error", f"result: {where}: {err['msg']}") from None


def _form_str(value: object) -> str | None:
    if value is None or isinstance(value, UploadFile):
        return None
    text = str(value).strip()
    return text or None


def _form_int(value: object) -> int | None:
    text = _form_str(value)
    if text is None:
        return None
    # ASCII only: "²".isdigit() is true, yet int() refuses it.
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_INT64:
        raise ApiError(422, "validation_error", f"pr_number must be a positive integer below 2^63; got {text[:40]!r}")
    return int(text)


def _limited_receive(request: Request, limit: int) -> Any:
    """Wrap `receive` so that a body past `limit` bytes is refused while it streams in (413)."""
    seen = 0
    receive = request.receive

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, "payload_too_large", f"the request is larger than the {limit}-byte limit")
        return message

    return limited


def routes() -> list[Route]:
    return [
        Route("/v1/traces", list_traces, methods=["GET"]),
        Route("/v1/traces/ingest", ingest, methods=["POST"]),
        Route("/v1/traces/{trace_id}", get_trace, methods=["GET"]),
        Route("/v1/traces/{trace_id}/events", list_events, methods=["GET"]),
        Route("/v1/traces/{trace_id}/events/{seq}", get_event, methods=["GET"]),
    ]
