"""A step-aware comparison of two traces (usually a run and its replay): pure functions of their details
and events, no I/O.

Steps are aligned by number (a replay keeps its parent's numbering, docs/replay.md). Within a step,
HTTP exchanges align by hop, assertions by what they check (matcher and JSON path, then order), so a
scenario edit that changes an expected value shows as that assertion changing, not as one removed and
one added. URLs are compared without scheme and host: every replay runs the app on a new port.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from urllib.parse import urlsplit

import pydantic_core

from molar_mcp.models import TraceDetail
from molar_mcp.models.diffs import (
    AssertionChange,
    BodyChange,
    ConsoleDiff,
    DiffCounts,
    DiffDimension,
    Divergence,
    ExchangeDiff,
    StepDiff,
    TimingDiff,
    TraceDiff,
    TraceSide,
)
from molar_mcp.models.rows import EventView, StoredEvents, trusted
from molar_mcp.replay.scenario import json_equal

BODY_CHANGES_PER_EXCHANGE = 12
# Rows of the answer's list (assertions; network: exchanges; console: lines) per answer: `offset` pages on.
# Two long runs can differ by tens of thousands of assertions; the counts always hold them all.
DIFF_ROWS = 500
VALUE_CHARS = 120
_MISSING = object()
_EMPTY_PAYLOAD = "{}"


@dataclass
class _Exchange:
    hop: int
    method: str | None = None
    url: str | None = None
    request_body: Any = _MISSING
    status: int | None = None
    body: Any = _MISSING
    duration_ms: int | None = None
    seq_request: int | None = None
    seq_response: int | None = None


# One per assertion of both traces: (matcher, target, ok, expected, actual, seq). A plain tuple: built
# fastest, and the cyclic garbage collector stops tracking it once it has seen it holds no container.
_Assertion = tuple[str | None, str, bool | None, Any, Any, int]
_MATCHER, _TARGET, _OK, _EXPECTED, _ACTUAL, _SEQ_OF = range(6)


@dataclass
class _Step:
    number: int
    title: str | None = None
    ok: bool | None = None
    restored: bool = False
    duration_ms: int | None = None
    event_count: int = 0
    kinds: list[str] = field(default_factory=list)
    exchanges: dict[int, _Exchange] = field(default_factory=dict)
    assertions: dict[tuple[str, str, int], _Assertion] = field(default_factory=dict)
    console: list[tuple[str, str | None, str, int]] = field(default_factory=list)  # kind, level, text, seq
    end_seq: int | None = None


def _steps_of(detail: TraceDetail, events: Sequence[EventView]) -> dict[int, _Step]:
    steps: dict[int, _Step] = {}
    for summary in detail.steps:
        if summary.depth:  # the diff is step-aware at the top level; nested steps fold into theirs
            continue
        steps[summary.step] = _Step(summary.step, title=summary.title, ok=summary.ok, event_count=summary.event_count)
    # One pass over the rows without building an object per event: each event's kind goes to its step;
    # the events the comparison reads (and those that may say they restored state) are picked out, and
    # their payloads parsed together.
    rows, payloads_at = _rows_of(events)
    read: list[int] = []
    for index, (_, _, kind, _, number, _, message, text) in enumerate(rows):
        if number is None:
            continue
        step = steps.get(number)
        if step is None:  # (not setdefault: that would build a _Step for every event)
            step = steps[number] = _Step(number)
        step.kinds.append(kind)
        if kind in _READ_KINDS or (kind == "log" and message) or text is None or '"restored"' in text:
            read.append(index)
    hops: dict[int, int] = {}
    seen: dict[tuple[int, str, str], int] = {}
    for index, p in zip(read, payloads_at(read), strict=True):
        seq, _, kind, _, number, ok, message, _ = rows[index]
        ok = None if ok is None else bool(ok)
        step = steps[number]
        if p.get("restored") is True:
            step.restored = True
        if kind == "assertion":  # most of a long run's events: first
            matcher = p.get("matcher")
            if not isinstance(matcher, str):
                matcher = None
            target = _assertion_target(p, message, seq, matcher)
            index_key = (number, matcher or "", target)
            index = seen.get(index_key, 0)
            seen[index_key] = index + 1
            step.assertions[(matcher or "", target, index)] = (
                matcher,
                target,
                ok,
                p.get("expected"),
                p.get("actual"),
                seq,
            )
        elif kind == "network.request":
            hop = _hop(p.get("request_id"), hops, number)
            ex = step.exchanges.setdefault(hop, _Exchange(hop))
            ex.method, ex.url, ex.seq_request = p.get("method"), _path(p.get("url")), seq
            ex.request_body = _parsed(p.get("body"))
        elif kind == "network.response":
            hop = _response_hop(p.get("request_id"), step)
            ex = step.exchanges.setdefault(hop, _Exchange(hop))
            ex.method = ex.method or p.get("method")
            ex.url = ex.url or _path(p.get("url"))
            status = p.get("status")
            ex.status = status if isinstance(status, int) else None
            ex.body = _parsed(p.get("body"))
            duration = p.get("duration_ms")
            ex.duration_ms = duration if isinstance(duration, int) else None
            ex.seq_response = seq
        elif kind in ("console", "error") or (kind == "log" and message):
            level = p.get("level") if isinstance(p.get("level"), str) else None
            line = message or str(p.get("text") or p.get("message") or "")
            step.console.append((kind, level, line, seq))
        elif kind == "step.end":
            duration = p.get("duration_ms")
            step.duration_ms = duration if isinstance(duration, int) else step.duration_ms
            step.end_seq = seq
            if ok is not None:
                step.ok = ok
        elif kind == "step.start" and step.title is None:
            step.title = message
    return steps


# The kinds the comparison reads (and a `log` with a message).
_READ_KINDS = frozenset(
    {"network.request", "network.response", "assertion", "console", "error", "step.start", "step.end"}
)

# One event as the comparison reads it, a store's row: (seq, ts, kind, step_id, step, ok, message,
# payload JSON text, or None for a model's payload, read as it is). `ok` may be 1/0 as stored.
_Row = Sequence[Any]


def _rows_of(events: Sequence[EventView]) -> tuple[Sequence[_Row], Callable[[Sequence[int]], list[dict[str, Any]]]]:
    """The events in seq order as `_Row`s, and what gives the payloads of the rows at some indices. A
    store's rows are read as they are (no object per event), and the payloads asked for are parsed
    from their JSON texts in one call: the same values as parsing each, without a call per event."""
    if isinstance(events, StoredEvents):  # the store gives them in seq order
        rows = events.rows

        def parsed(indices: Sequence[int]) -> list[dict[str, Any]]:
            if not indices:
                return []
            texts = [rows[i][7] or _EMPTY_PAYLOAD for i in indices]
            return list(pydantic_core.from_json("[" + ",".join(texts) + "]"))

        return rows, parsed
    ordered = sorted(events, key=attrgetter("seq"))

    def payloads(indices: Sequence[int]) -> list[dict[str, Any]]:
        return [ordered[i].payload for i in indices]

    return [(e.seq, e.ts, e.kind, e.step_id, e.step, e.ok, e.message, None) for e in ordered], payloads


def _hop(request_id: Any, hops: dict[int, int], step: int) -> int:
    if isinstance(request_id, str) and "." in request_id:
        tail = request_id.rsplit(".", 1)[1]
        if tail.isdigit():
            return int(tail)
    hops[step] = hops.get(step, 0) + 1
    return hops[step]


def _response_hop(request_id: Any, step: _Step) -> int:
    if isinstance(request_id, str) and "." in request_id:
        tail = request_id.rsplit(".", 1)[1]
        if tail.isdigit():
            return int(tail)
    waiting = [h for h, ex in step.exchanges.items() if ex.seq_response is None]
    return min(waiting) if waiting else len(step.exchanges) + 1


def _assertion_target(p: dict[str, Any], message: str | None, seq: int, matcher: str | None) -> str:
    if matcher == "json" and isinstance(p.get("path"), str):
        return str(p["path"])
    if matcher in ("status", "url"):
        return matcher
    if matcher == "capture":
        return f"capture {p.get('expected')}"
    text = message or ""
    return text.split(": got ", 1)[0] if text else f"assertion {seq}"


def _path(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _parsed(body: Any) -> Any:
    if body is None:
        return _MISSING
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def _clip(value: Any) -> str | None:
    if value is _MISSING:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def body_changes(a: Any, b: Any, path: str = "$") -> list[BodyChange]:
    """Every leaf that differs between two JSON documents (`_MISSING` for an absent body or member)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[BodyChange] = []
        for key in [*a.keys(), *(k for k in b if k not in a)]:
            sub = f"{path}.{key}" if str(key).replace("_", "").replace("-", "").isalnum() else f'{path}["{key}"]'
            out.extend(body_changes(a.get(key, _MISSING), b.get(key, _MISSING), sub))
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = []
        for i in range(max(len(a), len(b))):
            out.extend(body_changes(a[i] if i < len(a) else _MISSING, b[i] if i < len(b) else _MISSING, f"{path}[{i}]"))
        return out
    if a is _MISSING and b is _MISSING:
        return []
    if a is not _MISSING and b is not _MISSING and json_equal(a, b):
        return []
    return [BodyChange(path=path, a=_clip(a), b=_clip(b))]


