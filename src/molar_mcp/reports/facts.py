"""What a report or the viewer shows of a trace, extracted once from its detail and events (pure).

Every string here is already masked (`models/masking.py`) and cut to a readable length, so the
markdown and HTML renderers cannot leak a secret by forgetting to mask one field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from molar_mcp.models import AnalysisFinding, ArtifactRef, Event, TraceDetail
from molar_mcp.models.masking import mask, mask_text

TEXT_CHARS = 500
VALUE_CHARS = 300
STEP_EVENTS_MAX = 60
REQUESTS_MAX = 200
CONSOLE_MAX = 100
ERRORS_MAX = 20
CONSOLE_LEVELS = ("error", "warning", "warn")
# A body is shown whole up to this many characters (a viewer expands it on demand); past it, the cut
# says how much went and where the whole event is.
BODY_CHARS = 100_000
FINDINGS_MAX = 10

R = TypeVar("R")


class _Fact(BaseModel):
    model_config = ConfigDict(frozen=True)


class StepFact(_Fact):
    step: int
    title: str
    ok: bool | None
    offset_ms: int | None
    duration_ms: int | None
    event_count: int
    failing: bool
    path: str = ""
    depth: int = 0


class EventLine(_Fact):
    seq: int
    step: int | None
    offset_ms: int | None
    kind: str
    ok: bool | None
    text: str
    body: str | None = Field(default=None, description="the event's body whole (masked, JSON pretty-printed)")


class AssertionFact(_Fact):
    seq: int
    step: int | None
    message: str
    expected: str | None
    actual: str | None
    matcher: str | None
    selector: str | None


class RequestFact(_Fact):
    seq: int
    step: int | None
    method: str
    url: str
    status: int | None
    duration_ms: int | None
    failed: bool
    note: str | None = None
    request_id: str | None = Field(default=None, exclude=True)  # pairs a response with its request; not shown
    request_body: str | None = Field(default=None, description="whole (masked, JSON pretty-printed)")
    response_body: str | None = Field(default=None, description="whole (masked, JSON pretty-printed)")


class FindingFact(_Fact):
    """What a detector said about the failure (best first); the first one's critical step is the cause."""

    label: str
    confidence: float
    critical_step: int | None
    critical_seq: int | None
    evidence_seqs: list[int]
    summary: str


class ConsoleFact(_Fact):
    seq: int
    step: int | None
    level: str
    text: str


class TraceFacts(_Fact):
    trace_id: str
    short_id: str
    title: str
    scenario: str | None
    status: str
    created_at: str
    duration_ms: int | None
    code_sha: str | None
    pr_number: int | None
    source: str | None
    failure_signature: str | None
    event_count: int
    events_read: int
    failed_event_count: int
    steps: list[StepFact]
    failing_step: StepFact | None
    failed_assertion: AssertionFact | None
    errors: list[EventLine]
    failing_step_events: list[EventLine]
    failing_step_events_left_out: int
    requests: list[RequestFact]
    requests_left_out: int
    console: list[ConsoleFact]
    console_left_out: int
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    findings: list[FindingFact] = Field(default_factory=list, description="the detectors' findings, best first")
    causal_step: int | None = Field(default=None, description="the step of the top finding's cause")
    causal_request: RequestFact | None = Field(
        default=None, description="the request the top finding names as the cause, with its bodies"
    )
    causal_step_events: list[EventLine] = Field(
        default_factory=list, description="the causal step's events, when it is not the failing step"
    )

    @property
    def failed_requests(self) -> list[RequestFact]:
        return [r for r in self.requests if r.failed]

    @property
    def console_errors(self) -> list[ConsoleFact]:
        return [c for c in self.console if c.level == "error"]


