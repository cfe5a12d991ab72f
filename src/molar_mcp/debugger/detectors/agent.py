"""Detectors for agent traces: failed model calls, rate limits, tool errors, loops, step limits."""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Final

from molar_mcp.debugger.detectors.text import says_max_steps, sentence, shorten
from molar_mcp.debugger.detectors.timeline import Timeline, failure_text, llm_error, step_phrase
from molar_mcp.debugger.findings import Finding, make_finding

RATE_LIMITED: Final = 0.9
LLM_ERROR: Final = 0.88
LOOP_IN_A_ROW: Final = 0.87
LOOP_IN_WINDOW: Final = 0.8
LOOP_IN_PASSED_RUN: Final = 0.6
TOOL_ERROR: Final = 0.85
MAX_STEPS_SAID: Final = 0.8
MAX_STEPS_AFTER_LOOP: Final = 0.6
MAX_STEPS_INFERRED: Final = 0.55
RECOVERED: Final = 0.45
CANCELLED_BY_DEADLINE: Final = 0.4

LOOP_REPEATS: Final = 3  # identical calls that make a loop
LOOP_WINDOW: Final = 6  # … in a row, or among this many consecutive tool calls
MANY_STEPS: Final = 20  # an agent run this long that stops without a word ran out of steps

_RATE_LIMIT_TYPES: Final = frozenset({"rate_limit", "rate_limit_error", "rate_limited", "too_many_requests"})


def detect_llm_errors(t: Timeline) -> list[Finding]:
    """rate_limited / llm_error: an `llm.response` carrying an error (or ok false).

    rate_limited when the error's status is 429, its type a rate-limit type, or its message
    says "rate limit"; llm_error otherwise. Unrecovered (no later successful model answer:
    the run could not go on) 0.9 / 0.88; recovered 0.45. Failed runs only.
    Critical step: the response's step.
    """
    if not t.failing:
        return []
    responses = t.of("llm.response")
    failed = [i for i in responses if llm_error(t.events[i]) is not None]
    answered = [i for i in responses if llm_error(t.events[i]) is None]
    last_answer = max(answered, default=-1)
    # The errors after the last answer are one chain of attempts the run never got past: its first
    # attempt is where the failure began (the cause: the same step whatever the retry count, so the
    # signature holds across runs); the later attempts are its evidence.
    chain = [i for i in failed if i > last_answer]
    found = []
    for i in failed:
        if i in chain and i != chain[0]:
            continue
        e = t.events[i]
        error = llm_error(e) or {}
        status, kind = error.get("status"), str(error.get("type") or "")
        message = str(error.get("message") or "")
        rate = status == 429 or kind in _RATE_LIMIT_TYPES or "rate limit" in message.lower()
        recovered = i < last_answer
        model = str(e.payload.get("model") or "")
        code = " ".join(str(p) for p in (status, kind) if p) or "an error"
        where = step_phrase(t.steps[i])
        tail = "a later call succeeded" if recovered else "the run never got another answer"
        if not recovered and len(chain) > 1:
            tail = f"the first of {len(chain)} attempts ({_steps_phrase(t, chain[1:])} failed the same way); {tail}"
        label = "rate_limited" if rate else "llm_error"
        found.append(
            make_finding(
                label,
                RECOVERED if recovered else RATE_LIMITED if rate else LLM_ERROR,
                step=t.steps[i],
                seq=e.seq,
                evidence=[t.seq(j) for j in chain] if not recovered else [],
                summary=sentence(f"The model call at {where} failed with {code} ({model or 'model'}); {tail}"),
                subject=model if rate else f"{status or kind} {model}",
            )
        )
    return found


# A tool result that is an error message although the call "succeeded" (tools that catch their own
# exceptions and hand the text to the model): "Error: …", "Exception: …", a traceback.
_ERROR_RESULT: Final = re.compile(
    r"^\s*(?:(?:error|exception|fatal)\b|traceback \(most recent call last\))", re.IGNORECASE
)


