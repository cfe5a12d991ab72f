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
from mcp.client import Client

from molar_mcp.api.bus import LiveBus
from molar_mcp.api.otlp import convert_pending, finish_otel_trace, sweep
from molar_mcp.compose import Embedded, open_embedded
from molar_mcp.ingest.formats.agent_spans import trace_events
from molar_mcp.ingest.formats.otlp import decode_protobuf, decode_spans, span_ids
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.store import LOCAL_ORG_ID
from tests.otlp.support import (
    events_of,
    follow,
    logged_run,
    nested_run,
    only_trace,
    post_logs,
    post_protobuf,
    protobuf,
    record,
    records_of,
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

    def backfill(seen: list[dict[str, Any]]) -> bool:
        if len(seen) == 16:  # four spans: step.start, call, result/response, step.end each
            backfilled.set()
        return False

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow, http, trace["id"], seen, ended, backfill)
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

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow, http, trace["id"], seen)
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


def _expected(spans: list[Any]) -> list[tuple[Any, ...]]:
    """The events of these spans laid out at once (`trace_events`), as the store keeps them: an error is
    a failure, steps numbered by the store's rules (docs/bundle-format.md, "Steps")."""
    from molar_mcp.store.steps import StepTree

    tree = StepTree()
    out = []
    for e in trace_events(decode_spans(decode_protobuf(protobuf(spans))).spans):
        ok = False if e.ok is None and e.kind == "error" else e.ok
        node = tree.number(e.step_id, e.kind, e.payload)
        payload = json.loads(json.dumps(e.payload))
        out.append((e.seq, e.ts, e.kind, e.step_id, None if node is None else node.step, ok, e.message, payload))
    return out


def _stored(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (e["seq"], e["ts"], e["kind"], e["step_id"], e["step"], e["ok"], e["message"], e["payload"]) for e in events
    ]


async def _trace_of(http: httpx2.AsyncClient, embedded: Embedded, spans: list[Any]) -> dict[str, Any]:
    """The finished trace of these spans (several traces are in the store)."""
    kept = embedded.context.otlp.kept(LOCAL_ORG_ID, f"{spans[0].context.trace_id:032x}")
    assert kept is not None
    with anyio.fail_after(10):
        while (trace := (await http.get(f"/v1/traces/{kept.trace_id}")).json())["status"] == "running":  # noqa: ASYNC110 (the finish runs after the answer)
            await anyio.sleep(0.02)
    return dict(trace)


