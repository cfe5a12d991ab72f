"""Detectors for browser test traces: assertions, HTTP statuses, navigations, hung requests, flakes.

Confidence is fixed by the strength of the evidence, so a root cause outranks its symptom: an
HTTP error the failing step depends on (0.92 / 0.85) beats the assertion it broke (0.78).
Every detector here reports nothing for a run that did not fail, except `detect_flaky`.
"""

from __future__ import annotations

from typing import Final

from molar_mcp.debugger.detectors.errors import LABELLED_KINDS, event_label
from molar_mcp.debugger.detectors.text import (
    classify_text,
    endpoint,
    is_incidental,
    path_and_query,
    quoted,
    sentence,
    shorten,
    url_path,
)
from molar_mcp.debugger.detectors.timeline import (
    Timeline,
    assertion_subject,
    failure_text,
    http_status,
    is_failure_event,
    is_http_echo,
    step_phrase,
)
from molar_mcp.debugger.findings import Finding, make_finding

ASSERTION_FIRST: Final = 0.78
ASSERTION_LATER: Final = 0.5
HTTP_STRONG: Final = 0.92
HTTP_WEAK: Final = 0.85
NAVIGATION_CAUSAL: Final = 0.88
PENDING_REQUEST: Final = 0.83
FLAKY_ALONE: Final = 0.7
FLAKY_BESIDE_FAILURE: Final = 0.35
UNRELATED: Final = 0.3


def detect_assertions(t: Timeline) -> list[Finding]:
    """assertion_failed: `assertion` events with ok false, not undone by a retry.

    The first one gets 0.78 (the test's own verdict, but a symptom when something earlier
    broke the page); later ones (soft assertions) 0.5. Critical step: the assertion's step.
    """
    if not t.failing:
        return []
    found: list[Finding] = []
    for i in t.failed:
        e = t.events[i]
        if e.kind != "assertion" or i in t.recovered:
            continue
        subject = assertion_subject(e)
        where = step_phrase(t.steps[i])
        if "expected" in e.payload:
            expected, actual = e.payload["expected"], e.payload.get("actual")
            if subject == "the final URL" and isinstance(expected, str) and isinstance(actual, str):
                # The paths say it when they differ; when they match, the query is the difference.
                same_path = url_path(expected) == url_path(actual)
                shown = path_and_query if same_path else url_path
                expected, actual = shown(expected), shown(actual)
            detail = f"expected {quoted(expected, 60)}, got {quoted(actual, 60)}"
        else:
            detail = shorten(failure_text(e) or "no message", 100).rstrip(".")
        key = e.payload.get("selector") or ("url" if subject == "the final URL" else "")
        found.append(
            make_finding(
                "assertion_failed",
                ASSERTION_LATER if found else ASSERTION_FIRST,
                step=t.steps[i],
                seq=e.seq,
                evidence=[],
                summary=sentence(f"{where}'s assertion on {subject} failed: {detail}"),
                subject=str(key or e.payload.get("matcher") or ""),
            )
        )
    return found


def _request_line(t: Timeline, i: int) -> tuple[str, str]:
    """Method and URL of a response, taken from the response or the request it answers."""
    e = t.events[i]
    j = t.request_of(i)
    request = t.events[j].payload if j is not None else {}
    method = str(e.payload.get("method") or request.get("method") or "GET").upper()
    return method, str(e.payload.get("url") or request.get("url") or "")


