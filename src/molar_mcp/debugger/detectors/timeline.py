"""The ordered events of one trace, with what every detector needs to know about them.

A `Timeline` is built once per analysis: each event's step number, the failure anchor (the
event where the run is judged to have failed), which events were undone by a retry, and
whether the run failed at all. Everything here is a pure function of the events and status.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from molar_mcp.debugger.detectors.text import (
    HTTP_ECHO_RE,
    JS_ERROR_NAMES,
    is_incidental,
    quoted,
    says_max_steps,
    shorten,
    url_path,
)
from molar_mcp.models.rows import EventView, StoredEvents, naming

FAILED_STATUSES = frozenset({"failed", "error", "aborted"})
AGENT_KINDS = frozenset({"llm.request", "llm.response", "tool.call", "tool.result"})
_PAGE_SOURCES = frozenset({"page", "pageerror", "browser", "window"})
# An explicit error field says more than the event's status line, so it comes first.
_ERROR_KEYS = ("error", "failure", "error_text")
_DETAIL_KEYS = ("name", "message", "text", "reason")
_MENTION_KEYS = ("expected", "actual", "selector", "url", "matcher")


def step_numbers(events: Sequence[EventView]) -> list[int | None]:
    if isinstance(events, StoredEvents):
        return _step_numbers(events.column("step_id"), events.column("step"))
    return _step_numbers([e.step_id for e in events], [e.step for e in events])


def _step_numbers(step_ids: Sequence[str | None], given: Sequence[int | None]) -> list[int | None]:
    """The 1-based step of every event; the one helper every detector numbers steps with.

    An event's own `step` wins. Otherwise its `step_id` is numbered by the order in which step
    ids first appear, as the store does (reusing the number an explicit `step` gave that id
    elsewhere). An event without a step id happened during the step that was running, so it
    takes the step of the nearest earlier event (None before the first step).
    """
    explicit: dict[str, int] = {}
    for step_id, step in zip(step_ids, given, strict=True):
        if step_id is not None and step is not None:
            explicit.setdefault(step_id, step)
    order: dict[str, int] = {}
    numbers: list[int | None] = []
    current: int | None = None
    for step_id, step in zip(step_ids, given, strict=True):
        number: int | None
        if step_id is not None and step_id not in order:
            order[step_id] = len(order) + 1
        if step is not None:
            number = step
        elif step_id is not None:
            number = explicit.get(step_id, order[step_id])
        else:
            number = current
        numbers.append(number)
        current = number
    return numbers


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        found = [str(v) for k in ("type", "code", "message") if (v := value.get(k)) not in (None, "")]
        return [": ".join(found)] if found else []
    return []


def failure_text(event: EventView, *, include_message: bool = True) -> str:
    """What an event says went wrong: its error fields, its message, then its other details."""
    parts: list[str] = []
    for key in _ERROR_KEYS:
        parts.extend(_strings(event.payload.get(key)))
    if event.message and include_message:
        parts.append(event.message)
    for key in _DETAIL_KEYS:
        parts.extend(_strings(event.payload.get(key)))
    return "\n".join(dict.fromkeys(p for p in parts if p.strip()))


def mention_text(event: EventView) -> str:
    """Everything an event names (failure text plus expected/actual/selector/url), for mentions."""
    parts = [failure_text(event)]
    parts.extend(str(event.payload[k]) for k in _MENTION_KEYS if event.payload.get(k) is not None)
    return "\n".join(parts)


def is_page_error(event: EventView) -> bool:
    """An exception thrown by the page's JavaScript (not by the test runner or the agent)."""
    if event.kind == "console":
        return str(event.payload.get("level", "")).lower() == "error" and "Uncaught" in failure_text(event)
    if event.kind != "error":
        return False
    text = failure_text(event)
    source = str(event.payload.get("source", "")).lower()
    name = event.payload.get("name")
    return source in _PAGE_SOURCES or name in JS_ERROR_NAMES or text.lstrip().startswith("Uncaught")


def llm_error(event: EventView) -> dict[str, Any] | None:
    """The error of an `llm.response`, or None when it succeeded."""
    if event.kind != "llm.response":
        return None
    error = event.payload.get("error")
    if isinstance(error, dict) and error:
        return error
    if isinstance(error, str) and error:
        return {"message": error}
    return {} if event.ok is False else None


def is_failure_event(event: EventView) -> bool:
    """Events that fail a run by themselves (candidates for the failure anchor)."""
    if event.ok is False and event.kind in ("assertion", "action", "navigation", "step.end"):
        return True
    if event.kind == "error":
        return not is_page_error(event)
    return event.kind in ("log", "step.end") and says_max_steps(failure_text(event))


