"""Pure renderers of replays and trace diffs: API models → tool output (structured view + compact text),
fitted to a token budget with `render.cost`, cutting the least useful rows first and saying so in
`omitted`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from molar_mcp.mcp.masking import mask_text
from molar_mcp.mcp.render import cost, structured
from molar_mcp.mcp.tokens import Cost, add_costs, estimate_tokens, json_tokens, model_tokens, prefix_costs, shown
from molar_mcp.mcp.views import (
    DiffAssertionRow,
    DiffConsoleRow,
    DiffExchangeRow,
    DiffStepRow,
    DiffView,
    ReplayRow,
    ReplayView,
)
from molar_mcp.models.diffs import TraceDiff
from molar_mcp.models.replays import ReplayStatus

VALUE_CHARS = 80
LOG_TAIL_CHARS = 1500


def replay_uri(replay_id: str) -> str:
    return f"molar://replays/{replay_id}"


def _value(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = mask_text(text) or ""
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def _ok(ok: bool | None, present: bool) -> str:
    if not present:
        return "absent"
    return "passed" if ok is True else "failed" if ok is False else "unknown"


def replay_row(status: ReplayStatus) -> ReplayRow:
    tail = status.log_tail
    if tail and len(tail) > LOG_TAIL_CHARS:
        tail = "…" + tail[-(LOG_TAIL_CHARS - 1) :]
    return ReplayRow(
        replay_id=status.id,
        trace_id=status.trace_id,
        status=status.status,
        phase=status.phase,
        from_step=status.from_step,
        replay_trace_id=status.replay_short_id or status.replay_trace_id,
        trace_status=status.trace_status,
        failure_signature=status.failure_signature,
        message=mask_text(status.message) if status.message else None,
        error=status.error,
        log_tail=mask_text(tail) if tail else None,
        queue_position=status.queue_position,
        duration_ms=status.duration_ms,
        resource=replay_uri(status.id),
    )


# ---- diff ----------------------------------------------------------------------------------------


def _rows(
    diff: TraceDiff,
) -> tuple[list[DiffAssertionRow], list[DiffStepRow], list[DiffExchangeRow], list[DiffConsoleRow]]:
    assertions = [
        DiffAssertionRow(
            step=c.step,
            target=c.target,
            change=c.change,
            expected_a=_value(c.expected_a),
            actual_a=_value(c.actual_a),
            expected_b=_value(c.expected_b),
            actual_b=_value(c.actual_b),
        )
        for c in diff.assertions
    ]
    steps = [
        DiffStepRow(
            step=s.step,
            title=s.title,
            a=_ok(s.ok_a, s.in_a),
            b=_ok(s.ok_b, s.in_b),
            restored=s.restored_b,
            delta_ms=s.delta_ms,
        )
        for s in diff.steps
    ]
    network = [
        DiffExchangeRow(
            step=e.step,
            request=f"{e.method or '?'} {e.url or '?'}" + (f" (hop {e.hop})" if e.hop > 1 else ""),
            status=f"{e.status_a if e.status_a is not None else '—'} → {e.status_b if e.status_b is not None else '—'}",
            only_in=e.only_in,
            body=[f"{b.path}: {mask_text(b.a or '—')} → {mask_text(b.b or '—')}" for b in e.body_changes],
        )
        for e in diff.network
        if e.changed
    ]
    console = [
        DiffConsoleRow(step=c.step, kind=c.kind, text=mask_text(c.text) or "", only_in=c.only_in) for c in diff.console
    ]
    return assertions, steps, network, console


def _assertion_line(a: DiffAssertionRow) -> str:
    return (
        f"- step {a.step} {a.target}: {a.change} — a expected {a.expected_a} got {a.actual_a}; "
        f"b expected {a.expected_b} got {a.actual_b}"
    )


def _step_line(s: DiffStepRow) -> str:
    restored = " (restored)" if s.restored else ""
    delta = f", {s.delta_ms:+d} ms" if s.delta_ms is not None else ""
    return f"- step {s.step} “{s.title or ''}”: a {s.a}, b {s.b}{restored}{delta}"


def _exchange_line(e: DiffExchangeRow) -> str:
    where = f" (only in {e.only_in})" if e.only_in else ""
    body = ("; " + "; ".join(e.body)) if e.body else ""
    return f"- step {e.step} {e.request} {e.status}{where}{body}"


def _console_line(c: DiffConsoleRow) -> str:
    return f"- step {c.step} {c.kind} only in {c.only_in}: {c.text}"


def diff_text(view: DiffView) -> str:
    lines = [f"Diff ({view.dimension}, b against a): {view.summary}"]
    if view.assertions:
        lines.append("Assertions that differ:")
        lines.extend(_assertion_line(a) for a in view.assertions)
    if view.steps:
        lines.append("Steps:" if view.dimension == "steps" else "Steps that differ:")
        lines.extend(_step_line(s) for s in view.steps)
    if view.network:
        lines.append("HTTP exchanges that differ:")
        lines.extend(_exchange_line(e) for e in view.network)
    if view.console:
        lines.append("Console, errors and logs only in one run:")
        lines.extend(_console_line(c) for c in view.console)
    lines.extend(f"Left out: {o}" for o in view.omitted)
    return "\n".join(lines)


def build_diff_view(diff: TraceDiff, budget: int) -> tuple[DiffView, str]:
    """`diff_traces`'s answer, shrunk until it fits `budget` tokens."""
    assertions, steps, network, console = _rows(diff)
    a, b = diff.a.short_id, diff.b.short_id
    changed_exchanges = sum(1 for e in diff.network if e.changed)
    totals = [e.body_changes_total for e in diff.network if e.changed]
    body_total = {id(row): total for row, total in zip(network, totals, strict=True)}
    # One REST answer holds a page of the dimension's list (assertions; network: exchanges; console: lines),
    # `rows_total` in all from the first; this answer shows a part of that page. `next_offset` is the first
    # row of the list not shown, for the next call. (The network rows shown are the changed exchanges.)
    changed_at = [i for i, e in enumerate(diff.network) if e.changed]
    paged = {"network": len(diff.network), "console": len(diff.console)}.get(diff.dimension, len(diff.assertions))
    call = f'diff_traces(a="{a}", b="{b}", dimension="{diff.dimension}", offset='

    def next_offset(n_assert: int, n_net: int, n_console: int) -> int | None:
        if diff.dimension == "network":
            consumed = paged if n_net == len(network) else changed_at[n_net - 1] + 1 if n_net else 0
        else:
            consumed = n_console if diff.dimension == "console" else n_assert
        after = diff.offset + consumed
        return after if after < diff.rows_total else None

    def assemble(
        n_assert: int, n_steps: int, n_net: int, n_body: int, n_console: int, full_summary: int
    ) -> tuple[DiffView, str]:
        omitted: list[str] = []
        summary = diff.summary if full_summary else _first_sentence(diff.summary)
        if not full_summary:
            omitted.append("the rest of the summary; `counts` has the numbers")
        later = next_offset(n_assert, n_net, n_console)
        # Where none of the list fitted, asking from the same row would give the same answer.
        then = f"{call}{later})" if later != diff.offset else "no room in this answer: raise max_tokens"
        if later is not None and diff.dimension in ("overview", "steps"):
            omitted.append(f"{diff.rows_total - later} more assertions that differ; {then}")
        if n_steps < len(steps):
            more_steps = f"{len(steps) - n_steps} more steps; "
            if diff.dimension == "steps":  # this is that call: only a larger answer holds them
                omitted.append(more_steps + "raise max_tokens (up to 20,000)")
            else:
                omitted.append(more_steps + f'diff_traces(a="{a}", b="{b}", dimension="steps")')
        if later is not None and diff.dimension == "network":
            omitted.append(f"{diff.rows_total - later} more exchanges (changed or not); {then}")
        cut_bodies = [row.model_copy(update={"body": row.body[:n_body]}) for row in network[:n_net]]
        hidden_fields = sum(body_total[id(row)] - min(n_body, len(row.body)) for row in network[:n_net])
        if hidden_fields > 0:
            omitted.append(f"{hidden_fields} changed body fields; get_trace(trace_id, step=N) shows whole bodies")
        if later is not None and diff.dimension == "console":
            omitted.append(f"{diff.rows_total - later} more console lines; {then}")
        if diff.truncated:
            omitted.append("a trace has more events than the diff reads; later steps were not compared")
        if diff.dimension == "overview" and changed_exchanges:
            omitted.append(f'request/response details; diff_traces(a="{a}", b="{b}", dimension="network")')
        d = diff.first_divergence
        view = DiffView(
            a=a,
            b=b,
            a_status=diff.a.status,
            b_status=diff.b.status,
            dimension=diff.dimension,
            summary=mask_text(summary) or "",
            first_divergence=mask_text(d.what) if d else None,
            first_divergence_step=d.step if d else None,
            counts={k: v for k, v in diff.counts.model_dump().items() if v},
            assertions=assertions[:n_assert],
            steps=steps[:n_steps],
            network=cut_bodies,
            console=console[:n_console],
            duration_ms_a=diff.timing.duration_ms_a,
            duration_ms_b=diff.timing.duration_ms_b,
            next_offset=later,
            omitted=omitted,
        )
        return view, diff_text(view)

    sizes = [len(assertions), len(steps), len(network), BODY_LINES, len(console), 1]
    floors = [0, 0, 0, 0, 0, 0]
    # Exchanges, console, body fields, steps, then assertions (what a replay is for), then the summary's tail;
    # when the steps were asked for, they go last but for the summary.
    order = (2, 4, 3, 0, 1, 5) if diff.dimension == "steps" else (2, 4, 3, 1, 0, 5)
    estimate = _DiffEstimate(assemble, assertions, steps, network, console, diff.summary)
    return _fit(assemble, sizes, floors, order, budget, estimate)