def seconds(ms: int | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f} s"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def cut(text: str, limit: int = TEXT_CHARS, where: str | None = None) -> str:
    """`text` cut to `limit` characters; a cut says how much went and, given `where`, where it is whole."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[+{len(text) - limit:,} chars{': ' + where if where else ''}]"


def clean(text: str | None, limit: int = TEXT_CHARS, where: str | None = None) -> str:
    """Masked and cut: the only way free text enters the facts."""
    return cut(mask_text(text or ""), limit, where)


def event_uri(trace_ref: str, seq: int) -> str:
    """Where one event is whole (the MCP resource; `GET /v1/traces/{id}/events/{seq}` over REST)."""
    return f"molar://traces/{trace_ref}/events/{seq}"


def _value(value: Any, where: str | None = None) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(mask(value), ensure_ascii=False, sort_keys=True)
    return clean(text, VALUE_CHARS, where)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def event_text(ev: Event, trace_ref: str | None = None) -> str:
    """One line for an event: its message, else what its kind says, else its payload as compact JSON;
    cut with a pointer to the whole event when `trace_ref` is given."""
    p = ev.payload
    where = event_uri(trace_ref, ev.seq) if trace_ref else None
    if ev.message:
        return clean(ev.message, where=where)
    if ev.kind.startswith("network."):
        method, url, status = p.get("method"), p.get("url"), _int(p.get("status"))
        text = f"{method or ''} {url or ''}".strip()
        if status is not None:
            text += f" → {status}"
        if text:
            return clean(text, where=where)
    if ev.kind == "console" and isinstance(p.get("text"), str):
        return clean(p["text"], where=where)
    if isinstance(p.get("title"), str):
        return clean(p["title"], where=where)
    return clean(json.dumps(mask(p), ensure_ascii=False, sort_keys=True), where=where) if p else ""


def body_text(ev: Event, key: str = "body", trace_ref: str | None = None) -> str | None:
    """The event's body (`payload[key]`) whole for a reader to expand: masked, JSON pretty-printed,
    cut only past `BODY_CHARS` (saying how much went and where the whole event is)."""
    raw = ev.payload.get(key)
    if raw is None or raw == "":
        return None
    value: Any = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict | list):
            return cut(mask_text(raw), BODY_CHARS, event_uri(trace_ref, ev.seq) if trace_ref else None)
    text = json.dumps(mask(value), ensure_ascii=False, indent=2)
    return cut(text, BODY_CHARS, event_uri(trace_ref, ev.seq) if trace_ref else None)


def build_facts(
    detail: TraceDetail,
    events: Sequence[Event],
    *,
    events_total: int | None = None,
    findings: Sequence[AnalysisFinding] = (),
) -> TraceFacts:
    """Extract the facts of `detail` from `events` (its events in seq order; possibly only the first
    `len(events)` of `events_total`) and the detectors' `findings` (best first)."""
    t0 = events[0].ts if events else None
    ref = detail.short_id
    by_step: dict[int, list[Event]] = {}
    for ev in events:
        if ev.step is not None:
            by_step.setdefault(ev.step, []).append(ev)

    failing_number = next((s.step for s in detail.steps if s.ok is False and s.depth == 0), None)
    if failing_number is None:
        failing_number = next((e.step for e in events if e.ok is False and e.step is not None), None)

    steps: list[StepFact] = []
    for s in detail.steps:
        if s.depth:
            # A nested step: its own times and counts come with it (its events share the top-level number).
            first = next((e.ts for e in by_step.get(s.step, []) if e.seq >= s.first_seq), None)
            steps.append(
                StepFact(
                    step=s.step,
                    title=clean(s.title or s.step_id, 200),
                    ok=s.ok,
                    offset_ms=None if first is None or t0 is None else first - t0,
                    duration_ms=s.duration_ms,
                    event_count=s.event_count,
                    failing=False,
                    path=s.path,
                    depth=s.depth,
                )
            )
            continue
        evs = by_step.get(s.step, [])
        first_ts, last_ts = (evs[0].ts, evs[-1].ts) if evs else (None, None)
        end = next((e for e in reversed(evs) if e.kind == "step.end"), None)
        duration = _int(end.payload.get("duration_ms")) if end is not None else None
        if duration is None and first_ts is not None and last_ts is not None:
            duration = last_ts - first_ts
        steps.append(
            StepFact(
                step=s.step,
                title=clean(s.title or s.step_id, 200),
                ok=s.ok,
                offset_ms=None if first_ts is None or t0 is None else first_ts - t0,
                duration_ms=duration,
                event_count=s.event_count,
                failing=s.step == failing_number,
            )
        )
    failing_step = next((s for s in steps if s.failing), None)

    def line(ev: Event) -> EventLine:
        offset = None if t0 is None else ev.ts - t0
        return EventLine(
            seq=ev.seq,
            step=ev.step,
            offset_ms=offset,
            kind=ev.kind,
            ok=ev.ok,
            text=event_text(ev, ref),
            body=body_text(ev, trace_ref=ref),
        )

    failed_assertions = [e for e in events if e.kind == "assertion" and e.ok is False]
    assertion_ev = next((e for e in failed_assertions if e.step == failing_number), None) or next(
        iter(failed_assertions), None
    )
    assertion = None
    if assertion_ev is not None:
        p = assertion_ev.payload
        whole = event_uri(ref, assertion_ev.seq)
        assertion = AssertionFact(
            seq=assertion_ev.seq,
            step=assertion_ev.step,
            message=event_text(assertion_ev, ref),
            expected=_value(p.get("expected"), whole),
            actual=_value(p.get("actual"), whole),
            matcher=_value(p.get("matcher")),
            selector=_value(p.get("selector")),
        )

    step_events = by_step.get(failing_number, []) if failing_number is not None else []
    all_requests = _requests(events, ref)
    requests, requests_left_out = keep_first(all_requests, lambda r: r.failed, REQUESTS_MAX)
    requests = with_bodies(requests, events, ref)
    console, console_left_out = keep_first(_console(events, ref), lambda c: c.level == "error", CONSOLE_MAX)
    finding_facts = [
        FindingFact(
            label=clean(f.label, 64),
            confidence=f.confidence,
            critical_step=f.critical_step,
            critical_seq=f.critical_seq,
            evidence_seqs=list(f.evidence_seqs),
            summary=clean(f.summary),
        )
        for f in list(findings)[:FINDINGS_MAX]
    ]
    top = finding_facts[0] if finding_facts else None
    causal_step = top.critical_step if top is not None else None
    causal_request = None
    if top is not None and top.critical_seq is not None:
        causal_request = next((r for r in all_requests if r.seq == top.critical_seq), None)
        if causal_request is None:  # the cause is the request event itself: its row is its response's
            sent = next((e for e in events if e.seq == top.critical_seq), None)
            rid = _rid(sent.payload.get("request_id")) if sent is not None else None
            causal_request = next((r for r in all_requests if rid is not None and r.request_id == rid), None)
        if causal_request is not None:
            causal_request = with_bodies([causal_request], events, ref)[0]
    causal_events = by_step.get(causal_step, []) if causal_step is not None and causal_step != failing_number else []
    return TraceFacts(
        trace_id=detail.id,
        short_id=detail.short_id,
        title=clean(detail.scenario_title or detail.scenario_slug or detail.short_id, 200),
        scenario=clean(detail.scenario_slug, 200) if detail.scenario_slug else None,
        status=detail.status,
        created_at=detail.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        duration_ms=detail.duration_ms,
        code_sha=clean(detail.code_sha, 64) if detail.code_sha else None,
        pr_number=detail.pr_number,
        source=detail.source,
        failure_signature=clean(detail.failure_signature, 200) if detail.failure_signature else None,
        event_count=events_total if events_total is not None else max(detail.event_count, len(events)),
        events_read=len(events),
        failed_event_count=sum(1 for e in events if e.ok is False),
        steps=steps,
        failing_step=failing_step,
        failed_assertion=assertion,
        errors=[line(e) for e in events if e.kind == "error"][:ERRORS_MAX],
        failing_step_events=[line(e) for e in step_events[:STEP_EVENTS_MAX]],
        failing_step_events_left_out=max(0, len(step_events) - STEP_EVENTS_MAX),
        requests=requests,
        requests_left_out=requests_left_out,
        console=console,
        console_left_out=console_left_out,
        artifacts=list(detail.artifacts),
        findings=finding_facts,
        causal_step=causal_step,
        causal_request=causal_request,
        causal_step_events=[line(e) for e in causal_events[:STEP_EVENTS_MAX]],
    )


