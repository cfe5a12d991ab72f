"""The deterministic detectors, judged on a labelled corpus of small traces (see corpus/)."""

from __future__ import annotations

import copy
import re

import pytest

from molar_mcp.debugger.detectors import (
    ANALYZER_VERSION,
    LABELS,
    Finding,
    analyze,
    failure_signature,
    step_numbers,
)
from molar_mcp.debugger.findings import SIGNATURE_MAX_CHARS
from molar_mcp.models.traces import Event

from .corpus import CASES, accuracy
from .corpus.builder import Case, Run
from .corpus.web import checkout_webhook_404, connection_refused

REQUIRED_LABELS = {
    "assertion_failed",
    "http_error",
    "network_failure",
    "timeout",
    "selector_not_found",
    "js_exception",
    "console_error",
    "navigation_error",
    "flaky",
    "llm_error",
    "rate_limited",
    "tool_error",
    "loop",
    "max_steps",
}
SIGNATURE_RE = re.compile(r"^(step-\d+: )?[a-z][a-z-]*( \S.*)?$")
by_name = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])


def all_findings(case: Case) -> list[Finding]:
    return analyze(case.events, case.status)


@by_name
def test_every_corpus_trace_gets_its_expected_top_label_and_critical_step(case: Case) -> None:
    findings = all_findings(case)

    if case.label is None:
        assert findings == []
    else:
        assert (findings[0].label, findings[0].critical_step) == (case.label, case.step), findings[0].summary


def test_the_corpus_holds_at_least_34_traces_covering_every_label_and_clean_runs() -> None:
    expected = {case.label for case in CASES}

    assert len(CASES) >= 34
    assert expected >= REQUIRED_LABELS
    assert None in expected
    assert len({case.name for case in CASES}) == len(CASES)


def test_the_analyzer_is_right_on_every_trace_of_the_corpus() -> None:
    score, table = accuracy(analyze)

    print("\n" + table)
    assert score == 1.0, table


@by_name
def test_analyzing_the_same_events_twice_or_a_copy_gives_identical_findings(case: Case) -> None:
    first = analyze(case.events, case.status)
    again = analyze(case.events, case.status)
    copied = analyze(copy.deepcopy(list(case.events)), case.status)
    revalidated = analyze([Event.model_validate_json(e.model_dump_json()) for e in case.events], case.status)

    dumps = [[f.model_dump_json() for f in run] for run in (first, again, copied, revalidated)]
    assert dumps[0] == dumps[1] == dumps[2] == dumps[3]


@by_name
def test_confidences_lie_between_0_and_1_and_findings_come_best_first(case: Case) -> None:
    findings = all_findings(case)
    ranks = [(-f.confidence, f.critical_seq if f.critical_seq is not None else 2**62) for f in findings]

    assert all(0.0 <= f.confidence <= 1.0 for f in findings)
    assert ranks == sorted(ranks)
    assert all(f.label in LABELS for f in findings)


@by_name
def test_signatures_are_one_short_line_that_names_the_step_first(case: Case) -> None:
    for finding in all_findings(case):
        assert SIGNATURE_RE.match(finding.signature), finding.signature
        assert len(finding.signature) <= SIGNATURE_MAX_CHARS
        if finding.critical_step is not None:
            assert finding.signature.startswith(f"step-{finding.critical_step}: ")


@by_name
def test_summaries_are_one_plain_sentence_and_evidence_includes_the_critical_event(case: Case) -> None:
    for finding in all_findings(case):
        assert "\n" not in finding.summary
        assert finding.summary[0].isupper()
        assert finding.summary.endswith(".")
        assert finding.evidence_seqs == sorted(set(finding.evidence_seqs))
        assert finding.critical_seq in finding.evidence_seqs


def test_the_webhook_404_is_blamed_for_step_7s_final_url_assertion() -> None:
    case = checkout_webhook_404()
    by_seq = {e.seq: e for e in case.events}

    top, second = analyze(case.events, case.status)[:2]

    assert top.summary == (
        "POST /api/webhooks/stripe answered 404 at step 5; step 7's assertion on the final URL failed because of it."
    )
    assert top.signature == "step-5: http 404 POST /api/webhooks/stripe"
    assert [by_seq[s].kind for s in top.evidence_seqs] == ["network.request", "network.response", "assertion"]
    assert (second.label, second.critical_step, second.signature) == (
        "assertion_failed",
        7,
        "step-7: assertion url",
    )


def test_failure_signature_is_the_best_findings_signature_whatever_the_order() -> None:
    findings = analyze(checkout_webhook_404().events, "failed")

    assert failure_signature(findings) == "step-5: http 404 POST /api/webhooks/stripe"
    assert failure_signature(list(reversed(findings))) == "step-5: http 404 POST /api/webhooks/stripe"
    assert failure_signature([]) is None


