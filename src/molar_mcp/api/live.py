"""Live traces: `POST /v1/traces` creates a running trace, `POST /v1/traces/{id}/events` appends one
event or a batch, `POST /v1/traces/{id}/finish` closes it, and `GET /v1/traces/{id}/stream` follows it
as Server-Sent Events (backfill from `Last-Event-ID`/`after_seq`, then live; heartbeat every 15 s)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import anyio
import anyio.to_thread
import msgspec
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molar_mcp.api.analysis import run_analysis
from molar_mcp.api.append_threads import in_append_thread
from molar_mcp.api.bodies import json_body, json_bytes, parse_json, validation_message
from molar_mcp.api.bus import Published
from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError
from molar_mcp.api.openapi import Param, documented, integer, string
from molar_mcp.debugger.detectors import analyze, failure_signature
from molar_mcp.models import TRACE_SOURCES, AppendResponse, Event, LiveTrace, TraceDetail
from molar_mcp.models.batch import gc_paused
from molar_mcp.models.incoming import BATCH_DECODER, EVENT_DECODER, EventIn
from molar_mcp.models.limits import MAX_JSON_DEPTH, parsed_within_bounds
from molar_mcp.models.traces import TraceSource
from molar_mcp.store.live import INTERRUPTED, AppendResult, IncomingEvent, TraceNotRunning, UnkeyedEvents

log = logging.getLogger("molar_mcp")

MAX_BATCH = 1000
MAX_KEY = 200  # characters of an idempotency key
HEARTBEAT_SECONDS = 15
BACKFILL_PAGE = 500


class CreateTrace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario_slug: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    scenario_title: str | None = Field(default=None, max_length=500)
    source: TraceSource | None = None
    code_sha: str | None = Field(default=None, max_length=64)
    pr_number: int | None = Field(default=None, ge=1)


class IncomingEventBody(Event):
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY)


_EVENTS: TypeAdapter[list[Event]] = TypeAdapter(list[Event])


class _Batch(BaseModel):
    """The usual append body, validated from its bytes in one call (`_fast_validated`)."""

    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


_KEY_MEMBER = b'"idempotency_key"'
_EVENTS_MEMBER = b'"events"'
# Levels above a payload's values in an append body: the body, its list, the event, the payload.
_ABOVE_PAYLOAD_VALUES = 4


def _decoded(body: bytes) -> list[EventIn] | None:
    """The events of a usual append body decoded by msgspec into `EventIn`s (strict JSON types: ~a third
    of pydantic's CPU, and no model built unless a follower is sent the event), or None: the body is not
    one msgspec takes (a number as text, `1.0` for an integer, a lone surrogate, a byte order mark, …),
    and pydantic decides. Where both take a body they give the same values (tests/live/test_append_fast_path.py)."""
    try:
        if _EVENTS_MEMBER in body:
            events = BATCH_DECODER.decode(body).events
            return events if 0 < len(events) <= MAX_BATCH else None
        return [EVENT_DECODER.decode(body)]
    except msgspec.DecodeError:  # its ValidationError too
        return None


def _fast_validated(body: bytes) -> Sequence[IncomingEvent] | None:
    """The usual append — `{"events": [...]}` of valid events without idempotency keys, or one such event
    object alone (a body without the text `"events"`: ~50 against ~170 µs the full way) — parsed and
    validated from the body's bytes in one call, straight into events (not `json.loads` into dicts, then
    a model from each dict: half the CPU per event): by msgspec into `EventIn`s (`_decoded`), else by
    pydantic into `Event`s. None for anything else (an item with a key or
    invalid, other members, a JSON limit, an encoding `json.loads` reads and this parser does not, …):
    the body then goes the full way (`parse_json`, `_batch_items`, `_validated`), which
    says what is wrong. Where both accept a body, both give the same events
    (tests/live/test_append_fast_path.py)."""
    if _KEY_MEMBER in body:
        return None
    events: Sequence[Event | EventIn] | None = _decoded(body)
    if events is not None:
        above, outer = (_ABOVE_PAYLOAD_VALUES, 2) if _EVENTS_MEMBER in body else (_ABOVE_PAYLOAD_VALUES - 2, 0)
    else:
        try:
            if _EVENTS_MEMBER in body:
                events = _Batch.model_validate_json(body).events
                above, outer = _ABOVE_PAYLOAD_VALUES, 2
            else:  # one event object, which the full way takes as a batch of one (pydantic takes one JSON value)
                events = [Event.model_validate_json(body)]
                above, outer = _ABOVE_PAYLOAD_VALUES - 2, 0
        except ValidationError:
            return None
    # Every value of an event but its payload is a validated scalar: the body nests deeper than the
    # payloads only through containers among their values. Those containers are at most the body's
    # opening brackets less the body's, its list's, each event's and each non-empty payload's (brackets
    # in strings only add to the count), and a chain of them can go no deeper than their number: when
    # that cannot reach the limit, the values are not walked (a usual batch of 100 has none).
    below_payloads = body.count(b"{") + body.count(b"[") - outer - len(events) - sum(1 for ev in events if ev.payload)
    nested = (
        []
        if below_payloads <= MAX_JSON_DEPTH - above
        else [v for ev in events for v in ev.payload.values() if isinstance(v, (dict, list))]
    )
    if not parsed_within_bounds(body, nested, max_depth=MAX_JSON_DEPTH - above + 1):
        return None
    return UnkeyedEvents(events)


def _key_ok(key: Any) -> bool:
    return key is None or (isinstance(key, str) and 0 < len(key) <= MAX_KEY)


def _reason(item: Any) -> str:
    """Why an item is no valid event, worded by the request's schema (the item with its key)."""
    try:
        IncomingEventBody.model_validate(item)
    except ValidationError as exc:
        return validation_message(exc)
    return "not a valid event"


