"""Deterministic failure detectors: pure functions of a trace's ordered events.

`analyze(events, status)` runs every detector over one `Timeline` and returns findings best
first. Same events in → identical findings out: no clock, no randomness, no set-order
iteration; ties break on the critical seq, then label and signature.

Labels and their rules (each detector's docstring has the details):

- assertion_failed   a failed `assertion` (0.78; later soft ones 0.5), or a runner error
                     whose text is a failed `expect(…)`.
- http_error         a ≥ 400 response the failure depends on (0.92 same step / mentioned,
                     0.85 last failing response before the failure and tied to it: the page
                     logged an error after the request, a write, a 5xx; 0.3 otherwise).
                     Critical step: the step that sent the request.
- network_failure    net::ERR_* / ECONNREFUSED / Failed to fetch near the failure (0.9).
- timeout            a TimeoutError or "timed out" at the failure (0.75), saying from the call
                     log what it waited for (an element covered, disabled, hidden); a request
                     sent before the failure still waiting for its response (0.83): a slow
                     response or page load, not a network failure.
- selector_not_found "waiting for locator(…)", "no node found for selector" … (0.82).
- js_exception       a page exception (`error` from the page, `Uncaught …` console) (0.84).
- console_error      a console error in the failing step (0.55).
- navigation_error   a navigation answered ≥ 400 or aborted/interrupted (0.86–0.88).
- flaky              a step that failed, was retried and passed (0.7; 0.35 beside a failure).
- rate_limited       an `llm.response` error with status 429 / a rate-limit type (0.9).
- llm_error          any other `llm.response` error (0.88); recovered ones 0.45. Errors after
                     the last answer are one chain of retries, blamed at its first attempt.
- tool_error         a `tool.result` with ok false / an error / an `isError` flag / error text as
                     its result, never recovered (0.85; 0.45), a chain of failed retries of one
                     tool at its first attempt; cancelled by the run's deadline 0.4 (a symptom).
- loop               one tool called with identical arguments 3× in a row (0.87) or 3× within
                     6 tool calls (0.8); 0.6 in a run that passed.
- max_steps          a message saying a step limit was reached (0.8; 0.6 when a loop used the
                     steps up), or an agent run of ≥ 20 steps that failed without any failing
                     event (0.55). The signature names the agent (`gen_ai.agent.name`).
- timeout (agent)    an agent run cancelled by its own deadline: the step where the time went,
                     not the cancelled call (0.86).
- step_failed        the run failed and nothing above explains it with confidence ≥ 0.5
                     (0.4), or a runner error no rule names (0.5).

Error-ish events before the failure that nothing ties to it get 0.3. Root causes outrank
symptoms by construction: a 404 at step 5 that breaks step 7's assertion yields http_error
(critical step 5) above assertion_failed (step 7).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from molar_mcp.debugger.detectors.agent import (
    detect_agent_timeout,
    detect_llm_errors,
    detect_loops,
    detect_max_steps,
    detect_tool_errors,
)
from molar_mcp.debugger.detectors.errors import detect_error_events
from molar_mcp.debugger.detectors.text import sentence
from molar_mcp.debugger.detectors.timeline import Timeline, step_numbers, step_phrase
from molar_mcp.debugger.detectors.web import (
    detect_assertions,
    detect_flaky,
    detect_http,
    detect_navigation,
    detect_pending_requests,
)
from molar_mcp.debugger.findings import LABELS, Finding, make_finding, rank_key
from molar_mcp.models.rows import EventView

__all__ = ["ANALYZER_VERSION", "LABELS", "Finding", "analyze", "failure_signature", "step_numbers"]

ANALYZER_VERSION: Final = "2"  # 2: max_steps signatures name the agent
UNEXPLAINED: Final = 0.4
EXPLAINED_AT: Final = 0.5  # a finding at least this sure explains the failure

Detector = Callable[[Timeline], list[Finding]]

DETECTORS: Final[tuple[Detector, ...]] = (
    detect_assertions,
    detect_http,
    detect_navigation,
    detect_error_events,
    detect_pending_requests,
    detect_flaky,
    detect_llm_errors,
    detect_tool_errors,
    detect_loops,
    detect_max_steps,
    detect_agent_timeout,
)


def analyze(events: Sequence[EventView], status: str | None = None) -> list[Finding]:
    """Findings about one trace, best first (highest confidence, then earliest critical seq).

    `events` must be the trace's events ordered by seq; `status` is the trace's status when
    known ("passed" means failures in the events were tolerated). A run that did not fail
    yields only flaky and loop findings, so a clean passing trace yields []. At most one
    finding per (label, critical step): duplicates merge into the best one, pooling evidence.
    """
    timeline = Timeline.build(events, status)
    found = [finding for detect in DETECTORS for finding in detect(timeline)]
    if timeline.failing and not any(f.confidence >= EXPLAINED_AT for f in found):
        found.append(_unexplained(timeline))
    return sorted(_merge(found), key=rank_key)


def failure_signature(findings: Sequence[Finding]) -> str | None:
    """The signature of the best finding, or None when there are none."""
    return min(findings, key=rank_key).signature if findings else None


def _merge(findings: list[Finding]) -> list[Finding]:
    best: dict[tuple[str, int | None], Finding] = {}
    for finding in sorted(findings, key=rank_key):
        key = (finding.label, finding.critical_step)
        kept = best.get(key)
        if kept is None:
            best[key] = finding
        else:
            pooled = sorted(set(kept.evidence_seqs) | set(finding.evidence_seqs))
            best[key] = kept.model_copy(update={"evidence_seqs": pooled})
    return list(best.values())


def _unexplained(t: Timeline) -> Finding:
    """step_failed: the run failed and no detector explains it. Critical step: the failing
    event's step, or the last event's when the run failed by status alone."""
    if t.anchor is not None:
        i = t.anchor
        summary = f"{t.failure_phrase()} failed and no event says why"
    elif t.events:
        i = len(t.events) - 1
        status = t.status or "failed"
        summary = f"The run ended with status {status} after {step_phrase(t.steps[i])}; no event says why"
    else:
        return make_finding(
            "step_failed",
            UNEXPLAINED,
            step=None,
            seq=None,
            evidence=[],
            summary=f"The run ended with status {t.status or 'failed'} without any events.",
        )
    return make_finding(
        "step_failed",
        UNEXPLAINED,
        step=t.steps[i],
        seq=t.seq(i),
        evidence=[],
        summary=sentence(summary),
        subject=t.title(t.steps[i]) or "",
    )
