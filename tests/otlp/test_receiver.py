"""The OTLP/HTTP receiver in process: bodies from real SDK spans, protobuf and OTLP/JSON, gzip, and the
OTLP answers (ExportTraceServiceResponse, partial_success, google.rpc.Status)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx2
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from molar_mcp.compose import Embedded
from tests.otlp.support import (
    JSON,
    PATH,
    PROTOBUF,
    events_of,
    nested_run,
    otlp_json,
    post_json,
    post_protobuf,
    protobuf,
    record,
    refund_run,
    settled_trace,
)

pytestmark = pytest.mark.anyio


def steps_by_title(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["title"]: s for s in detail["steps"]}


async def test_a_protobuf_export_of_an_agent_run_becomes_one_finished_agent_trace(http: httpx2.AsyncClient) -> None:
    response = await post_protobuf(http, refund_run())
    assert response.status_code == 200
    assert response.headers["content-type"] == PROTOBUF
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert not answer.HasField("partial_success")
    trace = await settled_trace(http)
    # The root span ended and every span's parent arrived: finished at once (right after the answer),
    # detectors run; no quiet period waited for.
    assert trace["status"] == "failed"
    assert trace["source"] == "agent"
    assert trace["scenario_slug"] == "support-desk.refund-agent"
    assert trace["duration_ms"] == 9375
    assert trace["failure_signature"] == "step-4: tool lookup_order is_error"
    events = await events_of(http, trace["id"])
    kinds = [e["kind"] for e in events]
    assert kinds.count("llm.request") == 5
    assert kinds.count("tool.call") == 3
    response_ = next(e for e in events if e["kind"] == "llm.response")
    assert response_["payload"]["usage"] == {"input_tokens": 1840, "output_tokens": 61}
    assert response_["payload"]["cost_usd"] == pytest.approx((1840 * 3 + 61 * 15) / 1e6)
    assert response_["payload"]["tool_calls"][0]["name"] == "get_customer"
    failing = next(e for e in events if e["kind"] == "tool.result" and e["ok"] is False)
    assert failing["step"] == 4
    assert failing["payload"]["tool"] == "lookup_order"
    assert failing["payload"]["error"] == {"type": "is_error", "message": "no order with id '#10482'"}
    call = next(e for e in events if e["kind"] == "tool.call" and e["step"] == 4)
    assert call["payload"]["arguments"] == {"order_id": "#10482"}
    request = next(e for e in events if e["kind"] == "llm.request")
    assert [m["role"] for m in request["payload"]["last_messages"]] == ["system", "user"]


async def test_otlp_json_with_hex_ids_gives_the_same_trace_as_protobuf(embedded: Embedded, tmp_path: Any) -> None:
    spans = refund_run()
    from molar_mcp.compose import open_embedded

    with open_embedded(tmp_path / "other") as other:
        async with embedded.client_factory()() as a, other.client_factory()() as b:
            by_json = await post_json(a._http, otlp_json(spans))
            by_proto = await post_protobuf(b._http, spans)
            assert by_json.status_code == by_proto.status_code == 200
            assert by_json.headers["content-type"] == JSON
            assert by_json.json() == {}
            left = await events_of(a._http, (await settled_trace(a._http))["id"])
            right = await events_of(b._http, (await settled_trace(b._http))["id"])
    assert left == right


async def test_spans_are_nested_steps_with_categories_and_the_tree_survives_any_arrival_order(
    http: httpx2.AsyncClient,
) -> None:
    spans = record(nested_run)
    # Parents last (as the SDK exports), one span a request, and the tool's request sent twice.
    for span in [*spans, spans[1]]:
        assert (await post_protobuf(http, [span])).status_code == 200
    trace = await settled_trace(http)
    detail = (await http.get(f"/v1/traces/{trace['id']}")).json()
    events = await events_of(http, trace["id"])
    starts = {e["payload"]["title"]: e["payload"] for e in events if e["kind"] == "step.start"}
    # The root is the run; its children are top-level steps; deeper spans name their parent.
    assert "invoke_agent planner" not in starts
    assert "parent_step_id" not in starts["turn 1"]
    turn1 = next(e["step_id"] for e in events if e["kind"] == "step.start" and e["payload"]["title"] == "turn 1")
    assert starts["execute_tool search"]["parent_step_id"] == turn1
    assert starts["execute_tool search"]["category"] == "tool"
    assert starts["chat gpt-4o"]["category"] == "llm"
    assert [e["step"] for e in events if e["kind"] == "step.start"] == [1, 1, 1, 2, 2]
    assert len(detail["steps"]) >= 2
    error = next(e for e in events if e["kind"] == "error")
    assert error["message"] == "ValueError: index offline"
    assert trace["status"] == "passed"  # the root span did not fail: the agent went on
    # The same spans sent in one request give the same events: arrival order does not matter.
    from molar_mcp.ingest.formats.agent_spans import trace_events
    from molar_mcp.ingest.formats.otlp import decode_protobuf, decode_spans

    laid = trace_events(decode_spans(decode_protobuf(protobuf(spans))).spans)
    assert [(e["kind"], e["step_id"], e["seq"]) for e in events] == [(e.kind, e.step_id, e.seq) for e in laid]


async def test_a_gzip_body_is_read_and_a_gzip_bomb_is_refused(http: httpx2.AsyncClient) -> None:
    spans = refund_run()
    ok = await http.post(
        PATH, content=gzip.compress(protobuf(spans)), headers={"content-type": PROTOBUF, "content-encoding": "gzip"}
    )
    assert ok.status_code == 200
    bomb = gzip.compress(b"\0" * (70 * 1024 * 1024))
    refused = await http.post(PATH, content=bomb, headers={"content-type": PROTOBUF, "content-encoding": "gzip"})
    assert refused.status_code == 413
    assert "inflates to more than" in status_pb2.Status.FromString(refused.content).message
    cut = await http.post(
        PATH, content=gzip.compress(protobuf(spans))[:-20], headers={"content-type": JSON, "content-encoding": "gzip"}
    )
    assert cut.status_code == 400
    assert "gzip" in json.loads(cut.content)["message"]
    assert len((await http.get("/v1/traces", params={"source": "agent"})).json()["items"]) == 1


async def test_unreadable_bodies_are_400_with_a_status_and_other_types_415(http: httpx2.AsyncClient) -> None:
    bad_proto = await http.post(PATH, content=b"\xff\xff\xff not protobuf", headers={"content-type": PROTOBUF})
    assert bad_proto.status_code == 400
    status = status_pb2.Status.FromString(bad_proto.content)
    assert status.code == 3  # INVALID_ARGUMENT
    assert "request id" in status.message
    bad_json = await http.post(PATH, content=b'{"resourceSpans": [', headers={"content-type": JSON})
    assert bad_json.status_code == 400
    assert json.loads(bad_json.content)["message"].startswith("the body is not JSON")
    wrong_shape = await post_json(http, {"resourceSpans": {"scopeSpans": "not a list"}})
    assert wrong_shape.status_code == 400
    assert "not an OTLP/JSON ExportTraceServiceRequest" in json.loads(wrong_shape.content)["message"]
    # An unknown enum name is ignored like an unknown field; the span without ids is refused by name.
    no_ids = await post_json(http, {"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "sideways"}]}]}]})
    assert no_ids.status_code == 200
    assert no_ids.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "trace_id must be 16 bytes" in no_ids.json()["partialSuccess"]["errorMessage"]
    other = await http.post(PATH, content=b"hello", headers={"content-type": "text/plain"})
    assert other.status_code == 415
    assert other.json()["error"] == "unsupported_media_type"
    assert (await http.get("/v1/traces", params={"source": "agent"})).json()["items"] == []


async def test_spans_with_bad_ids_are_refused_by_name_and_the_others_kept(http: httpx2.AsyncClient) -> None:
    body = otlp_json(refund_run())
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["spanId"] = "abcd"  # 2 bytes
    spans[1]["traceId"] = "not-hex-at-all-not-hex-at-all-xx"
    spans[2]["kind"] = 42  # an enum value this version does not know: kept, and said so
    spans[2]["status"] = {"code": 9}
    response = await post_json(http, body)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "span_id must be 8 bytes" in partial["errorMessage"]
    assert "trace_id must be 16 bytes" in partial["errorMessage"]
    trace = await settled_trace(http)
    events = await events_of(http, trace["id"])
    cut = [e["payload"]["cut"] for e in events if e["kind"] == "step.start" and "cut" in e["payload"]]
    assert any("unknown span kind 42" in c for cuts in cut for c in cuts)
    assert any("unknown status code 9" in c for cuts in cut for c in cuts)


async def test_a_50_mb_attribute_is_cut_and_the_cut_stated(http: httpx2.AsyncClient) -> None:
    message = ExportTraceServiceRequest.FromString(protobuf(refund_run()))
    span = message.resource_spans[0].scope_spans[0].spans[0]
    kv = span.attributes.add()
    kv.key = "gen_ai.input.messages"
    kv.value.string_value = "x" * (50 * 1024 * 1024)
    response = await http.post(PATH, content=message.SerializeToString(), headers={"content-type": PROTOBUF})
    assert response.status_code == 200
    trace = await settled_trace(http)
    events = await events_of(http, trace["id"])
    start = next(e for e in events if e["kind"] == "step.start" and e["step_id"] == f"span-{span.span_id.hex()}")
    assert f"attributes gen_ai.input.messages: {50 * 1024 * 1024} chars, kept 16000" in start["payload"]["cut"]
    assert len(start["payload"]["attributes"]["gen_ai.input.messages"]) == 16_000


async def test_100000_spans_in_one_request_are_refused_whole(http: httpx2.AsyncClient) -> None:
    message = ExportTraceServiceRequest.FromString(protobuf(refund_run()))
    spans = message.resource_spans[0].scope_spans[0].spans
    one = spans[0]
    del one.attributes[:]  # small spans: the count is what is refused, not the size
    for i in range(100_000 - len(spans)):
        copy = spans.add()
        copy.CopyFrom(one)
        copy.span_id = (i + 1).to_bytes(8, "big")
    response = await http.post(PATH, content=message.SerializeToString(), headers={"content-type": PROTOBUF})
    assert response.status_code == 413
    assert "100000 spans; at most 20000" in status_pb2.Status.FromString(response.content).message
    assert (await http.get("/v1/traces", params={"source": "agent"})).json()["items"] == []


async def test_deep_recursion_in_attribute_values_is_refused_or_cut_never_a_crash(http: httpx2.AsyncClient) -> None:
    value: dict[str, Any] = {"stringValue": "bottom"}
    for _ in range(60):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    body = otlp_json(refund_run())
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append({"key": "deep", "value": value})
    response = await post_json(http, body)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        events = await events_of(http, (await settled_trace(http))["id"])
        cuts = [c for e in events if e["kind"] == "step.start" for c in e["payload"].get("cut", [])]
        assert any("nested deeper than 8 levels" in c for c in cuts)
    deeper = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused = await http.post(PATH, content=deeper, headers={"content-type": JSON})
    assert refused.status_code == 400
    proto = b"\x0a\x02" * 0 + (b"\x0a\xff\xff\x03" * 200)
    assert (await http.post(PATH, content=proto, headers={"content-type": PROTOBUF})).status_code == 400
    assert (await http.get("/healthz")).status_code == 200