def http_status(event: EventView) -> int | None:
    status = event.payload.get("status")
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def is_http_echo(event: EventView) -> bool:
    """A console line that only repeats a response status (the response is the evidence)."""
    return event.kind == "console" and bool(HTTP_ECHO_RE.search(failure_text(event)))


def is_pending_marker(e: EventView) -> bool:
    """A `network.response` that says no response came (the trace closed while the request was in
    flight: no status, no failure text) — the request was pending, not failed."""
    if e.kind != "network.response" or e.ok is not False:
        return False
    status = http_status(e)
    return (status is None or status == 0) and not any(e.payload.get(k) for k in _ERROR_KEYS)


@dataclass(frozen=True)
class Timeline:
    """One trace's events with derived facts; build with `Timeline.build(events, status)`.

    Besides the events in order: each event's step, where each kind's events are (`of`) and which
    events failed (`failed`), so a detector visits only the events it judges: on a long run most
    events are passed checks no detector reads, and their payloads are never parsed."""

    events: Sequence[EventView]
    steps: tuple[int | None, ...]
    status: str | None
    anchor: int | None
    failing: bool
    recovered: frozenset[int]
    agent: bool
    kinds: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)
    failed: tuple[int, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, events: Sequence[EventView], status: str | None) -> Timeline:
        # Stored rows stay rows: only the events a detector looks at are built (most never are).
        evs: Sequence[EventView] = events if isinstance(events, StoredEvents) else tuple(events)
        steps = tuple(step_numbers(evs))
        groups: dict[str, list[int]] = {}
        for i, kind in enumerate(evs.column("kind") if isinstance(evs, StoredEvents) else [e.kind for e in evs]):
            group = groups.get(kind)
            if group is None:
                groups[kind] = [i]
            else:
                group.append(i)
        kinds = {kind: tuple(indices) for kind, indices in groups.items()}
        oks = evs.column("ok") if isinstance(evs, StoredEvents) else [e.ok for e in evs]
        failed = tuple(i for i, ok in enumerate(oks) if ok is not None and not ok)  # stored: 0; an Event: False
        recovered = _recovered(evs, steps, kinds.get("retry", ()))
        agent = any(kind in kinds for kind in AGENT_KINDS)
        # Only a failed event or one of these kinds can be where the run failed (`_is_anchor_candidate`).
        maybe = sorted({*failed, *(i for k in ("error", "log", "step.end", "llm.response") for i in kinds.get(k, ()))})
        candidates = [i for i in maybe if i not in recovered and _is_anchor_candidate(evs, i)]
        # A browser test stops at its first failure; an agent goes on after a failed step, so
        # the failure that ended its run is the last one.
        anchor = (candidates[-1] if agent else candidates[0]) if candidates else None
        # "passed" is the runner's verdict: failures in the events were tolerated (soft checks).
        failing = status != "passed" and (anchor is not None or status in FAILED_STATUSES)
        return cls(evs, steps, status, anchor, failing, recovered, agent, kinds, failed)

    def of(self, *kinds: str) -> tuple[int, ...]:
        """The indices of the events of these kinds, in order."""
        if len(kinds) == 1:
            return self.kinds.get(kinds[0], ())
        return tuple(sorted(i for kind in kinds for i in self.kinds.get(kind, ())))

    # -- positions -----------------------------------------------------------------------------

    @property
    def horizon(self) -> int:
        """The last index that can hold a cause: the anchor, or the last event."""
        return self.anchor if self.anchor is not None else len(self.events) - 1

    @property
    def anchor_step(self) -> int | None:
        return self.steps[self.anchor] if self.anchor is not None else None

    @property
    def step_count(self) -> int:
        return len({s for s in self.steps if s is not None})

    def seq(self, i: int) -> int:
        return self.events[i].seq

    def live(self, i: int) -> bool:
        """Before (or at) the failure and not undone by a retry."""
        return i <= self.horizon and i not in self.recovered

    def in_anchor_step(self, i: int) -> bool:
        return self.anchor is not None and i <= self.anchor and self.steps[i] == self.anchor_step

    def near_anchor(self, i: int) -> bool:
        """At or before the anchor, in its step or the step right before it."""
        step, anchor_step = self.steps[i], self.anchor_step
        if self.anchor is None or i > self.anchor or step is None or anchor_step is None:
            return self.anchor is not None and i == self.anchor
        return anchor_step - 1 <= step <= anchor_step

    def pending_requests(self) -> list[int]:
        """Requests sent before the failure that never got a response (none, or one that says no
        response came), other than static assets and telemetry: what the page was still waiting for."""
        if self.anchor is None:
            return []
        pending: list[int] | None = self._cache.get("pending")
        if pending is None:
            pending = self._pending_requests(self.anchor)
            self._cache["pending"] = pending
        return list(pending)

    def _pending_requests(self, anchor: int) -> list[int]:
        answered = {
            e.payload.get("request_id")
            # Most events name no request: their payloads stay unread.
            for e in (self.events[i] for i in naming(self.events, "request_id"))
            if e.kind != "network.request" and e.payload.get("request_id") is not None and not is_pending_marker(e)
        }
        requests = self.of("network.request")
        return [
            i
            for i in requests[: bisect_left(requests, anchor)]
            if i not in self.recovered
            and (rid := self.events[i].payload.get("request_id")) is not None
            and rid not in answered
            and not is_incidental(str(self.events[i].payload.get("url", "")))
        ]

    def title(self, step: int | None) -> str | None:
        for i in self.of("step.start"):
            if self.steps[i] == step:
                e = self.events[i]
                title = e.payload.get("title") or e.message
                return str(title) if title else None
        return None

    def request_of(self, i: int) -> int | None:
        """The `network.request` index that a response (or failure) at `i` answers."""
        rid = self.events[i].payload.get("request_id")
        if rid is None:
            return None
        requests = self.of("network.request")
        for j in reversed(requests[: bisect_left(requests, i)]):
            if self.events[j].payload.get("request_id") == rid:
                return j
        return None

    def after(self, kind: str, i: int, last: int | None = None) -> tuple[int, ...]:
        """The indices of `kind`'s events after `i` (up to `last`, inclusive, when given)."""
        indices = self.of(kind)
        end = len(indices) if last is None else bisect_right(indices, last)
        return indices[bisect_right(indices, i) : end]

    def anchor_mentions(self, needle: str) -> bool:
        if self.anchor is None or len(needle) < 2:
            return False
        return needle in mention_text(self.events[self.anchor])

    # -- wording -------------------------------------------------------------------------------

    def failure_phrase(self) -> str:
        """How a sentence names the failure: "step 7's assertion on the final URL", "the run"."""
        if self.anchor is None:
            return "the run"
        e = self.events[self.anchor]
        where = step_phrase(self.steps[self.anchor])
        if e.kind == "assertion":
            return f"{where}'s assertion on {assertion_subject(e)}"
        if e.kind == "error":
            return f"{where} ({shorten(str(e.payload.get('name') or 'error'), 40)})"
        if e.kind == "action":
            target = e.payload.get("selector") or e.payload.get("url") or ""
            return f"{where}'s {e.payload.get('action', 'action')} {shorten(str(target), 40)}".rstrip()
        if e.kind == "navigation":
            return f"{where}'s navigation to {url_path(str(e.payload.get('url', '')))}"
        if e.kind == "llm.response":
            return f"{where}'s model call"
        return where


