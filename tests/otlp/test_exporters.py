"""Real exporters against a real `molar-mcp serve` with an API key: the OpenTelemetry SDK's OTLP/HTTP
protobuf exporter (plain and gzip) configured by the standard environment variables alone, and a real
instrumentation library (OpenInference for the `openai` client) around an agent loop whose tool fails;
then the MCP tools name the failing tool call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import openai
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OfficialOpenAIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from molar_mcp.demo.agent_run import REFUND_SCRIPT, ScriptedModel, run_agent
from tests.otlp.openai_server import ScriptedOpenAI, text_reply, tool_call_reply
from tests.servers import Served, start_auth_server, stop_server

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@dataclass
class OtlpServed:
    served: Served
    key: str  # write, read, debug
    read_key: str

    @property
    def base(self) -> str:
        return self.served.base_url


@pytest.fixture(scope="module")
def otlp_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtlpServed]:
    keys: dict[str, str | tuple[str, str]] = {
        "write": "mcp:trace:read mcp:trace:write mcp:debug",
        "read": "mcp:trace:read",
    }
    started = start_auth_server(tmp_path_factory.mktemp("otlp") / "data", "--otlp-quiet-seconds", "2", keys=keys)
    try:
        yield OtlpServed(started.served, started.keys["write"], started.keys["read"])
    finally:
        stop_server(started.served)


def tracer_provider(monkeypatch: pytest.MonkeyPatch, srv: OtlpServed, service: str, gzip: bool) -> TracerProvider:
    """The SDK configured as an agent developer would: the standard OTLP environment variables only."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.base + "/otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{srv.key}")
    if gzip:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # Small batches: the run arrives over several requests, children before their parents.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), max_export_batch_size=3))
    return provider


async def agent_trace(srv: OtlpServed, scenario: str) -> dict[str, Any]:
    """The run's trace once it has finished (right after the export that completed it was answered)."""
    async with httpx2.AsyncClient(base_url=srv.base, headers={"authorization": f"Bearer {srv.key}"}) as http:
        with anyio.fail_after(10):
            while True:
                params = {"source": "agent", "scenario": scenario}
                items = (await http.get("/v1/traces", params=params)).json()["items"]
                assert len(items) == 1, items
                if items[0]["status"] != "running":
                    return dict(items[0])
                await anyio.sleep(0.05)


async def call_tool(srv: OtlpServed, name: str, arguments: dict[str, Any]) -> Any:
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {srv.key}"}, timeout=60.0) as http,
        Client(streamable_http_client(srv.base + "/mcp", http_client=http), cache=None) as client,
    ):
        result = await client.call_tool(name, arguments)
    assert not result.is_error, result
    return result


@pytest.mark.parametrize("gzip", [False, True])
async def test_the_sdk_exporter_sends_an_agent_run_that_debug_run_explains(
    otlp_served: OtlpServed, monkeypatch: pytest.MonkeyPatch, gzip: bool
) -> None:
    service = f"support-desk-{'gzip' if gzip else 'plain'}"
    provider = tracer_provider(monkeypatch, otlp_served, service, gzip)
    run_agent(provider.get_tracer("tests.otlp"), ScriptedModel(list(REFUND_SCRIPT)))
    assert provider.force_flush(30_000)
    provider.shutdown()
    trace = await agent_trace(otlp_served, f"{service}.refund-agent")
    # The root arrived last with every parent before it: finished at once, no quiet period needed.
    assert trace["status"] == "failed"
    assert trace["failure_signature"] == "step-4: tool lookup_order is_error"
    debug = await call_tool(otlp_served, "debug_run", {"trace_id": trace["short_id"]})
    text = debug.content[0].text
    assert "lookup_order" in text
    assert "step 4" in text.lower()
    assert "no order with id '#10482'" in text