def detect_http(t: Timeline) -> list[Finding]:
    """http_error: a `network.response` with status ≥ 400 before the failure.

    Causality: a response is ignored when a later response of the same method and endpoint
    succeeded before the failure (the app retried it). Otherwise it is causal, strongly (0.92)
    when it came in the failing step (unless it is a static asset or telemetry) or the failing
    event mentions its path; weakly (0.85) when it is the last failing non-static response
    before the failure AND something ties it to the failure: the page logged an error right after
    it, it was a write (POST, PUT, PATCH, DELETE) or a 5xx. Other failing responses (a GET 4xx the
    run went on from) get 0.3: a side finding, never the top one. Document responses a `navigation`
    already reports are left to `detect_navigation`. Critical step: the response's step, so the
    earliest causal response ranks first among equals.
    """
    if not t.failing:
        return []
    navigated = {
        (t.steps[j], url_path(str(t.events[j].payload.get("url", ""))))
        for j in t.of("navigation")
        if (http_status(t.events[j]) or 0) >= 400
    }
    live: list[tuple[int, int, str, str]] = []
    for i in t.of("network.response"):
        e = t.events[i]
        status = http_status(e)
        if status is None or status < 400 or not t.live(i):
            continue
        method, url = _request_line(t, i)
        if (t.steps[i], url_path(url)) in navigated or _retried_ok(t, i, method, url):
            continue
        live.append((i, status, method, url))
    last = max((i for i, _, _, url in live if not is_incidental(url)), default=None)
    found = []
    for i, status, method, url in live:
        path = url_path(url)
        strong = (t.in_anchor_step(i) and not is_incidental(url)) or (path != "/" and t.anchor_mentions(path))
        # An earlier failing response is causal only when the evidence ties it to the failure: the page
        # logged an error right after it, or it was a lost write (the state later steps read never
        # changed), or the server failed (5xx). A GET answered 4xx that the page went on from without
        # a word is a side finding (an optional resource the app tolerates).
        sent = t.request_of(i)
        tied = (
            _page_complained_after(t, i if sent is None else sent)
            or method not in ("GET", "HEAD", "OPTIONS")
            or status >= 500
        )
        causal = strong or (i == last and tied)
        sent = t.request_of(i)
        step = t.steps[sent] if sent is not None else t.steps[i]  # the step that sent it caused it
        head = f"{method} {path} answered {status} at {step_phrase(step)}"
        tail = f"{t.failure_phrase()} failed because of it" if causal else "nothing ties it to the failure"
        found.append(
            make_finding(
                "http_error",
                HTTP_STRONG if strong else HTTP_WEAK if causal else UNRELATED,
                step=step,
                seq=t.seq(i),
                evidence=[_seq_or_none(t, t.request_of(i)), _seq_or_none(t, t.anchor if causal else None)],
                summary=sentence(f"{head}; {tail}"),
                subject=f"{status} {method} {endpoint(url)}",
            )
        )
    return found


def _page_complained_after(t: Timeline, i: int) -> bool:
    """The page logged an error (a console error or an uncaught exception, not the browser's echo of
    the status) after event `i` (the request; its response may be stored after what the page logged
    about it), in its step or the next one, before the failure."""
    step = t.steps[i]
    for j in range(i + 1, t.horizon + 1):
        e = t.events[j]
        if step is not None and t.steps[j] is not None and t.steps[j] > step + 1:  # type: ignore[operator]
            break
        if e.kind == "error" or (
            e.kind == "console" and str(e.payload.get("level", "")).lower() == "error" and not is_http_echo(e)
        ):
            return True
    return False


def _retried_ok(t: Timeline, i: int, method: str, url: str) -> bool:
    name = endpoint(url)
    for j in t.after("network.response", i, t.horizon):
        status = http_status(t.events[j])
        if status is not None and 0 < status < 400:
            other_method, other_url = _request_line(t, j)
            if other_method == method and endpoint(other_url) == name:
                return True
    return False


def _seq_or_none(t: Timeline, i: int | None) -> int | None:
    return t.seq(i) if i is not None else None


def detect_navigation(t: Timeline) -> list[Finding]:
    """navigation_error: a `navigation` that answered ≥ 400, or failed (ok false) for a reason
    no other rule names (a net::ERR_* failure is a network_failure instead).

    Causal (0.88) when it is the failing event, in the failing step, the last failing
    navigation before the failure, or the failing event mentions its path; otherwise 0.3.
    Critical step: the navigation's step.
    """
    if not t.failing:
        return []
    failed = [
        i
        for i in t.of("navigation")
        if t.live(i)
        and (
            (http_status(t.events[i]) or 0) >= 400
            or (t.events[i].ok is False and classify_text(failure_text(t.events[i])) is None)
        )
    ]
    found = []
    for i in failed:
        e = t.events[i]
        url = str(e.payload.get("url", ""))
        path = url_path(url)
        causal = i in (t.anchor, failed[-1]) or t.in_anchor_step(i) or t.anchor_mentions(path)
        status = http_status(e)
        what = f"answered {status}" if status is not None else "failed"
        tail = (
            "and the test stopped there"
            if i == t.anchor
            else f"{t.failure_phrase()} failed because of it"
            if causal
            else "nothing ties it to the failure"
        )
        found.append(
            make_finding(
                "navigation_error",
                NAVIGATION_CAUSAL if causal else UNRELATED,
                step=t.steps[i],
                seq=e.seq,
                evidence=[_seq_or_none(t, t.anchor if causal else None)],
                summary=sentence(f"Navigation to {path} {what} at {step_phrase(t.steps[i])}; {tail}"),
                subject=f"{status if status is not None else 'failed'} {endpoint(url)}",
            )
        )
    return found


