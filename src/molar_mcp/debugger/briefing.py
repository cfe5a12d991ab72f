"""What a chat knows before any model speaks: the detectors' findings and the events they cite, rendered
as text (the chat's first message), the system prompt built on them, and the answer given when no
model is available. Pure functions; every event text is masked before it can reach a model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from molar_mcp.debugger.findings import Finding
from molar_mcp.debugger.suggest import suggest_replay
from molar_mcp.models import Event, TraceDetail
from molar_mcp.models.masking import mask, mask_text

MAX_FINDINGS: Final = 5
MAX_EVIDENCE: Final = 4
EVENT_CHARS: Final = 200

NO_MODEL_LABEL: Final = (
    "Analysis without a model: no model answered this question, so here is what the deterministic "
    "detectors found and the events they cite. To get an answer to the question itself, start the server "
    "with a model (--model / MOLAR_MODEL, e.g. openai:gpt-4o-mini) or ask through debug_run from an MCP "
    "client that offers sampling."
)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_line(ev: Event) -> str:
    """`seq 41 · step 5 · network.response: POST /api/x → 404`, masked and cut to one line."""
    p = ev.payload
    if ev.kind.startswith("network.") and ("url" in p or "status" in p):
        what = f"{p.get('method', '')} {p.get('url', '')}".strip()
        if "status" in p:
            what += f" → {p['status']}"
    elif ev.message:
        what = ev.message
        if "expected" in p or "actual" in p:
            what += f" (expected {p.get('expected')!r}, actual {p.get('actual')!r})"
    elif p:
        what = json.dumps(mask(p), separators=(",", ":"), default=str)
    else:
        what = "(no message)"
    where = f"seq {ev.seq}" + (f" · step {ev.step}" if ev.step is not None else "")
    failed = " (failed)" if ev.ok is False else ""
    return f"{where} · {ev.kind}{failed}: {_cut(mask_text(what), EVENT_CHARS)}"


def render_findings(trace: TraceDetail, findings: Sequence[Finding], events: Sequence[Event]) -> str:
    """The chat's seeded first message: the findings best first, each with the events it cites, and
    where a replay should start. Says so plainly when the detectors found nothing."""
    by_seq = {ev.seq: ev for ev in events}
    head = f"Trace {trace.short_id} ({trace.scenario_slug or 'no scenario'}) {trace.status}"
    if trace.failure_signature:
        head += f", failure signature `{trace.failure_signature}`"
    lines = [head + ".", ""]
    if not findings:
        lines.append("The deterministic detectors found nothing that explains a failure in this run's events.")
        return "\n".join(lines)
    lines.append(f"The deterministic detectors found {len(findings)} suspected cause(s), best first:")
    for n, finding in enumerate(findings[:MAX_FINDINGS], start=1):
        where = f" at step {finding.critical_step}" if finding.critical_step is not None else ""
        lines.append(f"{n}. {finding.label}{where} (confidence {finding.confidence:.2f}): {mask_text(finding.summary)}")
        lines.append(f"   signature: {finding.signature}")
        cited = [by_seq[s] for s in finding.evidence_seqs if s in by_seq]
        for ev in cited[:MAX_EVIDENCE]:
            lines.append(f"   - {event_line(ev)}")
        if len(cited) > MAX_EVIDENCE:
            lines.append(f"   - … {len(cited) - MAX_EVIDENCE} more cited event(s)")
    if len(findings) > MAX_FINDINGS:
        lines.append(f"({len(findings) - MAX_FINDINGS} weaker finding(s) left out.)")
    replay = suggest_replay(findings)
    if replay is not None:
        lines += ["", f"Suggested replay: from step {replay.from_step}: {replay.reason}."]
    return "\n".join(lines)


def system_prompt(trace: TraceDetail, findings_text: str) -> str:
    """What the model is told before the conversation: its job, the trace, the findings, the rules."""
    return f"""You are the debugger of Molar, answering questions about one recorded test run or agent run.
The trace is {trace.short_id} (id {trace.id}), scenario {trace.scenario_slug or "unknown"}, status {trace.status}.

Deterministic detectors already read all of its events and found:
{findings_text}

Read the trace with the tools before you answer: get_trace(trace_id="{trace.short_id}") for the overview,
get_trace(trace_id="{trace.short_id}", step=N) for one step's events (requests, responses with bodies,
assertions, logs); list_traces to find other runs, e.g. earlier runs with the same failure signature.
Ground every claim in the trace: cite step numbers and event seqs. When the events do not show the
answer, say so and say which call would; never guess. Answer briefly: a few sentences, then the evidence."""


def no_model_answer(findings_text: str) -> str:
    """The answer when no model is available: the findings and their evidence, labelled as such."""
    return f"{NO_MODEL_LABEL}\n\n{findings_text}"