def _validated(items: list[Any]) -> tuple[list[IncomingEvent], list[dict[str, Any]]]:
    """Each item validated once: the whole batch in one call of the validator (the usual case: every
    item valid), else item by item, each invalid one reported with its index, key and reason."""
    keys: list[Any] = []
    bodies: list[Any] = []  # the items without their key: events
    for item in items:
        if isinstance(item, dict) and "idempotency_key" in item:
            body = dict(item)
            keys.append(body.pop("idempotency_key"))
            bodies.append(body)
        else:
            keys.append(None)
            bodies.append(item)
    if all(_key_ok(key) for key in keys):
        try:
            events = _EVENTS.validate_python(bodies)
        except ValidationError:
            pass
        else:
            return [IncomingEvent(i, ev, key) for i, (ev, key) in enumerate(zip(events, keys, strict=True))], []
    valid: list[IncomingEvent] = []
    rejected: list[dict[str, Any]] = []
    for index, (body, key) in enumerate(zip(bodies, keys, strict=True)):
        event = None
        if _key_ok(key):
            with contextlib.suppress(ValidationError):
                event = Event.model_validate(body)
        if event is not None:
            valid.append(IncomingEvent(index, event, key))
        else:
            reason = _reason(items[index])
            rejected.append(
                {"index": index, "idempotency_key": key if isinstance(key, str) else None, "reason": reason}
            )
    return valid, rejected


def _batch_items(raw: Any) -> list[Any]:
    """The items of an append body: `{events: [...]}`, or one event object."""
    items: list[Any]
    if isinstance(raw, dict) and "events" in raw:
        if not isinstance(raw["events"], list):
            raise ApiError(422, "validation_error", "events must be a list")
        items = raw["events"]
    elif isinstance(raw, dict):
        items = [raw]
    else:
        raise ApiError(422, "validation_error", 'send one event object, or {"events": [...]}')
    if not items:
        raise ApiError(422, "validation_error", "the batch is empty")
    if len(items) > MAX_BATCH:
        raise ApiError(413, "payload_too_large", f"a batch holds at most {MAX_BATCH} events; got {len(items)}")
    return items


class AppendBody(BaseModel):
    """A batch; a single event object (IncomingEventBody) is accepted too."""

    events: list[IncomingEventBody] = Field(max_length=MAX_BATCH)


class FinishTrace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["passed", "failed", "error", "aborted"]
    failure_signature: str | None = Field(default=None, max_length=500)
    duration_ms: int | None = Field(default=None, ge=0)


