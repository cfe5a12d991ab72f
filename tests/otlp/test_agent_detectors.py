"""The detectors on agent runs recorded with the OpenTelemetry SDK and mapped as the receiver maps them:
tool errors returned as results, recovered rate limits, deadlines, loops, step limits, sub-agents."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from molar_mcp.debugger.detectors import Finding, analyze
from molar_mcp.demo.agent_run import Clock, timed_span
from molar_mcp.ingest.formats.agent_spans import run_status, trace_events
from molar_mcp.ingest.formats.otlp import decode_protobuf, decode_spans
from molar_mcp.store.sqlite import normalize_events
from molar_mcp.store.steps import StepTree
from tests.otlp.support import protobuf, record

Body = Callable[[Tracer, Clock], Any]


def findings_of(body: Body) -> list[Finding]:
    """Record `body` with the SDK, map its spans as the receiver does, number steps as the store does."""
    spans = decode_spans(decode_protobuf(protobuf(record(body)))).spans
    events = normalize_events(trace_events(spans), StepTree())
    return analyze(events, run_status(spans))


def chat(tracer: Tracer, clock: Clock, ms: int = 800, **error: Any) -> None:
    with timed_span(
        tracer,
        clock,
        "chat gpt-4o",
        SpanKind.CLIENT,
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 900},
    ) as span:
        clock.advance(ms)
        if error:
            span.set_attribute("error.type", error["kind"])
            span.set_attribute("http.response.status_code", error["status"])
            span.set_status(Status(StatusCode.ERROR, error["message"]))


def tool(tracer: Tracer, clock: Clock, name: str, arguments: dict[str, Any], result: Any, ms: int = 40) -> None:
    with timed_span(
        tracer,
        clock,
        f"execute_tool {name}",
        SpanKind.INTERNAL,
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.arguments": json.dumps(arguments),
            "gen_ai.tool.call.result": result if isinstance(result, str) else json.dumps(result),
        },
    ):
        clock.advance(ms)


def agent(name: str, steps: Body, error: str | None = None, exception: BaseException | None = None) -> Body:
    def body(tracer: Tracer, clock: Clock) -> None:
        with timed_span(
            tracer, clock, f"invoke_agent {name}", SpanKind.INTERNAL, {"gen_ai.operation.name": "invoke_agent"}
        ) as run:
            steps(tracer, clock)
            if exception is not None:
                run.record_exception(exception, timestamp=clock.now_ns)
            if error is not None:
                run.set_status(Status(StatusCode.ERROR, error))

    return body


def test_an_error_text_returned_as_the_tool_result_is_the_tool_error() -> None:
    def steps(tracer: Tracer, clock: Clock) -> None:
        chat(tracer, clock)
        tool(tracer, clock, "lookup_order", {"order_id": "#1"}, "Error: no order with id '#1'")
        chat(tracer, clock)

    top = findings_of(agent("support", steps, error="gave up"))[0]
    assert (top.label, top.critical_step) == ("tool_error", 2)
    assert "lookup_order" in top.summary
    assert "no order with id '#1'" in top.summary


def test_a_429_the_client_retried_past_is_not_the_cause() -> None:
    def steps(tracer: Tracer, clock: Clock) -> None:
        chat(tracer, clock, kind="RateLimitError", status=429, message="Error code: 429 - rate limit")
        chat(tracer, clock)
        tool(
            tracer,
            clock,
            "refund",
            {"order": "ORD-1"},
            {"isError": True, "content": [{"type": "text", "text": "card expired"}]},
        )

    found = findings_of(agent("support", steps, error="refund failed"))
    assert (found[0].label, found[0].critical_step) == ("tool_error", 3)
    rate = next(f for f in found if f.label == "rate_limited")
    assert rate.confidence < 0.5  # recovered: a later model call succeeded


def test_a_run_cancelled_by_its_deadline_is_a_timeout_where_the_time_went() -> None:
    def steps(tracer: Tracer, clock: Clock) -> None:
        chat(tracer, clock, ms=600)
        tool(tracer, clock, "crawl", {"url": "https://example.com"}, {"pages": 40}, ms=27_000)  # the time went here
        with timed_span(
            tracer,
            clock,
            "execute_tool summarize",
            SpanKind.INTERNAL,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "summarize"},
        ) as cancelled:
            clock.advance(2_300)
            cancelled.set_status(Status(StatusCode.ERROR, "CancelledError: cancelled by the run's deadline"))

    top = findings_of(agent("research", steps, error="deadline exceeded after 30 s", exception=TimeoutError("30 s")))[0]
    assert (top.label, top.critical_step) == ("timeout", 2)
    assert "step 3 was cancelled" in top.summary


def test_repeated_identical_tool_calls_are_a_loop() -> None:
    def steps(tracer: Tracer, clock: Clock) -> None:
        for _ in range(4):
            chat(tracer, clock)
            tool(tracer, clock, "search", {"q": "refund policy"}, {"hits": 0})

    top = findings_of(agent("support", steps, error="no answer"))[0]
    assert top.label == "loop"
    assert "search" in top.summary


def test_a_max_turns_error_is_max_steps() -> None:
    class MaxTurnsExceeded(Exception):
        pass

    def steps(tracer: Tracer, clock: Clock) -> None:
        for i in range(3):
            chat(tracer, clock)
            tool(tracer, clock, "search", {"q": f"try {i}"}, {"hits": 0})

    found = findings_of(agent("support", steps, exception=MaxTurnsExceeded("Max turns (3) exceeded")))
    assert found[0].label == "max_steps"


def test_a_sub_agents_failure_is_found_inside_its_subtree() -> None:
    def steps(tracer: Tracer, clock: Clock) -> None:
        chat(tracer, clock)
        with timed_span(
            tracer, clock, "invoke_agent billing", SpanKind.INTERNAL, {"gen_ai.operation.name": "invoke_agent"}
        ) as sub:
            chat(tracer, clock)
            tool(tracer, clock, "charge", {"amount": 42}, {"is_error": True, "message": "card declined"})
            sub.set_status(Status(StatusCode.ERROR, "billing failed"))
        chat(tracer, clock)

    top = findings_of(agent("planner", steps, error="sub-agent billing failed"))[0]
    assert (top.label, top.critical_step) == ("tool_error", 2)  # step 2 is the sub-agent; the call is 2.2
    assert "charge" in top.summary
