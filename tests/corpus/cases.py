"""The recorded corpus's cases and their labels: what each scenario does, so what its trace's top
finding must say (label) and where (critical step), written down here — from the scenario, before any
detector reads its recording. `scripts/record_corpus.py` writes these labels to tests/corpus/labels.json
first, then records every case from a real run.

Sources: `web` (the Python `playwright` package driving Debian's Chromium, a trace.zip per case),
`pwtest` (`npx playwright test`, a trace.zip and the reporter's result.json per test attempt) and
`agent` (agent runs with scripted models, exported through the OpenTelemetry SDK as OTLP/JSON).

What the labels mean (the rules they were written by):

- `step` is the top-level step as the store numbers a trace: a library trace's step 1 is
  `BrowserContext.newPage`, a Playwright Test trace's step 1 its "Before Hooks", then one step per
  action; an agent run's steps are the spans directly under its root span (`chat …`, `execute_tool …`,
  a sub-agent's `invoke_agent …`). `action` is a piece of that step's title, a check on the count.
- the critical step is where the cause happened: a failing response that the failure depends on (a
  write the page then reports as failed, a read the page logs an error for) is the step that sent the
  request, not the assertion that noticed; a timeout is the step that timed out; a run cancelled by
  its deadline is the step where the time went; a chain of retries that never succeeded is its first
  attempt (where the failure began: the same step whatever the retry count); a loop is its first
  repeated call; a run that ran out of turns is its last step.
- `timeout` when the element was there but never actionable (covered, disabled, hidden) or what the
  step waited for (a response, a page load) did not come in time — never `network_failure`, which is
  a request that failed (connection refused); `selector_not_found` when nothing ever matched.
- an earlier 4xx the page tolerates (an avatar, a banner) is never the top finding; errors retried
  past (a 503 the page retried, a 429 the client retried) are never the top finding.
- `label: None`: a passing control, no finding may claim a failure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    id: str  # "<source>/<app>/<name>"
    source: str  # web | pwtest | agent
    app: str
    name: str
    pattern: str  # the failure pattern it covers
    label: str | None  # the expected top finding; None for a passing control
    step: int | None = None
    action: str | None = None  # a piece of the critical step's title

    @property
    def failing(self) -> bool:
        return self.label is not None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("label", "step")}


def case(
    source: str,
    app: str,
    name: str,
    pattern: str,
    label: str | None,
    step: int | None = None,
    action: str | None = None,
) -> Case:
    return Case(f"{source}/{app}/{name}", source, app, name, pattern, label, step, action)


# ---- web and Playwright Test: the same scenarios, written once in Python (tests/corpus/web.py) and once
# as specs (tests/playwright_project/corpus/*.spec.js); each is listed with its label once per source.

BROWSER_CASES: dict[str, list[tuple[str, str, str | None, int | None, str | None]]] = {
    # app: [(name, pattern, label, step, action)]
    "board": [
        ("passing", "control", None, None, None),
        ("retry-passing", "control: a 503 the page retried past", None, None, None),
        ("slow-passing", "control: a slow response within its timeout", None, None, None),
        ("wrong-count", "assertion", "assertion_failed", 3, "Expect"),
        ("avatar-404-then-assert", "harmless 4xx vs the real cause", "assertion_failed", 3, "Expect"),
        ("task-404", "4xx that is the cause (the page logs it)", "http_error", 2, "/task/t404"),
        ("close-409", "4xx that is the cause (a failed write)", "http_error", 3, "#close"),
        ("create-500", "5xx", "http_error", 4, "#create"),
        ("avatar-404-then-409", "harmless 4xx vs the real cause", "http_error", 4, "#close"),
        ("modal-overlay", "timeout: covered by an overlay", "timeout", 3, "#archive"),
        ("save-disabled", "timeout: disabled", "timeout", 3, "#save"),
        ("advanced-hidden", "timeout: hidden", "timeout", 3, "#advanced"),
        ("missing-selector", "true missing selector", "selector_not_found", 3, "#assign"),
        ("report-pending", "timeout: a response still pending", "timeout", 3, "Expect"),
        ("slow-navigation", "slow page load is a timeout, not a network failure", "timeout", 2, "/slowpage"),
        ("wait-response", "explicit wait for a response that does not come", "timeout", 3, "ait"),
        ("sync-refused", "network failure (connection refused)", "network_failure", 3, "#sync"),
        ("chart-js", "page exception", "js_exception", 3, "#draw"),
        ("retry-then-wrong", "recovered retry vs final failure", "assertion_failed", 5, "Expect"),
    ],
    "clinic": [
        ("passing", "control", None, None, None),
        ("queue-passing", "control: a 502 the page retried past", None, None, None),
        ("slow-passing", "control: a slow response within its timeout", None, None, None),
        ("banner-404-then-assert", "harmless 4xx vs the real cause", "assertion_failed", 3, "Expect"),
        ("patient-404", "4xx that is the cause (the page logs it)", "http_error", 2, "/patient/p-999"),
        ("booking-422", "4xx that is the cause (a failed write)", "http_error", 3, "#confirm"),
        ("booking-503", "5xx", "http_error", 3, "#confirm"),
        ("banner-404-then-422", "harmless 4xx vs the real cause", "http_error", 4, "#confirm"),
        ("spinner-overlay", "timeout: covered by an overlay", "timeout", 3, "#start"),
        ("next-disabled", "timeout: disabled", "timeout", 3, "#next"),
        ("book-hidden", "timeout: hidden", "timeout", 3, "#book"),
        ("missing-selector", "true missing selector", "selector_not_found", 3, "#cancel"),
        ("results-pending", "timeout: a response still pending", "timeout", 3, "Expect"),
        ("slow-navigation", "slow page load is a timeout, not a network failure", "timeout", 2, "/waiting"),
        ("reminder-refused", "network failure (connection refused)", "network_failure", 3, "#send"),
        ("invoice-js", "page exception", "js_exception", 3, "#print"),
        ("queue-then-wrong", "recovered retry vs final failure", "assertion_failed", 5, "Expect"),
    ],
}

# The ticket shop (tests/apps/ticketshop.py): its recorded scenarios (tests/apps/record.py), web only.
TICKETSHOP_CASES: list[tuple[str, str, str | None, int | None, str | None]] = [
    ("passing", "control: a harmless 404 logo", None, None, None),
    ("slow", "control: a slow response within its timeout", None, None, None),
    ("wrong-text", "assertion", "assertion_failed", 4, "Expect"),
    ("missing-selector", "true missing selector", "selector_not_found", 3, "#add-to-cart"),
    ("overlay", "timeout: covered by an overlay", "timeout", 3, "#continue"),
    ("disabled", "timeout: disabled", "timeout", 4, "#submit"),
    ("http-500", "5xx", "http_error", 3, "#pay"),
    ("js-exception", "page exception", "js_exception", 3, "#go"),
]

# ---- agent runs (tests/corpus/agents.py): two agents with scripted models.

AGENT_CASES: dict[str, list[tuple[str, str, str | None, int | None, str | None]]] = {
    "travel": [
        ("passing", "control", None, None, None),
        ("retried-429-passing", "control: a 429 the client retried past", None, None, None),
        ("tool-retried-passing", "control: a tool error the agent retried past", None, None, None),
        ("error-as-result", "tool error returned as a normal result", "tool_error", 4, "search_flights"),
        ("error-text-result", "tool error returned as text", "tool_error", 4, "book_hotel"),
        ("429-then-tool-error", "recovered 429 vs the real cause", "tool_error", 6, "book_flight"),
        ("429-exhausted", "retries that never succeeded: the first one", "rate_limited", 3, "chat"),
        ("deadline", "deadline cancel: where the time went", "timeout", 4, "search_trains"),
        (
            "tool-cancelled",
            "a tool cancelled by its own timeout (not the run's deadline)",
            "tool_error",
            2,
            "fare_rules",
        ),
        ("loop", "loop", "loop", 2, "search_flights"),
        ("max-turns", "max turns", "max_steps", 12, "execute_tool"),
        ("sub-agent", "sub-agent failure", "tool_error", 4, "invoke_agent payments"),
        ("model-500", "model error, retries exhausted", "llm_error", 3, "chat"),
    ],
    "review": [
        ("passing", "control", None, None, None),
        ("retried-529-passing", "control: an overloaded model retried past", None, None, None),
        ("error-as-result", "tool error returned as a normal result", "tool_error", 2, "read_file"),
        ("error-text-result", "tool error returned as text", "tool_error", 4, "run_tests"),
        ("429-then-tool-error", "recovered 429 vs the real cause", "tool_error", 5, "post_comment"),
        ("429-exhausted", "retries that never succeeded: the first one", "rate_limited", 5, "chat"),
        ("deadline", "deadline cancel: where the time went", "timeout", 4, "run_tests"),
        ("tool-cancelled", "a tool cancelled by its own timeout (not the run's deadline)", "tool_error", 4, "lint"),
        ("loop", "loop", "loop", 4, "read_file"),
        ("max-turns", "max turns", "max_steps", 10, "execute_tool"),
        ("sub-agent", "sub-agent failure", "tool_error", 4, "invoke_agent security-scan"),
        ("tool-retries-exhausted", "retries that never succeeded: the first one", "tool_error", 4, "post_comment"),
    ],
}


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for name, pattern, label, step, action in TICKETSHOP_CASES:
        cases.append(case("web", "ticketshop", name, pattern, label, step, action))
    for app, items in BROWSER_CASES.items():
        for name, pattern, label, step, action in items:
            cases.append(case("web", app, name, pattern, label, step, action))
    for app, items in BROWSER_CASES.items():
        for name, pattern, label, step, action in items:
            cases.append(case("pwtest", app, name, pattern, label, step, action))
    for app, items in AGENT_CASES.items():
        for name, pattern, label, step, action in items:
            cases.append(case("agent", app, name, pattern, label, step, action))
    return cases
