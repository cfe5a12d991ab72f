"""Pure renderers: API models → tool output (structured view + compact text), fitted to a token budget.

The budget covers what a client puts in front of a model. An answer holds the same facts twice: as
structured content (JSON, described by the tool's output schema) and as a compact text block, which the
protocol keeps for clients that do not read structured content. A model is shown one of the two, so an
answer costs the larger of them (plus its resource-link blocks, which either kind of client may show),
never their sum: `shown`. When something must go, it goes from the least useful end, and `omitted` says
what went and which call brings it back. Nothing is cut silently.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from pydantic import BaseModel

from molar_mcp.mcp.fence import defuse, fence
from molar_mcp.mcp.masking import mask, mask_text
from molar_mcp.mcp.tokens import estimate_tokens, json_text, shown
from molar_mcp.mcp.views import (
    Artifact,
    EventRow,
    Failure,
    PageEvent,
    TraceHeader,
    TraceList,
    TraceRow,
    TraceView,
)
from molar_mcp.models import Event, TraceDetail, TraceListItem

DETAIL_CHARS = 300
MIN_CUT = 24
MESSAGE_CHARS = 400
VALUE_CHARS = 200  # a failure's expected and actual values


def cut_title(text: str | None, limit: int) -> str | None:
    """Cut a short field we own (a step title): the mark says it was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def event_call(trace_ref: str, seq: int) -> str:
    """The call that returns event `seq` whole."""
    return f'get_event(trace_id="{trace_ref}", seq={seq})'


def cut_with_pointer(text: str, limit: int, pointer: str | None) -> str:
    """`text` cut to `limit` characters, saying how much went and which call returns it whole
    (`…[+4,213 chars: get_event(trace_id="…", seq=57)]`). Nothing is cut silently. Without a pointer
    (a page whose rows carry their seq and whose text names the call once) only the count."""
    if len(text) <= limit + MIN_CUT:
        return text  # a cut must save more than its own mark costs
    where = f": {pointer}" if pointer else ""
    return f"{text[:limit]}…[+{len(text) - limit:,} chars{where}]"


def _json_body(body: Any) -> Any:
    """A body recorded as JSON text is shown as JSON (compact, no escaped quotes)."""
    if isinstance(body, str) and body[:1] in ("{", "[") and len(body) <= 1_000_000:
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def structured(view: BaseModel) -> dict[str, Any]:
    """The `structuredContent` sent for a view (any tool's output model): JSON with nulls left out (they
    cost tokens and say nothing), except `next_cursor`, whose null says "this is the last page"."""
    # A page of events carries the page, not the summary's empty lists again.
    page = isinstance(view, TraceView) and view.step_events is not None
    data = view.model_dump(mode="json", exclude_none=True, exclude_defaults=page)
    if page:
        data.setdefault("step_events", [])
    if isinstance(view, TraceList):
        data.setdefault("next_cursor", None)
    return data


def cost(view: BaseModel, text: str) -> int:
    """Tokens a client may show a model: the larger of the text block and the structured content, and
    for a trace the resource-link blocks of its artifacts."""
    total = shown(estimate_tokens(text), estimate_tokens(json.dumps(structured(view), ensure_ascii=False)))
    if isinstance(view, TraceView):
        total += sum(estimate_tokens(json.dumps(link_block(a))) for a in view.artifacts)
    return total


def link_block(artifact: Artifact) -> dict[str, Any]:
    """The `resource_link` content block of an artifact, as sent."""
    return {
        "type": "resource_link",
        "uri": artifact.uri,
        "name": artifact.name or f"{artifact.kind} artifact",
        "size": artifact.size,
    }


# ---- list_traces ---------------------------------------------------------------------------------


SHA_CHARS = 7  # git's short form; get_trace gives the whole sha


SECONDS_TEXT_KEPT = 4096


def utc_seconds(at: datetime) -> str:
    """`2026-12-07T00:41:25Z` (as `strftime("%Y-%m-%dT%H:%M:%SZ")` writes it, in a fifth of the time, and
    once per process for a time seen before: a page of `list_traces` formats every row's time, and the same
    rows come back call after call; formatting an aware datetime costs ~8 µs here)."""
    return _seconds_text(at, at.tzinfo)


@functools.lru_cache(maxsize=SECONDS_TEXT_KEPT)
def _seconds_text(at: datetime, zone: tzinfo | None) -> str:
    """Keyed by the zone too: two equal instants in different zones are written differently."""
    return at.isoformat(timespec="seconds")[:19] + "Z" if at.year >= 1000 else at.strftime("%Y-%m-%dT%H:%M:%SZ")