def step_phrase(step: int | None) -> str:
    return f"step {step}" if step is not None else "an unnumbered step"


def assertion_subject(event: EventView) -> str:
    """What an assertion checked: its selector, "the final URL", its matcher, or its expectation."""
    payload = event.payload
    selector = payload.get("selector")
    if isinstance(selector, str) and selector:
        return shorten(selector, 60)
    matcher = str(payload.get("matcher") or "")
    expected = payload.get("expected")
    if "url" in matcher.lower() or (isinstance(expected, str) and expected.startswith(("http", "/"))):
        return "the final URL"
    if matcher:
        return shorten(matcher, 40)
    if expected is not None:
        return quoted(expected)
    return "the page"


def _recovered(events: Sequence[EventView], steps: tuple[int | None, ...], retries: Sequence[int]) -> frozenset[int]:
    """Events undone by a later `retry` (at `retries`): a retry inside a step undoes that step's earlier
    events; a retry with no step at all (a whole-test retry) undoes everything before it."""
    undone: set[int] = set()
    for r in retries:
        event = events[r]
        whole_run = event.step_id is None and event.step is None
        undone.update(i for i in range(r) if whole_run or steps[i] == steps[r])
    return frozenset(undone)


def _is_anchor_candidate(events: Sequence[EventView], i: int) -> bool:
    event = events[i]
    if is_failure_event(event):
        return True
    # A model call that failed for good ends an agent run: nothing after it answered.
    if llm_error(event) is not None:
        return not any(e.kind == "llm.response" and llm_error(e) is None for e in events[i + 1 :])
    return False