async def test_spans_in_any_order_over_many_exports_finish_as_the_events_of_one_export(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    """The finish moves the events shown live into the span-tree order and makes again only the spans
    they showed otherwise (a child that came before its parent): whatever the order, the batching and
    the duplicates, the finished trace is the one the same spans give in one export."""
    import random

    for seed in range(5):
        spans = record(nested_run)
        inner = [s for s in spans if s.parent is not None]  # the root ends last, so it is exported last
        if seed == 1:
            inner.reverse()  # parents before their children
        elif seed > 1:
            random.Random(seed).shuffle(inner)
        order = [*inner, *(s for s in spans if s.parent is None)]
        cuts = sorted(random.Random(seed).sample(range(1, len(order)), 2))
        batches = [order[: cuts[0]], order[cuts[0] : cuts[1]], order[cuts[1] :]]
        for i, batch in enumerate(batches):
            assert (await post_protobuf(http, batch)).status_code == 200
            if i == 1:  # and the first batch again: duplicates change nothing
                assert (await post_protobuf(http, batches[0])).status_code == 200
        trace = await _trace_of(http, embedded, spans)
        assert trace["status"] == "passed"
        events = await events_of(http, trace["id"])
        assert _stored(events) == _expected(spans), f"order {seed}"
        assert trace["event_count"] == len(events)
        steps = (await http.get(f"/v1/traces/{trace['id']}")).json()["steps"]
        assert [(s["path"], s["title"]) for s in steps] == [
            ("1", "turn 1"),
            ("1.1", "chat gpt-4o"),
            ("1.2", "execute_tool search"),
            ("2", "turn 2"),
            ("2.1", "chat gpt-4o"),
        ]


async def test_a_converter_behind_lays_a_complete_run_out_once_and_its_followers_get_every_event(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    ctx = embedded.context
    spans = refund_run()
    # Every batch taken (answered) before the converter gets to the first: as under a heavy export load.
    for batch in (spans[:3], spans[3:-1], spans[-1:]):
        message = decode_protobuf(protobuf(batch))
        ids = span_ids(message)
        traces = [(t, "support-desk.run", "support-desk: run", s) for t, s in ids.traces.items()]
        ctx.otlp.accept(LOCAL_ORG_ID, protobuf(batch), traces, int(time.time() * 1000))
    trace = await only_trace(http)
    assert trace["status"] == "running"
    otel_trace_id = f"{spans[0].context.trace_id:032x}"
    assert ctx.otlp.ready_traces(LOCAL_ORG_ID, [otel_trace_id]) == {otel_trace_id: trace["id"]}
    otel_trace_id = f"{spans[0].context.trace_id:032x}"
    assert ctx.otlp.ready_traces(LOCAL_ORG_ID, [otel_trace_id]) == {otel_trace_id: trace["id"]}
    seen: list[dict[str, Any]] = []
    ended: list[str] = []

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow, http, trace["id"], seen, ended)
        await anyio.sleep(0.3)  # the follower is subscribed
        await sweep(ctx)  # the converter reads what waits: the run is complete, so it is laid out at once
    assert ended == ['{"status": "failed"}']
    events = await events_of(http, trace["id"])
    assert [e["seq"] for e in seen] == [e["seq"] for e in events] == list(range(len(events)))
    assert _stored(events) == _expected(spans)
    assert ctx.otlp.pending_spans == 0


async def test_log_records_before_their_spans_are_folded_in_live_and_after_them_shown_live(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    """GenAI messages sent as log records (the Logs API) with their span's ids: records that come before
    the span are in its events as soon as it is shown; records that come after it are shown at once as
    the span's `log`; the finish folds all of them into the model call's events."""
    spans, logs = logged_run()
    chat1, chat2 = [s for s in spans if s.name == "chat gpt-4o"]
    assert (await post_logs(http, records_of(logs, chat1))).status_code == 200
    trace = await only_trace(http)
    assert trace["status"] == "running"  # started by its log records: its spans come later
    assert await events_of(http, trace["id"]) == []
    assert (await post_protobuf(http, [chat1])).status_code == 200
    running = await events_of(http, trace["id"])
    request = next(e for e in running if e["kind"] == "llm.request")
    assert request["payload"]["last_messages"] == [{"role": "user", "content": "Find the refund policy."}]
    assert (await post_protobuf(http, [s for s in spans if s is not chat1 and s.parent is not None])).status_code == 200
    seen: list[dict[str, Any]] = []

    def answered(seen: list[dict[str, Any]]) -> bool:
        return seen[-1]["kind"] == "log" and "Here is the policy" in (seen[-1]["message"] or "")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow, http, trace["id"], seen, None, answered)
        await anyio.sleep(0.2)
        assert (await post_logs(http, records_of(logs, chat2))).status_code == 200
    assert (await only_trace(http))["status"] == "running"
    shown = [e for e in seen if e["kind"] == "log" and e["step_id"] == f"span-{chat2.context.span_id:016x}"]
    assert [e["payload"]["messages"] for e in shown] == [
        [{"role": "user", "content": "And the refund window?"}],
        [{"role": "assistant", "content": "Here is the policy: 30 days.", "finish_reason": "stop"}],
    ]
    assert (await post_protobuf(http, [s for s in spans if s.parent is None])).status_code == 200
    finished = await settled_trace(http)
    events = await events_of(http, finished["id"])
    requests = [e for e in events if e["kind"] == "llm.request"]
    responses = [e for e in events if e["kind"] == "llm.response"]
    assert [r["payload"]["last_messages"] for r in requests] == [
        [{"role": "user", "content": "Find the refund policy."}],
        [{"role": "user", "content": "And the refund window?"}],
    ]
    assert responses[1]["payload"]["text"] == "Here is the policy: 30 days."
    assert not [e for e in events if e["kind"] == "log" and e["step_id"]]  # folded in, not left as logs


async def test_a_batch_read_after_its_trace_finished_adds_nothing_and_is_let_go(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    """The converter passes over the spans of traces already finished (their finish read every span
    they had from the kept bodies); traces still running in the same store are not taken for finished."""
    ctx = embedded.context
    other = record(nested_run, service="planner")
    assert (await post_protobuf(http, other[:-1])).status_code == 200  # its root not sent: running
    (running_id,) = span_ids(decode_protobuf(protobuf(other))).traces
    spans = refund_run()
    message = decode_protobuf(protobuf(spans))
    ids = span_ids(message)
    traces = [(t, "support-desk.run", "support-desk: run", s) for t, s in ids.traces.items()]
    (otel_id,) = ids.traces
    # Taken (ids and body stored, answered) and not read yet.
    _, batch = ctx.otlp.accept(LOCAL_ORG_ID, protobuf(spans), traces, int(time.time() * 1000))
    assert batch is not None
    assert ctx.otlp.pending_spans == len(spans)
    assert ctx.otlp.finished_traces(LOCAL_ORG_ID, [otel_id, running_id]) == set()
    # Finished before its batch was read (as the quiet sweep does): laid out from the kept body.
    await finish_otel_trace(ctx, LOCAL_ORG_ID, otel_id)
    assert ctx.otlp.finished_traces(LOCAL_ORG_ID, [otel_id, running_id, "ab" * 16]) == {otel_id}
    finished = next(
        t
        for t in (await http.get("/v1/traces", params={"source": "agent"})).json()["items"]
        if t["status"] != "running"
    )
    laid = await events_of(http, finished["id"])
    assert [(e["seq"], e["kind"], e["step_id"]) for e in laid] == [
        (e.seq, e.kind, e.step_id) for e in trace_events(decode_spans(message).spans)
    ]
    await convert_pending(ctx)  # now the batch is read: nothing is added to the finished trace
    assert ctx.otlp.pending() == []
    assert ctx.otlp.pending_spans == 0
    assert await events_of(http, finished["id"]) == laid


def _nul_run(tracer: Any, clock: Any) -> None:
    """An agent whose tool span name and error text carry NUL characters."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from molar_mcp.demo.agent_run import timed_span

    with timed_span(tracer, clock, "invoke_agent nul", SpanKind.INTERNAL, {"gen_ai.operation.name": "invoke_agent"}):
        with timed_span(
            tracer,
            clock,
            "execute_tool nul\x00tool",
            SpanKind.INTERNAL,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "nul\x00tool"},
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "bad\x00byte"))
        clock.advance(5)


async def test_nul_characters_in_span_text_are_stored_as_replacement_characters_live_and_finished(
    http: httpx2.AsyncClient,
) -> None:
    """Text is kept as the store keeps it (each NUL as U+FFFD) on both engines, whether the events are
    appended live or laid out at the finish."""
    spans = record(_nul_run, service="nul-agent")
    assert (await post_protobuf(http, spans[:-1])).status_code == 200  # the tool span: shown live
    running = await only_trace(http)
    live = [e["message"] for e in await events_of(http, running["id"]) if e["message"]]
    assert any("nul\ufffdtool" in m for m in live), live
    assert not any("\x00" in m for m in live)
    assert (await post_protobuf(http, spans[-1:])).status_code == 200
    assert (await settled_trace(http))["status"] == "passed"  # (the root span says nothing failed)
    laid = await events_of(http, running["id"])
    messages = [e["message"] for e in laid if e["message"]]
    assert any("nul\ufffdtool" in m for m in messages), messages
    assert not any("\x00" in m for m in messages)


async def test_a_bulk_export_of_a_trace_nobody_follows_is_laid_out_once_at_its_finish(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    """A bulk exporter (here: 4 spans an export) of a trace nobody follows: its spans are not shown live
    (and then moved at the finish), nor are the later ones of that trace, even in a small export; the
    finish lays it out once, as the same spans give in one export. (One server: replicas show it live.)"""
    embedded.context.otlp_settings.bulk_spans = 4
    # Replicas (PostgreSQL, with the bus across them) cannot see the others' followers: always shown live.
    replicas = type(embedded.context.bus) is not LiveBus
    spans = refund_run()

    async def waiting() -> Any:
        return (await http.get(f"/v1/traces/{trace['id']}")).json()["spans_waiting"]

    assert (await post_protobuf(http, spans[:4])).status_code == 200
    trace = await only_trace(http)
    assert bool(await events_of(http, trace["id"])) is replicas
    # A reader is told what is held back: how many spans came and are not shown yet.
    assert await waiting() == (None if replicas else 4)
    assert (await post_protobuf(http, spans[4:7])).status_code == 200  # 3 spans: not bulk, and still not shown
    assert trace["id"] == (await only_trace(http))["id"]
    assert bool(await events_of(http, trace["id"])) is replicas
    assert await waiting() == (None if replicas else 7)
    if not replicas:  # get_trace says so too, and what happens next
        async with Client(create_mcp_server(embedded.client_factory())) as client:
            answer = await client.call_tool("get_trace", {"trace_id": trace["short_id"]})
        text = answer.content[0].text  # type: ignore[union-attr]
        assert "Not shown yet: 7 spans received" in text
        assert "laid out once, when it ends" in text
        assert answer.structured_content["trace"]["spans_waiting"] == 7  # type: ignore[index]
    assert (await post_protobuf(http, spans[7:])).status_code == 200  # the root: the run is complete
    finished = await settled_trace(http)
    assert finished["status"] == "failed"
    assert _stored(await events_of(http, trace["id"])) == _expected(spans)
    assert await waiting() is None


async def test_a_bulk_export_of_a_followed_trace_is_shown_live(http: httpx2.AsyncClient, embedded: Embedded) -> None:
    ctx = embedded.context
    ctx.otlp_settings.bulk_spans = 4
    spans = refund_run()
    body = protobuf(spans[:4])  # taken, not read yet: the trace is running with no events
    ids = span_ids(decode_protobuf(body))
    ctx.otlp.accept(LOCAL_ORG_ID, body, [(t, "s.run", "s: run", i) for t, i in ids.traces.items()], 0)
    trace = await only_trace(http)
    seen: list[dict[str, Any]] = []
    shown = anyio.Event()

    def all_four(seen: list[dict[str, Any]]) -> bool:
        if {e["step_id"] for e in seen if e["kind"] == "step.start"} >= _step_ids(spans[:4]):
            shown.set()
        return False

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow, http, trace["id"], seen, None, all_four)
        await anyio.sleep(0.3)  # the follower is subscribed
        await convert_pending(ctx)  # a bulk export, but followed: shown live
        with anyio.fail_after(10):
            await shown.wait()
        assert (await only_trace(http))["status"] == "running"
        assert (await post_protobuf(http, spans[4:])).status_code == 200
    assert (await settled_trace(http))["status"] == "failed"
    assert _stored(await events_of(http, trace["id"])) == _expected(spans)


def _step_ids(spans: list[Any]) -> set[str]:
    return {f"span-{s.context.span_id:016x}" for s in spans}


async def test_the_search_text_made_at_the_finish_is_what_the_stored_messages_give(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    """The finish hands the trace's messages it has just written to `finish_trace` instead of reading them
    again: the indexed text is the one a close that reads them makes (NUL characters included)."""
    from molar_mcp.store.live import _close

    spans = record(lambda tracer, clock: run_agent_with_nul(tracer, clock))
    assert (await post_protobuf(http, spans)).status_code == 200
    trace = await settled_trace(http)
    db = embedded.context.live.db
    with db.read() as conn:
        pk, status, signature, duration = conn.execute(
            "SELECT pk, status, failure_signature, duration_ms FROM traces WHERE id = ?", (trace["id"],)
        ).fetchone()
        (made,) = conn.execute("SELECT body FROM traces_fts WHERE rowid = ?", (pk,)).fetchone()
    assert "index\ufffdoffline" in made  # a message of the run, as stored
    with db.tx() as conn:
        _close(conn, LOCAL_ORG_ID, pk, status, signature, duration, None)  # reads the messages
        (read,) = conn.execute("SELECT body FROM traces_fts WHERE rowid = ?", (pk,)).fetchone()
    assert made == read


def run_agent_with_nul(tracer: Any, clock: Any) -> None:
    """A run whose failing tool's message holds a NUL character."""
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from molar_mcp.demo.agent_run import timed_span

    with (
        timed_span(tracer, clock, "invoke_agent nul", SpanKind.INTERNAL, {"gen_ai.operation.name": "invoke_agent"}),
        timed_span(
            tracer,
            clock,
            "execute_tool search",
            SpanKind.INTERNAL,
            {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        ) as tool,
    ):
        tool.record_exception(ValueError("index\x00offline"), timestamp=clock.advance(30))
        tool.set_status(Status(StatusCode.ERROR, "index\x00offline"))