def _requests(events: Sequence[Event], ref: str) -> list[RequestFact]:
    """One row per request: its response when there is one, else the request, marked "no response".
    Without bodies: `with_bodies` adds them to the rows that are kept (a body is costly to render)."""
    answered = {
        e.payload.get("request_id")
        for e in events
        if e.kind == "network.response" and e.payload.get("request_id") is not None
    }
    rows: list[RequestFact] = []
    for ev in events:
        p = ev.payload
        if not ev.kind.startswith("network."):
            continue
        method = clean(str(p.get("method") or ""), 16)
        url = clean(str(p.get("url") or ev.message or ""), VALUE_CHARS, event_uri(ref, ev.seq))
        rid = p.get("request_id")
        common = {"seq": ev.seq, "step": ev.step, "method": method, "url": url, "request_id": _rid(rid)}
        if ev.kind == "network.response":
            status = _int(p.get("status"))
            failed = ev.ok is False or (status is not None and status >= 400)
            rows.append(RequestFact(**common, status=status, duration_ms=_int(p.get("duration_ms")), failed=failed))
        elif ev.kind == "network.request":
            if rid is None or rid in answered:
                continue
            rows.append(
                RequestFact(**common, status=None, duration_ms=None, failed=ev.ok is False, note="no response recorded")
            )
        elif ev.ok is False:
            rows.append(RequestFact(**common, status=None, duration_ms=None, failed=True, note=event_text(ev, ref)))
    return rows


