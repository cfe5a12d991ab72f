"""OTLP bodies from real SDK spans: an agent run recorded with the OpenTelemetry SDK, encoded by the
exporter's own encoder (protobuf) or as OTLP/JSON (hex ids), sent to the in-process /otlp route."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import httpx2
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from molar_mcp.demo.agent_run import REFUND_SCRIPT, Clock, Collect, ScriptedModel, provider, run_agent, timed_span

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PATH = "/otlp/v1/traces"
START_NS = 1_795_170_900_000_000_000


def record(body: Callable[[Tracer, Clock], Any], service: str = "support-desk") -> list[ReadableSpan]:
    """Run `body` under a real SDK tracer; the spans in the order the SDK exported them (children first)."""
    collected = Collect()
    tracer_provider = provider(collected, service)
    body(tracer_provider.get_tracer("tests.otlp"), Clock(START_NS))
    tracer_provider.shutdown()
    return collected.spans


def refund_run() -> list[ReadableSpan]:
    return record(lambda tracer, clock: run_agent(tracer, ScriptedModel(list(REFUND_SCRIPT)), clock=clock))


def nested_run(tracer: Tracer, clock: Clock) -> None:
    """root → turn (→ chat, tool that raises) → second turn (→ chat): a tree three levels deep."""
    with timed_span(
        tracer, clock, "invoke_agent planner", SpanKind.INTERNAL, {"gen_ai.operation.name": "invoke_agent"}
    ):
        with timed_span(tracer, clock, "turn 1", SpanKind.INTERNAL, {}):
            with timed_span(
                tracer,
                clock,
                "chat gpt-4o",
                SpanKind.CLIENT,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 100,
                },
            ):
                clock.advance(800)
            with timed_span(
                tracer,
                clock,
                "execute_tool search",
                SpanKind.INTERNAL,
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "search",
                    "gen_ai.tool.call.arguments": '{"q": "refund policy"}',
                },
            ) as tool:
                tool.record_exception(ValueError("index offline"), timestamp=clock.advance(30))
                tool.set_status(Status(StatusCode.ERROR, "index offline"))
        with (
            timed_span(tracer, clock, "turn 2", SpanKind.INTERNAL, {}),
            timed_span(
                tracer,
                clock,
                "chat gpt-4o",
                SpanKind.CLIENT,
                {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
            ),
        ):
            clock.advance(500)


def logged_run(service: str = "support-desk") -> tuple[list[ReadableSpan], list[ReadableLogRecord]]:
    """root → two model calls whose messages go out as log records (the Logs API, as GenAI
    instrumentations send them with content capture on): the spans (children first) and the records."""
    collected = Collect()
    tracer_provider = provider(collected, service)
    kept = InMemoryLogRecordExporter()
    logs = LoggerProvider(resource=Resource.create({"service.name": service}))
    logs.add_log_record_processor(SimpleLogRecordProcessor(kept))
    logger = logs.get_logger("tests.otlp")
    tracer, clock = tracer_provider.get_tracer("tests.otlp"), Clock(START_NS)
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    with timed_span(tracer, clock, "invoke_agent helper", SpanKind.INTERNAL, {"gen_ai.operation.name": "invoke_agent"}):
        with timed_span(tracer, clock, "chat gpt-4o", SpanKind.CLIENT, chat):
            user = {"content": "Find the refund policy."}
            logger.emit(timestamp=clock.advance(1), event_name="gen_ai.user.message", body=user)
            clock.advance(300)
        with timed_span(tracer, clock, "chat gpt-4o", SpanKind.CLIENT, chat):
            user = {"content": "And the refund window?"}
            logger.emit(timestamp=clock.advance(1), event_name="gen_ai.user.message", body=user)
            answer = {"role": "assistant", "content": "Here is the policy: 30 days."}
            choice = {"index": 0, "finish_reason": "stop", "message": answer}
            logger.emit(timestamp=clock.advance(300), event_name="gen_ai.choice", body=choice)
    tracer_provider.shutdown()
    logs.shutdown()
    return collected.spans, list(kept.get_finished_logs())


def records_of(records: Sequence[ReadableLogRecord], span: ReadableSpan) -> list[ReadableLogRecord]:
    return [r for r in records if span.context is not None and r.log_record.span_id == span.context.span_id]


async def post_logs(http: httpx2.AsyncClient, records: Sequence[ReadableLogRecord]) -> httpx2.Response:
    body = bytes(encode_logs(records).SerializeToString())
    return await http.post("/otlp/v1/logs", content=body, headers={"content-type": PROTOBUF})


def protobuf(spans: Sequence[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializeToString())


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """OTLP/JSON: the protobuf JSON mapping with hex ids (OTLP spec, JSON Protobuf Encoding)."""
    body: dict[str, Any] = json_format.MessageToDict(encode_spans(spans))

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(body)
    return body


async def post_protobuf(http: httpx2.AsyncClient, spans: Sequence[ReadableSpan]) -> httpx2.Response:
    return await http.post(PATH, content=protobuf(spans), headers={"content-type": PROTOBUF})


async def post_json(http: httpx2.AsyncClient, body: Any) -> httpx2.Response:
    return await http.post(PATH, content=json.dumps(body), headers={"content-type": JSON})


async def only_trace(http: httpx2.AsyncClient) -> dict[str, Any]:
    items = (await http.get("/v1/traces", params={"source": "agent"})).json()["items"]
    assert len(items) == 1, items
    return dict(items[0])


async def settled_trace(http: httpx2.AsyncClient) -> dict[str, Any]:
    """The only agent trace once it is no longer `running`: a completed trace finishes right after the
    export's answer (off the request's path), so a reader may ask before it has (10 s at most)."""
    with anyio.fail_after(10):
        trace = await only_trace(http)
        while trace["status"] == "running":
            await anyio.sleep(0.02)
            trace = await only_trace(http)
    return trace


async def events_of(http: httpx2.AsyncClient, trace_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/v1/traces/{trace_id}/events", params={"limit": 1000})
    return list(response.json()["events"])


async def follow(
    http: httpx2.AsyncClient,
    trace_id: str,
    seen: list[dict[str, Any]],
    ended: list[str] | None = None,
    each: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> None:
    """Read a trace's SSE stream: its events into `seen`, until the `end` event (its data into `ended`) or
    until `each(seen)`, called after every event, says to stop."""
    async with http.stream("GET", f"/v1/traces/{trace_id}/stream") as response:
        async for sse in httpx2.EventSource(response):
            if sse.event == "end":
                if ended is not None:
                    ended.append(sse.data)
                return
            seen.append(sse.json())
            if each is not None and each(seen):
                return
