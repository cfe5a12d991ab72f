"""The detector of error-ish events: runner errors, page exceptions, console errors, error logs,
failed actions and navigations, failed steps and failed responses, each read for what it says.

One event gets one label (see `event_label`), so a Playwright `TimeoutError … waiting for
locator('#pay')` is a selector_not_found, not also a timeout.
"""

from __future__ import annotations

import re
from typing import Final

from molar_mcp.debugger.detectors.text import (
    NETWORK_RE,
    classify_text,
    endpoint,
    sentence,
    shorten,
)
from molar_mcp.debugger.detectors.timeline import (
    Timeline,
    failure_text,
    http_status,
    is_http_echo,
    is_page_error,
    step_phrase,
)
from molar_mcp.debugger.findings import Finding, make_finding
from molar_mcp.models.rows import EventView

# Confidence when the event is causal (see `detect_error_events`), by label.
CAUSAL: Final[dict[str, float]] = {
    "network_failure": 0.9,
    "navigation_error": 0.86,
    "js_exception": 0.84,
    "selector_not_found": 0.82,
    "assertion_failed": 0.78,
    "timeout": 0.75,
    "console_error": 0.55,
    "step_failed": 0.5,
}
UNRELATED: Final = 0.3
SELECTOR_WHILE_PENDING: Final = 0.6
# Labels whose cause may sit one step before the failure (a script that crashed while the
# previous step clicked, a resource that did not load while the page was being opened).
_NEAR_LABELS: Final = frozenset({"network_failure", "navigation_error", "js_exception"})
_LOG_LABELS: Final = frozenset({"network_failure", "timeout", "selector_not_found", "navigation_error"})
_ERROR_LEVELS: Final = frozenset({"error", "fatal", "critical", "warn", "warning"})
_PHRASES: Final[dict[str, str]] = {
    "network_failure": "a network failure",
    "navigation_error": "a navigation error",
    "js_exception": "a page exception",
    "selector_not_found": "a missing element",
    "assertion_failed": "a failed expectation",
    "timeout": "a timeout",
    "console_error": "a console error",
    "step_failed": "an error",
}
# The kinds `event_label` may label: no event of another kind is evidence for it.
LABELLED_KINDS: Final = ("error", "action", "console", "log", "navigation", "step.end", "network.response")
_API_RE: Final = re.compile(r"^\s*(?:\w+: )?([a-z]\w*\.[a-zA-Z]\w*):")
_EXPECT_RE: Final = re.compile(r"expect\((?:page\.)?locator\((['\"])(.+?)\1\)\)|expect\(page\)\.toHaveURL")
_LOCATOR_RE: Final = re.compile(
    r"((?:locator|getBy\w+)\((?:[^()]|\([^()]*\))*\))|selector[:\s]+[\"']?([^\"'\s]+)", re.IGNORECASE
)


_COVERED_RE: Final = re.compile(r"(<[^>]{0,200}>(?:…</\w+>)?|\S+) intercepts pointer events")
_STATE_RE: Final = re.compile(r"element is not (enabled|visible|stable|editable|attached)")
_STATE_WORD: Final = re.compile(r"but (covered|disabled|detached|not visible|not stable|not editable)")
_WAITED_FOR_RE: Final = re.compile(
    r"waiting for (navigation|response|request|load state|event|url)\b[^\n]{0,120}", re.IGNORECASE
)