async def test_an_export_needs_a_key_that_may_write(otlp_served: OtlpServed) -> None:
    async with httpx2.AsyncClient(base_url=otlp_served.base) as http:
        anonymous = await http.post("/otlp/v1/traces", content=b"", headers={"content-type": "application/x-protobuf"})
        read_only = await http.post(
            "/otlp/v1/traces",
            content=b"",
            headers={"content-type": "application/x-protobuf", "authorization": f"Bearer {otlp_served.read_key}"},
        )
    assert anonymous.status_code == 401
    assert "www-authenticate" in anonymous.headers
    assert read_only.status_code == 403
    assert "mcp:trace:write" in read_only.text


ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order by id",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
}


def lookup_order(arguments: dict[str, Any]) -> str:
    # The tool catches its own failure and hands the text to the model, as many agent tools do.
    return f"Error: no order with id {arguments['order_id']!r}"


def openai_agent(client: openai.OpenAI, provider: TracerProvider, max_turns: int = 4) -> str:
    """A plain agent loop over the openai client; the tool spans and the run span are the agent's own
    (OpenInference conventions), the model spans come from the instrumentation."""
    tracer = provider.get_tracer("tests.openai_agent")
    messages: list[Any] = [{"role": "user", "content": "Refund order 10482, it was charged twice."}]
    with tracer.start_as_current_span(
        "support agent", attributes={"openinference.span.kind": "AGENT", "agent.name": "openai-support"}
    ) as run:
        for _ in range(max_turns):
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[ORDER_TOOL])
            message = reply.choices[0].message
            if not message.tool_calls:
                run.set_attribute("output.value", message.content or "")
                run.set_status(Status(StatusCode.ERROR, "the refund was not issued"))
                return message.content or ""
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                arguments = json.loads(call.function.arguments)
                with tracer.start_as_current_span(
                    f"tool {call.function.name}",
                    attributes={
                        "openinference.span.kind": "TOOL",
                        "tool.name": call.function.name,
                        "input.value": call.function.arguments,
                    },
                ) as span:
                    result = lookup_order(arguments)
                    span.set_attribute("output.value", result)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        run.set_status(Status(StatusCode.ERROR, f"max turns ({max_turns}) reached"))
        return ""


async def test_openinference_spans_of_a_real_openai_client_name_the_failing_tool_call(
    otlp_served: OtlpServed, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedOpenAI(
        [
            tool_call_reply("call_1", "lookup_order", '{"order_id": "#10482"}'),
            text_reply("I could not find order #10482, so I cannot refund it."),
        ]
    )
    provider = tracer_provider(monkeypatch, otlp_served, "openai-agent", gzip=False)
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with model.serve() as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="sk-local", max_retries=0)
            final = openai_agent(client, provider)
    finally:
        instrumentor.uninstrument()
    assert final.startswith("I could not find")
    assert provider.force_flush(30_000)
    provider.shutdown()
    trace = await agent_trace(otlp_served, "openai-agent.openai-support")
    assert trace["status"] == "failed"
    view = await call_tool(otlp_served, "get_trace", {"trace_id": trace["short_id"]})
    shown = json.dumps(view.structured_content)
    assert "lookup_order" in shown
    # The run reads as a conversation: the model, its tokens, the failing call with its arguments and result.
    conversation = view.structured_content["conversation"]
    assert [(c["kind"], c["name"], c["ok"]) for c in conversation["calls"]] == [
        ("model", "gpt-4o-mini-2024-07-18", True),
        ("tool", "lookup_order", False),
        ("model", "gpt-4o-mini-2024-07-18", True),
    ]
    assert conversation["calls"][1]["arguments"] == '{"order_id":"#10482"}'
    assert "Error: no order with id '#10482'" in conversation["calls"][1]["said"]
    assert conversation["last_output"] == "I could not find order #10482, so I cannot refund it."
    assert conversation["input_tokens"] > 0
    assert view.structured_content["failure"]["step"] == 2
    debug = await call_tool(otlp_served, "debug_run", {"trace_id": trace["short_id"]})
    text = debug.content[0].text
    assert "lookup_order" in text
    assert "Error: no order with id '#10482'" in text
    assert '"order_id": "#10482"' in text


