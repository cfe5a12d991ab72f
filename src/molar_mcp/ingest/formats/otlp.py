"""OTLP/HTTP trace export bodies → bounded span records (pure: no I/O). docs/otlp.md has the mapping.

Bodies are parsed with the published `opentelemetry-proto` classes: binary protobuf as it is, and
OTLP/JSON through protobuf's `json_format` after one difference is mended — OTLP/JSON writes trace and
span ids as hex, where the protobuf JSON mapping expects base64 (OTLP specification, "JSON Protobuf
Encoding"). Enums come as integers, 64-bit integers as strings or numbers; unknown fields are ignored.

Every span is checked on its own: a span whose ids have the wrong length is refused (and named in the
answer's `partial_success`), the others are kept. What is kept is bounded — attribute count, value
length, nesting depth, array length, events, links — and every cut is written into the record's `cut`
list, so a reader knows what is missing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

MAX_SPANS_PER_REQUEST: Final = 20_000  # the SDK's batch is 512; a request above this is refused whole
MAX_ATTRIBUTES: Final = 128  # per span, span event and resource (the SDK's own default limit)
MAX_VALUE_CHARS: Final = 4_096  # one attribute value
MAX_TEXT_CHARS: Final = 16_000  # message contents, tool arguments and results, input/output values
MAX_DEPTH: Final = 8  # nested arrays / key-value lists
MAX_ARRAY: Final = 128
MAX_SPAN_EVENTS: Final = 128
MAX_LINKS: Final = 32
MAX_NAME_CHARS: Final = 500

# Attributes whose values are conversation text: they keep more characters than the others.
TEXT_KEYS: Final = re.compile(
    r"^(input\.value|output\.value|gen_ai\.(input|output|system)\.messages|gen_ai\.system_instructions"
    r"|gen_ai\.(prompt|completion)(\..*)?|gen_ai\.tool\.call\.(arguments|result)|gen_ai\.tool\.definitions"
    r"|llm\.(input|output)_messages\..*|tool\.(parameters|arguments|result)|exception\.stacktrace"
    r"|gen_ai\.event\.content|mcp\..*(arguments|result))$"
)

SPAN_KINDS: Final = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS_CODES: Final = {0: "unset", 1: "ok", 2: "error"}

_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class OtlpDecodeError(Exception):
    """The body cannot be read as an export request (HTTP 400)."""


@dataclass(frozen=True)
class SpanEvent:
    name: str
    ts_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SpanRecord:
    """One span, validated and bounded. Ids are lowercase hex; times are Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str  # unset | ok | error
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    events: tuple[SpanEvent, ...] = ()
    links: tuple[dict[str, Any], ...] = ()
    cut: tuple[str, ...] = ()

    @property
    def service(self) -> str:
        name = self.resource.get("service.name")
        return name if isinstance(name, str) and name else "unknown_service"

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "status": self.status,
            "status_message": self.status_message,
            "attributes": self.attributes,
            "resource": self.resource,
            "scope": self.scope,
            "events": [{"name": e.name, "ts_ns": e.ts_ns, "attributes": e.attributes} for e in self.events],
            "links": list(self.links),
            "cut": list(self.cut),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpanRecord:
        return cls(
            trace_id=data["trace_id"],
            span_id=data["span_id"],
            parent_id=data["parent_id"],
            name=data["name"],
            kind=data["kind"],
            start_ns=data["start_ns"],
            end_ns=data["end_ns"],
            status=data["status"],
            status_message=data["status_message"],
            attributes=data["attributes"],
            resource=data["resource"],
            scope=data["scope"],
            events=tuple(SpanEvent(e["name"], e["ts_ns"], e["attributes"]) for e in data["events"]),
            links=tuple(data["links"]),
            cut=tuple(data["cut"]),
        )


@dataclass(frozen=True)
class RejectedSpan:
    trace_id: str
    span_id: str
    reason: str


@dataclass
class Decoded:
    spans: list[SpanRecord] = field(default_factory=list)
    rejected: list[RejectedSpan] = field(default_factory=list)