def with_bodies(rows: list[RequestFact], events: Sequence[Event], ref: str) -> list[RequestFact]:
    """`rows` with the request's body and the response's, whole (masked, JSON pretty-printed)."""
    by_seq = {e.seq: e for e in events if e.kind.startswith("network.")}
    sent: dict[str, Event] = {}
    for e in by_seq.values():
        if e.kind == "network.request" and e.payload.get("request_id") is not None:
            sent.setdefault(str(e.payload["request_id"]), e)
    out = []
    for row in rows:
        ev = by_seq.get(row.seq)
        if ev is None:
            out.append(row)
            continue
        request = ev if ev.kind == "network.request" else (sent.get(row.request_id) if row.request_id else None)
        response = ev if ev.kind == "network.response" else None
        out.append(
            row.model_copy(
                update={
                    "request_body": body_text(request, trace_ref=ref) if request is not None else None,
                    "response_body": body_text(response, trace_ref=ref) if response is not None else None,
                }
            )
        )
    return out


def _rid(value: Any) -> str | None:
    return None if value is None else str(value)


def _console(events: Sequence[Event], ref: str) -> list[ConsoleFact]:
    rows: list[ConsoleFact] = []
    for ev in events:
        if ev.kind != "console":
            continue
        level = str(ev.payload.get("level") or ("error" if ev.ok is False else "log")).lower()
        if level == "warn":
            level = "warning"
        if level in CONSOLE_LEVELS or ev.ok is False:
            rows.append(ConsoleFact(seq=ev.seq, step=ev.step, level=level, text=event_text(ev, ref)))
    return rows


def keep_first(rows: list[R], important: Callable[[R], bool], limit: int) -> tuple[list[R], int]:
    """At most `limit` rows in their order, the important ones first to stay (a long trace keeps its
    failures: they are what the reader came for); and how many were left out."""
    if len(rows) <= limit:
        return rows, 0
    chosen = {i for i, r in enumerate(rows) if important(r)}
    chosen = set(sorted(chosen)[:limit])
    for i in range(len(rows)):
        if len(chosen) >= limit:
            break
        chosen.add(i)
    return [r for i, r in enumerate(rows) if i in chosen], len(rows) - limit