def is_error_result(result: Any) -> bool:
    """A tool result that says it is an error: an `isError` / `is_error` flag or an `error` field
    (MCP tool results, framework wrappers), or text that is an error message."""
    if isinstance(result, dict):
        return result.get("isError") is True or result.get("is_error") is True or bool(result.get("error"))
    return isinstance(result, str) and bool(_ERROR_RESULT.match(result))


def _tool_failed(payload: dict[str, Any], ok: bool | None) -> bool:
    """Failed: ok false, an error field, an `isError` / `is_error` flag (MCP tool results), or a
    result whose text is an error message."""
    return ok is False or bool(payload.get("error")) or is_error_result(payload.get("result"))


def detect_tool_errors(t: Timeline) -> list[Finding]:
    """tool_error: a `tool.result` with ok false or an error.

    Unrecovered (no later successful result of the same tool) 0.85; recovered 0.45 (the agent
    worked around it). Failed runs only. Critical step: the result's step.
    """
    if not t.failing:
        return []
    deadline = _deadline_said(t)
    results = t.of("tool.result")
    failures = [i for i in results if _tool_failed(t.events[i].payload, t.events[i].ok)]
    tools = {i: _tool_of(t, i) for i in failures}
    last_ok = {
        str(t.events[i].payload.get("tool")): i
        for i in results
        if not _tool_failed(t.events[i].payload, t.events[i].ok)
    }
    found = []
    for i in failures:
        e = t.events[i]
        call = _call_of(t, i)
        tool = tools[i]
        recovered = any(
            x.payload.get("tool") == tool and not _tool_failed(x.payload, x.ok)
            for x in (t.events[j] for j in t.after("tool.result", i))
        )
        # Retries of the same tool that all failed (after its last success) are one chain: its first
        # attempt is the cause (the same step whatever the retry count), the later ones its evidence.
        chain = [j for j in failures if tools[j] == tool and j > last_ok.get(tool, -1)]
        if not recovered and i != chain[0]:
            continue
        error = e.payload.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        said = failure_text(e) if error else str(e.payload.get("result") or "") or failure_text(e)
        if said.lstrip().lower().startswith("traceback"):  # a traceback says what went wrong last
            said = next((line.strip() for line in reversed(said.splitlines()) if line.strip()), said)
        detail = shorten(said, 100).rstrip(".") or "no message"
        arguments = t.events[call].payload.get("arguments") if call is not None else None
        if arguments is not None:
            detail = f"{tool}({shorten(json.dumps(arguments, default=str), 80)}) returned {detail}"
        tail = "a later call of it succeeded" if recovered else "it never succeeded afterwards"
        confidence = RECOVERED if recovered else TOOL_ERROR
        if not recovered and len(chain) > 1:
            tail = f"the first of {len(chain)} attempts ({_steps_phrase(t, chain[1:])} failed the same way); {tail}"
        if deadline is not None and _CANCELLED.search(said):
            confidence = CANCELLED_BY_DEADLINE
            tail = "it was cancelled because the run ran out of time (a symptom: the timeout is the cause)"
        found.append(
            make_finding(
                "tool_error",
                confidence,
                step=t.steps[i],
                seq=e.seq,
                evidence=[t.seq(call) if call is not None else None, *(t.seq(j) for j in chain if not recovered)],
                summary=sentence(f"Tool {tool} failed at {step_phrase(t.steps[i])}: {detail}; {tail}"),
                subject=f"{tool} {kind}" if isinstance(kind, str) else tool,
            )
        )
    return found


def _steps_phrase(t: Timeline, indices: list[int]) -> str:
    """ "step 4" or "steps 3, 4": the steps of these events."""
    steps = ", ".join(str(t.steps[j]) for j in indices)
    return f"step{'s' if len(indices) > 1 else ''} {steps}"


def _tool_of(t: Timeline, i: int) -> str:
    call = _call_of(t, i)
    return str(t.events[i].payload.get("tool") or (t.events[call].payload.get("tool") if call is not None else "tool"))


def _call_of(t: Timeline, i: int) -> int | None:
    call_id = t.events[i].payload.get("call_id")
    calls = t.of("tool.call")
    for j in reversed(calls[: bisect_left(calls, i)]):
        if call_id is None or t.events[j].payload.get("call_id") == call_id:
            return j
    return None