class TooManySpans(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(
            f"the request holds {count} spans; at most {MAX_SPANS_PER_REQUEST} are taken in one request "
            "(the OpenTelemetry SDK sends 512 a batch): send smaller batches"
        )
        self.count = count


# ---------------------------------------------------------------------------------------------------
# Bodies


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OtlpDecodeError(f"the body is not an ExportTraceServiceRequest in protobuf: {exc}") from None
    return request


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    _parse_json(body, request, "resourceSpans", "ExportTraceServiceRequest")
    return request


def decode_logs_protobuf(body: bytes) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OtlpDecodeError(f"the body is not an ExportLogsServiceRequest in protobuf: {exc}") from None
    return request


def decode_logs_json(body: bytes) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    _parse_json(body, request, "resourceLogs", "ExportLogsServiceRequest")
    return request


def _parse_json(body: bytes, request: Any, top: str, name: str) -> None:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise OtlpDecodeError(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OtlpDecodeError(f"an OTLP/JSON body is an object with {top}")
    try:
        _hex_ids_to_base64(data, 0)
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError, AttributeError) as exc:
        raise OtlpDecodeError(f"the body is not an OTLP/JSON {name}: {exc}") from None


def _hex_ids_to_base64(node: Any, depth: int) -> None:
    """OTLP/JSON ids are hex (OTLP spec, JSON Protobuf Encoding); the protobuf JSON mapping reads base64.
    An id that is not hex is kept as its raw characters, so its length check refuses the span."""
    if depth > 64:
        raise OtlpDecodeError("the JSON body is nested too deep")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raw = value.encode("utf-8", "replace")
                node[key] = base64.b64encode(raw).decode("ascii")
            elif isinstance(value, dict | list):
                _hex_ids_to_base64(value, depth + 1)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _hex_ids_to_base64(item, depth + 1)


def trace_ids(request: ExportTraceServiceRequest) -> set[bytes]:
    """The raw trace ids of a request's spans."""
    return {span.trace_id for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans}


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


# ---------------------------------------------------------------------------------------------------
# Spans


def decode_spans(request: ExportTraceServiceRequest, skip: Collection[bytes] = ()) -> Decoded:
    """Every span of the request, validated and bounded; refused spans with the reason. Spans of the
    traces in `skip` (raw trace ids) are left out. Raises `TooManySpans` (before anything is
    converted) when the request is too large to take."""
    count = span_count(request)
    if count > MAX_SPANS_PER_REQUEST:
        raise TooManySpans(count)
    out = Decoded()
    for rs in request.resource_spans:
        cut: list[str] = []
        resource = attributes_of(rs.resource.attributes, cut, "resource")
        for ss in rs.scope_spans:
            scope = ss.scope.name[:MAX_NAME_CHARS]
            for span in ss.spans:
                if skip and span.trace_id in skip:
                    continue
                record = _span_record(span, resource, scope, list(cut))
                if isinstance(record, RejectedSpan):
                    out.rejected.append(record)
                else:
                    out.spans.append(record)
    return out


_NO_TRACE: Final = b"\0" * 16
_NO_SPAN: Final = b"\0" * 8


def _ids(span: Span) -> tuple[str, str, str | None] | RejectedSpan:
    """(trace id, span id, parent id) in lowercase hex, or why the span is refused."""
    trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
    trace_hex, span_hex = trace_id.hex(), span_id.hex()
    if len(trace_id) != 16 or trace_id == _NO_TRACE:
        return RejectedSpan(trace_hex, span_hex, "trace_id must be 16 bytes (32 hex digits), not all zero")
    if len(span_id) != 8 or span_id == _NO_SPAN:
        return RejectedSpan(trace_hex, span_hex, "span_id must be 8 bytes (16 hex digits), not all zero")
    if len(parent_id) not in (0, 8):
        return RejectedSpan(trace_hex, span_hex, "parent_span_id must be empty or 8 bytes (16 hex digits)")
    parent = parent_id.hex() if parent_id and parent_id != _NO_SPAN else None
    if parent == span_hex:
        return RejectedSpan(trace_hex, span_hex, "a span cannot be its own parent")
    if span.start_time_unix_nano <= 0:
        return RejectedSpan(trace_hex, span_hex, "start_time_unix_nano is missing")
    return trace_hex, span_hex, parent


@dataclass
class SpanIds:
    """A request's spans by their ids alone (what the answer needs), grouped by trace, in request order;
    refused spans with the reason; and for each trace, a name to show until its spans are read."""

    traces: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # trace id → (service, root span name)
    rejected: list[RejectedSpan] = field(default_factory=list)
    count: int = 0


def span_ids(request: ExportTraceServiceRequest) -> SpanIds:
    """The ids of every span of the request, checked as `decode_spans` checks them (the same spans are
    refused, for the same reasons). Raises `TooManySpans` when the request is too large to take."""
    count = span_count(request)
    if count > MAX_SPANS_PER_REQUEST:
        raise TooManySpans(count)
    out = SpanIds(count=count)
    traces, names = out.traces, out.names
    for rs in request.resource_spans:
        service = next((kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"), "")
        for ss in rs.scope_spans:
            for span in ss.spans:
                ids = _ids(span)
                if isinstance(ids, RejectedSpan):
                    out.rejected.append(ids)
                    continue
                trace_id, span_id, parent = ids
                items = traces.get(trace_id)
                if items is None:
                    items = traces[trace_id] = []
                    names[trace_id] = (service[:MAX_NAME_CHARS] or "unknown_service", "run")
                items.append((span_id, parent))
                if parent is None:
                    names[trace_id] = (names[trace_id][0], span.name[:MAX_NAME_CHARS] or "run")
    return out


def _span_record(span: Span, resource: dict[str, Any], scope: str, cut: list[str]) -> SpanRecord | RejectedSpan:
    ids = _ids(span)
    if isinstance(ids, RejectedSpan):
        return ids
    trace_hex, span_hex, parent = ids
    start, end = int(span.start_time_unix_nano), int(span.end_time_unix_nano)
    if end < start:
        cut.append(f"end_time_unix_nano {end} is before the start (or missing); taken as the start")
        end = start
    kind = SPAN_KINDS.get(int(span.kind))
    if kind is None:
        cut.append(f"unknown span kind {int(span.kind)}; taken as unspecified")
        kind = "unspecified"
    status = STATUS_CODES.get(int(span.status.code))
    if status is None:
        cut.append(f"unknown status code {int(span.status.code)}; taken as unset")
        status = "unset"
    name = span.name or "(unnamed span)"
    if len(name) > MAX_NAME_CHARS:
        cut.append(f"name: {len(name)} chars, kept {MAX_NAME_CHARS}")
        name = name[:MAX_NAME_CHARS]
    attributes = attributes_of(span.attributes, cut, "attributes")
    if span.dropped_attributes_count:
        cut.append(f"attributes: the exporter dropped {span.dropped_attributes_count}")
    events = []
    for ev in span.events[:MAX_SPAN_EVENTS]:
        ev_name = ev.name[:MAX_NAME_CHARS] or "(unnamed event)"
        events.append(
            SpanEvent(ev_name, int(ev.time_unix_nano) or start, attributes_of(ev.attributes, cut, f"event {ev_name}"))
        )
    if len(span.events) > MAX_SPAN_EVENTS:
        cut.append(f"events: {len(span.events)}, kept the first {MAX_SPAN_EVENTS}")
    if span.dropped_events_count:
        cut.append(f"events: the exporter dropped {span.dropped_events_count}")
    links = []
    for link in span.links[:MAX_LINKS]:
        item: dict[str, Any] = {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
        if link.attributes:
            item["attributes"] = attributes_of(link.attributes, cut, "link")
        links.append(item)
    if len(span.links) > MAX_LINKS:
        cut.append(f"links: {len(span.links)}, kept the first {MAX_LINKS}")
    return SpanRecord(
        trace_id=trace_hex,
        span_id=span_hex,
        parent_id=parent,
        name=name,
        kind=kind,
        start_ns=start,
        end_ns=end,
        status=status,
        status_message=_bounded_text(span.status.message, MAX_VALUE_CHARS, cut, "status.message"),
        attributes=attributes,
        resource=resource,
        scope=scope,
        events=tuple(events),
        links=tuple(links),
        cut=tuple(cut),
    )


_LIMITS: dict[str, int] = {}  # attribute key → its value's limit (agent code uses few keys, many times)


def _limit_of(key: str) -> int:
    limit = MAX_TEXT_CHARS if TEXT_KEYS.match(key) else MAX_VALUE_CHARS
    if len(_LIMITS) < 4096:
        _LIMITS[key] = limit
    return limit


def attributes_of(items: Iterable[KeyValue], cut: list[str], where: str) -> dict[str, Any]:
    """Key-values → a plain dict, bounded; every cut is appended to `cut`."""
    out: dict[str, Any] = {}
    total = 0
    for kv in items:
        total += 1
        if len(out) >= MAX_ATTRIBUTES:
            continue
        key = kv.key[:MAX_NAME_CHARS]
        limit = _LIMITS.get(key) or _limit_of(key)
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":  # (most values: taken here, the place named only when cut)
            text = value.string_value
            out[key] = text if len(text) <= limit else _bounded_text(text, limit, cut, f"{where} {key}")
        elif which == "int_value":
            out[key] = int(value.int_value)
        else:
            out[key] = value_of(value, cut, f"{where} {key}", limit, 0)
    if total > MAX_ATTRIBUTES:
        cut.append(f"{where}: {total} attributes, kept the first {MAX_ATTRIBUTES}")
    return out


def value_of(value: AnyValue, cut: list[str], where: str, limit: int, depth: int) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return _bounded_text(value.string_value, limit, cut, where)
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return int(value.int_value)
    if which == "double_value":
        number = float(value.double_value)
        return number if number == number and abs(number) != float("inf") else str(number)
    if which == "bytes_value":
        raw = bytes(value.bytes_value)
        text = base64.b64encode(raw[: limit // 2]).decode("ascii")
        if len(raw) > limit // 2:
            cut.append(f"{where}: {len(raw)} bytes, kept {limit // 2}")
        return {"bytes_base64": text}
    if which in ("array_value", "kvlist_value"):
        if depth >= MAX_DEPTH:
            cut.append(f"{where}: nested deeper than {MAX_DEPTH} levels, cut there")
            return "…"
        if which == "array_value":
            values = value.array_value.values
            if len(values) > MAX_ARRAY:
                cut.append(f"{where}: {len(values)} items, kept {MAX_ARRAY}")
            return [value_of(v, cut, where, limit, depth + 1) for v in values[:MAX_ARRAY]]
        kvs = value.kvlist_value.values
        if len(kvs) > MAX_ARRAY:
            cut.append(f"{where}: {len(kvs)} keys, kept {MAX_ARRAY}")
        return {kv.key[:MAX_NAME_CHARS]: value_of(kv.value, cut, where, limit, depth + 1) for kv in kvs[:MAX_ARRAY]}
    return None


def _bounded_text(text: str, limit: int, cut: list[str], where: str) -> str:
    if len(text) <= limit:
        return text
    cut.append(f"{where}: {len(text)} chars, kept {limit}")
    return text[:limit]


# ---------------------------------------------------------------------------------------------------
# Log records (the Logs API): GenAI instrumentations emit a model call's messages as log records
# (`gen_ai.user.message`, `gen_ai.choice`, …) carrying the ids of the span they belong to.

MAX_LOG_RECORDS_PER_REQUEST: Final = 20_000


@dataclass(frozen=True)
class LogItem:
    """A log record as an event of its span: `name`, `ts_ns`, and its attributes with its body (`body`)."""

    trace_id: str
    span_id: str
    event: SpanEvent
    service: str


@dataclass
class DecodedLogs:
    items: list[LogItem] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why, one per refused record


def decode_logs(request: ExportLogsServiceRequest) -> DecodedLogs:
    """Every log record that names its span (trace id and span id), bounded as span events are; the
    others are refused with the reason. Raises `TooManySpans` (counting records) when too many."""
    count = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    if count > MAX_LOG_RECORDS_PER_REQUEST:
        raise TooManySpans(count)
    out = DecodedLogs()
    for rl in request.resource_logs:
        service = next((kv.value.string_value for kv in rl.resource.attributes if kv.key == "service.name"), "")
        for sl in rl.scope_logs:
            for record in sl.log_records:
                if len(record.trace_id) != 16 or record.trace_id == _NO_TRACE:
                    out.rejected.append("a log record must carry the trace_id of its span (16 bytes, not all zero)")
                    continue
                if len(record.span_id) != 8 or record.span_id == _NO_SPAN:
                    out.rejected.append("a log record must carry the span_id of its span (8 bytes, not all zero)")
                    continue
                cut: list[str] = []
                attributes = attributes_of(record.attributes, cut, "log record")
                name = record.event_name or attributes.pop("event.name", None) or "log"
                name = str(name)[:MAX_NAME_CHARS]
                if record.HasField("body"):
                    attributes["body"] = value_of(record.body, cut, f"log record {name} body", MAX_TEXT_CHARS, 0)
                if cut:
                    attributes["cut"] = cut
                ts = int(record.time_unix_nano) or int(record.observed_time_unix_nano)
                out.items.append(
                    LogItem(
                        record.trace_id.hex(),
                        record.span_id.hex(),
                        SpanEvent(name, ts, attributes),
                        service[:MAX_NAME_CHARS] or "unknown_service",
                    )
                )
    return out


def trace_spans(request: ExportTraceServiceRequest, trace_id: str, selected: Callable[[str], bool]) -> list[SpanRecord]:
    """The spans of one trace (hex id) in a request, in request order, decoded and bounded as
    `decode_spans` does them: only those for which `selected(span id)` holds (asked once per span, in
    order), so a finish reads the few spans it needs; spans refused for their ids are left out."""
    trace = bytes.fromhex(trace_id)
    out: list[SpanRecord] = []
    for rs in request.resource_spans:
        resource: dict[str, Any] | None = None
        cut: list[str] = []
        for ss in rs.scope_spans:
            for span in ss.spans:
                if span.trace_id != trace or not selected(span.span_id.hex()):
                    continue
                if resource is None:
                    resource = attributes_of(rs.resource.attributes, cut, "resource")
                record = _span_record(span, resource, ss.scope.name[:MAX_NAME_CHARS], list(cut))
                if not isinstance(record, RejectedSpan):
                    out.append(record)
    return out