@documented(
    summary="Start a running trace (live ingest)",
    body=CreateTrace,
    response=LiveTrace,
    status=201,
    errors=(400, 413, 415, 422),
)
async def create_trace(request: Request) -> JSONResponse:
    ctx = api_context(request)
    try:
        body = CreateTrace.model_validate(await json_body(request))
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_message(exc)) from None
    assert body.source is None or body.source in TRACE_SOURCES
    org = org_of(request)
    trace_id, short_id = await anyio.to_thread.run_sync(
        lambda: ctx.live.create_trace(
            org,
            scenario_slug=body.scenario_slug,
            scenario_title=body.scenario_title,
            source=body.source,
            code_sha=body.code_sha,
            pr_number=body.pr_number,
        )
    )
    ctx.metrics.ingested_traces.labels("live").inc()
    return JSONResponse({"id": trace_id, "short_id": short_id, "status": "running"}, status_code=201)


@documented(
    summary="Append one event or a batch {events: [...]}: valid events are kept, the others reported",
    body=AppendBody,
    response=AppendResponse,
    errors=(400, 404, 409, 413, 415, 422),
)
async def append_events(request: Request) -> JSONResponse:
    ctx = api_context(request)
    body = await json_bytes(request)
    org = org_of(request)
    trace_ref = request.path_params["trace_id"]

    def append() -> tuple[AppendResult, list[dict[str, Any]]]:
        # One hop to the worker thread per batch: the body is parsed, its events validated, numbered
        # and stored there, off the event loop, with the cyclic garbage collector paused (`models/batch.py`).
        with gc_paused():
            fast = _fast_validated(body)
            valid, rejected = (fast, []) if fast is not None else _validated(_batch_items(parse_json(body)))
            return ctx.live.append_events(org, trace_ref, valid), rejected

    result, rejected = await in_append_thread(append)
    if result.stored:
        ctx.metrics.ingested_events.labels("live").inc(len(result.stored))
        # The trace's UUID came with the append: no whole-trace read to publish a batch.
        ctx.bus.publish(result.trace_id, Published(events=result.stored))
    rejected.extend(
        {"index": r.index, "idempotency_key": r.idempotency_key, "reason": r.reason} for r in result.rejected
    )
    rejected.sort(key=lambda r: int(r["index"]))
    return JSONResponse(
        {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": rejected,
            "last_seq": result.last_seq,
        }
    )


async def _canonical_id(request: Request, trace_ref: str) -> str:
    ctx = api_context(request)
    detail = await anyio.to_thread.run_sync(ctx.store.get_trace, org_of(request), trace_ref)
    return detail.id


@documented(
    summary="Finish a running trace: fixes status, duration and failure signature",
    body=FinishTrace,
    response=TraceDetail,
    errors=(400, 404, 409, 415, 422),
)
async def finish_trace(request: Request) -> JSONResponse:
    ctx = api_context(request)
    try:
        body = FinishTrace.model_validate(await json_body(request))
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_message(exc)) from None
    org = org_of(request)
    trace_ref = request.path_params["trace_id"]

    def finish() -> str:
        # One detector run: it names the failure when the producer did not (issue 3), goes into the
        # search index with the finished trace, and is stored as the trace's analysis and incident.
        events = ctx.store.list_events(org, trace_ref, limit=100_000).events
        findings = analyze(events, body.status)
        signature = body.failure_signature
        if signature is None and body.status != "passed":
            signature = failure_signature(findings)
        ctx.live.finish_trace(
            org, trace_ref, status=body.status, failure_signature=signature, duration_ms=body.duration_ms
        )
        trace_id = ctx.store.get_trace(org, trace_ref).id
        run_analysis(ctx, org, trace_id, findings=findings)
        return trace_id

    trace_id = await anyio.to_thread.run_sync(finish)
    ctx.bus.publish(trace_id, Published(finished=body.status))
    detail = await anyio.to_thread.run_sync(ctx.store.get_trace, org, trace_id)
    return JSONResponse(detail.model_dump(mode="json", exclude={"steps", "artifacts"}))