def wait_reason(e: EventView) -> tuple[str, str] | None:
    """Why a wait timed out, from the call log Playwright keeps (the error text says only "Timeout
    … exceeded"): `(label, phrase)`. The element was there but covered, disabled, hidden or moving
    (`timeout`); no element ever matched (`selector_not_found`); or a navigation/response never came
    (`timeout`). None when the event carries no call log that says."""
    p = e.payload
    lines: list[str] = []
    log = p.get("log")
    if isinstance(log, list):
        lines.extend(str(x) for x in log)
    for value in (p.get("cause"), p.get("message"), e.message):
        if isinstance(value, str):
            lines.extend(value.splitlines())
    err = p.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        lines.extend(str(err["message"]).splitlines())
    text = "\n".join(line.strip() for line in lines)
    if not text:
        return None
    covered = _COVERED_RE.search(text)
    if covered:
        return "timeout", f"the element was there but covered: {covered.group(0)}"
    state = _STATE_RE.search(text)
    if state:
        word = {"enabled": "disabled", "attached": "detached"}.get(state.group(1), f"not {state.group(1)}")
        return "timeout", f"the element was there but {word} (element is not {state.group(1)})"
    waited = _WAITED_FOR_RE.search(text)
    if waited and "locator" not in waited.group(0):
        return "timeout", f"it was {waited.group(0).strip()}, which never came"
    found = "resolved to" in text or "attempting" in text or "scrolling into view" in text
    if not found and ("no element matched" in text or re.search(r"waiting for (locator|getBy\w*|selector)", text)):
        target = re.search(r"waiting for ((?:locator|getBy\w*|selector)[^\n]{0,160})", text)
        return "selector_not_found", f"no element ever matched {target.group(1) if target else 'the locator'}"
    return None


def event_label(e: EventView) -> str | None:
    """The one label an error-ish event carries, or None when it is not evidence.

    - `error`: a page exception is js_exception (network_failure if it says net::ERR / Failed
      to fetch); a runner error is what its text says (`classify_text`), else step_failed.
      A max-steps error is left to the agent detectors.
    - `console` at level error: a network failure, an `Uncaught …` js_exception, or a
      console_error. Echoes of an HTTP status are skipped (the response is the evidence).
    - `log` at warning level or above: only network, timeout, selector or navigation text.
    - a failed `action` / `navigation` / `step.end` (its payload only, not the step title): what
      its text says.
    - a `network.response` with status 0 or an error field: network_failure (timeout or
      navigation_error when its text says so: net::ERR_ABORTED is a cancelled navigation).
    """
    if e.kind in ("error", "action") and (e.kind == "error" or e.ok is False) and not is_page_error(e):
        # A timed-out wait is what its call log says it waited for, not the first line it logged.
        reason = wait_reason(e)
        if reason is not None and classify_text(failure_text(e)) in (None, "timeout", "selector_not_found"):
            return reason[0]
    if e.kind == "error":
        label = classify_text(failure_text(e))
        if is_page_error(e):
            return "network_failure" if label == "network_failure" else "js_exception"
        return None if label == "max_steps" else label or "step_failed"
    if e.kind == "console":
        if str(e.payload.get("level", "")).lower() != "error" or is_http_echo(e):
            return None
        if classify_text(failure_text(e)) == "network_failure":
            return "network_failure"
        return "js_exception" if is_page_error(e) else "console_error"
    if e.kind == "log":
        level = str(e.payload.get("level", "")).lower()
        label = classify_text(failure_text(e)) if level in _ERROR_LEVELS else None
        return label if label in _LOG_LABELS else None
    if e.ok is False and e.kind in ("action", "navigation", "step.end"):
        label = classify_text(failure_text(e, include_message=e.kind != "step.end"))
        return None if label == "max_steps" else label
    if e.kind == "network.response":
        failed = http_status(e) == 0 or any(e.payload.get(k) for k in ("error", "failure", "error_text"))
        if failed:
            label = classify_text(failure_text(e))
            return label if label in ("timeout", "navigation_error") else "network_failure"
    return None


