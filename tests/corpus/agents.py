"""The corpus's agent runs (source `agent`): two small agents — a travel booker and a code reviewer —
with scripted models, run by a small agent loop and traced with the OpenTelemetry SDK the way GenAI
instrumentation traces them (`invoke_agent` around `chat` and `execute_tool` spans, a sub-agent's own
`invoke_agent`), on a virtual clock. Each case of tests/corpus/cases.py is one script; its label was
written from what the script does. `record_agents(out_dir)` writes `<out_dir>/<app>/<name>.otlp.json`,
one OTLP/JSON export body per run (fixed ids: re-recording makes the same bytes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from molar_mcp.demo.agent_run import Clock, Collect, CountingIds, provider, timed_span
from tests.otlp.support import otlp_json

START_NS = 1_796_000_000_000_000_000
MODEL = "gpt-4.1-mini"


class GaveUp(Exception):
    """The agent stopped without doing its job (its final answer says why)."""


class MaxTurnsExceeded(Exception):
    pass


class DeadlineExceeded(TimeoutError):
    pass


@dataclass(frozen=True)
class Say:
    """One scripted model answer: tool calls, or a final text; or an error the model API answers with."""

    text: str = ""
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    error: tuple[int, str, str] | None = None  # (HTTP status, error type, message)
    fail: bool = False  # the final text admits the job was not done
    ms: int = 1_200


def call(tool: str, **arguments: Any) -> Say:
    return Say(f"Calling {tool}.", ((tool, arguments),))


def final(text: str, fail: bool = False) -> Say:
    return Say(text, fail=fail)


def api_error(status: int, kind: str, message: str) -> Say:
    return Say(error=(status, kind, message), ms=300)


@dataclass(frozen=True)
class Raise:
    """A tool that raises (its span records the exception)."""

    exc: BaseException
    ms: int = 5_000


@dataclass(frozen=True)
class Slow:
    """A tool that answers `result` after `ms`."""

    result: Any
    ms: int


@dataclass
class Agent:
    name: str
    tools: dict[str, Callable[[dict[str, Any]], Any]]
    script: list[Say]
    max_turns: int = 8
    retries: int = 2
    deadline_ms: int | None = None
    handoff: dict[str, Agent] = field(default_factory=dict)  # tool name → a sub-agent it hands off to


def run(tracer: Tracer, clock: Clock, agent: Agent, task: str, *, started_ns: int | None = None) -> None:
    """One run of `agent` under an `invoke_agent` span; the span fails when the agent does not finish."""
    with timed_span(
        tracer,
        clock,
        f"invoke_agent {agent.name}",
        SpanKind.INTERNAL,
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent.name, "gen_ai.request.model": MODEL},
    ) as root:
        started = clock.now_ns if started_ns is None else started_ns
        try:
            _loop(tracer, clock, agent, task, started)
        except (GaveUp, MaxTurnsExceeded, DeadlineExceeded) as exc:
            root.record_exception(exc.with_traceback(None), timestamp=clock.now_ns)
            root.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def _loop(tracer: Tracer, clock: Clock, agent: Agent, task: str, started: int) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "parts": [{"type": "text", "content": task}]}]
    script = iter(agent.script)
    for _ in range(agent.max_turns):
        say = _chat(tracer, clock, agent, script, messages)
        if not say.calls:
            if say.fail:
                raise GaveUp(say.text)
            return
        for n, (tool, arguments) in enumerate(say.calls):
            if tool in agent.handoff:
                try:
                    run(tracer, clock, agent.handoff[tool], json.dumps(arguments))
                    result: Any = {"ok": True}
                except (GaveUp, MaxTurnsExceeded, DeadlineExceeded) as exc:
                    result = {"isError": True, "content": [{"type": "text", "text": f"{tool} failed: {exc}"}]}
            else:
                result = _tool(tracer, clock, agent, tool, f"call_{len(messages):02d}{n}", arguments, started)
            messages.append({"role": "tool", "parts": [{"type": "tool_call_response", "response": result}]})
    raise MaxTurnsExceeded(f"Max turns ({agent.max_turns}) exceeded")


def _chat(tracer: Tracer, clock: Clock, agent: Agent, script: Any, messages: list[dict[str, Any]]) -> Say:
    for attempt in range(agent.retries + 1):
        say: Say = next(script)
        with timed_span(
            tracer,
            clock,
            f"chat {MODEL}",
            SpanKind.CLIENT,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": MODEL,
                "gen_ai.input.messages": json.dumps(messages[-3:]),
            },
        ) as span:
            clock.advance(say.ms)
            if say.error is not None:
                status, kind, message = say.error
                span.set_attribute("error.type", kind)
                span.set_attribute("http.response.status_code", status)
                span.set_status(Status(StatusCode.ERROR, f"Error code: {status} - {message}"))
                if attempt == agent.retries:
                    raise GaveUp(f"the model API failed {agent.retries + 1} times: {status} {message}")
                clock.advance(2_000)  # the client's back-off
                continue
            parts: list[dict[str, Any]] = [{"type": "text", "content": say.text}] if say.text else []
            parts += [{"type": "tool_call", "name": t, "arguments": a} for t, a in say.calls]
            finish = "tool_calls" if say.calls else "stop"
            span.set_attribute("gen_ai.response.model", MODEL)
            span.set_attribute("gen_ai.response.finish_reasons", [finish])
            span.set_attribute("gen_ai.usage.input_tokens", 900 + 150 * len(messages))
            span.set_attribute("gen_ai.usage.output_tokens", 40 + 10 * len(say.calls))
            span.set_attribute(
                "gen_ai.output.messages", json.dumps([{"role": "assistant", "parts": parts, "finish_reason": finish}])
            )
            messages.append({"role": "assistant", "parts": parts})
            return say
    raise GaveUp("the model never answered")


def _tool(
    tracer: Tracer, clock: Clock, agent: Agent, tool: str, call_id: str, arguments: dict[str, Any], started: int
) -> Any:
    with timed_span(
        tracer,
        clock,
        f"execute_tool {tool}",
        SpanKind.INTERNAL,
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": json.dumps(arguments),
        },
    ) as span:
        outcome = agent.tools[tool](arguments)
        took = outcome.ms if isinstance(outcome, (Slow, Raise)) else 60
        if agent.deadline_ms is not None:
            left = (started + agent.deadline_ms * 1_000_000 - clock.now_ns) // 1_000_000
            if took > left:  # the run's deadline cancels the call in flight
                clock.advance(max(0, left))
                span.set_status(Status(StatusCode.ERROR, "CancelledError: cancelled by the run's deadline"))
                raise DeadlineExceeded(f"the run's deadline of {agent.deadline_ms // 1000} s was exceeded")
        clock.advance(took)
        if isinstance(outcome, Raise):
            span.record_exception(outcome.exc, timestamp=clock.now_ns)
            span.set_status(Status(StatusCode.ERROR, f"{type(outcome.exc).__name__}: {outcome.exc}"))
            return {"isError": True, "content": [{"type": "text", "text": str(outcome.exc)}]}
        result = outcome.result if isinstance(outcome, Slow) else outcome
        span.set_attribute("gen_ai.tool.call.result", result if isinstance(result, str) else json.dumps(result))
        return result


def answers(*results: Any) -> Callable[[dict[str, Any]], Any]:
    """A tool that answers each call with the next of `results` (the last one again when they run out)."""
    queue = list(results)

    def tool(arguments: dict[str, Any]) -> Any:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return tool


def mcp_error(text: str) -> dict[str, Any]:
    return {"isError": True, "content": [{"type": "text", "text": text}]}


RATE_LIMIT = (429, "rate_limit_exceeded", "Rate limit reached for gpt-4.1-mini: 30000 TPM. Retry in 2s.")

# ---- the travel booker ------------------------------------------------------------------------------

FLIGHTS = {"flights": [{"id": "TP1234", "from": "LIS", "to": "OSL", "price_eur": 212}]}


def travel(script: list[Say], **tools: Callable[[dict[str, Any]], Any]) -> Agent:
    base: dict[str, Callable[[dict[str, Any]], Any]] = {
        "get_profile": answers({"traveller": "Dana Lee", "card": "visa-4242"}),
        "search_flights": answers(FLIGHTS),
        "book_flight": answers({"booking": "PNR7Q2", "status": "confirmed"}),
        "search_trains": answers({"trains": []}),
        "book_hotel": answers({"reservation": "H-5521"}),
        "fare_rules": answers({"refundable": False}),
    }
    return Agent("travel-booker", {**base, **tools}, script)


def _travel_cases() -> dict[str, Agent]:
    pay = Agent(
        "payments",
        {"charge_card": answers({"is_error": True, "message": "card declined: insufficient funds"})},
        [call("charge_card", amount_eur=212, card="visa-4242"), final("The card was declined.", fail=True)],
    )
    cases = {
        "passing": travel(
            [
                call("search_flights", origin="LIS", to="OSL"),
                call("book_flight", flight="TP1234"),
                final("Booked PNR7Q2."),
            ]
        ),
        "retried-429-passing": travel(
            [api_error(*RATE_LIMIT), call("search_flights", origin="LIS", to="OSL"), final("TP1234 is the cheapest.")]
        ),
        "tool-retried-passing": travel(
            [
                call("search_flights", origin="LIS", to="OSL"),
                call("search_flights", origin="LIS", to="OSL"),
                final("Found TP1234."),
            ],
            search_flights=answers(mcp_error("upstream GDS timeout, try again"), FLIGHTS),
        ),
        "error-as-result": travel(
            [
                call("get_profile"),
                call("search_flights", origin="LIS", to="XYZ"),
                final("I found no flights to XYZ.", fail=True),
            ],
            search_flights=answers(mcp_error("unknown airport code 'XYZ'")),
        ),
        "error-text-result": travel(
            [
                call("get_profile"),
                call("book_hotel", city="Oslo", night="2026-12-24"),
                final("No hotel could be booked.", fail=True),
            ],
            book_hotel=answers("Error: no rooms available in Oslo for 2026-12-24"),
        ),
        "429-then-tool-error": travel(
            [
                api_error(*RATE_LIMIT),
                call("search_flights", origin="LIS", to="OSL"),
                api_error(*RATE_LIMIT),
                call("book_flight", flight="TP1234"),
                final("The booking did not go through.", fail=True),
            ],
            book_flight=answers({"error": {"type": "payment_declined", "message": "card expired"}}),
        ),
        "429-exhausted": travel(
            [
                call("search_flights", origin="LIS", to="OSL"),
                api_error(*RATE_LIMIT),
                api_error(*RATE_LIMIT),
                api_error(*RATE_LIMIT),
            ]
        ),
        "deadline": travel(
            [
                call("search_flights", origin="LIS", to="OSL"),
                call("search_trains", origin="Lisbon", to="Oslo"),
                call("book_hotel", city="Oslo", night="2026-12-24"),
                final("Done."),
            ],
            search_trains=answers(Slow({"trains": []}, 24_000)),
            book_hotel=answers(Slow({"reservation": "H-5521"}, 4_000)),
        ),
        "tool-cancelled": travel(
            [
                call("fare_rules", flight="TP1234"),
                final("I could not get the fare rules, so I did not book.", fail=True),
            ],
            fare_rules=answers(
                Raise(TimeoutError("fare rules service did not answer in 5 s; the request was cancelled"))
            ),
        ),
        "loop": travel(
            [call("search_flights", origin="LIS", to="OSL", date="2026-12-23")] * 3
            + [final("I keep getting no flights for that date.", fail=True)],
            search_flights=answers({"flights": []}),
        ),
        "max-turns": travel(
            [call("search_trains", origin="Lisbon", to="Oslo", date=f"2026-12-{d}") for d in range(18, 24)],
        ),
        "sub-agent": travel(
            [call("book_flight", flight="TP1234"), call("pay", amount_eur=212), final("Payment failed.", fail=True)],
        ),
        "model-500": travel(
            [
                call("search_flights", origin="LIS", to="OSL"),
                api_error(500, "server_error", "The server had an error while processing your request."),
                api_error(500, "server_error", "The server had an error while processing your request."),
            ]
        ),
    }
    cases["max-turns"].max_turns = 6
    cases["deadline"].deadline_ms = 30_000
    cases["sub-agent"].handoff = {"pay": pay}
    cases["model-500"].retries = 1
    return cases


# ---- the code reviewer ------------------------------------------------------------------------------

SOURCE = "def total(items):\n    return sum(i.price for i in items)\n"


def review(script: list[Say], **tools: Callable[[dict[str, Any]], Any]) -> Agent:
    base: dict[str, Callable[[dict[str, Any]], Any]] = {
        "read_file": answers({"path": "src/cart.py", "text": SOURCE}),
        "run_tests": answers({"passed": 41, "failed": 0}),
        "lint": answers({"warnings": 0}),
        "post_comment": answers({"comment_id": 99120}),
    }
    return Agent("code-reviewer", {**base, **tools}, script, retries=1)


def _review_cases() -> dict[str, Agent]:
    scan = Agent(
        "security-scan",
        {"scan_deps": answers(mcp_error("vulnerability database unreachable (503)"))},
        [call("scan_deps", lockfile="uv.lock"), final("The dependency scan could not run.", fail=True)],
    )
    cases = {
        "passing": review(
            [call("read_file", path="src/cart.py"), call("post_comment", body="LGTM"), final("Reviewed.")]
        ),
        "retried-529-passing": review(
            [
                api_error(529, "overloaded_error", "Overloaded"),
                call("read_file", path="src/cart.py"),
                final("Looks fine."),
            ]
        ),
        "error-as-result": review(
            [call("read_file", path="src/missing.py"), final("I cannot review a file that does not exist.", fail=True)],
            read_file=answers(mcp_error("file not found: src/missing.py")),
        ),
        "error-text-result": review(
            [
                call("read_file", path="src/cart.py"),
                call("run_tests", target="tests/"),
                final("The tests could not run.", fail=True),
            ],
            run_tests=answers(
                'Traceback (most recent call last):\n  File "runner.py", line 3, in <module>\n'
                "ModuleNotFoundError: No module named 'pytest_asyncio'"
            ),
        ),
        "429-then-tool-error": review(
            [
                call("read_file", path="src/cart.py"),
                api_error(*RATE_LIMIT),
                call("post_comment", body="Consider Decimal for prices."),
                final("I could not post the review.", fail=True),
            ],
            post_comment=answers({"error": {"type": "forbidden", "message": "token lacks pull_requests:write"}}),
        ),
        "429-exhausted": review(
            [
                call("read_file", path="src/cart.py"),
                call("run_tests", target="tests/"),
                api_error(*RATE_LIMIT),
                api_error(*RATE_LIMIT),
            ]
        ),
        "deadline": review(
            [
                call("read_file", path="src/cart.py"),
                call("run_tests", target="tests/"),
                call("lint", path="src/"),
                final("Done."),
            ],
            run_tests=answers(Slow({"passed": 41, "failed": 0}, 52_000)),
            lint=answers(Slow({"warnings": 0}, 9_000)),
        ),
        "tool-cancelled": review(
            [
                call("read_file", path="src/cart.py"),
                call("lint", path="src/"),
                final("Lint did not finish.", fail=True),
            ],
            lint=answers(Raise(RuntimeError("lint cancelled: the linter process was killed after 10 s"), ms=10_000)),
        ),
        "loop": review(
            [call("read_file", path="src/cart.py")] + [call("read_file", path="src/prices.py")] * 4,
            read_file=answers({"path": "src/cart.py", "text": SOURCE}, {"path": "src/prices.py", "text": ""}),
        ),
        "max-turns": review(
            [call("read_file", path=f"src/module_{n}.py") for n in range(5)],
        ),
        "sub-agent": review(
            [
                call("read_file", path="src/cart.py"),
                call("security_scan", lockfile="uv.lock"),
                final("Scan failed.", fail=True),
            ],
        ),
        "tool-retries-exhausted": review(
            [
                call("read_file", path="src/cart.py"),
                call("post_comment", body="LGTM"),
                call("post_comment", body="LGTM"),
                final("GitHub kept failing; no comment posted.", fail=True),
            ],
            post_comment=answers(mcp_error("GitHub API answered 502 Bad Gateway")),
        ),
    }
    cases["deadline"].deadline_ms = 60_000
    cases["loop"].max_turns = 5
    cases["max-turns"].max_turns = 5
    cases["sub-agent"].handoff = {"security_scan": scan}
    return cases


TASKS = {
    "travel": "Book Dana a flight from Lisbon to Oslo on 23 December and a hotel for the 24th.",
    "review": "Review pull request #311 (src/cart.py) and post your review.",
}


def agent_cases() -> dict[str, dict[str, Agent]]:
    return {"travel": _travel_cases(), "review": _review_cases()}


def record_one(app: str, name: str, agent: Agent, seed: int) -> tuple[dict[str, Any], str]:
    collected = Collect()
    tracer_provider = provider(collected, service=f"{app}-agent", ids=CountingIds(seed))
    status = "passed"
    try:
        run(tracer_provider.get_tracer("tests.corpus.agents"), Clock(START_NS + seed * 10**12), agent, TASKS[app])
    except (GaveUp, MaxTurnsExceeded, DeadlineExceeded):
        status = "failed"
    tracer_provider.shutdown()
    spans: list[ReadableSpan] = collected.spans
    return otlp_json(spans), status


def record_agents(out_dir: Path) -> dict[str, str]:
    outcome: dict[str, str] = {}
    seed = 0x70
    for app, cases in agent_cases().items():
        for name, agent in cases.items():
            seed += 1
            body, status = record_one(app, name, agent, seed)
            out = out_dir / app / f"{name}.otlp.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(body, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
            outcome[f"agent/{app}/{name}"] = status
    return outcome
