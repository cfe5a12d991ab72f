"""OTLP/HTTP traces receiver: `POST /otlp/v1/traces`, so `OTEL_EXPORTER_OTLP_ENDPOINT=http://host:4173/otlp`
is all an agent developer sets (OTLP specification, "OTLP/HTTP"). docs/otlp.md has the mapping.

- bodies: `application/x-protobuf` or `application/json` (OTLP/JSON), optionally `Content-Encoding: gzip`
  (decompressed with a bound); any other type is 415;
- answer: `ExportTraceServiceResponse` in the request's encoding; spans refused one by one (ids of the
  wrong length, arrived after their trace finished) are counted in `partial_success` with the reasons;
- errors: a `google.rpc.Status` in the request's encoding — 400 unreadable, 413 too large; 503 with
  `Retry-After` when too many exports are in flight (the exporters retry 429/502/503/504);
- auth: an API key (`Authorization: Bearer molar_sk_…`, scope `mcp:trace:write`) by the /v1 middleware;
  the org is the key's.

One OTel trace id is one Molar trace (`source` = `agent`), `running` while its spans arrive; followers
see it grow (SSE, MCP resource updates). It finishes when its root span has arrived with every span's
parent (at once), or when nothing came for the quiet period after the root arrived; a trace whose
root never comes is finished as `aborted` after the abandon period. On finish, the events are laid out
in span-tree order (a child that arrived before its parent moves under it) and the detectors run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any, Literal

import anyio
import anyio.to_thread
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from molar_mcp.api.analysis import run_analysis
from molar_mcp.api.analysis_worker import AnalysisFailed
from molar_mcp.api.bus import LiveBus, Published
from molar_mcp.api.context import ApiContext, OtlpSettings, api_context, org_of
from molar_mcp.api.errors import ApiError, request_id_of
from molar_mcp.api.openapi import documented
from molar_mcp.api.otlp_finisher import WARM_SPANS
from molar_mcp.debugger.detectors import analyze, failure_signature
from molar_mcp.ingest.formats.agent_spans import (
    Draft,
    live_parts,
    log_record_events,
    run_duration_ms,
    run_status,
    scenario_of,
    shown_finally,
    slug_of,
    span_parts,
    step_id_of,
    trace_drafts,
)
from molar_mcp.ingest.formats.otlp import (
    Decoded,
    OtlpDecodeError,
    SpanEvent,
    SpanRecord,
    TooManySpans,
    decode_json,
    decode_logs,
    decode_logs_json,
    decode_logs_protobuf,
    decode_protobuf,
    decode_spans,
    span_ids,
    trace_ids,
    trace_spans,
)
from molar_mcp.models import Event
from molar_mcp.models.replays import ReplayOrigin
from molar_mcp.store.otlp import (
    RUN,
    Batch,
    Converted,
    FreshSpan,
    IncomingSpan,
    LiveParts,
    SpanContext,
    StoredEvents,
    TraceOutcome,
)
from molar_mcp.store.port import org_scope

log = logging.getLogger("molar_mcp.api")

OTLP_TRACES_PATH = "/otlp/v1/traces"
OTLP_LOGS_PATH = "/otlp/v1/logs"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY_BYTES = 64 * 1024 * 1024  # compressed and decompressed alike
MAX_REASONS = 5  # refused spans named one by one in `error_message`; the rest counted


class OtlpError(Exception):
    def __init__(self, status: int, code: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def _encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return str(json_format.MessageToJson(message, indent=None)).encode()
    return bytes(message.SerializeToString())


def _status_response(request: Request, content_type: str, exc: OtlpError) -> Response:
    rid = request_id_of(request)
    status = status_pb2.Status(code=exc.code, message=f"{exc.message} (request id {rid})" if rid else exc.message)
    headers = {"retry-after": str(exc.retry_after)} if exc.retry_after is not None else None
    return Response(_encode(status, content_type), status_code=exc.status, media_type=content_type, headers=headers)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise OtlpError(413, code_pb2.RESOURCE_EXHAUSTED, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise OtlpError(413, code_pb2.RESOURCE_EXHAUSTED, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise OtlpError(415, code_pb2.INVALID_ARGUMENT, f"Content-Encoding {encoding!r} is not taken; use gzip or none")
    return _gunzip(body)


def _gunzip(body: bytes) -> bytes:
    """Decompress with a bound: a small body that inflates past the limit is refused, not expanded."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise OtlpError(400, code_pb2.INVALID_ARGUMENT, f"the gzip body cannot be read: {exc}") from None
    if len(out) > MAX_BODY_BYTES or inflater.unconsumed_tail:
        raise OtlpError(413, code_pb2.RESOURCE_EXHAUSTED, f"the body inflates to more than {MAX_BODY_BYTES} bytes")
    if not inflater.eof:
        raise OtlpError(400, code_pb2.INVALID_ARGUMENT, "the gzip body is cut short")
    return out


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _accepted_type(request: Request) -> str:
    """The export's content type: protobuf or OTLP/JSON, else 415."""
    content_type = _content_type(request)
    if content_type not in (PROTOBUF, JSON):
        raise ApiError(
            415, "unsupported_media_type", f"send {PROTOBUF} or {JSON} (OTLP/HTTP); got {content_type or 'none'!r}"
        )
    return content_type


