"""A small support agent with a scripted model, traced with the OpenTelemetry SDK as GenAI instrumentation
traces it: `invoke_agent` around `chat` and `execute_tool` spans, tokens, messages, tool arguments and
results (OpenTelemetry GenAI semantic conventions).

`scripts/record-agent-demo` runs it to record the agent run `serve --demo` shows (shipped beside this
module as OTLP/JSON, `refund-agent-run.otlp.json`); the tests run it against a real server. It needs
the `opentelemetry-sdk` (the dev extra): nothing at run time imports this module.

`DEMO_FILE` is that recording: `record_refund_run(DEMO_START_NS)` makes the same bytes again (fixed ids
and a virtual clock).

The run fails as agent runs do: the model asks for an order by the number the customer wrote
("#10482"), the order tool answers with an error *as a normal result* (`isError`, as MCP tools do), the
model is overloaded once (529, retried past), asks again with the same arguments, gets the same
error, and the agent gives up without refunding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

DEMO_FILE = "refund-agent-run.otlp.json"
DEMO_START_NS = 1_795_170_900_000_000_000  # 2026-11-20T09:55:00Z
MODEL = "claude-sonnet-4-5"
PROVIDER = "anthropic"
AGENT = "refund-agent"
SERVICE = "support-desk"


class Overloaded(Exception):
    """The model provider's 529 overloaded_error."""


class AgentGaveUp(Exception):
    pass


@dataclass(frozen=True)
class Reply:
    """One scripted model answer: text, or tool calls, or an error the client raises."""

    text: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: int = 1500


@dataclass
class Clock:
    """The run's time: virtual (a scripted model answers at once, the spans say how long it took)."""

    now_ns: int = field(default_factory=time.time_ns)

    def advance(self, ms: int) -> int:
        self.now_ns += ms * 1_000_000
        return self.now_ns


@contextmanager
def timed_span(tracer: Tracer, clock: Clock, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Iterator[Span]:
    """A span on the virtual clock; the body advances the clock by what it "took"."""
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        start_time=clock.advance(2),
        end_on_exit=False,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        finally:
            span.end(end_time=clock.advance(1))


@dataclass
class ScriptedModel:
    replies: list[Reply]
    calls: int = 0

    def answer(self) -> Reply:
        reply = self.replies[self.calls]
        self.calls += 1
        return reply


REFUND_SCRIPT: tuple[Reply, ...] = (
    Reply("I'll look up the customer first.", (("get_customer", {"email": "dana@example.com"}),), None, 1840, 61, 2080),
    Reply("Now the order they mention.", (("lookup_order", {"order_id": "#10482"}),), None, 2080, 48, 1830),
    Reply(error="529 overloaded_error: Overloaded", latency_ms=620),
    Reply("Let me try that order again.", (("lookup_order", {"order_id": "#10482"}),), None, 2320, 48, 1490),
    Reply(
        "I could not find order #10482, so I cannot refund it. Escalating to a human.",
        (),
        None,
        2560,
        40,
        2210,
    ),
)


def _customer(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"customer_id": "cus_8812", "email": arguments.get("email"), "orders": ["ORD-010482", "ORD-010377"]}


def _lookup_order(arguments: dict[str, Any]) -> dict[str, Any]:
    order = str(arguments.get("order_id"))
    if not order.startswith("ORD-"):
        return {"isError": True, "content": [{"type": "text", "text": f"no order with id '{order}'"}]}
    return {"order_id": order, "amount": 4200, "charges": 2}


TOOLS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "get_customer": _customer,
    "lookup_order": _lookup_order,
}


@dataclass
class Conversation:
    messages: list[dict[str, Any]] = field(default_factory=list)

    def add(self, role: str, *parts: dict[str, Any]) -> None:
        self.messages.append({"role": role, "parts": list(parts)})


def run_agent(
    tracer: Tracer,
    model: ScriptedModel,
    ticket: str = "Hi, I was charged twice for order #10482. Please refund one of the charges. — Dana",
    *,
    clock: Clock | None = None,
    max_turns: int = 6,
    retries: int = 2,
) -> str:
    """Run the agent loop; the root span fails when the agent gives up (and says why)."""
    clock = clock or Clock()
    convo = Conversation()
    convo.add("system", {"type": "text", "content": "You are a support agent. Refund duplicate charges."})
    convo.add("user", {"type": "text", "content": ticket})
    with timed_span(
        tracer,
        clock,
        f"invoke_agent {AGENT}",
        SpanKind.INTERNAL,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": AGENT,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": MODEL,
        },
    ) as root:
        try:
            answer = _loop(tracer, clock, model, convo, max_turns, retries)
        except AgentGaveUp as exc:
            root.set_attribute("gen_ai.output.messages", json.dumps(convo.messages[-1:]))
            # Without its traceback: the recording must not depend on where the repository is checked out.
            root.record_exception(exc.with_traceback(None), timestamp=clock.now_ns)
            root.set_status(Status(StatusCode.ERROR, str(exc)))
            return str(exc)
        root.set_attribute("gen_ai.output.messages", json.dumps(convo.messages[-1:]))
        return answer


