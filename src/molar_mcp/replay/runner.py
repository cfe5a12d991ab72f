"""Run a scenario against an HTTP app and record the trace as events (docs/bundle-format.md kinds).

The client is the seam: an `httpx2.AsyncClient` with a real transport for a started app, or an
`ASGITransport` for an app in process. Captured variables are recorded in each `step.end` payload
(`{"duration_ms", "captures"}`), and the variables a run started with in its first `log` event
(`{"from_step", "restored_variables"}`), so `variables_before` can rebuild the state before any step
from the trace alone (docs/scenario-format.md, "What the runner records").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import httpx2
from pydantic import BaseModel, Field

from molar_mcp.models.traces import Event
from molar_mcp.replay.scenario import (
    Expectation,
    JsonExpectation,
    Scenario,
    StatusExpectation,
    Step,
    UndefinedVariableError,
    json_equal,
    resolve_json_path,
    substitute,
)

RunStatus = Literal["passed", "failed", "error"]
Clock = Callable[[], int]

BODY_LIMIT = 64 * 1024  # bytes of a request/response body kept in an event
VALUE_LIMIT = 2048  # characters of an assertion's actual value kept in an event
MAX_REDIRECTS = 10
REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
_MISSING = object()


def epoch_ms() -> int:
    """The wall clock in epoch milliseconds (the `ts` of events)."""
    return time.time_ns() // 1_000_000


class RunResult(BaseModel):
    """What a run did: its status, its trace events, and the variables each step captured."""

    status: RunStatus
    events: list[Event]
    captures: dict[int, dict[str, str]] = Field(
        default_factory=dict, description="step number → the variables that step captured (passed steps)"
    )
    variables: dict[str, str] = Field(default_factory=dict, description="all variables at the end of the run")
    failure_signature: str | None = Field(default=None, description="e.g. `step-7: expect status 200`")
    failed_step: int | None = None
    duration_ms: int = Field(ge=0)


class TraceStateError(ValueError):
    """The recorded trace cannot tell the variables before the asked step."""


class _StepError(Exception):
    """A step that could not be run (not an expectation that failed): the run ends in `error`."""

    def __init__(self, name: str, message: str) -> None:
        self.name, self.message = name, message
        super().__init__(message)


class _Recorder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[Event] = []

    def emit(
        self,
        kind: str,
        *,
        step: Step | None = None,
        ok: bool | None = None,
        message: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        self.events.append(
            Event(
                seq=len(self.events),
                ts=self.clock(),
                kind=kind,
                step_id=str(step.number) if step else None,
                ok=ok,
                message=message,
                payload=payload or {},
            )
        )


async def run_scenario(
    scenario: Scenario,
    client: httpx2.AsyncClient,
    *,
    from_step: int = 1,
    variables: Mapping[str, str] | None = None,
    clock: Clock = epoch_ms,
) -> RunResult:
    """Run the steps `from_step`… of `scenario` in order, recording every request, response and check.

    Relative targets use the client's `base_url`, else the scenario's `base_url`. `variables` are the
    state before `from_step` (see `variables_before`). The first failing step ends the run: an
    expectation or capture that fails → `failed`; a request that cannot be made (connection error,
    timeout, undefined variable, body that is not JSON after substitution) → `error`.
    """
    if not 1 <= from_step <= len(scenario.steps):
        raise ValueError(f"from_step must be 1–{len(scenario.steps)} for scenario {scenario.slug!r}")
    recorder = _Recorder(clock)
    started = clock()
    state = dict(variables or {})
    base_url = str(client.base_url) or scenario.base_url or ""
    last = len(scenario.steps)
    opening = f"run {scenario.slug}: steps {from_step}–{last} against {base_url or '(no base URL)'}"
    recorder.emit(
        "log",
        message=opening,
        payload={
            "level": "info",
            "text": opening,
            "scenario": scenario.slug,
            "from_step": from_step,
            "restored_variables": dict(state),
        },
    )
    result_status: RunStatus = "passed"
    signature: str | None = None
    failed_step: int | None = None
    captures: dict[int, dict[str, str]] = {}
    for step in scenario.steps[from_step - 1 :]:
        status, signature, captured = await _run_step(step, scenario, client, state, recorder)
        if status != "passed":
            result_status, failed_step = status, step.number
            break
        captures[step.number] = captured
        state.update(captured)
    duration = max(0, clock() - started)
    summary = f"run {result_status} in {duration} ms" + (f" at {signature}" if signature else "")
    level = "info" if result_status == "passed" else "error"
    recorder.emit("log", message=summary, payload={"level": level, "text": summary})
    return RunResult(
        status=result_status,
        events=recorder.events,
        captures=captures,
        variables=state,
        failure_signature=signature,
        failed_step=failed_step,
        duration_ms=duration,
    )


def variables_before(events: Iterable[Event], step: int) -> dict[str, str]:
    """The variables a run had just before `step`, rebuilt from a recorded trace's events.

    Starts from the `restored_variables` of the run's first `log` event (a replay's starting state),
    then adds the `captures` of every passed `step.end` before `step`. Raises TraceStateError when the
    trace starts after `step` or a step before it did not pass (its captures are unknown).
    """
    variables: dict[str, str] = {}
    first_step = 1
    passed: set[int] = set()
    for event in sorted(events, key=lambda e: e.seq):
        payload = event.payload
        if event.kind == "log" and event.step_id is None and isinstance(payload.get("restored_variables"), dict):
            first_step = int(payload.get("from_step", 1))
            variables = {str(k): str(v) for k, v in payload["restored_variables"].items()}
        elif event.kind == "step.end" and event.step_id is not None and event.step_id.isdigit():
            number = int(event.step_id)
            if number < step and event.ok:
                passed.add(number)
                variables.update({str(k): str(v) for k, v in dict(payload.get("captures") or {}).items()})
    if step < first_step:
        raise TraceStateError(f"this trace starts at step {first_step}; it cannot restore the state before {step}")
    missing = [n for n in range(first_step, step) if n not in passed]
    if missing:
        raise TraceStateError(
            f"step {missing[0]} did not pass in this trace, so the state before step {step} is unknown; "
            f"replay from step {missing[0]} or earlier"
        )
    return variables


async def _run_step(
    step: Step, scenario: Scenario, client: httpx2.AsyncClient, state: dict[str, str], recorder: _Recorder
) -> tuple[RunStatus, str | None, dict[str, str]]:
    started = recorder.clock()
    recorder.emit("step.start", step=step, message=step.title, payload={"title": step.title})
    captured: dict[str, str] = {}
    signature: str | None = None
    status: RunStatus = "passed"
    try:
        response = await _send(step, scenario, client, state, recorder)
        document = _json_or_missing(response)
        for expectation in step.expectations:
            ok = _check(expectation, response, document, state, step, recorder)
            if not ok and signature is None:
                status, signature = "failed", f"step-{step.number}: {expectation.text}"
        for capture in step.captures if status == "passed" else []:
            found, value = resolve_json_path(document, capture.segments) if document is not _MISSING else (False, None)
            if not found:
                actual = "no JSON body" if document is _MISSING else f"nothing at {capture.path}"
                recorder.emit(
                    "assertion",
                    step=step,
                    ok=False,
                    message=f"{capture.text}: {actual}",
                    payload={
                        "expected": capture.path,
                        "actual": None,
                        "matcher": "capture",
                        "line": capture.line,
                    },
                )
                status, signature = "failed", f"step-{step.number}: {capture.text}"
                break
            captured[capture.name] = value if isinstance(value, str) else json.dumps(value)
    except UndefinedVariableError as exc:
        status, signature = "error", f"step-{step.number}: undefined variable {exc.name}"
        recorder.emit("error", step=step, message=str(exc), payload={"name": "UndefinedVariable", "message": str(exc)})
    except _StepError as exc:
        status, signature = "error", f"step-{step.number}: {exc.name}"
        error = {"name": exc.name, "message": exc.message}
        recorder.emit("error", step=step, message=f"{exc.name}: {exc.message}", payload=error)
    recorder.emit(
        "step.end",
        step=step,
        ok=status == "passed",
        message=f"{step.title}: {status}",
        payload={
            "duration_ms": max(0, recorder.clock() - started),
            "captures": captured if status == "passed" else {},
        },
    )
    return status, signature, captured if status == "passed" else {}


async def _send(
    step: Step, scenario: Scenario, client: httpx2.AsyncClient, state: dict[str, str], recorder: _Recorder
) -> httpx2.Response:
    """Send the step's request, following redirects one hop at a time so each hop is recorded."""
    spec = step.request
    target = substitute(spec.target, state)
    headers = [(name, substitute(value, state)) for name, value in spec.headers]
    content: bytes | None = None
    if spec.body is not None:
        body = substitute(spec.body, state, json_string=True)
        try:
            json.loads(body)
        except json.JSONDecodeError as exc:
            raise _StepError("InvalidBody", f"the body is not JSON after substituting variables: {exc}") from None
        content = body.encode()
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    if target.startswith("/") and not str(client.base_url):
        if not scenario.base_url:
            raise _StepError("NoBaseURL", "give the client a base_url or the scenario a `base_url:`")
        target = scenario.base_url.rstrip("/") + target
    try:
        request = client.build_request(spec.method, target, headers=headers, content=content)
    except (httpx2.InvalidURL, ValueError) as exc:
        raise _StepError("InvalidURL", f"{target}: {exc}") from None
    for hop in range(1, MAX_REDIRECTS + 2):
        request_id = f"{step.number}.{hop}"
        url = str(request.url)
        sent_body = await request.aread()  # a byte stream we built: reading it does not consume it
        recorder.emit(
            "network.request",
            step=step,
            message=f"{request.method} {url}",
            payload={
                "request_id": request_id,
                "method": request.method,
                "url": url,
                "headers": _headers(request.headers),
                **_body(sent_body),
            },
        )
        sent = recorder.clock()
        try:
            response = await client.send(request, follow_redirects=False)
        except Exception as exc:  # any transport failure (or an in-process app's exception) ends the run
            recorder.emit(
                "network.response",
                step=step,
                ok=False,
                message=f"{request.method} {url} failed: {type(exc).__name__}",
                payload={
                    "request_id": request_id,
                    "method": request.method,
                    "url": url,
                    "status": 0,
                    "duration_ms": max(0, recorder.clock() - sent),
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            raise _StepError(type(exc).__name__, str(exc) or type(exc).__name__) from exc
        recorder.emit(
            "network.response",
            step=step,
            message=f"{request.method} {url} → {response.status_code}",
            payload={
                "request_id": request_id,
                "method": request.method,
                "url": url,
                "status": response.status_code,
                "duration_ms": max(0, recorder.clock() - sent),
                "headers": _headers(response.headers),
                **_body(response.content),
            },
        )
        if response.next_request is None:
            return response
        request = response.next_request
    raise _StepError("TooManyRedirects", f"more than {MAX_REDIRECTS} redirects from {spec.target}")


def _check(
    expectation: Expectation,
    response: httpx2.Response,
    document: Any,
    state: Mapping[str, str],
    step: Step,
    recorder: _Recorder,
) -> bool:
    matcher: str = expectation.kind
    extra: dict[str, Any] = {}
    if isinstance(expectation, StatusExpectation):
        expected: Any = expectation.status
        actual: Any = response.status_code
        ok = bool(actual == expected)
        got = str(actual)
    elif isinstance(expectation, JsonExpectation):
        extra["path"] = expectation.path
        expected = (
            None if expectation.value is None else json.loads(substitute(expectation.value, state, json_string=True))
        )
        if document is _MISSING:
            ok, actual, got = False, None, f"the response body is not JSON (status {response.status_code})"
        else:
            found, actual = resolve_json_path(document, expectation.segments)
            if expectation.op == "exists":
                ok = found
            else:
                ok = found and json_equal(actual, expected) == (expectation.op == "==")
            got = json.dumps(actual) if found else f"nothing at {expectation.path}"
            if not found:
                actual = None
    else:
        expected = substitute(expectation.url, state)
        final = response.url
        actual = final.raw_path.decode("ascii", "replace") if expected.startswith("/") else str(final)
        ok = bool(actual == expected)
        got = actual
    if isinstance(actual, dict | list) and len(json.dumps(actual)) > VALUE_LIMIT:
        actual = json.dumps(actual)[:VALUE_LIMIT] + "…"
    recorder.emit(
        "assertion",
        step=step,
        ok=ok,
        message=expectation.text if ok else f"{expectation.text}: got {_clip(got)}",
        payload={
            "expected": expected,
            "actual": actual,
            "matcher": matcher,
            "line": expectation.line,
            **extra,
        },
    )
    return ok


def _json_or_missing(response: httpx2.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return _MISSING


def _headers(headers: httpx2.Headers) -> dict[str, str]:
    kept: dict[str, str] = {}
    for name, value in headers.multi_items():
        value = "[redacted]" if name.lower() in REDACTED_HEADERS else value
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept


def _body(content: bytes) -> dict[str, Any]:
    if not content:
        return {}
    text = content[:BODY_LIMIT].decode("utf-8", errors="replace")
    if len(content) > BODY_LIMIT:
        return {"body": text, "body_truncated": True, "body_size": len(content)}
    return {"body": text}


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