@dataclass(frozen=True)
class _Loop:
    calls: tuple[int, ...]  # event indices of the repeated calls
    in_a_row: bool


def detect_loops(t: Timeline) -> list[Finding]:
    """loop: the same tool with the same arguments (compared as canonical JSON) called at least
    3 times in a row among tool calls (0.87), or 3 times within 6 consecutive tool calls (0.8);
    0.6 in a run that passed (wasted calls, not a failure). One finding per repeated call.
    Critical step: the step of the first call of the repetition.
    """
    calls = [(i, _call_key(t.events[i].payload)) for i in t.of("tool.call")]
    loops: dict[tuple[str, str], _Loop] = {}
    for n, (_, key) in enumerate(calls):
        if key in loops:
            continue
        run = [i for i, _ in _takewhile_key(calls[n:], key)]
        window = [i for i, k in calls[n : n + LOOP_WINDOW] if k == key]
        if len(run) >= LOOP_REPEATS:
            loops[key] = _Loop(tuple(run), True)
        elif len(window) >= LOOP_REPEATS:
            loops[key] = _Loop(tuple(window), False)
    found = []
    for (tool, _), loop in loops.items():
        first, last = t.steps[loop.calls[0]], t.steps[loop.calls[-1]]
        how = "in a row" if loop.in_a_row else f"within {LOOP_WINDOW} tool calls"
        span = step_phrase(first) if first == last else f"{step_phrase(first)} to step {last}"
        confidence = LOOP_IN_A_ROW if loop.in_a_row else LOOP_IN_WINDOW
        found.append(
            make_finding(
                "loop",
                confidence if t.failing else LOOP_IN_PASSED_RUN,
                step=first,
                seq=t.seq(loop.calls[0]),
                evidence=[t.seq(i) for i in loop.calls],
                summary=sentence(
                    f"The agent called {tool} with the same arguments {len(loop.calls)} times {how} ({span})"
                ),
                subject=tool,
            )
        )
    return found


def _call_key(payload: dict[str, Any]) -> tuple[str, str]:
    arguments = json.dumps(payload.get("arguments"), sort_keys=True, default=str)
    return str(payload.get("tool") or ""), arguments


def _takewhile_key(calls: list[tuple[int, tuple[str, str]]], key: tuple[str, str]) -> list[tuple[int, tuple[str, str]]]:
    run = []
    for call in calls:
        if call[1] != key:
            break
        run.append(call)
    return run


def detect_max_steps(t: Timeline) -> list[Finding]:
    """max_steps: the agent ran out of steps. Failed runs only.

    Said (0.8): a `log`, `error`, `console` or `step.end` whose text names a step / iteration /
    turn limit and says it was reached ("max_steps=12 reached", "hit the iteration limit");
    critical step: that event's step. Inferred (0.55): an agent run that failed by status
    alone (no failing event) after at least 20 steps; critical step: its last step.
    A loop that caused the limit ranks above it (0.87).
    """
    if not t.failing:
        return []
    for i in t.of("log", "error", "console", "step.end"):
        e = t.events[i]
        text = failure_text(e)
        if says_max_steps(text):
            where, said = step_phrase(t.steps[i]), shorten(text).rstrip(".")
            step, seq = t.steps[i], e.seq
            if step is None and t.events:  # said by the run itself: the limit struck at its last step
                last = next((k for k in range(len(t.events) - 1, -1, -1) if t.steps[k] is not None), None)
                if last is not None:
                    step, seq, where = t.steps[last], t.seq(last), step_phrase(t.steps[last])
            # Repeated identical calls that used the steps up are the cause; the limit is what ended it.
            looped = detect_loops(t)
            tail = f"; the repeated {looped[0].signature.split()[-1]} calls used the steps up" if looped else ""
            return [
                make_finding(
                    "max_steps",
                    MAX_STEPS_AFTER_LOOP if looped else MAX_STEPS_SAID,
                    step=step,
                    seq=seq,
                    evidence=[e.seq],
                    summary=sentence(f"The agent hit its step limit at {where}: {said}{tail}"),
                    subject=agent_name(t),
                )
            ]
    if not t.agent or t.anchor is not None or t.step_count < MANY_STEPS or not t.events:
        return []
    last = len(t.events) - 1
    return [
        make_finding(
            "max_steps",
            MAX_STEPS_INFERRED,
            step=t.steps[last],
            seq=t.seq(last),
            evidence=[],
            summary=sentence(
                f"The agent ran {t.step_count} steps and stopped at {step_phrase(t.steps[last])} "
                "without finishing or reporting an error"
            ),
            subject=agent_name(t),
        )
    ]