async def test_the_official_openai_instrumentation_with_messages_as_log_records_names_the_failing_tool_call(
    otlp_served: OtlpServed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`opentelemetry-instrumentation-openai-v2` puts the model call on a span and, with content capture
    `EVENT_ONLY`, its messages in a log record (the Logs API, `gen_ai.client.inference.operation.details`)
    that carries the span's ids: sent to `/otlp/v1/logs`, they become the model call's messages — here
    after the run had finished."""
    model = ScriptedOpenAI(
        [
            tool_call_reply("call_1", "lookup_order", '{"order_id": "#10482"}'),
            text_reply("I could not find order #10482, so I cannot refund it."),
        ]
    )
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    provider = tracer_provider(monkeypatch, otlp_served, "openai-v2-agent", gzip=False)
    logs = LoggerProvider(resource=Resource.create({"service.name": "openai-v2-agent"}))
    logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    instrumentor = OfficialOpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, logger_provider=logs)
    try:
        with model.serve() as base_url:
            client = openai.OpenAI(base_url=base_url, api_key="sk-local", max_retries=0)
            final = openai_agent(client, provider)
    finally:
        instrumentor.uninstrument()
    assert final.startswith("I could not find")
    assert provider.force_flush(30_000)  # the spans first: the run finishes before its messages arrive
    provider.shutdown()
    trace = await agent_trace(otlp_served, "openai-v2-agent.openai-support")
    assert trace["status"] == "failed"
    assert logs.force_flush(30_000)
    logs.shutdown()
    async with httpx2.AsyncClient(
        base_url=otlp_served.base, headers={"authorization": f"Bearer {otlp_served.key}"}
    ) as http:
        events = (await http.get(f"/v1/traces/{trace['id']}/events", params={"limit": 1000})).json()["events"]
    requests = [e for e in events if e["kind"] == "llm.request"]
    responses = [e for e in events if e["kind"] == "llm.response"]
    assert [e["payload"]["model"] for e in requests] == ["gpt-4o-mini", "gpt-4o-mini"]
    # The messages came as log records of each model call's span.
    assert requests[0]["payload"]["last_messages"] == [
        {"role": "user", "content": "Refund order 10482, it was charged twice."}
    ]
    second = requests[1]["payload"]["last_messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool"]
    assert second[1]["tool_calls"][0]["name"] == "lookup_order"
    assert second[2]["content"] == "Error: no order with id '#10482'"
    assert responses[0]["payload"]["tool_calls"][0]["name"] == "lookup_order"
    assert responses[1]["payload"]["text"] == "I could not find order #10482, so I cannot refund it."
    debug = await call_tool(otlp_served, "debug_run", {"trace_id": trace["short_id"]})
    text = debug.content[0].text
    assert "lookup_order" in text
    assert "Error: no order with id '#10482'" in text


async def test_log_records_without_their_span_ids_are_refused_by_partial_success(otlp_served: OtlpServed) -> None:
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "loose-logs"}}]},
                "scopeLogs": [{"logRecords": [{"timeUnixNano": "1795170900000000000", "body": {"stringValue": "hi"}}]}],
            }
        ]
    }
    async with httpx2.AsyncClient(
        base_url=otlp_served.base, headers={"authorization": f"Bearer {otlp_served.key}"}
    ) as http:
        answer = await http.post(
            "/otlp/v1/logs", content=json.dumps(body), headers={"content-type": "application/json"}
        )
        unreadable = await http.post(
            "/otlp/v1/logs", content=b"\x0a\xff", headers={"content-type": "application/x-protobuf"}
        )
    assert answer.status_code == 200
    assert answer.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "trace_id of its span" in answer.json()["partialSuccess"]["errorMessage"]
    assert unreadable.status_code == 400