def trace_row(item: TraceListItem) -> TraceRow:
    return TraceRow(
        short_id=item.short_id,
        status=item.status,
        scenario=item.scenario_slug,
        failure_signature=item.failure_signature,
        duration_ms=item.duration_ms,
        created_at=utc_seconds(item.created_at),
        source=item.source,
        code_sha=item.code_sha[:SHA_CHARS] if item.code_sha else None,
        replay_of=item.replay_of,
    )


def row_array(row: TraceRow) -> list[str | int | None]:
    """A row as sent in structured content: its values in column order, trailing nulls left out."""
    values = list(row)
    while values and values[-1] is None:
        values.pop()
    return values


def row_line(r: TraceRow) -> str:
    sig = f" — {r.failure_signature}" if r.failure_signature else ""
    dur = f" {r.duration_ms / 1000:.1f}s" if r.duration_ms is not None else ""
    replay = f" [REPLAY of {r.replay_of}: not an ordinary run]" if r.replay_of else ""
    return f"- {r.short_id} {r.status.upper()}{replay} {r.scenario}{sig} ({r.created_at}{dur})"


LIST_FENCE = "trace list"


def _padded(values: list[str | int | None]) -> TraceRow:
    return TraceRow(*values, *[None] * (len(TraceRow._fields) - len(values)))  # type: ignore[arg-type]


def list_text(view: TraceList, filters_desc: str) -> str:
    if not view.rows:
        lines = [f"No traces match {filters_desc}."]
    else:
        lines = [f"{len(view.rows)} traces ({filters_desc}), newest first:"]
        # Scenario names and failure signatures come from what was recorded: fenced as data.
        lines.append(fence("\n".join(row_line(_padded(r)) for r in view.rows), LIST_FENCE))
    lines.extend(f"Left out: {o}" for o in view.omitted)
    if view.next_cursor:
        lines.append(f'More: list_traces(cursor="{view.next_cursor}") with the same filters.')
    if view.rows:
        lines.append("Next: get_trace(trace_id=<short_id>) explains one run.")
    return "\n".join(lines)


def cut_note(keep: int, limit: int, budget: int) -> str:
    return (
        f"this page holds {keep} of the {limit} rows asked for, to stay within {budget} tokens; "
        "next_cursor continues from there"
    )


# Rows whose costs the process keeps: a row's cost is a function of its values alone (the row is a tuple of
# them), and the same traces come back page after page, caller after caller (`list_traces(status=failed)`
# from every agent), so each is estimated once while it is among the last this many asked for. ~0.2 KB a row.
ROW_COSTS_KEPT = 4096


@functools.lru_cache(maxsize=ROW_COSTS_KEPT)
def row_cost(row: TraceRow) -> tuple[int, int]:
    """A row's tokens in each form it is sent in: its text line (and the newline before it; the line as
    the fence holds it, a marker defused) and its structured array (and the comma before it)."""
    line = estimate_tokens(defuse(row_line(row))) + 1
    return line, estimate_tokens(json_text(row_array(row))) + 1


class RowCosts:
    """Each row's cost estimated once, however many times a page is fitted (and kept for later pages:
    `row_cost` keeps the last `ROW_COSTS_KEPT` rows' costs)."""

    def __call__(self, row: TraceRow) -> tuple[int, int]:
        return row_cost(row)


def list_frame_cost(next_cursor: str | None, omitted: Sequence[str], filters_desc: str, rows: int) -> tuple[int, int]:
    """What a page costs besides its rows, in each form (text, structured): the count line, the fence
    around the rows, the cut note, the cursor and the pointer to get_trace; the column names. Estimated
    once per process for the last `FRAME_COSTS_KEPT` frames asked for (a function of these values alone:
    every page is fitted with its frame at its least, and the same page comes back caller after caller)."""
    return frame_cost(next_cursor, tuple(omitted), filters_desc, rows)


FRAME_COSTS_KEPT = 1024


@functools.lru_cache(maxsize=FRAME_COSTS_KEPT)
def frame_cost(next_cursor: str | None, omitted: tuple[str, ...], filters_desc: str, rows: int) -> tuple[int, int]:
    frame = TraceList(next_cursor=next_cursor, omitted=list(omitted))
    text = list_text(frame, filters_desc)
    text += f"\n{rows} traces ({filters_desc}), newest first:\nNext: get_trace(trace_id=<short_id>) explains one run."
    text += "\n" + fence("", LIST_FENCE)
    return estimate_tokens(text), estimate_tokens(json.dumps(structured(frame), ensure_ascii=False))