def _first_sentence(summary: str) -> str:
    head, sep, _ = summary.partition(". ")
    return head + "." if sep else summary


BODY_LINES = 6  # changed body fields shown per exchange at most


def _row_cost(row: BaseModel, line: str) -> Cost:
    """A row's tokens in the text (its line and the newline) and in the structured content (its JSON and a
    comma)."""
    return (estimate_tokens(line) + 1, model_tokens(row) + 1, 0)


def _exchange_cost(row: DiffExchangeRow, body_lines: int) -> Cost:
    cut = row.model_copy(update={"body": row.body[:body_lines]})
    return _row_cost(cut, _exchange_line(cut))


class _DiffEstimate:
    """What `cost` would say of the diff view at some sizes, by arithmetic: the view without rows, measured
    once, plus each row's tokens, measured once (sums over concatenations are within a few tokens of the
    whole; `_fit` checks the answer it builds with `cost` itself)."""

    HEADER: Cost = (8, 8, 0)  # a dimension's header line, and the list's brackets and key in the JSON

    def __init__(
        self,
        assemble: Callable[..., tuple[DiffView, str]],
        assertions: list[DiffAssertionRow],
        steps: list[DiffStepRow],
        network: list[DiffExchangeRow],
        console: list[DiffConsoleRow],
        summary: str,
    ) -> None:
        bare, bare_text = assemble(0, 0, 0, 0, 0, 1)
        self.base: Cost = (estimate_tokens(bare_text), json_tokens(structured(bare)), 0)
        whole, first = mask_text(summary) or "", mask_text(_first_sentence(summary)) or ""
        tail = estimate_tokens(whole) - estimate_tokens(first)
        self.summary_tail: Cost = (tail, tail, 0)
        self.rows = {
            0: prefix_costs([_row_cost(a, _assertion_line(a)) for a in assertions]),
            1: prefix_costs([_row_cost(s, _step_line(s)) for s in steps]),
            4: prefix_costs([_row_cost(c, _console_line(c)) for c in console]),
        }
        self._exchanges = network
        self._network_sums: dict[int, list[Cost]] = {}

    def _network_at(self, body_lines: int) -> list[Cost]:
        """The exchanges' prefix sums with `body_lines` body fields each (measured when first needed)."""
        if (sums := self._network_sums.get(body_lines)) is None:
            costs = [_exchange_cost(e, body_lines) for e in self._exchanges]
            sums = self._network_sums[body_lines] = prefix_costs(costs)
        return sums

    def __call__(self, sizes: Sequence[int]) -> int:
        total = self.base
        for i, sums in self.rows.items():
            if sizes[i]:
                total = add_costs(add_costs(total, sums[sizes[i]]), self.HEADER)
        if sizes[2]:
            total = add_costs(add_costs(total, self._network_at(min(sizes[3], BODY_LINES))[sizes[2]]), self.HEADER)
        text, data, _ = total
        if not sizes[5]:
            text, data = text - self.summary_tail[0], data - self.summary_tail[1]
        return shown(text, data)