# ---------------------------------------------------------------------------------------------------------


def _side(detail: TraceDetail) -> TraceSide:
    return TraceSide(
        id=detail.id,
        short_id=detail.short_id,
        status=detail.status,
        scenario_slug=detail.scenario_slug,
        failure_signature=detail.failure_signature,
        duration_ms=detail.duration_ms,
        parent_trace_id=detail.parent_trace_id,
        replay_from_step=detail.replay_from_step,
        event_count=detail.event_count,
    )


def _delta(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else b - a


def _compare_exchanges(number: int, sa: _Step | None, sb: _Step | None) -> list[ExchangeDiff]:
    hops = sorted(set(sa.exchanges if sa else {}) | set(sb.exchanges if sb else {}))
    out: list[ExchangeDiff] = []
    for hop in hops:
        ea = sa.exchanges.get(hop) if sa else None
        eb = sb.exchanges.get(hop) if sb else None
        ref = ea or eb
        assert ref is not None
        diff = ExchangeDiff(step=number, hop=hop, method=ref.method, url=ref.url)
        if ea is None or eb is None:
            diff.only_in = "a" if eb is None else "b"
            diff.changed = True
            diff.status_a = ea.status if ea else None
            diff.status_b = eb.status if eb else None
            out.append(diff)
            continue
        changes = body_changes(ea.body, eb.body)
        diff.status_a, diff.status_b = ea.status, eb.status
        diff.body_changes, diff.body_changes_total = changes[:BODY_CHANGES_PER_EXCHANGE], len(changes)
        diff.duration_ms_a, diff.duration_ms_b = ea.duration_ms, eb.duration_ms
        diff.delta_ms = _delta(ea.duration_ms, eb.duration_ms)
        request_changed = (ea.method, ea.url) != (eb.method, eb.url) or bool(
            body_changes(ea.request_body, eb.request_body)
        )
        diff.changed = request_changed or ea.status != eb.status or bool(changes)
        if (ea.method, ea.url) != (eb.method, eb.url):
            diff.url = f"{ea.url} → {eb.url}"
        out.append(diff)
    return out


# An assertion that differs: (step, change, in a, in b); made a row only when the answer shows it.
_Change = tuple[int, str, _Assertion | None, _Assertion | None]


def _compare_assertions(number: int, sa: _Step, sb: _Step) -> list[_Change]:
    out: list[_Change] = []
    for key in [*sa.assertions, *(k for k in sb.assertions if k not in sa.assertions)]:
        aa, ab = sa.assertions.get(key), sb.assertions.get(key)
        if aa is not None and ab is not None:
            if aa[_OK] is False and ab[_OK] is True:
                change = "now_passes"
            elif aa[_OK] is True and ab[_OK] is False:
                change = "now_fails"
            elif not json_equal(aa[_EXPECTED], ab[_EXPECTED]) or not json_equal(aa[_ACTUAL], ab[_ACTUAL]):
                change = "changed"
            else:
                continue
        else:
            change = "only_in_a" if ab is None else "only_in_b"
        out.append((number, change, aa, ab))
    return out


def _assertion_row(change: _Change) -> AssertionChange:
    number, kind, aa, ab = change
    ref = aa or ab
    assert ref is not None
    return trusted(
        AssertionChange,
        {
            "step": number,
            "matcher": ref[_MATCHER],
            "target": ref[_TARGET],
            "change": kind,
            "ok_a": aa[_OK] if aa else None,
            "ok_b": ab[_OK] if ab else None,
            "expected_a": aa[_EXPECTED] if aa else None,
            "expected_b": ab[_EXPECTED] if ab else None,
            "actual_a": aa[_ACTUAL] if aa else None,
            "actual_b": ab[_ACTUAL] if ab else None,
            "seq_a": aa[_SEQ_OF] if aa else None,
            "seq_b": ab[_SEQ_OF] if ab else None,
        },
    )


def _compare_console(
    number: int | None, ca: Sequence[tuple[str, str | None, str, int]], cb: Sequence[Any]
) -> list[ConsoleDiff]:
    out: list[ConsoleDiff] = []
    texts_b = [(k, t) for k, _, t, _ in cb]
    texts_a = [(k, t) for k, _, t, _ in ca]
    for kind, level, text, _ in ca:
        if (kind, text) in texts_b:
            texts_b.remove((kind, text))
        else:
            out.append(ConsoleDiff(step=number, kind=kind, level=level, text=_clip(text) or "", only_in="a"))
    for kind, level, text, _ in cb:
        if (kind, text) in texts_a:
            texts_a.remove((kind, text))
        else:
            out.append(ConsoleDiff(step=number, kind=kind, level=level, text=_clip(text) or "", only_in="b"))
    return out


def _first_divergence(
    number: int, sa: _Step | None, sb: _Step | None, exchanges: list[ExchangeDiff], assertions: list[_Change]
) -> Divergence | None:
    if sa is None or sb is None:
        where = "a" if sa is not None else "b"
        return Divergence(step=number, kind="missing_step", what=f"step {number} ran only in {where}")
    for ex in exchanges:
        if not ex.changed:
            continue
        ea, eb = sa.exchanges.get(ex.hop), sb.exchanges.get(ex.hop)
        seq_a = ea.seq_request if ea else None
        seq_b = eb.seq_request if eb else None
        if ex.only_in is not None:
            return Divergence(
                step=number,
                kind="request",
                what=f"{ex.method} {ex.url} sent only in {ex.only_in}",
                seq_a=seq_a,
                seq_b=seq_b,
            )
        assert ea is not None
        assert eb is not None
        if (ea.method, ea.url) != (eb.method, eb.url) or body_changes(ea.request_body, eb.request_body):
            return Divergence(
                step=number, kind="request", what=f"request differs: {ex.method} {ex.url}", seq_a=seq_a, seq_b=seq_b
            )
        seq_a, seq_b = ea.seq_response, eb.seq_response
        if ex.status_a != ex.status_b:
            what = f"{ex.method} {ex.url} answered {ex.status_a} in a, {ex.status_b} in b"
            return Divergence(step=number, kind="response_status", what=what, seq_a=seq_a, seq_b=seq_b)
        first = ex.body_changes[0]
        more = f" (+{ex.body_changes_total - 1} more)" if ex.body_changes_total > 1 else ""
        what = f"{ex.method} {ex.url} body {first.path}: {first.a} → {first.b}{more}"
        return Divergence(step=number, kind="response_body", what=what, seq_a=seq_a, seq_b=seq_b)
    if assertions:
        first_a = _assertion_row(assertions[0])
        what = f"{first_a.target}: {_ok_word(first_a.ok_a)} in a, {_ok_word(first_a.ok_b)} in b"
        return Divergence(step=number, kind="assertion", what=what, seq_a=first_a.seq_a, seq_b=first_a.seq_b)
    if sa.ok != sb.ok:
        what = f"step {number} {_ok_word(sa.ok)} in a, {_ok_word(sb.ok)} in b"
        return Divergence(step=number, kind="step_status", what=what, seq_a=sa.end_seq, seq_b=sb.end_seq)
    if sa.kinds != sb.kinds:
        return Divergence(step=number, kind="events", what=f"step {number} recorded different events")
    return None


def _ok_word(ok: bool | None) -> str:
    return "passed" if ok is True else "failed" if ok is False else "absent"


def diff_traces(
    a: TraceDetail,
    a_events: Sequence[EventView],
    b: TraceDetail,
    b_events: Sequence[EventView],
    dimension: DiffDimension = "overview",
    *,
    truncated: bool = False,
    offset: int = 0,
) -> TraceDiff:
    """Compare trace b with trace a (usually a replay with its source); see the module docstring. The
    dimension's list of rows (assertions; network: exchanges; console: lines) holds `DIFF_ROWS` of them
    from `offset`; `rows_total` and the counts hold them all, `next_offset` goes on."""
    steps_a, steps_b = _steps_of(a, a_events), _steps_of(b, b_events)
    numbers = sorted(set(steps_a) | set(steps_b))
    counts = DiffCounts(steps_compared=len(numbers))
    step_rows: list[StepDiff] = []
    assertion_rows: list[_Change] = []
    exchange_rows: list[ExchangeDiff] = []
    console_rows: list[ConsoleDiff] = []
    divergence: Divergence | None = None
    slowest: tuple[int, int] | None = None
    for number in numbers:
        sa, sb = steps_a.get(number), steps_b.get(number)
        exchanges = _compare_exchanges(number, sa, sb)
        assertions = _compare_assertions(number, sa, sb) if sa and sb else []
        console = _compare_console(number, sa.console if sa else [], sb.console if sb else [])
        ref = sa or sb
        assert ref is not None
        changed = sa is None or sb is None or sa.ok != sb.ok or bool(assertions) or any(e.changed for e in exchanges)
        delta = _delta(sa.duration_ms if sa else None, sb.duration_ms if sb else None)
        if delta is not None and (slowest is None or abs(delta) > abs(slowest[1])):
            slowest = (number, delta)
        step_rows.append(
            StepDiff(
                step=number,
                title=(sa.title if sa else None) or (sb.title if sb else None),
                ok_a=sa.ok if sa else None,
                ok_b=sb.ok if sb else None,
                in_a=sa is not None,
                in_b=sb is not None,
                restored_b=bool(sb and sb.restored),
                changed=changed,
                duration_ms_a=sa.duration_ms if sa else None,
                duration_ms_b=sb.duration_ms if sb else None,
                delta_ms=delta,
                events_a=sa.event_count if sa else 0,
                events_b=sb.event_count if sb else 0,
            )
        )
        assertion_rows.extend(assertions)
        exchange_rows.extend(exchanges)
        console_rows.extend(console)
        if divergence is None:
            divergence = _first_divergence(number, sa, sb, exchanges, assertions)
    counts.steps_changed = sum(1 for s in step_rows if s.changed)
    counts.assertions_now_pass = sum(1 for c in assertion_rows if c[1] == "now_passes")
    counts.assertions_now_fail = sum(1 for c in assertion_rows if c[1] == "now_fails")
    counts.assertions_changed = len(assertion_rows) - counts.assertions_now_pass - counts.assertions_now_fail
    counts.exchanges_changed = sum(1 for e in exchange_rows if e.changed)
    counts.console_only_in_a = sum(1 for c in console_rows if c.only_in == "a")
    counts.console_only_in_b = sum(1 for c in console_rows if c.only_in == "b")
    timing = TimingDiff(
        duration_ms_a=a.duration_ms,
        duration_ms_b=b.duration_ms,
        delta_ms=_delta(a.duration_ms, b.duration_ms),
        slowest_delta_step=slowest[0] if slowest else None,
        slowest_delta_ms=slowest[1] if slowest else None,
    )
    diff = TraceDiff(
        a=_side(a),
        b=_side(b),
        dimension=dimension,
        summary="",
        status_changed=a.status != b.status,
        first_divergence=divergence,
        counts=counts,
        timing=timing,
        truncated=truncated,
    )
    page = slice(offset, offset + DIFF_ROWS)
    if dimension in ("overview", "steps"):
        diff.steps = [s for s in step_rows if s.changed] if dimension == "overview" else step_rows
        diff.assertions = [_assertion_row(c) for c in assertion_rows[page]]
        total = len(assertion_rows)
    elif dimension == "network":
        diff.network = exchange_rows[page]
        total = len(exchange_rows)
    else:
        diff.console = console_rows[page]
        total = len(console_rows)
    diff.offset, diff.rows_total = offset, total
    diff.next_offset = offset + DIFF_ROWS if offset + DIFF_ROWS < total else None
    diff.summary = summarize(diff, step_rows)
    return diff


def summarize(diff: TraceDiff, steps: Sequence[StepDiff]) -> str:
    """One or two plain sentences: the outcome change, the first divergence, the assertions."""
    a, b = diff.a, diff.b

    def outcome(side: TraceSide) -> str:
        return side.status + (f" ({side.failure_signature})" if side.failure_signature else "")

    relation = f", a replay from step {b.replay_from_step}" if b.parent_trace_id == a.id and b.replay_from_step else ""
    parts = [f"a {a.short_id} {outcome(a)}; b {b.short_id}{relation} {outcome(b)}."]
    c = diff.counts
    if c.assertions_now_pass or c.assertions_now_fail or c.assertions_changed:
        parts.append(
            f"Assertions: {c.assertions_now_pass} now pass, {c.assertions_now_fail} now fail, "
            f"{c.assertions_changed} changed."
        )
    only_b = [s.step for s in steps if s.in_b and not s.in_a]
    only_a = [s.step for s in steps if s.in_a and not s.in_b]
    if only_b:
        parts.append(f"Steps only in b: {_ranges(only_b)}.")
    if only_a:
        parts.append(f"Steps only in a: {_ranges(only_a)}.")
    if diff.first_divergence is not None:
        d = diff.first_divergence
        parts.append(f"First divergence at step {d.step}: {d.what}.")
    elif not diff.status_changed:
        parts.append("No step differs.")
    t = diff.timing
    if t.delta_ms is not None:
        parts.append(f"Duration {t.duration_ms_a} → {t.duration_ms_b} ms ({t.delta_ms:+d} ms).")
    return " ".join(parts)


def _ranges(numbers: Sequence[int]) -> str:
    if not numbers:
        return ""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}–{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)
