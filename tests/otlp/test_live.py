"""OTLP traces live: running while spans arrive (children first, out of order, twice), followed over SSE,
finished at once when complete, after the quiet period when not, `aborted` when the root never comes."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx2
import pytest

from molar_mcp.api.otlp import sweep
from molar_mcp.compose import Embedded
from molar_mcp.ingest.formats.agent_spans import trace_events
from molar_mcp.ingest.formats.otlp import decode_protobuf, decode_spans
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