def test_findings_of_one_label_at_one_step_merge_and_pool_their_evidence() -> None:
    case = connection_refused()

    findings = analyze(case.events, case.status)

    network = [f for f in findings if f.label == "network_failure"]
    assert len(network) == 1
    assert network[0].confidence == 0.9
    assert {e.seq for e in case.events if e.kind in ("network.request", "error")} <= set(network[0].evidence_seqs)


def test_step_numbers_follow_the_order_step_ids_first_appear_when_step_is_missing() -> None:
    ids = ["login", "login", "cart", "login", None, "pay", "cart"]
    events = [Event(seq=n, ts=n, kind="log", step_id=step_id) for n, step_id in enumerate(ids)]

    assert step_numbers(events) == [1, 1, 2, 1, 1, 3, 2]


def test_explicit_step_numbers_win_and_events_before_any_step_have_none() -> None:
    events = [
        Event(seq=0, ts=0, kind="log"),
        Event(seq=1, ts=1, kind="step.start", step_id="b", step=2),
        Event(seq=2, ts=2, kind="log", step_id="b"),
        Event(seq=3, ts=3, kind="network.request"),
    ]

    assert step_numbers(events) == [None, 2, 2, 2]


def test_a_passed_status_keeps_only_flaky_and_loop_findings() -> None:
    run = Run()
    with run.step("Check the badge", ok=False):
        run.expect("toHaveText", "Pro", "Free", ".plan-badge")
    for n in range(3):
        run.turn(f"Search ({n})", "search_docs", {"query": "badge"})

    labels = {f.label for f in analyze(run.events, "passed")}

    assert labels == {"loop"}
    assert {f.label for f in analyze(run.events, None)} >= {"assertion_failed", "loop"}


def test_no_events_give_no_findings_unless_the_status_says_the_run_failed() -> None:
    assert analyze([]) == []
    assert analyze([], "passed") == []
    [finding] = analyze([], "failed")
    assert (finding.label, finding.critical_step, finding.signature) == ("step_failed", None, "step-failed")


def test_two_identical_tool_calls_are_not_a_loop() -> None:
    run = Run()
    for n in range(2):
        run.turn(f"Search ({n})", "search_docs", {"query": "refunds"})
    run.turn("Search elsewhere", "search_docs", {"query": "returns"})

    assert [f.label for f in analyze(run.events, "failed")] == ["step_failed"]


def test_a_configured_step_limit_is_not_mistaken_for_a_reached_one() -> None:
    run = Run()
    with run.step("Start"):
        run.log("Agent configured with max_steps=30", level="warning")
    run.turn("Read the issue", "read_file", {"path": "ISSUE.md"})

    assert "max_steps" not in {f.label for f in analyze(run.events, "failed")}


def test_the_analyzer_version_is_2() -> None:
    assert ANALYZER_VERSION == "2"


def test_a_final_url_assertion_that_differs_only_in_its_query_names_the_query() -> None:
    events = [
        Event(seq=0, ts=1, kind="step.start", step_id="s1", message="Verify"),
        Event(
            seq=1,
            ts=2,
            kind="assertion",
            step_id="s1",
            ok=False,
            message="expected url /billing?upgraded=true; got /billing?upgraded=false",
            payload={"expected": "/billing?upgraded=true", "actual": "http://shop/billing?upgraded=false"},
        ),
    ]
    top = analyze(events, "failed")[0]
    assert top.label == "assertion_failed"
    assert '"/billing?upgraded=true"' in top.summary
    assert '"/billing?upgraded=false"' in top.summary


def test_a_step_limit_signature_names_the_agent_that_ran_out_of_steps() -> None:
    def run_of(agent: str) -> list[Event]:
        run_line = {"level": "info", "run": {"attributes": {"gen_ai.agent.name": agent}}}
        return [
            Event(seq=0, ts=1, kind="log", message=f"agent run: {agent}", payload=run_line),
            Event(seq=1, ts=2, kind="step.start", step_id="s1", message="chat"),
            Event(seq=2, ts=3, kind="llm.response", step_id="s1", ok=True, payload={"text": "call a tool"}),
            Event(seq=3, ts=4, kind="step.end", step_id="s1", ok=True),
            Event(seq=4, ts=5, kind="error", ok=False, payload={"message": "Max turns (5) exceeded"}),
        ]

    top = {agent: analyze(run_of(agent), "failed")[0] for agent in ("travel-booker", "code-reviewer")}
    assert [(f.label, f.signature) for f in top.values()] == [
        ("max_steps", "step-1: max-steps travel-booker"),
        ("max_steps", "step-1: max-steps code-reviewer"),
    ]