def _presize(
    estimate: Callable[[Sequence[int]], int], sizes: list[int], floors: list[int], order: tuple[int, ...], budget: int
) -> list[int]:
    """The sizes `_fit` would cut to, found by arithmetic: in `order`, each size cut only as far as the
    estimate needs (the largest that fits), the next one cut only when the first is at its floor."""
    sizes = list(sizes)
    for i in order:
        if estimate(sizes) <= budget:
            break
        keep = sizes[i]
        sizes[i] = floors[i]
        if estimate(sizes) > budget:
            continue  # not even with none of these: cut the next as well
        lo, hi = floors[i], keep
        while lo < hi:
            sizes[i] = mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if estimate(sizes) <= budget else (lo, mid - 1)
        sizes[i] = lo
        break
    return sizes


def _fit(
    assemble: Callable[..., tuple[DiffView, str]],
    sizes: list[int],
    floors: list[int],
    order: tuple[int, ...],
    budget: int,
    estimate: Callable[[Sequence[int]], int] | None = None,
) -> tuple[DiffView, str]:
    """The view at the largest sizes that fit `budget`, cutting in `order`. With an `estimate`, the sizes
    are found by arithmetic and the view built once or twice (a miss of the estimate is taken off the
    budget it aims at); without, or when that does not fit, each size is cut by a third until it does."""
    if estimate is not None:
        aim, best = budget, None
        for _ in range(3):
            trial = _presize(estimate, sizes, floors, order, aim)
            view, text = assemble(*trial)
            spent = cost(view, text)
            fits = spent <= budget
            if fits:
                best = (view, text)
            elif best is not None:
                return best  # a larger try overshot: the last that fitted
            # Aim again with what the estimate missed at these sizes: larger when it counted too much.
            again = budget - (spent - estimate(trial))
            if fits and (again <= aim or trial == sizes):
                return view, text
            aim = again if fits else min(again, aim - 1)
        if best is not None:
            return best
        sizes = trial
    view, text = assemble(*sizes)
    while (spent := cost(view, text)) > budget:
        factor = min(2 / 3, budget / spent)
        for i in order:
            if sizes[i] > floors[i]:
                sizes[i] = max(floors[i], int(sizes[i] * factor))
                break
        else:
            break
        view, text = assemble(*sizes)
    return view, text


