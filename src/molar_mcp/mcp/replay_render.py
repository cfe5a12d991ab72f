"""Pure renderers of replays and trace diffs: API models → tool output (structured view + compact text),
fitted to a token budget with `render.cost`, cutting the least useful rows first and saying so in
`omitted`."""

from __future__ import annotations

import json
from typing import Any

from molar_mcp.mcp.masking import mask_text
from molar_mcp.mcp.render import cost
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


def diff_text(view: DiffView) -> str:
    lines = [f"Diff ({view.dimension}, b against a): {view.summary}"]
    if view.assertions:
        lines.append("Assertions that differ:")
        for a in view.assertions:
            lines.append(
                f"- step {a.step} {a.target}: {a.change} — a expected {a.expected_a} got {a.actual_a}; "
                f"b expected {a.expected_b} got {a.actual_b}"
            )
    if view.steps:
        lines.append("Steps:" if view.dimension == "steps" else "Steps that differ:")
        for s in view.steps:
            restored = " (restored)" if s.restored else ""
            delta = f", {s.delta_ms:+d} ms" if s.delta_ms is not None else ""
            lines.append(f"- step {s.step} “{s.title or ''}”: a {s.a}, b {s.b}{restored}{delta}")
    if view.network:
        lines.append("HTTP exchanges that differ:")
        for e in view.network:
            where = f" (only in {e.only_in})" if e.only_in else ""
            body = ("; " + "; ".join(e.body)) if e.body else ""
            lines.append(f"- step {e.step} {e.request} {e.status}{where}{body}")
    if view.console:
        lines.append("Console, errors and logs only in one run:")
        lines.extend(f"- step {c.step} {c.kind} only in {c.only_in}: {c.text}" for c in view.console)
    lines.extend(f"Left out: {o}" for o in view.omitted)
    return "\n".join(lines)


def build_diff_view(diff: TraceDiff, budget: int) -> tuple[DiffView, str]:
    """`diff_traces`'s answer, shrunk until it fits `budget` tokens."""
    assertions, steps, network, console = _rows(diff)
    a, b = diff.a.short_id, diff.b.short_id
    changed_exchanges = sum(1 for e in diff.network if e.changed)
    totals = [e.body_changes_total for e in diff.network if e.changed]
    body_total = {id(row): total for row, total in zip(network, totals, strict=True)}
    # One REST answer holds a page of the dimension's rows (`rows_total` in all): the rest count as left out.
    unsent = max(0, diff.rows_total - diff.offset - len(diff.assertions or diff.network or diff.console))
    more_assertions = unsent if diff.dimension in ("overview", "steps") else 0
    more_network = diff.counts.exchanges_changed - len(network) if diff.dimension == "network" else 0
    more_console = unsent if diff.dimension == "console" else 0

    def assemble(
        n_assert: int, n_steps: int, n_net: int, n_body: int, n_console: int, full_summary: int
    ) -> tuple[DiffView, str]:
        omitted: list[str] = []
        summary = diff.summary if full_summary else _first_sentence(diff.summary)
        if not full_summary:
            omitted.append("the rest of the summary; `counts` has the numbers")
        if n_assert < len(assertions) + more_assertions:
            more = len(assertions) + more_assertions - n_assert
            omitted.append(f'{more} more assertions that differ; diff_traces(dimension="steps")')
        if n_steps < len(steps):
            omitted.append(f'{len(steps) - n_steps} more steps; diff_traces(a="{a}", b="{b}", dimension="steps")')
        if n_net < len(network) + more_network:
            more = len(network) + more_network - n_net
            omitted.append(f"{more} more changed exchanges; raise max_tokens or read get_trace step=N")
        cut_bodies = [row.model_copy(update={"body": row.body[:n_body]}) for row in network[:n_net]]
        hidden_fields = sum(body_total[id(row)] - min(n_body, len(row.body)) for row in network[:n_net])
        if hidden_fields > 0:
            omitted.append(f"{hidden_fields} changed body fields; get_trace(trace_id, step=N) shows whole bodies")
        if n_console < len(console) + more_console:
            more = len(console) + more_console - n_console
            omitted.append(f'{more} more console lines; diff_traces(dimension="console")')
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
            omitted=omitted,
        )
        return view, diff_text(view)

    sizes = [len(assertions), len(steps), len(network), 6, len(console), 1]
    floors = [0, 0, 0, 0, 0, 0]
    # Exchanges, console, body fields, steps, then assertions (what a replay is for), then the summary's tail.
    order = (2, 4, 3, 1, 0, 5)
    return _fit(assemble, sizes, floors, order, budget)


def _first_sentence(summary: str) -> str:
    head, sep, _ = summary.partition(". ")
    return head + "." if sep else summary


def _fit(
    assemble: Any, sizes: list[int], floors: list[int], order: tuple[int, ...], budget: int
) -> tuple[DiffView, str]:
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