def page_cost(frame: tuple[int, int], rows: Sequence[tuple[int, int]]) -> int:
    """A page's tokens as a model is shown them: the larger of its text and its structured content."""
    return shown(frame[0] + sum(r[0] for r in rows), frame[1] + sum(r[1] for r in rows))


def fit_rows(
    items: Sequence[TraceListItem], budget: int, filters_desc: str, costs: RowCosts
) -> tuple[int, list[TraceRow]]:
    """At most how many of `items` fit in `budget` tokens (at least one), and their rows, made as they are
    counted (no row is made for an item past the first that does not fit): each row's cost counted once,
    plus the page's own lines at their least (no cursor, no note on a cut); the caller checks the page
    it makes."""
    text, data = list_frame_cost(None, (), filters_desc, len(items))
    rows: list[TraceRow] = []
    for item in items:
        row = trace_row(item)
        row_text, row_data = costs(row)
        text += row_text
        data += row_data
        if shown(text, data) > budget:
            if not rows:
                rows.append(row)
            break
        rows.append(row)
    return max(1, len(rows)), rows


# ---- get_trace -----------------------------------------------------------------------------------


# json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False), its encoder made once
_compact_json = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode


def _flat(value: Any) -> str:
    """A value as `k=v` text reads it: bare words bare, the rest as compact JSON."""
    if isinstance(value, str) and value and not any(c in value for c in " \"'=|\n{}[]"):
        return value
    return _compact_json(value)


def _said(value: Any, message: str) -> bool:
    """A string value the message already says (a title, a log's text, an assertion's path): not repeated."""
    if not isinstance(value, str) or not message:
        return False
    if value == message:
        return True
    # Found as a whole word only where it is found at all: the pattern runs only then.
    return len(value) >= 4 and value in message and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", message) is not None


def event_detail(ev: Event, trace_ref: str | None, limit: int = DETAIL_CHARS, origin: str | None = None) -> str | None:
    """One line for a payload: the fields a debugger reads first, then the rest as `key=value` (values
    that repeat the message left out); cut at `limit` characters with a pointer to `get_event`. URLs
    under `origin` are shown as paths (the caller says so once)."""
    p = mask(ev.payload)
    if not p:
        return None
    if ev.kind.startswith("network."):
        url = str(p.get("url", ""))
        if origin and url.startswith(origin + "/"):
            url = url[len(origin) :]
        head = f"{p.get('method', '')} {url}".strip()
        if "status" in p:
            head += f" → {p['status']}"
        if "duration_ms" in p:
            head += f" ({p['duration_ms']} ms)"
        body = _json_body(p.get("body"))
        if body not in (None, "", {}):
            head += " body=" + _compact_json(body)
        text = head
    else:
        message = ev.message or ""
        text = " ".join(f"{k}={_flat(v)}" for k, v in p.items() if not _said(v, message))
        if not text:
            return None
    return cut_with_pointer(text, limit, event_call(trace_ref, ev.seq) if trace_ref else None)


def _message_chars(detail_chars: int) -> int:
    """How much of a message a row keeps beside a detail cut to `detail_chars`: the tightest page cuts
    (below 60) cut the message too."""
    return min(MESSAGE_CHARS, detail_chars + 100 if detail_chars >= 60 else 2 * detail_chars)


def event_row(
    ev: Event, trace_ref: str | None, detail_chars: int = DETAIL_CHARS, origin: str | None = None
) -> EventRow:
    """An event as a row: message and payload masked, each cut with a pointer to the whole event."""
    detail = event_detail(ev, trace_ref, detail_chars, origin)
    message = mask_text(ev.message) if ev.message else None
    if message is not None and origin:
        message = message.replace(origin + "/", "/")
    if message is not None and detail is not None and detail.startswith(message):
        message = None  # a request's message repeats its method and URL, which the detail starts with
    elif message is not None and detail is not None and "…[+" in detail:
        head, _, tail = detail.partition("…[+")
        if message.startswith(head):  # what is left of a cut detail repeats the message: keep the count only
            detail = "…[+" + tail
    return EventRow(
        seq=ev.seq,
        step=ev.step,
        kind=ev.kind,
        ok=ev.ok,
        message=cut_with_pointer(
            message, _message_chars(detail_chars), event_call(trace_ref, ev.seq) if trace_ref else None
        )
        if message
        else None,
        detail=detail,
    )


def page_event(ev: Event, detail_chars: int = DETAIL_CHARS, origin: str | None = None) -> PageEvent:
    """An event as one line of a page (`event_row`'s message and detail joined); a cut says how much
    went, and the page's text names the call that returns the event whole."""
    row = event_row(ev, None, detail_chars, origin)
    text = " | ".join(part for part in (row.message, row.detail) if part)
    return PageEvent(seq=ev.seq, step=ev.step, kind=ev.kind, failed=ev.ok is False, text=text)