def _loop(tracer: Tracer, clock: Clock, model: ScriptedModel, convo: Conversation, max_turns: int, retries: int) -> str:
    failures: list[str] = []
    for _ in range(max_turns):
        reply = _chat(tracer, clock, model, convo, retries)
        if not reply.tool_calls:
            if failures:
                raise AgentGaveUp(f"refund not issued: {failures[-1]}")
            return reply.text
        for n, (name, arguments) in enumerate(reply.tool_calls):
            call_id = f"toolu_{model.calls:02d}{n}"
            result = _tool(tracer, clock, name, call_id, arguments)
            convo.add("tool", {"type": "tool_call_response", "id": call_id, "response": result})
            if result.get("isError"):
                failures.append(f"{name} failed: {result['content'][0]['text']}")
    raise AgentGaveUp(f"max turns ({max_turns}) reached")


def _chat(tracer: Tracer, clock: Clock, model: ScriptedModel, convo: Conversation, retries: int) -> Reply:
    for attempt in range(retries + 1):
        with timed_span(
            tracer,
            clock,
            f"chat {MODEL}",
            SpanKind.CLIENT,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.request.model": MODEL,
                "gen_ai.request.max_tokens": 1024,
                "gen_ai.input.messages": json.dumps(convo.messages),
            },
        ) as span:
            reply = model.answer()
            clock.advance(reply.latency_ms)
            if reply.error is not None:
                span.set_attribute("error.type", "overloaded_error")
                span.set_attribute("http.response.status_code", 529)
                span.record_exception(Overloaded(reply.error), timestamp=clock.now_ns)
                span.set_status(Status(StatusCode.ERROR, reply.error))
                if attempt == retries:
                    raise AgentGaveUp(f"the model failed: {reply.error}")
                clock.advance(1000)  # the client's back-off before it retries
                continue
            parts: list[dict[str, Any]] = []
            if reply.text:
                parts.append({"type": "text", "content": reply.text})
            for n, (name, arguments) in enumerate(reply.tool_calls):
                parts.append(
                    {"type": "tool_call", "id": f"toolu_{model.calls:02d}{n}", "name": name, "arguments": arguments}
                )
            finish = "tool_call" if reply.tool_calls else "stop"
            span.set_attribute("gen_ai.response.model", MODEL)
            span.set_attribute("gen_ai.response.finish_reasons", [finish])
            span.set_attribute("gen_ai.usage.input_tokens", reply.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", reply.output_tokens)
            message = {"role": "assistant", "parts": parts, "finish_reason": finish}
            span.set_attribute("gen_ai.output.messages", json.dumps([message]))
            convo.messages.append({"role": "assistant", "parts": parts})
            return reply
    raise AgentGaveUp("the model never answered")


def _tool(tracer: Tracer, clock: Clock, name: str, call_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    with timed_span(
        tracer,
        clock,
        f"execute_tool {name}",
        SpanKind.INTERNAL,
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": json.dumps(arguments),
        },
    ) as span:
        result = TOOLS[name](arguments)
        clock.advance(40)
        span.set_attribute("gen_ai.tool.call.result", json.dumps(result))
        return result


class Collect(SpanExporter):
    """Keeps exported spans in memory, in export order (children before their parents, as the SDK sends)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class CountingIds(IdGenerator):
    """Ids from a counter: a recording made twice is the same bytes (the shipped demo is reproducible)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.count = 0

    def generate_span_id(self) -> int:
        self.count += 1
        return ((self.seed << 16) + self.count) & (2**64 - 1)

    def generate_trace_id(self) -> int:
        return ((self.seed << 80) + 0x0A6E7) & (2**128 - 1)


def provider(exporter: SpanExporter, service: str = SERVICE, ids: IdGenerator | None = None) -> TracerProvider:
    attributes = {"service.name": service}
    if ids is not None:
        attributes["service.instance.id"] = "demo"  # else a random one per process
    tracer_provider = TracerProvider(resource=Resource.create(attributes), id_generator=ids)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def record_refund_run(start_ns: int | None = None) -> dict[str, Any]:
    """Run the refund agent once and return its spans as one OTLP/JSON export body (hex ids)."""
    from google.protobuf import json_format

    collected = Collect()
    tracer_provider = provider(collected, ids=CountingIds(0x6D6F6C6172) if start_ns is not None else None)
    clock = Clock() if start_ns is None else Clock(start_ns)
    run_agent(tracer_provider.get_tracer("molar.demo.agent"), ScriptedModel(list(REFUND_SCRIPT)), clock=clock)
    tracer_provider.shutdown()
    body: dict[str, Any] = json_format.MessageToDict(encode_spans(collected.spans))
    _ids_to_hex(body)
    return body


def _ids_to_hex(node: Any) -> None:
    """The protobuf JSON mapping writes ids as base64; OTLP/JSON writes them as hex."""
    import base64

    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _ids_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _ids_to_hex(item)