def detect_error_events(t: Timeline) -> list[Finding]:
    """network_failure, timeout, selector_not_found, js_exception, console_error,
    navigation_error (and assertion_failed / step_failed for runner errors) from error-ish events.

    Only events up to the failure and not undone by a retry count, and only in a failed run.
    An event is causal when it is the failing event itself, or precedes it in the same step
    (network, navigation and page exceptions: in the same step or the step before). Causal
    events get the label's fixed confidence (`CAUSAL`: network 0.9 … console 0.55, step_failed
    0.5); other events 0.3, and unrelated console errors are dropped as noise. With no failing
    event (a run failed by status only), events of the last step count as causal.
    Critical step: the event's own step.
    """
    if not t.failing:
        return []
    last_step = next((s for s in reversed(t.steps) if s is not None), None)
    found = []
    for i in t.of(*LABELLED_KINDS):
        if not t.live(i):
            continue
        e = t.events[i]
        label = event_label(e)
        if label is None:
            continue
        if t.anchor is None:
            causal = t.steps[i] == last_step
        elif label in _NEAR_LABELS:
            causal = t.near_anchor(i)
        else:
            causal = i == t.anchor or t.in_anchor_step(i)
        if not causal and label == "console_error":
            continue
        text = failure_text(e) or e.kind
        said = shorten(text, 100).rstrip(".")
        reason = wait_reason(e) if label in ("timeout", "selector_not_found") else None
        if reason is not None and reason[1] not in said:
            said = f"{said}: {shorten(reason[1], 160)}"
        confidence = CAUSAL[label] if causal else UNRELATED
        if label == "selector_not_found" and causal and t.pending_requests():
            # Nothing matched while a response the page was waiting for was still on its way: the
            # element may only come with it (the pending-response timeout says so, above this).
            confidence = SELECTOR_WHILE_PENDING
            said += "; a response the page was waiting for was still pending"
        what = f"{_PHRASES[label]} at {step_phrase(t.steps[i])}: {said}"
        if i == t.anchor:
            summary = f"{step_phrase(t.steps[i])} failed with {_PHRASES[label]}: {said}"
        elif causal:
            summary = f"{what}; {t.failure_phrase()} failed after it"
        else:
            summary = f"{what}; nothing ties it to the failure"
        found.append(
            make_finding(
                label,
                confidence,
                step=t.steps[i],
                seq=e.seq,
                evidence=[
                    t.seq(t.anchor) if causal and t.anchor is not None else None,
                    *(_requests_named(t, i, text) if label == "network_failure" else []),
                ],
                summary=sentence(summary),
                subject=_subject(label, e, text),
            )
        )
    return found


_NAMED_WINDOW: Final = 200  # how far back a failure's request is looked for


def _requests_named(t: Timeline, i: int, text: str) -> list[int]:
    """The seqs of the requests up to event `i` whose URL its failure text names (the request that
    failed: "net::ERR_CONNECTION_REFUSED at http://localhost:3000/"), or that event's own request."""
    own = t.request_of(i) if t.events[i].kind == "network.response" else None
    return [
        t.seq(j)
        for j in range(max(0, i - _NAMED_WINDOW), i + 1)
        if t.events[j].kind == "network.request" and (j == own or (str(t.events[j].payload.get("url") or "\0") in text))
    ]


def _subject(label: str, e: EventView, text: str) -> str:
    """The stable part of a signature: an error code, a selector, a Playwright call."""
    if label == "network_failure":
        match = NETWORK_RE.search(text)
        code = match.group(0) if match else "failed"
        url = e.payload.get("url")
        return f"{code} {endpoint(str(url))}" if isinstance(url, str) and url else code
    if label == "selector_not_found":
        selector = e.payload.get("selector")
        if isinstance(selector, str) and selector:
            return shorten(selector, 60)
        match = _LOCATOR_RE.search(text)
        return shorten(next((g for g in match.groups() if g), ""), 60) if match else ""
    url = e.payload.get("url")
    if label == "navigation_error" and isinstance(url, str) and url:
        return endpoint(url)
    selector = e.payload.get("selector")
    if label == "timeout" and isinstance(selector, str) and selector:
        # What timed out and why, so two tests' timeouts group only when they are the same failure:
        # "click #archive covered", not every click timeout of an org as one.
        reason = wait_reason(e)
        state = _STATE_WORD.search(reason[1]) if reason is not None else None
        action = e.payload.get("action")
        words = [str(action) if isinstance(action, str) else "", selector, state.group(1) if state else ""]
        return shorten(" ".join(w for w in words if w), 80)
    if label in ("timeout", "navigation_error"):
        api = _API_RE.search(text)
        name = e.payload.get("name")
        return api.group(1) if api else str(name) if isinstance(name, str) else ""
    if label == "assertion_failed":
        # The same words as an `assertion` event's signature: "assertion .plan-badge".
        match = _EXPECT_RE.search(text)
        return (match.group(2) or "url") if match else shorten(text, 60)
    if label == "js_exception":
        return shorten(text.removeprefix("Uncaught ").removeprefix("(in promise) "), 80)
    return shorten(text, 60)
