"""A page of a trace's events (`get_trace(step=N)`, `get_trace(events=true)`): what was asked, not the
summary again. As many events as the token budget holds; long payloads cut with a pointer to
`get_event`, shorter cuts first so that a page carries at least `MIN_PAGE_EVENTS` events.

Each row's cost is estimated once and the page is cut by arithmetic, then checked once whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from molar_mcp.mcp.fence import fence
from molar_mcp.mcp.render import cost, event_line, page_event
from molar_mcp.mcp.tokens import estimate_tokens, shown
from molar_mcp.mcp.views import PageEvent, TraceHeader, TraceView
from molar_mcp.models import Event, TraceDetail

# Payload cut lengths tried in turn, longest first: the longest that keeps a full page wins.
PAGE_DETAIL_CHARS = (1000, 600, 300, 160, 90, 60, 40, 24)
MIN_PAGE_EVENTS = 20


def page_size(budget: int) -> int:
    """How many events to read for a page answer at `budget` tokens (more than can fit: the cut decides)."""
    return max(MIN_PAGE_EVENTS + 5, min(200, budget // 35))


def _slim_header(detail: TraceDetail) -> TraceHeader:
    return TraceHeader(
        short_id=detail.short_id,
        status=detail.status,
        scenario=detail.scenario_slug,
        event_count=detail.event_count,
        parent_trace_id=detail.parent_trace_id,
    )


def _scope(step_arg: str | None, kind: str | None) -> str:
    parts = []
    if step_arg is not None:
        parts.append(f"step={step_arg}")
    if kind is not None:
        parts.append(f"kind={kind}")
    return ", ".join(parts)


def _next_call(sid: str, step_arg: str | None, kind: str | None, offset: int) -> str:
    args = [f'trace_id="{sid}"']
    if step_arg is not None:
        args.append(f"step={json.dumps(step_arg) if not step_arg.isdigit() else step_arg}")
    else:
        args.append("events=true")
    if kind is not None:
        args.append(f'kind="{kind}"')
    args.append(f"offset={offset}")
    return f"get_trace({', '.join(args)})"


def page_text(view: TraceView, scope: str, total: int, offset: int) -> str:
    t = view.trace
    rows = view.step_events or []
    where = f" ({scope})" if scope else ""
    name = f"Trace {t.short_id} {t.status.upper()}" + (f" {t.scenario}" if t.scenario else "")
    if rows:
        head = f"{name}: events {offset + 1}–{offset + len(rows)} of {total}{where}"
    else:
        head = f"{name}: no events{where} from offset {offset} (of {total})"
    lines = [head]
    if rows:
        lines.append(fence("\n".join(event_line(e) for e in rows), "trace events"))
    lines.extend(f"Left out: {o}" for o in view.omitted)
    if any("…[+" in e.text for e in rows):
        lines.append(f'A row cut …[+N chars] is whole in get_event(trace_id="{t.short_id}", seq=<its seq>).')
    return "\n".join(lines)


def common_origin(events: Sequence[Event]) -> str | None:
    """The scheme and host most of the page's requests go to (its URLs are then shown as paths)."""
    counts: dict[str, int] = {}
    for ev in events:
        url = ev.payload.get("url") if ev.kind.startswith("network.") else None
        if isinstance(url, str):
            parts = urlsplit(url)
            if parts.scheme and parts.netloc:
                origin = f"{parts.scheme}://{parts.netloc}"
                counts[origin] = counts.get(origin, 0) + 1
    return max(counts, key=lambda o: counts[o]) if counts else None


def _row_cost(row: PageEvent) -> tuple[int, int]:
    """A row's tokens as text (its line and the newline before it) and as structured content (its array
    and the comma before it)."""
    return estimate_tokens(event_line(row)) + 2, estimate_tokens(json.dumps(list(row), ensure_ascii=False)) + 1


def build_events_page(
    detail: TraceDetail,
    events: Sequence[Event],
    total: int,
    offset: int,
    step_arg: str | None,
    kind: str | None,
    budget: int,
) -> tuple[TraceView, str]:
    """One page of events from `offset`, fitted to `budget` tokens."""
    sid = detail.short_id
    scope = _scope(step_arg, kind)
    trace = _slim_header(detail)

    origin = common_origin(events)

    def assemble(rows: list[PageEvent]) -> tuple[TraceView, str]:
        end = offset + len(rows)
        omitted: list[str] = []
        if origin is not None and rows:
            omitted.append(f"URL origin {origin} (paths shown)")
        next_offset = None
        if end < total:
            next_offset = end
            omitted.append(
                f"events {end + 1}–{total}{' of ' + scope if scope else ''}: {_next_call(sid, step_arg, kind, end)}"
            )
        view = TraceView(trace=trace, step_events=rows, next_offset=next_offset, omitted=omitted)
        return view, page_text(view, scope, total, offset)

    # What every page costs whatever its rows: the header, the fences, the pointers, and the "events
    # N–M" line (present in the empty page whenever any event is left).
    empty_view, empty_text = assemble([])
    base = cost(empty_view, empty_text) + 20  # the cut-rows line
    want = min(len(events), MIN_PAGE_EVENTS)
    view, text = assemble([])
    for limit in PAGE_DETAIL_CHARS:
        rows = [page_event(e, limit, origin) for e in events]
        text_spent, data_spent, fit = base, base, 0
        for row in rows:
            row_text, row_data = _row_cost(row)
            text_spent += row_text
            data_spent += row_data
            if shown(text_spent, data_spent) > budget:
                break
            fit += 1
        view, text = assemble(rows[: max(fit, 1)] if rows else [])
        # The arithmetic is an estimate of parts; the whole is checked, and trimmed if it is over. A page
        # trimmed below `want` tries the next, shorter cut.
        while fit > 1 and cost(view, text) > budget:
            fit -= 1
            view, text = assemble(rows[:fit])
        if fit >= want:
            break
    return view, text