def _after_seq(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after_seq")
    if raw is None or raw == "":
        return -1
    if not raw.lstrip("-").isdigit():
        raise ApiError(400, "bad_request", f"Last-Event-ID / after_seq must be an event seq; got {raw!r}")
    return int(raw)


_TO_JSON = Event.__pydantic_serializer__.to_json


def _frames(events: Sequence[Event]) -> bytes:
    """The events as Server-Sent Events frames in one chunk: each what `ServerSentEvent(data=<the event's
    JSON>, id=<its seq>)` encodes (tests/live/test_stream.py), written to the stream in one send. A batch
    of 100 was 100 sends, each through the response's middleware and a cancel scope of its own; a JSON
    text holds no line break, so the event is one `data:` line."""
    return b"".join(b"id: %d\r\ndata: %s\r\n\r\n" % (ev.seq, _TO_JSON(ev, exclude_none=True)) for ev in events)


@documented(
    summary="Follow a trace as Server-Sent Events: backfill after Last-Event-ID / after_seq, then live",
    media_type="text/event-stream",
    query=[
        Param("after_seq", integer(), "resume after this seq (same as Last-Event-ID)"),
        Param("live", integer(0, 1), "accepted for Guard ingest compatibility"),
        Param("Last-Event-ID", string(), where="header"),
    ],
    errors=(400, 404, 409),
)
async def stream(request: Request) -> Response:
    ctx = api_context(request)
    org = org_of(request)
    after = _after_seq(request)
    trace_id = await _canonical_id(request, request.path_params["trace_id"])
    await anyio.to_thread.run_sync(ctx.tiers.require_hot, org, trace_id)

    async def backfill(last: int) -> AsyncIterator[tuple[Event | None, str]]:
        while True:
            events, status = await anyio.to_thread.run_sync(
                functools.partial(ctx.live.events_after, org, trace_id, last, BACKFILL_PAGE)
            )
            for ev in events:
                yield ev, status
            if len(events) < BACKFILL_PAGE:
                yield None, status
                return
            last = events[-1].seq

    async def frames() -> AsyncIterator[ServerSentEvent | bytes]:
        last = after
        while True:
            # Subscribe before reading the store: an event stored meanwhile is then in one or the other
            # (or both: the seq check drops the copy). So: no gap, no duplicate.
            with ctx.bus.subscribe(trace_id) as sub:
                status = "running"
                async for ev, seen_status in backfill(last):
                    status = seen_status
                    if ev is not None:
                        last = ev.seq
                        yield _frames((ev,))
                if status not in ("queued", "running"):
                    yield ServerSentEvent(data=json.dumps({"status": status}), event="end")
                    return
                async for message in sub.stream:
                    new = [ev for ev in message.events if ev.seq > last]
                    if new:
                        last = new[-1].seq
                        yield _frames(new)
                    if message.finished is not None:
                        yield ServerSentEvent(data=json.dumps({"status": message.finished}), event="end")
                        return
                if not sub.lagged:
                    return
            # Lagged behind the writer: catch up from the store and subscribe again.

    return EventSourceResponse(frames(), ping=HEARTBEAT_SECONDS, headers={"cache-control": "no-store"})


async def reap(ctx: ApiContext, now_ms: int | None = None) -> list[str]:
    """Mark `interrupted` every live trace no producer touched (created, appended to) for the quiet period
    (`ctx.live_quiet_seconds`): its producer crashed or lost the network. What it holds stays stored and
    searchable; the detectors run on it; its followers get the end of the stream. Returns the trace ids."""
    quiet = ctx.live_quiet_seconds

    def work() -> list[str]:
        reaped = []
        for org, trace_id in ctx.live.quiet_traces(quiet, now_ms):
            if ctx.live.interrupt(org, trace_id, quiet, None, now_ms):
                run_analysis(ctx, org, trace_id)  # names the failure from the events, when they show one
                reaped.append(trace_id)
        return reaped

    reaped = await anyio.to_thread.run_sync(work)
    for trace_id in reaped:
        ctx.bus.publish(trace_id, Published(finished=INTERRUPTED))
    return reaped


async def run_reaper(ctx: ApiContext) -> None:
    """The reaper `serve` runs beside the app until cancelled: a look every quarter of the quiet period
    (at most every 30 s)."""
    interval = max(0.05, min(30.0, ctx.live_quiet_seconds / 4))
    while True:
        await anyio.sleep(interval)
        try:
            await reap(ctx)
        except Exception:  # a failing look (the database restarting) is retried at the next one
            log.warning("the live-trace reaper failed; it will look again in %.0f s", interval, exc_info=True)


def routes() -> list[Route]:
    return [
        Route("/v1/traces", create_trace, methods=["POST"]),
        Route("/v1/traces/{trace_id}/events", append_events, methods=["POST"]),
        Route("/v1/traces/{trace_id}/finish", finish_trace, methods=["POST"]),
        Route("/v1/traces/{trace_id}/stream", stream, methods=["GET"]),
    ]


__all__ = ["TraceNotRunning", "reap", "routes", "run_reaper"]
