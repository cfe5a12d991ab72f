"""OTLP traces live: running while spans arrive (children first, out of order, twice), followed over SSE,
finished at once when complete, after the quiet period when not, `aborted` when the root never comes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from google.rpc import status_pb2

from molar_mcp.api.otlp import sweep
from molar_mcp.compose import Embedded, open_embedded
from molar_mcp.ingest.formats.agent_spans import trace_events
from molar_mcp.ingest.formats.otlp import decode_protobuf, decode_spans, span_ids
from molar_mcp.store import LOCAL_ORG_ID
from tests.otlp.support import (
    events_of,
    nested_run,
    only_trace,
    post_protobuf,
    protobuf,
    record,
    refund_run,
    settled_trace,
)

pytestmark = pytest.mark.anyio


async def test_a_follower_sees_the_agent_run_grow_and_end(http: httpx2.AsyncClient) -> None:
    spans = refund_run()  # export order: children first, the root last
    first, second, root = spans[:4], spans[4:-1], spans[-1:]
    assert (await post_protobuf(http, first)).status_code == 200
    trace = await only_trace(http)
    assert trace["status"] == "running"
    seen: list[dict[str, Any]] = []
    ended: list[str] = []
    backfilled = anyio.Event()

    async def follow() -> None:
        async with http.stream("GET", f"/v1/traces/{trace['id']}/stream") as response:
            async for sse in httpx2.EventSource(response):
                if sse.event == "end":
                    ended.append(sse.data)
                    return
                seen.append(sse.json())
                if len(seen) == 16:  # four spans: step.start, call, result/response, step.end each
                    backfilled.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow)
        await backfilled.wait()
        assert (await post_protobuf(http, second)).status_code == 200
        assert (await post_protobuf(http, root)).status_code == 200
    assert len(seen) > 16
    assert any(e["kind"] == "tool.result" and e["ok"] is False for e in seen[16:])
    assert ended == ['{"status": "failed"}']
    assert (await settled_trace(http))["status"] == "failed"


async def test_a_trace_with_an_open_span_finishes_after_the_quiet_period(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    spans = record(nested_run)
    turn1 = next(s for s in spans if s.name == "turn 1")
    assert (await post_protobuf(http, [s for s in spans if s is not turn1])).status_code == 200
    trace = await only_trace(http)
    assert trace["status"] == "running"  # the root ended, but "turn 1" (a parent) has not arrived
    assert await sweep(embedded.context, now=time.time() + 5) == 0
    assert await sweep(embedded.context, now=time.time() + 31) == 1
    finished = await only_trace(http)
    assert finished["status"] == "passed"
    # Later: the missing span is refused by name, a span sent again is a quiet duplicate.
    late = await post_protobuf(http, [turn1])
    assert late.status_code == 200
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    partial = ExportTraceServiceResponse.FromString(late.content).partial_success
    assert partial.rejected_spans == 1
    assert "had finished" in partial.error_message
    again = await post_protobuf(http, spans[:2])
    assert not ExportTraceServiceResponse.FromString(again.content).HasField("partial_success")
    assert (await only_trace(http))["status"] == "passed"


async def test_a_run_whose_root_never_comes_is_aborted_after_the_abandon_period(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    spans = refund_run()
    assert (await post_protobuf(http, spans[:-1])).status_code == 200
    assert await sweep(embedded.context, now=time.time() + 60) == 0
    assert (await only_trace(http))["status"] == "running"
    assert await sweep(embedded.context, now=time.time() + 601) == 1
    assert (await only_trace(http))["status"] == "aborted"


async def test_duplicated_batches_change_nothing(http: httpx2.AsyncClient) -> None:
    spans = refund_run()
    for _ in range(2):
        assert (await post_protobuf(http, spans[:5])).status_code == 200
    running = await only_trace(http)
    before = await events_of(http, running["id"])
    assert (await post_protobuf(http, spans[2:5])).status_code == 200
    assert await events_of(http, running["id"]) == before
    assert (await post_protobuf(http, spans)).status_code == 200
    assert (await settled_trace(http))["status"] == "failed"
    # Finished: exactly the events of the spans laid out once, whatever came twice.
    laid = trace_events(decode_spans(decode_protobuf(protobuf(spans))).spans)
    assert [(e["seq"], e["kind"], e["step_id"]) for e in await events_of(http, running["id"])] == [
        (e.seq, e.kind, e.step_id) for e in laid
    ]
    assert (await only_trace(http))["status"] == "failed"


async def test_spans_waiting_past_the_bound_are_answered_503_with_retry_after_and_nothing_is_stored(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    spans = refund_run()
    embedded.context.otlp_settings.max_pending_spans = len(spans) - 1
    refused = await post_protobuf(http, spans)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "spans are waiting to be read" in status_pb2.Status.FromString(refused.content).message
    assert (await http.get("/v1/traces", params={"source": "agent"})).json()["items"] == []
    embedded.context.otlp_settings.max_pending_spans = len(spans)
    assert (await post_protobuf(http, spans)).status_code == 200  # the exporter's retry is taken
    assert (await settled_trace(http))["status"] == "failed"


async def test_a_batch_taken_but_left_unread_is_read_after_a_restart(
    embedded: Embedded, engine: dict[str, str], tmp_path: Path
) -> None:
    spans = refund_run()
    message = decode_protobuf(protobuf(spans))
    ids = span_ids(message)
    # Taken (ids and body stored, answered) but not read yet: as when the server stops right after answering.
    traces = [(t, "support-desk.run", "support-desk: run", s) for t, s in ids.traces.items()]
    outcomes, batch = embedded.context.otlp.accept(LOCAL_ORG_ID, protobuf(spans), traces, int(time.time() * 1000))
    assert batch is not None
    assert batch.spans == len(spans) == outcomes[0].stored_spans
    # The server that took it is gone; another one opens the same store (a restart, or a replica).
    with open_embedded(tmp_path / "data", **engine) as again:
        assert again.context.otlp.pending_spans == len(spans)  # the bound counts what was left unread
        async with again.client_factory()() as client:
            trace = await only_trace(client._http)
            assert trace["status"] == "running"
            assert await events_of(client._http, trace["id"]) == []
            await sweep(again.context)  # the sweeper (every second in `serve`) reads what is waiting first
            finished = await only_trace(client._http)
            assert (finished["status"], finished["scenario_slug"]) == ("failed", "support-desk.refund-agent")
            laid = trace_events(decode_spans(message).spans)
            assert [(e["seq"], e["kind"]) for e in await events_of(client._http, trace["id"])] == [
                (e.seq, e.kind) for e in laid
            ]
        assert again.context.otlp.pending_spans == 0


async def test_an_export_above_the_inline_size_is_read_after_the_answer_and_followers_see_it(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    embedded.context.otlp_settings.inline_spans = 0  # every export is read after its answer
    spans = refund_run()
    assert (await post_protobuf(http, spans[:4])).status_code == 200
    trace = await only_trace(http)
    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        async with http.stream("GET", f"/v1/traces/{trace['id']}/stream") as response:
            async for sse in httpx2.EventSource(response):
                if sse.event == "end":
                    return
                seen.append(sse.json())

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow)
        assert (await post_protobuf(http, spans[4:])).status_code == 200
    assert {e["step_id"] for e in seen if e["kind"] == "step.start"} >= {
        f"span-{s.context.span_id:016x}" for s in spans[:4]
    }
    assert any(e["kind"] == "tool.result" and e["ok"] is False for e in seen)
    assert (await settled_trace(http))["status"] == "failed"


async def test_kept_bodies_are_forgotten_after_the_late_period_and_later_log_records_are_refused(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    ctx = embedded.context
    spans = refund_run()
    assert (await post_protobuf(http, spans)).status_code == 200
    trace = await settled_trace(http)
    otel_trace_id = f"{spans[0].context.trace_id:032x}"
    assert ctx.otlp.stored_spans(LOCAL_ORG_ID, otel_trace_id)[0]  # kept: late log records can still join
    await sweep(ctx, now=time.time() + 30)
    assert ctx.otlp.stored_spans(LOCAL_ORG_ID, otel_trace_id)[0]
    await sweep(ctx, now=time.time() + ctx.otlp_settings.late_logs_seconds + 1)
    assert ctx.otlp.stored_spans(LOCAL_ORG_ID, otel_trace_id)[0] == []
    ctx.otlp_settings.late_logs_seconds = 0  # any record after the finish is now too late
    record = {
        "traceId": otel_trace_id,
        "spanId": f"{spans[0].context.span_id:016x}",
        "timeUnixNano": str(spans[0].end_time),
        "eventName": "gen_ai.choice",
        "body": {"kvlistValue": {"values": [{"key": "finish_reason", "value": {"stringValue": "stop"}}]}},
    }
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
    late = await http.post("/otlp/v1/logs", content=json.dumps(body), headers={"content-type": "application/json"})
    assert late.status_code == 200
    assert late.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "had finished before they arrived" in late.json()["partialSuccess"]["errorMessage"]
    assert (await only_trace(http))["id"] == trace["id"]