def _busy(request: Request, content_type: str, settings: OtlpSettings) -> Response | None:
    """503 + Retry-After when the exports being stored are at their bound (the exporters retry it)."""
    if settings.in_flight < settings.max_in_flight:
        return None
    return _status_response(
        request,
        content_type,
        OtlpError(
            503,
            code_pb2.UNAVAILABLE,
            f"{settings.in_flight} exports are being stored; retry after the seconds in Retry-After",
            retry_after=settings.retry_after_seconds,
        ),
    )


@documented(
    summary="OTLP/HTTP trace export (protobuf or JSON, gzip): one OTel trace is one agent trace",
    tags=("otlp",),
    errors=(400, 401, 403, 413, 415),
    media_type=PROTOBUF,
    extra={
        "requestBody": {
            "required": True,
            "description": "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
)
async def export_traces(request: Request) -> Response:
    ctx = api_context(request)
    content_type = _accepted_type(request)
    settings = ctx.otlp_settings
    if (busy := _busy(request, content_type, settings)) is not None:
        return busy
    settings.in_flight += 1
    try:
        response, complete = await _export(request, ctx, content_type)
    except OtlpError as exc:
        return _status_response(request, content_type, exc)
    finally:
        settings.in_flight -= 1
    return _ThenConvert(response, ctx, org_of(request), complete)


class _ThenConvert(Response):
    """The export's answer, then (whether or not the client stayed to read it) the stored spans made into
    events, and the traces they complete finished, off the request's path: the exporter waits only for
    its spans' ids to be stored."""

    def __init__(self, answer: Response, ctx: ApiContext, org: str, complete: list[str]) -> None:
        super().__init__(answer.body, status_code=answer.status_code, media_type=answer.media_type)
        self._ctx, self._org, self._complete = ctx, org, complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for otel_trace_id in self._complete:
                await finish_otel_trace(self._ctx, self._org, otel_trace_id)
            if self._ctx.otlp.pending_spans > 0:  # (the sweeper reads any a replica left behind)
                await convert_pending(self._ctx)


async def _export(request: Request, ctx: ApiContext, content_type: str) -> tuple[Response, list[str]]:
    """Store the spans' ids and the body; the answer. A small export with nothing waiting before it (a
    live run's spans) is made into events at once, so followers see it before the exporter has its
    answer; larger ones after the answer (`convert_pending`). Also the traces it completed."""
    body = await _read_body(request)
    org = org_of(request)
    settings = ctx.otlp_settings

    def work() -> tuple[list[TraceOutcome], list[str], int, list[Converted]]:
        try:
            message = decode_json(body) if content_type == JSON else decode_protobuf(body)
            ids = span_ids(message)
        except OtlpDecodeError as exc:
            raise OtlpError(400, code_pb2.INVALID_ARGUMENT, str(exc)) from None
        except TooManySpans as exc:
            raise OtlpError(413, code_pb2.RESOURCE_EXHAUSTED, str(exc)) from None
        if ids.count and ctx.otlp.pending_spans + ids.count > settings.max_pending_spans:
            raise OtlpError(
                503,
                code_pb2.UNAVAILABLE,
                f"{ctx.otlp.pending_spans} spans are waiting to be read; retry after the seconds in Retry-After",
                retry_after=settings.retry_after_seconds,
            )
        reasons = [f"span {r.span_id or '?'} of trace {r.trace_id or '?'}: {r.reason}" for r in ids.rejected]
        traces = []
        for trace_id, spans in ids.traces.items():
            service, name = ids.names[trace_id]
            traces.append((trace_id, *_scenario(service, name), spans))
        # Kept as protobuf whatever it came as: the spans are read from it after the answer.
        raw = body if content_type == PROTOBUF else bytes(message.SerializeToString())
        outcomes, batch = ctx.otlp.accept(org, raw, traces, int(time.time() * 1000))
        for outcome in outcomes:
            reasons += [f"span {sid} of trace {outcome.otel_trace_id}: {why}" for sid, why in outcome.refused]
        converted: list[Converted] = []
        if (
            batch is not None
            and batch.spans <= settings.inline_spans
            and not settings.converting
            and ctx.otlp.pending_spans == batch.spans
        ):
            converted = _convert(ctx, batch)
        return outcomes, reasons, len(ids.rejected) + sum(len(o.refused) for o in outcomes), converted

    outcomes, reasons, refused, converted = await anyio.to_thread.run_sync(work)
    settings.received += 1
    finisher = ctx.otlp_finisher
    if finisher is not None and sum(o.stored_spans for o in outcomes) >= min(WARM_SPANS, finisher.min_spans):
        finisher.warm()  # big traces are coming: the finisher gets ready meanwhile
    for outcome in outcomes:
        if outcome.created:
            ctx.metrics.ingested_traces.labels("otlp").inc()
    _publish(ctx, converted)
    response = ExportTraceServiceResponse()
    if refused:
        response.partial_success.rejected_spans = refused
        shown = "; ".join(reasons[:MAX_REASONS])
        more = f"; and {len(reasons) - MAX_REASONS} more" if len(reasons) > MAX_REASONS else ""
        response.partial_success.error_message = f"{refused} spans refused: {shown}{more}"
    answer = Response(_encode(response, content_type), media_type=content_type)
    return answer, [c.otel_trace_id for c in converted if c.complete]


def _publish(ctx: ApiContext, converted: list[Converted]) -> None:
    for trace in converted:
        if trace.events:
            ctx.metrics.ingested_events.labels("otlp").inc(len(trace.events))
            ctx.bus.publish(trace.trace_id, Published(events=trace.events))


def _scenario(service: str, root_name: str) -> tuple[str, str]:
    """What a new trace is called until its spans are read (`scenario_of` then names it)."""
    return slug_of(f"{service}.{root_name}"), f"{service}: {root_name}"[:500]


async def ingest(ctx: ApiContext, org: str, message: ExportTraceServiceRequest) -> list[TraceOutcome]:
    """Take a decoded export as the receiver does, then read its spans and finish what it completed
    (the demo's recorded run)."""

    def work() -> list[TraceOutcome]:
        ids = span_ids(message)
        traces = [(t, *_scenario(*ids.names[t]), spans) for t, spans in ids.traces.items()]
        return ctx.otlp.accept(org, bytes(message.SerializeToString()), traces, int(time.time() * 1000))[0]

    outcomes = await anyio.to_thread.run_sync(work)
    await convert_pending(ctx)
    return outcomes


async def convert_pending(ctx: ApiContext) -> None:
    """Make the events of every stored batch (oldest first), tell followers, finish the traces they
    complete. One caller at a time does it; a call while it runs has it go round once more."""
    settings = ctx.otlp_settings
    settings.convert_wanted = True
    if settings.converting:
        return
    settings.converting = True
    finisher = ctx.otlp_finisher
    # Finishes handed to the finisher process run while the next batches are read (pipelined); this
    # call returns when they are done too, but another caller may convert meanwhile.
    async with anyio.create_task_group() as away:
        try:
            with org_scope(None):  # batches of every org
                while settings.convert_wanted:
                    settings.convert_wanted = False
                    while (done := await anyio.to_thread.run_sync(_convert_next, ctx)) is not None:
                        org_id, converted = done
                        _publish(ctx, converted)
                        for trace in converted:
                            if not trace.complete:
                                continue
                            otel_id = trace.otel_trace_id
                            if finisher is not None and await anyio.to_thread.run_sync(
                                finisher.wanted, ctx.otlp, org_id, otel_id
                            ):
                                away.start_soon(functools.partial(finish_otel_trace, ctx, org_id, otel_id, away=True))
                            else:
                                await finish_otel_trace(ctx, org_id, otel_id, away=False)
        finally:
            settings.converting = False


def _convert_next(ctx: ApiContext) -> tuple[str, list[Converted]] | None:
    """Convert the oldest stored batch (None: none is left)."""
    batches = ctx.otlp.pending(limit=1)
    if not batches:
        return None
    return batches[0].org_id, _convert(ctx, batches[0], ready_first=True)


def _convert(ctx: ApiContext, batch: Batch, ready_first: bool = False) -> list[Converted]:
    """Make a stored batch's spans into live events. `ready_first` (a converter that is behind): a trace
    not shown yet whose every span is already taken is left to its finish, which lays it out once."""
    settings = ctx.otlp_settings
    with org_scope(batch.org_id):
        ready: dict[str, str] = {}
        unshown: dict[str, tuple[str, bool]] = {}  # left unshown: OTel id → (trace id, complete)
        try:
            message = decode_protobuf(batch.body)
            ids = [t.hex() for t in trace_ids(message) if len(t) == 16]
            # Traces finished meanwhile get no live events (their finish read every span): not decoded.
            finished = ctx.otlp.finished_traces(batch.org_id, ids)
            if ready_first:
                ready = ctx.otlp.ready_traces(batch.org_id, [t for t in ids if t not in finished])
            # A bulk export of a trace not shown yet that nobody follows is laid out once at the finish,
            # not shown live and then moved (its events written twice); so is the rest of such a trace.
            bulk = bool(settings.bulk_spans) and batch.spans >= settings.bulk_spans
            rest = [t for t in ids if t not in finished and t not in ready]
            for otel_id, (trace_id, complete, left) in ctx.otlp.unshown_traces(batch.org_id, rest).items():
                if left or (bulk and not _told_anywhere(ctx, trace_id)):
                    unshown[otel_id] = (trace_id, complete)
            decoded = decode_spans(message, skip={bytes.fromhex(t) for t in (*ready, *finished, *unshown)})
        except (OtlpDecodeError, TooManySpans):  # it was read when taken: a body that fails now is skipped
            decoded = Decoded()
        by_trace: dict[str, list[SpanRecord]] = {}
        for span in decoded.spans:
            by_trace.setdefault(span.trace_id, []).append(span)
        groups = []
        for trace_id, items in by_trace.items():
            items.sort(key=lambda s: (s.start_ns, s.span_id))  # a parent starts before its children
            slug, title = scenario_of(items)
            groups.append((trace_id, slug, title, [IncomingSpan(s.span_id, s.parent_id, s, s.start_ns) for s in items]))

        def build(span: IncomingSpan, where: SpanContext) -> LiveParts:
            record: SpanRecord = span.record
            if where.logs:  # log records that came before their span: events of it like its own
                record = dataclasses.replace(record, events=_with_logs(record.events, list(where.logs)))
            return live_parts(
                record,
                parent_stored=where.parent_stored,
                parent_is_root=where.parent_is_root,
                has_children=where.has_children,
            )

        converted = ctx.otlp.convert(batch, groups, build)
        converted += [Converted(otel_id, trace_id, complete=True) for otel_id, trace_id in ready.items()]
        return converted + [Converted(otel_id, t, complete=c) for otel_id, (t, c) in unshown.items()]


def _read_spans(ctx: ApiContext, org: str, otel_trace_id: str) -> list[SpanRecord]:
    """Every span a trace has, once each, from the stored batches (and spans stored one by one by
    earlier versions)."""
    bodies, mine, old = ctx.otlp.stored_spans(org, otel_trace_id)
    spans = [SpanRecord.from_json(b) for b in old]
    for batch_pk, body in bodies:
        for span in decode_spans(decode_protobuf(body)).spans:
            if span.trace_id == otel_trace_id and (batch_pk, span.span_id) in mine:
                mine.discard((batch_pk, span.span_id))  # a span twice in one request counts once
                spans.append(span)
    logs = ctx.otlp.logs_of(org, otel_trace_id)
    if logs:  # log records are events of their span, in time order with its own
        spans = [
            dataclasses.replace(s, events=_with_logs(s.events, logs[s.span_id])) if s.span_id in logs else s
            for s in spans
        ]
    return spans


def _log_events(record: dict[str, Any], span_id: str, shown_as: str) -> list[Draft]:
    """A log record of a span a running trace shows: its live events, in the span's step (the run's
    events have none)."""
    return log_record_events(record, None if shown_as == RUN else step_id_of(span_id))


def _with_logs(events: tuple[SpanEvent, ...], records: list[dict[str, Any]]) -> tuple[SpanEvent, ...]:
    logged = [SpanEvent(str(r["name"]), int(r["ts_ns"]), dict(r["attributes"])) for r in records]
    return tuple(sorted([*events, *logged], key=lambda e: e.ts_ns))


async def finish_otel_trace(
    ctx: ApiContext, org: str, otel_trace_id: str, status: str | None = None, *, away: bool | None = None
) -> None:
    """Lay the trace out in span-tree order, close it, run the detectors, tell its followers. A trace of at
    least `OtlpFinisher.min_spans` spans is finished in the finisher process (api/otlp_finisher.py), off
    this process's GIL: the same code over the same store; here only its followers are told. (`away`:
    whether it goes there, when the caller has looked already.)"""
    finisher = ctx.otlp_finisher
    done: tuple[str, str, Sequence[Event]] | None
    if finisher is not None and away is None:
        away = await anyio.to_thread.run_sync(finisher.wanted, ctx.otlp, org, otel_trace_id)
    if finisher is not None and away:
        try:
            there = await finisher.finish(org, otel_trace_id, status)
        except AnalysisFailed as exc:  # the process died or hung twice: finished here instead
            log.error("the OTLP finisher did not finish trace %s (%s); finishing it in the server", otel_trace_id, exc)
            done = await anyio.to_thread.run_sync(finish_here, ctx, org, otel_trace_id, status)
        else:
            done = None if there is None else (there[0], there[1], ())
            if there is not None and there[2] and _told_anywhere(ctx, there[0]):
                trace_id = there[0]
                done = (trace_id, there[1], await anyio.to_thread.run_sync(_all_events, ctx, org, trace_id))
    else:
        done = await anyio.to_thread.run_sync(finish_here, ctx, org, otel_trace_id, status)
    if done is not None:
        trace_id, final, unseen = done
        if unseen:  # laid out at once, never shown live: its followers get every event with the end
            _publish(ctx, [Converted(otel_trace_id, trace_id, unseen)])
        ctx.bus.publish(trace_id, Published(finished=final))


def _told_anywhere(ctx: ApiContext, trace_id: str) -> bool:
    """Whether a trace's events are to be published: it has followers here, or the bus reaches other
    replicas (which read big batches from the store only when they have followers)."""
    return type(ctx.bus) is not LiveBus or ctx.bus.readers(trace_id) > 0


def _all_events(ctx: ApiContext, org: str, trace_id: str) -> list[Event]:
    """Every event of a trace, in order (as a follower reads them)."""
    out: list[Event] = []
    with org_scope(org):
        while True:
            page, _status = ctx.live.events_after(org, trace_id, out[-1].seq if out else -1, limit=5_000)
            out += page
            if len(page) < 5_000:
                return out


def finish_here(
    ctx: ApiContext, org: str, otel_trace_id: str, status: str | None = None
) -> tuple[str, str, Sequence[Event]] | None:
    """The finish itself, in this process (blocking): lay out, record the replay origin, run the
    detectors, close the trace, store the analysis. The trace's id, its status, and its events when no
    follower saw any of them live; None when another caller finished it first (or spans keep coming)."""
    with org_scope(org):
        laid = _lay_out(ctx, org, otel_trace_id)
        if laid is None:
            return None  # finished by another caller meanwhile (or spans keep coming: the sweeper's turn)
        trace_id, events, spans, unseen = laid
        _record_replay_origin(ctx, org, trace_id, spans)
        final = status or run_status(spans)
        findings = analyze(events.rows(), final)  # light rows: events built only where looked at
        signature = failure_signature(findings) if final != "passed" else None
        duration = run_duration_ms(spans)
        ctx.live.finish_trace(
            org,
            trace_id,
            status=final,
            failure_signature=signature,
            duration_ms=duration,
            messages=events.messages(),  # just written: not read again for the search text
        )
        run_analysis(ctx, org, trace_id, findings=findings)
        return trace_id, final, events if unseen else ()


def _lay_out(
    ctx: ApiContext, org: str, otel_trace_id: str, again: bool = False
) -> tuple[str, StoredEvents, list[SpanRecord], bool] | None:
    """Lay a trace out in span-tree order and mark it finished: its live events moved into place (only
    spans shown otherwise are made again), or — for spans stored by earlier versions, or `again` (a
    finished trace with late log records) — every event made anew from the kept bodies. The trace's id,
    its events, and the spans its status, duration and scenario come from (the roots and the first one,
    or all), and whether it had no events before; None when another caller finished it first (or spans
    keep coming)."""
    if not again:
        for _ in range(5):
            kept = _lay_out_kept(ctx, org, otel_trace_id)
            if kept is None:
                break  # made anew below
            if kept == "finished":
                return None
            if kept != "more":
                return kept
    laid: tuple[str, StoredEvents] | str = "more"
    spans: list[SpanRecord] = []
    for _ in range(5):
        spans = _read_spans(ctx, org, otel_trace_id)
        slug, title = scenario_of(spans)
        laid = ctx.otlp.lay_out(
            org,
            otel_trace_id,
            trace_drafts(spans),
            scenario_slug=slug,
            scenario_title=title,
            span_count=len(spans),
            again=again,
        )
        if laid != "more":
            break
    if isinstance(laid, str):
        return None
    return laid[0], laid[1], spans, False


def _lay_out_kept(
    ctx: ApiContext, org: str, otel_trace_id: str
) -> tuple[str, StoredEvents, list[SpanRecord], bool] | Literal["finished", "more"] | None:
    """The finish that moves each span's live events into the span-tree order as they are: only the spans
    those events show otherwise than the finished tree does (a child that came before its parent, a root
    that came before its children, log records that came after the span), or that have none yet, are
    decoded from the kept bodies and made again. None: it cannot be done so (spans stored one by one by
    an earlier version, no root span, a body gone)."""
    kept = ctx.otlp.kept(org, otel_trace_id)
    if kept is None or kept.finished:
        return "finished"
    if not kept.spans or any(s.as_json or s.batch_pk is None for s in kept.spans):
        return None
    parents = {s.span_id: s.parent_id for s in kept.spans}
    with_children = {s.parent_id for s in kept.spans if s.parent_id is not None and s.parent_id in parents}
    again = {
        s.span_id
        for s in kept.spans
        if s.live_seq is None
        or s.logs_folded != kept.logs.get(s.span_id, 0)
        or s.shown_as != shown_finally(s.span_id, s.parent_id, parents, s.span_id in with_children)
    }
    roots = {s.span_id for s in kept.spans if s.parent_id is None}
    if not roots:
        return None
    by_batch: dict[int, set[str]] = {}
    for s in kept.spans:
        by_batch.setdefault(int(s.batch_pk or 0), set()).add(s.span_id)
    wanted = again | roots
    batches = sorted({min(by_batch)} | {int(s.batch_pk or 0) for s in kept.spans if s.span_id in wanted})
    bodies = ctx.otlp.batch_bodies(batches)
    records: list[SpanRecord] = []  # in stored order: by batch, then as the request had them
    for batch_pk in batches:
        if batch_pk not in bodies:
            return None
        mine, taken = by_batch[batch_pk], set[str]()

        def selected(span_id: str, mine: set[str] = mine, taken: set[str] = taken) -> bool:
            if span_id not in mine or span_id in taken or (records and span_id not in wanted):
                return False
            taken.add(span_id)
            return True

        try:
            for record in trace_spans(decode_protobuf(bodies[batch_pk]), otel_trace_id, selected):
                records.append(record)  # (appended one by one: `selected` reads whether the first is in)
        except OtlpDecodeError:
            return None
    if kept.logs:
        logs = ctx.otlp.logs_of(org, otel_trace_id)
        records = [
            dataclasses.replace(r, events=_with_logs(r.events, logs[r.span_id])) if r.span_id in logs else r
            for r in records
        ]
    found = {r.span_id: r for r in records}
    if not wanted <= found.keys():
        return None
    fresh: dict[str, FreshSpan] = {}
    for span_id in again:
        record = found[span_id]
        run = record.parent_id is None and span_id in with_children
        parent = record.parent_id if record.parent_id in parents and parents[record.parent_id] is not None else None
        opening, middle, closing = span_parts(record, run, parent)
        fresh[span_id] = FreshSpan(record.start_ns, opening, middle, closing)
    # What the status, duration, scenario and replay origin read: the first span and the roots, in order.
    spans = [r for i, r in enumerate(records) if i == 0 or r.parent_id is None]
    slug, title = scenario_of(spans)
    laid = ctx.otlp.lay_out_kept(org, otel_trace_id, kept, fresh, scenario_slug=slug, scenario_title=title)
    if isinstance(laid, str):
        return laid
    return laid[0], laid[1], spans, laid[2]


def _record_replay_origin(ctx: ApiContext, org: str, trace_id: str, spans: list[SpanRecord]) -> None:
    """An agent run whose resource names its repository (`molar.repo.path`, or `vcs.repository.url.full`)
    and commit (`vcs.ref.head.revision`, or `molar.commit`) can be replayed by the command driver when that
    repository is registered (docs/replay.md)."""
    if ctx.replays is None:
        return
    resource = next((s.resource for s in spans if s.parent_id is None), spans[0].resource if spans else {})
    path, remote = resource.get("molar.repo.path"), resource.get("vcs.repository.url.full")
    commit = resource.get("vcs.ref.head.revision") or resource.get("molar.commit")
    if not isinstance(commit, str) or not (isinstance(path, str) or isinstance(remote, str)):
        return
    origin = ReplayOrigin(
        kind="command",
        repo_path=path[:1000] if isinstance(path, str) else None,
        repo_remote=remote[:1000] if isinstance(remote, str) else None,
        commit=commit[:64],
    )
    ctx.replays.replays.record_origin(org, trace_id, origin)


async def lay_out_again(ctx: ApiContext, org: str, otel_trace_id: str) -> None:
    """A finished trace whose log records came after its finish: laid out once more with them (its
    status stays; the analysis is made again)."""

    def again() -> None:
        with org_scope(org):
            laid = _lay_out(ctx, org, otel_trace_id, again=True)
            if laid is not None:
                run_analysis(ctx, org, laid[0], rerun=True)

    await anyio.to_thread.run_sync(again)


async def sweep(ctx: ApiContext, now: float | None = None) -> int:
    """Read what is still waiting, then finish the OTLP traces that went quiet: root arrived and nothing
    came for the quiet period (status from the spans), or no root and nothing for the abandon period
    (`aborted`). How many it finished."""
    return (await _sweep(ctx, now))[0]


async def _sweep(ctx: ApiContext, now: float | None = None) -> tuple[int, int]:
    """`sweep`, and how many OTLP traces were open."""
    settings = ctx.otlp_settings
    await convert_pending(ctx)
    now_ms = int((time.time() if now is None else now) * 1000)
    open_traces = await anyio.to_thread.run_sync(ctx.otlp.open_traces)
    with org_scope(None):
        await anyio.to_thread.run_sync(ctx.otlp.forget_batches, now_ms - int(settings.late_logs_seconds * 1000))
    finished = 0
    for trace in open_traces:
        quiet = now_ms - trace.last_arrival_ms
        if trace.has_root and quiet >= settings.quiet_seconds * 1000:
            await finish_otel_trace(ctx, trace.org_id, trace.otel_trace_id)
            finished += 1
        elif not trace.has_root and quiet >= settings.abandon_seconds * 1000:
            await finish_otel_trace(ctx, trace.org_id, trace.otel_trace_id, status="aborted")
            finished += 1
    return finished, len(open_traces)


async def run_sweeper(ctx: ApiContext, every: float | None = None) -> None:
    """The sweeper `serve` runs beside the app until cancelled: every `interval` while OTLP traces are
    open; with none, twice as long after each sweep that found none, up to 8 × `interval` (an idle
    replica does not query the database every second). An export this replica takes brings it back to
    `interval` at once; traces another replica took wait at most 8 × `interval` for this one."""
    settings = ctx.otlp_settings
    interval = every if every is not None else max(0.05, min(1.0, settings.quiet_seconds / 4))
    idle_rounds = 0
    while True:
        seen = settings.received
        _, still_open = await _sweep(ctx)
        idle_rounds = 0 if still_open else idle_rounds + 1
        wait = sweeper_wait(interval, idle_rounds)
        waited = 0.0
        while waited < wait and settings.received == seen:  # checks memory only, no query
            await anyio.sleep(interval)
            waited += interval


def sweeper_wait(interval: float, idle_rounds: int) -> float:
    """The sweeper's wait after `idle_rounds` sweeps in a row that found no open trace."""
    return min(8 * interval, interval * 2.0 ** min(max(0, idle_rounds - 1), 16))


@documented(
    summary="OTLP/HTTP log export (protobuf or JSON, gzip): log records of a trace's spans (GenAI messages)",
    tags=("otlp",),
    errors=(400, 401, 403, 413, 415),
    media_type=PROTOBUF,
    extra={
        "requestBody": {
            "required": True,
            "description": "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
)
async def export_logs(request: Request) -> Response:
    """Log records that name their span (trace id, span id) are kept as events of that span: a GenAI
    instrumentation's messages (`gen_ai.user.message`, `gen_ai.choice`, …) then read as the model
    call's messages. A record without span ids is refused in `partial_success`."""
    ctx = api_context(request)
    content_type = _accepted_type(request)
    settings = ctx.otlp_settings
    if (busy := _busy(request, content_type, settings)) is not None:
        return busy
    settings.in_flight += 1
    try:
        body = await _read_body(request)
        org = org_of(request)
        answer, late = await _export_logs(ctx, org, body, content_type)
    except OtlpError as exc:
        return _status_response(request, content_type, exc)
    finally:
        settings.in_flight -= 1
    for otel_trace_id in late:
        await lay_out_again(ctx, org, otel_trace_id)
    return answer


async def _export_logs(ctx: ApiContext, org: str, body: bytes, content_type: str) -> tuple[Response, list[str]]:
    settings = ctx.otlp_settings

    def work() -> tuple[list[str], list[str], int]:
        try:
            message = decode_logs_json(body) if content_type == JSON else decode_logs_protobuf(body)
            decoded = decode_logs(message)
        except OtlpDecodeError as exc:
            raise OtlpError(400, code_pb2.INVALID_ARGUMENT, str(exc)) from None
        except TooManySpans as exc:
            raise OtlpError(413, code_pb2.RESOURCE_EXHAUSTED, str(exc).replace("spans", "log records", 2)) from None
        by_trace: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        services: dict[str, str] = {}
        for item in decoded.items:
            event = item.event
            record = {"name": event.name, "ts_ns": event.ts_ns, "attributes": event.attributes}
            by_trace.setdefault(item.trace_id, []).append((item.span_id, record))
            services.setdefault(item.trace_id, item.service)
        traces = [(t, *_scenario(services[t], "run"), records) for t, records in by_trace.items()]
        kept = ctx.otlp.accept_logs(
            org, traces, int(time.time() * 1000), int(settings.late_logs_seconds * 1000), build=_log_events
        )
        reasons = list(decoded.rejected)
        refused = len(decoded.rejected)
        late: list[str] = []
        for taken in kept:
            if taken.finished is None:
                n = len(by_trace[taken.otel_trace_id])
                refused += n
                reasons.append(f"{n} records of trace {taken.otel_trace_id}: it had finished before they arrived")
            elif taken.finished and taken.new:
                late.append(taken.otel_trace_id)
            elif taken.events:
                live.append(Converted(taken.otel_trace_id, taken.trace_id, taken.events))
        return late, reasons, refused

    live: list[Converted] = []  # the records' live events, for followers
    late, reasons, refused = await anyio.to_thread.run_sync(work)
    _publish(ctx, live)
    response = ExportLogsServiceResponse()
    if refused:
        response.partial_success.rejected_log_records = refused
        shown = "; ".join(reasons[:MAX_REASONS])
        more = f"; and {len(reasons) - MAX_REASONS} more" if len(reasons) > MAX_REASONS else ""
        response.partial_success.error_message = f"{refused} log records refused: {shown}{more}"
    return Response(_encode(response, content_type), media_type=content_type), late


def routes() -> list[Route]:
    return [
        Route(OTLP_TRACES_PATH, export_traces, methods=["POST"]),
        Route(OTLP_LOGS_PATH, export_logs, methods=["POST"]),
    ]


__all__ = [
    "OTLP_LOGS_PATH",
    "OTLP_TRACES_PATH",
    "convert_pending",
    "finish_otel_trace",
    "ingest",
    "routes",
    "run_sweeper",
    "sweep",
]
