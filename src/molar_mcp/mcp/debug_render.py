"""Pure renderer of `debug_run`: an analysis, its cited events and the calls made → a `DebugView` and a
compact text, fitted to a token budget the way `get_trace` is (`mcp/render.py`).

Without a model the answer is built from the findings alone and says so ("Analysis without a model:");
it states nothing the detectors did not. What the budget cuts is listed in `omitted` with the call that
brings it back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from molar_mcp.mcp.debug_model import ModelAnswer
from molar_mcp.mcp.masking import mask_text
from molar_mcp.mcp.render import event_row
from molar_mcp.mcp.tokens import estimate_tokens, shown
from molar_mcp.mcp.views import DebugFinding, DebugView, EventRow, ReplaySuggestion, ToolCallRecord
from molar_mcp.models import Analysis, AnalysisFinding, Event, TraceDetail

NO_MODEL = "Analysis without a model:"
ANSWER_MIN_CHARS = 200  # a model's answer is cut last, and never shorter than this
EVIDENCE_MAX = 16  # cited events quoted at most (before the budget cuts)


def debug_structured(view: DebugView) -> dict[str, Any]:
    """`structuredContent` of a debug view: nulls left out, except `chat_id`, `model` and
    `suggested_replay`, whose null says something (no chat, no model, nothing to replay)."""
    data = view.model_dump(mode="json", exclude_none=True)
    for key in ("chat_id", "model", "suggested_replay"):
        data.setdefault(key, None)
    return data


def debug_cost(view: DebugView, text: str) -> int:
    """Tokens a model is shown: the larger of the text block and the structured content (as `render.cost`
    counts them)."""
    return shown(estimate_tokens(text), estimate_tokens(json.dumps(debug_structured(view), ensure_ascii=False)))


def cited_seqs(analysis: Analysis) -> list[int]:
    """The seqs the findings cite, most important first: each finding's critical event, then its other
    evidence, finding by finding (best first), without repeats."""
    out: dict[int, None] = {}
    for f in analysis.findings:
        if f.critical_seq is not None:
            out.setdefault(f.critical_seq)
        for seq in f.evidence_seqs:
            out.setdefault(seq)
    return list(out)


def finding_view(f: AnalysisFinding) -> DebugFinding:
    return DebugFinding(
        label=f.label,
        confidence=f.confidence,
        critical_step=f.critical_step,
        critical_seq=f.critical_seq,
        evidence_seqs=f.evidence_seqs,
        summary=mask_text(f.summary),
        signature=mask_text(f.signature),
    )


def _where(f: DebugFinding, titles: Mapping[int, str]) -> str:
    if f.critical_step is None:
        return "an unknown step"
    title = titles.get(f.critical_step)
    where = f"step {f.critical_step}" + (f" “{title}”" if title else "")
    return where + (f", event seq {f.critical_seq}" if f.critical_seq is not None else "")


def analysis_answer(
    findings: Sequence[DebugFinding],
    total: int,
    status: str | None,
    titles: Mapping[int, str],
    replay: ReplaySuggestion | None,
    question: str | None,
    chat_id: str | None,
) -> str:
    """The answer without a model: what the findings say, in order, and nothing else."""
    run = f"this {status} run" if status in ("passed", "failed") else f"this run (status {status or 'unknown'})"
    if not findings:
        lines = [f"{NO_MODEL} the deterministic detectors found no sign of a failure in {run}."]
    else:
        causes = "1 possible cause" if total == 1 else f"{total} possible causes, most likely first"
        lines = [f"{NO_MODEL} the deterministic detectors report {causes} in {run}."]
        for i, f in enumerate(findings, start=1):
            cites = ", ".join(str(s) for s in f.evidence_seqs)
            lines.append(
                f"{i}. {f.label} (confidence {f.confidence:.2f}) at {_where(f, titles)}: {f.summary}"
                + (f" Cited events: seq {cites}." if cites else "")
            )
        if replay is not None:
            lines.append(f"Suggested replay: from step {replay.from_step}; {replay.change}.")
    if question:
        lines.append("No model is configured, so the question got no answer beyond these findings.")
    if chat_id:
        lines.append(f"Chat {chat_id} was not continued: no model is configured.")
    return "\n".join(lines)


def debug_text(view: DebugView) -> str:
    who = f"model {view.model}" if view.model else "no model"
    head = f"Trace {view.short_id or view.trace_id}"
    if view.status:
        head += f" {view.status.upper()}"
    if view.failure_signature:
        head += f" — {view.failure_signature}"
    lines = [f"{head} (detectors v{view.analyzer_version or '?'}, {who})", view.answer]
    if view.evidence:
        lines.append("Cited events:")
        lines.extend(_event_line(e) for e in view.evidence)
    lines.extend(f"Left out: {o}" for o in view.omitted)
    ref = view.short_id or view.trace_id
    if view.suggested_replay is not None:
        step = view.suggested_replay.from_step
        lines.append(f'Next: get_trace(trace_id="{ref}", step={step}) shows the critical step\'s events.')
    return "\n".join(lines)


def _event_line(e: EventRow) -> str:
    mark = " ✗" if e.ok is False else ""
    step = f" step {e.step}" if e.step is not None else ""
    rest = " | ".join(p for p in (e.message, e.detail) if p)
    return f"- seq {e.seq}{step} {e.kind}{mark}" + (f": {rest}" if rest else "")


def build_debug_view(
    analysis: Analysis,
    detail: TraceDetail | None,
    quoted: Mapping[int, Event],
    *,
    question: str | None,
    chat_id: str | None,
    tool_calls: Sequence[ToolCallRecord],
    budget: int,
    reply: ModelAnswer | None = None,
) -> tuple[DebugView, str]:
    """Assemble `debug_run`'s answer and shrink it until it fits `budget` tokens: cited events go first
    (but the top finding's critical event), then the call records, then lower-ranked findings (never
    the top one), then that last event, then the tail of the model's answer.

    `reply` is the model's answer (`mcp/debug_model.py`); without one the answer is the findings'.
    """
    findings = [finding_view(f) for f in analysis.findings]
    titles = {s.step: s.title for s in detail.steps if s.title} if detail is not None else {}
    step_of = _step_locator(detail)
    ref = detail.short_id if detail is not None else analysis.trace_id
    replay = (
        ReplaySuggestion(from_step=analysis.suggested_replay.from_step, change=analysis.suggested_replay.reason)
        if analysis.suggested_replay is not None
        else None
    )
    wanted = cited_seqs(analysis)
    rows = {seq: event_row(quoted[seq], ref) for seq in wanted if seq in quoted}
    in_order = [seq for seq in wanted if seq in rows]  # most important first

    def assemble(n_findings: int, n_evidence: int, n_calls: int, n_answer: int) -> tuple[DebugView, str]:
        shown = findings[:n_findings]
        kept = sorted(in_order[:n_evidence])
        omitted: list[str] = []
        if len(shown) < len(findings):
            rest = ", ".join(
                f"{f.label}@step {f.critical_step}" if f.critical_step else f.label for f in findings[len(shown) :]
            )
            omitted.append(
                f"{len(findings) - len(shown)} lower-ranked finding(s) ({rest}); "
                f'debug_run(trace_id="{ref}", max_tokens={budget * 2}) shows more'
            )
        unquoted = [seq for seq in wanted if seq not in kept]
        if unquoted:
            omitted.append(_unquoted_note(unquoted, step_of, ref))
        if n_calls < len(tool_calls):
            omitted.append(f"the records of the {len(tool_calls) - n_calls} calls made; a larger max_tokens shows them")
        if reply is not None:
            answer = reply.answer
            if n_answer < len(answer):  # the last resort: the model's answer, cut (the chat keeps it whole)
                answer = answer[:n_answer].rstrip() + "…"
                omitted.append(
                    f"the rest of the model's answer ({len(reply.answer) - n_answer} characters); "
                    f'debug_run(trace_id="{ref}", chat_id="{reply.chat_id}", max_tokens={budget * 2}) reads it'
                )
        else:
            answer = analysis_answer(shown, len(findings), _status(detail), titles, replay, question, chat_id)
        view = DebugView(
            trace_id=analysis.trace_id,
            short_id=detail.short_id if detail is not None else None,
            status=_status(detail),
            chat_id=reply.chat_id if reply is not None else None,
            model=reply.model if reply is not None else None,
            answer=answer,
            findings=shown,
            evidence=[rows[seq] for seq in kept],
            failure_signature=mask_text(analysis.failure_signature) if analysis.failure_signature else None,
            suggested_replay=replay,
            incident_id=analysis.incident_id,
            tool_calls=list(tool_calls[:n_calls]),
            analyzer_version=analysis.analyzer_version,
            omitted=omitted,
        )
        return view, debug_text(view)

    sizes = [len(findings), min(len(in_order), EVIDENCE_MAX), len(tool_calls), len(reply.answer) if reply else 0]
    view, text = assemble(*sizes)
    while (spent := debug_cost(view, text)) > budget:
        factor = min(2 / 3, budget / spent)
        # Cited events first (down to the top finding's critical event), then the call records (their
        # names stay in `omitted`), then lower-ranked findings, then the last quoted event.
        if sizes[1] > 1:
            sizes[1] = max(1, int(sizes[1] * factor))
        elif sizes[2] > 0:
            sizes[2] = 0
        elif sizes[0] > 1:
            sizes[0] = max(1, int(sizes[0] * factor))
        elif sizes[1] > 0:
            sizes[1] = 0
        elif sizes[3] > ANSWER_MIN_CHARS:
            sizes[3] = max(ANSWER_MIN_CHARS, int(sizes[3] * factor))
        else:
            break
        view, text = assemble(*sizes)
    return view, text


def _status(detail: TraceDetail | None) -> str | None:
    return detail.status if detail is not None else None


def _step_locator(detail: TraceDetail | None) -> list[tuple[int, int, int]]:
    """(first_seq, last_seq, step) of every step, to say which step holds an event left unquoted."""
    return [(s.first_seq, s.last_seq, s.step) for s in detail.steps] if detail is not None else []


def _unquoted_note(seqs: Sequence[int], steps: Sequence[tuple[int, int, int]], ref: str) -> str:
    where: dict[int, list[int]] = {}
    loose: list[int] = []
    for seq in sorted(seqs):
        step = next((n for first, last, n in steps if first <= seq <= last), None)
        if step is None:
            loose.append(seq)
        else:
            where.setdefault(step, []).append(seq)
    calls = [f'get_trace(trace_id="{ref}", step={n}) (seq {", ".join(map(str, s))})' for n, s in where.items()]
    if loose:
        calls.append(f"molar://traces/{ref}/events (seq {', '.join(map(str, loose))})")
    return f"{len(seqs)} cited events not quoted; read them with " + "; ".join(calls)