# ---- replay --------------------------------------------------------------------------------------


def replay_text(view: ReplayView, diff_lines: str | None) -> str:
    r = view.replay
    head = f"Replay {r.replay_id} of trace {r.trace_id} from step {r.from_step}: {r.status.upper()}"
    if r.status == "succeeded":
        head += f" — the replayed run {(r.trace_status or '?').upper()}"
        if r.failure_signature:
            head += f" at {r.failure_signature}"
        head += f"; child trace {r.replay_trace_id}"
    elif r.status == "failed":
        head += f" ({r.error}): {r.message}"
    elif r.status == "queued":
        head += f" (position {r.queue_position} in this org's queue)" if r.queue_position else ""
    else:
        head += f" ({r.phase}: {r.message})"
    if r.duration_ms is not None:
        head += f" in {r.duration_ms / 1000:.1f} s"
    lines = [head]
    if r.log_tail:
        lines.append("App log (tail):")
        lines.append(r.log_tail)
    if diff_lines:
        lines.append(diff_lines)
    lines.extend(f"Left out: {o}" for o in view.omitted)
    lines.append(f"Next: {view.next}")
    return "\n".join(lines)


def next_step(status: ReplayStatus) -> str:
    if status.status in ("queued", "running"):
        return (
            f'get_replay(replay_id="{status.id}", wait_seconds=30) waits for it to finish '
            f"(or read {replay_uri(status.id)})"
        )
    if status.status == "failed":
        if status.error == "app_start_failed":
            return "fix what the app log shows (often a source diff that breaks the app), then replay_trace again"
        return "replay_trace again (with corrected edits if the message points at them)"
    child = status.replay_short_id or status.replay_trace_id
    if status.trace_status == "passed":
        return f'get_trace(trace_id="{child}") reads the replayed run; a source fix can be promoted with promote-fix'
    return f'get_trace(trace_id="{child}") explains the replayed run; debug_run(trace_id="{child}") analyses it'


def build_replay_view(status: ReplayStatus, diff: TraceDiff | None, budget: int) -> tuple[ReplayView, str]:
    """The answer of `replay_trace` / `get_replay`: the status, and the diff summary once it succeeded."""
    row = replay_row(status)
    base = ReplayView(replay=row, diff=None, next=next_step(status))
    if diff is None:
        return base, replay_text(base, None)
    head_cost = cost(base, replay_text(base, None))
    room = max(300, budget - head_cost)
    for _ in range(4):
        diff_view, diff_lines = build_diff_view(diff, room)
        view = base.model_copy(update={"diff": diff_view})
        text = replay_text(view, diff_lines)
        overrun = cost(view, text) - budget
        if overrun <= 0:
            break
        room = max(300, room - overrun - 50)
    return view, text