def detect_pending_requests(t: Timeline) -> list[Finding]:
    """timeout (a response still pending): a request sent before the failure — in the failing
    step or an earlier one — that never got a response (no `network.response`, or only one that
    says no response came), not a static asset or telemetry. The failing step waited (an
    assertion, an action, a navigation, the test's own timeout) while the response was still on
    its way: a slow server or page load, not a network failure (nothing failed; a refused or reset
    connection is a net::ERR_* network_failure, and none is reported beside one). 0.83: it says
    why the wait timed out better than the timeout or a missing element does (a selector that
    matched nothing meanwhile drops to 0.6), less surely than a failing response or a page error.
    Critical step: the failing step (where the time ran out); the evidence cites the request.
    """
    if not t.failing or t.anchor is None:
        return []
    pending = t.pending_requests()
    if not pending or any(t.live(i) and event_label(t.events[i]) == "network_failure" for i in t.of(*LABELLED_KINDS)):
        return []  # nothing pending, or a request failed (net::ERR_*, refused, reset): that is what did not answer
    if not pending:
        return []
    first = t.events[pending[0]]
    method = str(first.payload.get("method") or "GET").upper()
    url = str(first.payload.get("url", ""))
    sent = t.steps[pending[0]]
    anchor_step = t.steps[t.anchor]
    when = "in the same step" if sent == anchor_step else f"at {step_phrase(sent)}"
    more = f" (and {len(pending) - 1} more request(s))" if len(pending) > 1 else ""
    said = shorten(failure_text(t.events[t.anchor]), 80).rstrip(".")
    return [
        make_finding(
            "timeout",
            PENDING_REQUEST,
            step=anchor_step,
            seq=t.seq(t.anchor),
            evidence=[*(t.seq(i) for i in pending)],
            summary=sentence(
                f"{t.failure_phrase()} ran out of time{f' ({said})' if said else ''} while {method} "
                f"{path_and_query(url)}, sent {when}{more}, was still waiting for its response: a slow "
                "response, not a failed request"
            ),
            subject=f"pending {method} {endpoint(url)}",
        )
    ]


def detect_flaky(t: Timeline) -> list[Finding]:
    """flaky: a step that failed, was retried (`retry` event) and then passed.

    A retry inside a step retries that step; a retry with no step retries the whole test.
    "Then passed": a later `step.end` of the same step with ok true, or the run did not fail.
    0.7 when the run passed (the flake is the story), 0.35 beside a real failure. Critical
    step: the retried step; critical event: its first failure before the retry.
    """
    found: list[Finding] = []
    seen: set[int | None] = set()
    for r in t.of("retry"):
        e = t.events[r]
        whole = e.step_id is None and e.step is None
        failures = [j for j in range(r) if (whole or t.steps[j] == t.steps[r]) and _failed_here(t, j)]
        step = t.steps[failures[0]] if failures else t.steps[r]
        passed_after = any(
            x.kind == "step.end" and x.ok is True and t.steps[k] == step
            for k, x in enumerate(t.events[r + 1 :], start=r + 1)
        )
        if step in seen or not (passed_after or not t.failing):
            continue
        seen.add(step)
        cause = shorten(failure_text(t.events[failures[0]]), 80) if failures else str(e.payload.get("reason", ""))
        title = t.title(step)
        named = f"{step_phrase(step)} ({title})" if title else step_phrase(step)
        found.append(
            make_finding(
                "flaky",
                FLAKY_BESIDE_FAILURE if t.failing else FLAKY_ALONE,
                step=step,
                seq=t.seq(failures[0]) if failures else e.seq,
                evidence=[t.seq(j) for j in failures] + [e.seq],
                summary=sentence(f"{named} failed ({cause or 'no reason given'}) and passed on retry"),
                subject=title or "",
            )
        )
    return found


def _failed_here(t: Timeline, j: int) -> bool:
    e = t.events[j]
    return is_failure_event(e) or (e.ok is False and e.kind != "step.end")