def failure_of(
    detail: TraceDetail, failing: Sequence[Event], message_chars: int = MESSAGE_CHARS, value_chars: int = VALUE_CHARS
) -> Failure | None:
    """The step the run failed at and its decisive event: the last failed assertion/error of the LAST
    failed top-level step (where the run's final failure happened). Failed steps before it, and nested
    steps whose parent then ended ok (a retried action), are listed as recovered. The message is cut at
    `message_chars` and expected and actual at `value_chars`, each with the call that returns the event whole."""
    return failures_of(detail, failing, [(message_chars, value_chars)])[0]


def failures_of(detail: TraceDetail, failing: Sequence[Event], cuts: Sequence[tuple[int, int]]) -> list[Failure | None]:
    """`failure_of` at each of `cuts` (message characters, value characters): the failure found and its
    texts masked once."""
    if detail.status in ("passed", "queued", "running") and not failing:
        return [None for _ in cuts]
    top = [s for s in detail.steps if s.depth == 0]
    failed_steps = [s for s in top if s.ok is False]
    step = failed_steps[-1] if failed_steps else (top[-1] if top else None)
    by_id = {s.step_id: s for s in detail.steps}
    recovered = [s.path for s in failed_steps[:-1]] + [
        s.path
        for s in detail.steps
        if s.depth and s.ok is False and s.parent_step_id in by_id and by_id[s.parent_step_id].ok is True
    ]
    in_step = [e for e in failing if step is None or e.step == step.step]
    decisive = next(
        (e for e in reversed(in_step) if e.kind in ("assertion", "error", "tool.result", "llm.response")),
        in_step[-1] if in_step else (failing[-1] if failing else None),
    )
    if step is None and decisive is None:
        return [None for _ in cuts]
    raw_expected = raw_actual = message = None
    whole = ""
    if decisive is not None:
        whole = event_call(detail.short_id, decisive.seq)
        raw_expected, raw_actual = decisive.payload.get("expected"), decisive.payload.get("actual")
        raw_expected = mask_text(str(raw_expected)) if raw_expected is not None else None
        raw_actual = mask_text(str(raw_actual)) if raw_actual is not None else None
        message = mask_text(decisive.message) if decisive.message else None
    return [
        Failure(
            step=step.step if step else (decisive.step if decisive else None),
            step_title=step.title if step else None,
            seq=decisive.seq if decisive else None,
            kind=decisive.kind if decisive else None,
            message=cut_with_pointer(message, message_chars, whole) if message else None,
            expected=cut_with_pointer(raw_expected, value_chars, whole) if raw_expected is not None else None,
            actual=cut_with_pointer(raw_actual, value_chars, whole) if raw_actual is not None else None,
            recovered=recovered[:20],
        )
        for message_chars, value_chars in cuts
    ]


def header(detail: TraceDetail) -> TraceHeader:
    return TraceHeader(
        id=detail.id,
        short_id=detail.short_id,
        status=detail.status,
        scenario=detail.scenario_slug,
        title=detail.scenario_title,
        source=detail.source,
        code_sha=detail.code_sha,
        created_at=utc_seconds(detail.created_at),
        duration_ms=detail.duration_ms,
        failure_signature=detail.failure_signature,
        parent_trace_id=detail.parent_trace_id,
        replay_from_step=detail.replay_from_step,
        tier=detail.tier,
        event_count=detail.event_count,
        history=detail.history.summary if detail.history is not None else None,
        spans_waiting=detail.spans_waiting,
    )


def artifact_uri(trace_id: str, sha256: str) -> str:
    return f"molar://traces/{trace_id}/blobs/{sha256}"


def event_line(e: EventRow | PageEvent) -> str:
    """One text line for an event row or a page event."""
    step = f" step {e.step}" if e.step is not None else ""
    if isinstance(e, PageEvent):
        mark = " ✗" if e.failed else ""
        return f"- seq {e.seq}{step} {e.kind}{mark} {e.text}".rstrip()
    mark = " ✗" if e.ok is False else ""
    parts = [f"- seq {e.seq}{step} {e.kind}{mark}"]
    if e.message:
        parts.append(e.message)
    if e.detail:
        parts.append(e.detail)
    return ": ".join(parts[:1]) + (" " + " | ".join(parts[1:]) if len(parts) > 1 else "")


def describe_filters(args: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in args.items() if v not in (None, "")]
    return ", ".join(shown) if shown else "no filters"
