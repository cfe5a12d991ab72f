"""The detectors on traces RECORDED from real runs of an app they were not written against: the
ticket shop (tests/apps), driven by the Python `playwright` package in Debian's Chromium. Each
scenario's expected label and critical step were written down from what the scenario does, before
the detectors ran on it (tests/apps/record.py is the generator)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from molar_mcp.debugger.detectors import analyze
from molar_mcp.ingest.playwright import read_playwright_trace
from molar_mcp.store.sqlite import normalize_events
from tests.apps.record import RecordedTraces


@dataclass(frozen=True)
class Expected:
    label: str | None  # None: a passing control, no finding may say it failed
    says: tuple[str, ...] = ()  # words the top finding's summary must carry (what it waited for, and why)


EXPECTED: dict[str, Expected] = {
    "passing": Expected(None),
    "slow": Expected(None),  # slow but within its timeout: passes
    "wrong-text": Expected("assertion_failed", ("Sold out",)),
    "missing-selector": Expected("selector_not_found", ("#add-to-cart",)),
    # The element exists; something else kept the click from happening.
    "overlay": Expected("timeout", ("intercepts pointer events",)),
    "disabled": Expected("timeout", ("not enabled",)),
    "http-500": Expected("http_error", ("500",)),
    "js-exception": Expected(
        "js_exception",
    ),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_the_top_finding_of_a_recorded_run_names_what_went_wrong(recorded: RecordedTraces, scenario: str) -> None:
    shot = recorded(scenario)
    parsed = read_playwright_trace(shot.path.read_bytes(), filename=shot.path.name)
    # Steps numbered as the store numbers them.
    findings = analyze(normalize_events(parsed.trace.events), parsed.trace.status)
    expected = EXPECTED[scenario]
    if expected.label is None:
        assert parsed.trace.status == "passed"
        assert [f for f in findings if f.label != "flaky" and f.confidence >= 0.5] == []
        return
    assert parsed.trace.status == "failed"
    top = findings[0]
    assert top.label == expected.label, [(f.label, f.confidence, f.summary) for f in findings]
    for word in expected.says:
        assert word in top.summary, top.summary
