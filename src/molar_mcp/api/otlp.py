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

import time
import zlib

import anyio
import anyio.to_thread
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from molar_mcp.api.analysis import run_analysis
from molar_mcp.api.bus import Published
from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError, request_id_of
from molar_mcp.api.openapi import documented
from molar_mcp.debugger.detectors import analyze, failure_signature
from molar_mcp.ingest.formats.agent_spans import (
    Draft,
    live_events,
    run_duration_ms,
    run_status,
    scenario_of,
    trace_drafts,
)
from molar_mcp.ingest.formats.otlp import (
    OtlpDecodeError,
    SpanRecord,
    TooManySpans,
    decode_json,
    decode_protobuf,
    decode_spans,
)
from molar_mcp.models.replays import ReplayOrigin
from molar_mcp.store.otlp import IncomingSpan, SpanContext, TraceOutcome

OTLP_TRACES_PATH = "/otlp/v1/traces"
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
    content_type = _content_type(request)
    if content_type not in (PROTOBUF, JSON):
        raise ApiError(
            415, "unsupported_media_type", f"send {PROTOBUF} or {JSON} (OTLP/HTTP); got {content_type or 'none'!r}"
        )
    settings = ctx.otlp_settings
    if settings.in_flight >= settings.max_in_flight:
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
    settings.in_flight += 1
    released = False
    try:
        response, complete = await _export(request, ctx, content_type)
        if complete:
            # The answer goes out now; the finish (layout, detectors) runs after it, still counted in
            # flight, so the exports waiting on finishes are bounded too.
            released = True
            return _ThenFinish(response, ctx, org_of(request), complete)
        return response
    except OtlpError as exc:
        return _status_response(request, content_type, exc)
    finally:
        if not released:
            settings.in_flight -= 1


class _ThenFinish(Response):
    """The export's answer, then (whether or not the client stayed to read it) the finish of the traces
    it completed, off the request's path: the exporter is not kept waiting for the layout and detectors."""

    def __init__(self, answer: Response, ctx: ApiContext, org: str, otel_trace_ids: list[str]) -> None:
        super().__init__(answer.body, status_code=answer.status_code, media_type=answer.media_type)
        self._ctx, self._org, self._ids = ctx, org, otel_trace_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                for otel_trace_id in self._ids:
                    await finish_otel_trace(self._ctx, self._org, otel_trace_id)
            finally:
                self._ctx.otlp_settings.in_flight -= 1


async def _export(request: Request, ctx: ApiContext, content_type: str) -> tuple[Response, list[str]]:
    body = await _read_body(request)
    org = org_of(request)

    def work() -> tuple[list[TraceOutcome], list[str], int]:
        try:
            message = decode_json(body) if content_type == JSON else decode_protobuf(body)
            decoded = decode_spans(message)
        except OtlpDecodeError as exc:
            raise OtlpError(400, code_pb2.INVALID_ARGUMENT, str(exc)) from None
        except TooManySpans as exc:
            raise OtlpError(413, code_pb2.RESOURCE_EXHAUSTED, str(exc)) from None
        reasons = [f"span {r.span_id or '?'} of trace {r.trace_id or '?'}: {r.reason}" for r in decoded.rejected]
        outcomes = store_spans(ctx, org, decoded.spans)
        for outcome in outcomes:
            reasons += [f"span {sid} of trace {outcome.otel_trace_id}: {why}" for sid, why in outcome.refused]
        return outcomes, reasons, len(decoded.rejected) + sum(len(o.refused) for o in outcomes)

    outcomes, reasons, refused = await anyio.to_thread.run_sync(work)
    for outcome in outcomes:
        if outcome.created:
            ctx.metrics.ingested_traces.labels("otlp").inc()
        if outcome.events:
            ctx.metrics.ingested_events.labels("otlp").inc(len(outcome.events))
            ctx.bus.publish(outcome.trace_id, Published(events=outcome.events))
    response = ExportTraceServiceResponse()
    if refused:
        response.partial_success.rejected_spans = refused
        shown = "; ".join(reasons[:MAX_REASONS])
        more = f"; and {len(reasons) - MAX_REASONS} more" if len(reasons) > MAX_REASONS else ""
        response.partial_success.error_message = f"{refused} spans refused: {shown}{more}"
    answer = Response(_encode(response, content_type), media_type=content_type)
    return answer, [o.otel_trace_id for o in outcomes if o.complete]