def agent_name(t: Timeline) -> str:
    """The agent that ran: the OpenTelemetry GenAI `gen_ai.agent.name` of the run (its own log line) or
    of its first step that names one; "" when no event names it. A step limit is one agent's limit, so
    its signature names the agent: two agents that ran out of turns are two incidents."""
    for i in (*t.of("log"), *t.of("step.start")):
        payload = t.events[i].payload
        for holder in (payload.get("run"), payload):
            attributes = holder.get("attributes") if isinstance(holder, dict) else None
            name = attributes.get("gen_ai.agent.name") if isinstance(attributes, dict) else None
            if isinstance(name, str) and name.strip():
                return name.strip()
    return ""


_DEADLINE: Final = re.compile(
    r"deadline|timed out|\btimeout\b|TimeoutError|CancelledError|\bcancell?ed\b|context canceled", re.IGNORECASE
)
AGENT_TIMEOUT: Final = 0.86
_CANCELLED: Final = re.compile(r"CancelledError|\bcancell?ed\b|context canceled", re.IGNORECASE)


def _deadline_said(t: Timeline) -> int | None:
    """The event where an agent run says its own deadline stopped it: a run-level event (no step), or
    the failure that ended the run, whose text names a deadline, timeout or cancellation."""
    if not t.failing or not t.agent:
        return None
    return next(
        (
            i
            for i in t.of("error", "log", "step.end", "tool.result", "llm.response")
            if (t.events[i].step_id is None or i == t.anchor)
            and (t.events[i].ok is False or t.events[i].kind == "error")
            and _DEADLINE.search(failure_text(t.events[i]))
        ),
        None,
    )


def detect_agent_timeout(t: Timeline) -> list[Finding]:
    """timeout: an agent run that failed because its own deadline cancelled it (a TimeoutError,
    CancelledError, "deadline exceeded" in an error, log or step end). The cancelled call is where
    the clock ran out, not where the time went: the critical step is the step that took longest
    (by its `step.end` duration, else its first-to-last event time). 0.86, above a tool error the
    cancellation caused. Failed agent runs only.
    """
    if not t.failing or not t.agent:
        return []
    said = _deadline_said(t)
    if said is None:
        return []
    spent: dict[int, int] = {}
    first: dict[int, int] = {}
    bounds: dict[int, tuple[int, int]] = {}
    for i, e in enumerate(t.events):
        step = t.steps[i]
        if step is None:
            continue
        first.setdefault(step, i)
        lo, hi = bounds.get(step, (e.ts, e.ts))
        bounds[step] = (min(lo, e.ts), max(hi, e.ts))
        if e.kind == "step.end" and isinstance(e.payload.get("duration_ms"), int):
            spent[step] = max(spent.get(step, 0), int(e.payload["duration_ms"]))
    if not first:
        return []
    took = {step: spent.get(step, bounds[step][1] - bounds[step][0]) for step in first}
    slowest = min(took, key=lambda s: (-took[s], s))
    total = max(1, sum(took.values()))
    cancelled = t.steps[said]
    where = step_phrase(slowest)
    title = t.title(slowest) or ""
    tail = f"; {step_phrase(cancelled)} was cancelled" if cancelled is not None and cancelled != slowest else ""
    return [
        make_finding(
            "timeout",
            AGENT_TIMEOUT,
            step=slowest,
            seq=t.seq(first[slowest]),
            evidence=[t.seq(said)],
            summary=sentence(
                f"The run ran out of time ({shorten(failure_text(t.events[said]), 80).rstrip('.')}); "
                f"the time went into {where}{f' ({title})' if title else ''}: {took[slowest]} ms of {total} ms{tail}"
            ),
            subject=title,
        )
    ]