def store_spans(ctx: ApiContext, org: str, spans: list[SpanRecord]) -> list[TraceOutcome]:
    """Store one request's spans (blocking; one transaction), grouped by OTel trace id."""
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    records: dict[tuple[str, str], SpanRecord] = {}
    groups = []
    for trace_id, items in by_trace.items():
        items.sort(key=lambda s: (s.start_ns, s.span_id))  # a parent starts before its children
        slug, title = scenario_of(items)
        incoming = []
        for s in items:
            records[(trace_id, s.span_id)] = s
            incoming.append(IncomingSpan(s.span_id, s.parent_id, s.to_json()))
        groups.append((trace_id, slug, title, incoming))

    def build(span: IncomingSpan, where: SpanContext) -> list[Draft]:
        record = records[(str(span.body["trace_id"]), span.span_id)]
        return live_events(
            record,
            parent_stored=where.parent_stored,
            parent_is_root=where.parent_is_root,
            has_children=where.has_children,
        )

    return ctx.otlp.store_spans(org, groups, build, int(time.time() * 1000))


async def finish_otel_trace(ctx: ApiContext, org: str, otel_trace_id: str, status: str | None = None) -> None:
    """Lay the trace out in span-tree order, close it, run the detectors, tell its followers."""

    def finish() -> tuple[str, str] | None:
        spans = [SpanRecord.from_json(b) for b in ctx.otlp.spans_of(org, otel_trace_id)]
        slug, title = scenario_of(spans)
        laid = ctx.otlp.lay_out(org, otel_trace_id, trace_drafts(spans), scenario_slug=slug, scenario_title=title)
        if laid is None:
            return None  # finished by another caller meanwhile
        trace_id, events = laid
        _record_replay_origin(ctx, org, trace_id, spans)
        final = status or run_status(spans)
        findings = analyze(list(events), final)
        signature = failure_signature(findings) if final != "passed" else None
        ctx.live.finish_trace(
            org, trace_id, status=final, failure_signature=signature, duration_ms=run_duration_ms(spans)
        )
        run_analysis(ctx, org, trace_id, findings=findings)
        return trace_id, final

    done = await anyio.to_thread.run_sync(finish)
    if done is not None:
        ctx.bus.publish(done[0], Published(finished=done[1]))


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


async def sweep(ctx: ApiContext, now: float | None = None) -> int:
    """Finish the OTLP traces that went quiet: root arrived and nothing came for the quiet period
    (status from the spans), or no root and nothing for the abandon period (`aborted`)."""
    settings = ctx.otlp_settings
    now_ms = int((time.time() if now is None else now) * 1000)
    open_traces = await anyio.to_thread.run_sync(ctx.otlp.open_traces)
    finished = 0
    for trace in open_traces:
        quiet = now_ms - trace.last_arrival_ms
        if trace.has_root and quiet >= settings.quiet_seconds * 1000:
            await finish_otel_trace(ctx, trace.org_id, trace.otel_trace_id)
            finished += 1
        elif not trace.has_root and quiet >= settings.abandon_seconds * 1000:
            await finish_otel_trace(ctx, trace.org_id, trace.otel_trace_id, status="aborted")
            finished += 1
    return finished


async def run_sweeper(ctx: ApiContext, every: float | None = None) -> None:
    """The sweeper `serve` runs beside the app until cancelled."""
    interval = every if every is not None else max(0.05, min(1.0, ctx.otlp_settings.quiet_seconds / 4))
    while True:
        await sweep(ctx)
        await anyio.sleep(interval)


def routes() -> list[Route]:
    return [Route(OTLP_TRACES_PATH, export_traces, methods=["POST"])]


__all__ = ["OTLP_TRACES_PATH", "finish_otel_trace", "routes", "run_sweeper", "sweep"]
