"""Big OTLP traces finished in the finisher process (api/otlp_finisher.py): the same trace as the server's
own finish makes — events, steps, status, search text, analysis — on both engines; its followers get every
event; a finisher that does not answer leaves the finish to the server. Every test here sets the
threshold to one span (`MOLAR_OTLP_FINISH_WORKER_SPANS=1`), so even a small run goes to a worker, and has
two of them (`MOLAR_OTLP_FINISH_WORKERS=2`)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import anyio
import httpx2
import pytest

from molar_mcp.api.analysis_worker import StoreAddress
from molar_mcp.api.context import ApiContext
from molar_mcp.api.otlp import convert_pending, sweep
from molar_mcp.api.otlp_finisher import OtlpFinisher
from molar_mcp.compose import Embedded
from molar_mcp.debugger.detectors import ANALYZER_VERSION
from molar_mcp.ingest.formats.otlp import decode_protobuf, span_ids
from molar_mcp.store import LOCAL_ORG_ID
from molar_mcp.store.port import TraceQuery, org_scope
from tests.otlp.support import events_of, follow, nested_run, only_trace, post_protobuf, protobuf, record, refund_run

pytestmark = pytest.mark.anyio

OTHER_ORG = "org-finished-in-the-server"


@pytest.fixture(autouse=True)
def _finish_in_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before `embedded` opens the store: every OTLP finish goes to a finisher process, of two."""
    monkeypatch.setenv("MOLAR_OTLP_FINISH_WORKER_SPANS", "1")
    monkeypatch.setenv("MOLAR_OTLP_FINISH_WORKERS", "2")


def _accept(ctx: ApiContext, org: str, spans: Sequence[Any]) -> None:
    """Take one export as the receiver does (ids and body stored; events made later by `convert_pending`)."""
    body = protobuf(spans)
    ids = span_ids(decode_protobuf(body))
    traces = [(t, "support-desk.run", "support-desk: run", s) for t, s in ids.traces.items()]
    ctx.otlp.accept(org, body, traces, int(time.time() * 1000))


def _otel_id(spans: Sequence[Any]) -> str:
    return f"{spans[0].context.trace_id:032x}"


def _as_read(ctx: ApiContext, org: str, otel_id: str, word: str = "refund") -> dict[str, Any]:
    """What a reader gets of a finished trace, without what names this copy (ids, times of storing)."""
    kept = ctx.otlp.kept(org, otel_id)
    assert kept is not None
    assert kept.finished
    with org_scope(org):
        detail = ctx.store.get_trace(org, kept.trace_id)
        events = [
            (e.seq, e.ts, e.kind, e.step_id, e.step, e.ok, e.message, e.payload)
            for e in ctx.store.list_events(org, kept.trace_id, limit=10_000).events
        ]
        _, analysis = ctx.analysis.reusable(org, kept.trace_id, ANALYZER_VERSION)
        found = ctx.store.list_traces(org, TraceQuery(q=word, source="agent")).items
    assert analysis is not None
    summary = detail.model_dump(mode="json")
    for key in ("id", "short_id", "created_at", "org_id", "s3_prefix", "steps", "events"):
        summary.pop(key, None)
    for key in ("first_failing", "last_passing"):  # the run named by its status alone
        if summary["history"][key] is not None:
            summary["history"][key] = summary["history"][key]["status"]
    return {
        "summary": summary,
        "steps": [s.model_dump(mode="json") for s in detail.steps],
        "events": events,
        "findings": [f.model_dump(mode="json") for f in analysis.findings],
        "signature": analysis.failure_signature,
        "replay": None if analysis.suggested_replay is None else analysis.suggested_replay.model_dump(mode="json"),
        "found_by_search": kept.trace_id in {t.id for t in found},
    }


def _fields(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    keys = ("seq", "ts", "kind", "step_id", "step", "ok", "message", "payload")
    return [tuple(e.get(k) for k in keys) for e in events]


@pytest.mark.parametrize(
    ("run", "status", "word"),
    [(refund_run, "failed", "refund"), (lambda: record(nested_run), "passed", "offline")],
    ids=["refund", "nested"],
)
async def test_a_trace_finished_in_the_worker_reads_as_one_finished_in_the_server(
    embedded: Embedded, run: Any, status: str, word: str
) -> None:
    ctx = embedded.context
    finisher = ctx.otlp_finisher
    assert finisher is not None
    assert finisher.min_spans == 1
    here = dataclasses.replace(ctx, otlp_finisher=None)
    spans = run()  # children first, the root last (as the SDK exports them)
    # Part shown live first (children before their parent: made again at the finish), then the rest.
    for which, org in ((ctx, LOCAL_ORG_ID), (here, OTHER_ORG)):
        _accept(which, org, spans[:3])
        await convert_pending(which)
        _accept(which, org, spans[3:])
        await convert_pending(which)  # reads the rest; the trace is complete, so it is finished
    assert finisher.finished == 1  # the first went to the worker; the other was finished here
    pid = finisher.workers[0].pid
    assert pid is not None
    assert pid != os.getpid()
    away, home = _as_read(ctx, LOCAL_ORG_ID, _otel_id(spans), word), _as_read(ctx, OTHER_ORG, _otel_id(spans), word)
    assert away == home
    assert away["summary"]["status"] == status
    assert bool(away["findings"]) == (status == "failed")
    assert away["summary"]["event_count"] == len(away["events"]) > 10
    assert away["found_by_search"]  # the search text was rebuilt at the finish, in the worker


async def test_followers_of_a_run_laid_out_at_once_in_the_worker_get_every_event_then_the_end(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    ctx = embedded.context
    spans = refund_run()
    # Every batch taken before the converter reads the first: the run is laid out once, never shown live.
    for batch in (spans[:3], spans[3:-1], spans[-1:]):
        _accept(ctx, LOCAL_ORG_ID, batch)
    trace = await only_trace(http)
    seen: list[dict[str, Any]] = []
    ended: list[str] = []

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(follow, http, trace["id"], seen, ended)
        await anyio.sleep(0.3)  # the follower is subscribed
        await sweep(ctx)
    assert ctx.otlp_finisher is not None
    assert ctx.otlp_finisher.finished == 1
    assert ended == ['{"status": "failed"}']
    events = await events_of(http, trace["id"])
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len(events) > 20
    assert _fields(seen) == _fields(events)  # (a follower's events leave out empty fields)


async def test_a_finisher_that_does_not_answer_leaves_the_finish_to_the_server(
    embedded: Embedded, engine: dict[str, str]
) -> None:
    ctx = embedded.context
    here = dataclasses.replace(ctx, otlp_finisher=None)
    address = StoreAddress(embedded.store.data_dir, engine.get("database_url"))
    slow = OtlpFinisher(address, min_spans=1, processes=2, timeout_seconds=0.01)  # cannot even start in that time
    try:
        stuck = dataclasses.replace(ctx, otlp_finisher=slow)
        spans = refund_run()
        for which, org in ((stuck, LOCAL_ORG_ID), (here, OTHER_ORG)):
            _accept(which, org, spans)
            await convert_pending(which)
        assert slow.finished == 0
        assert [w.pid for w in slow.workers] == [None, None]  # the one it was handed to was stopped
        assert _as_read(ctx, LOCAL_ORG_ID, _otel_id(spans)) == _as_read(ctx, OTHER_ORG, _otel_id(spans))
    finally:
        slow.close()


async def test_a_big_export_has_the_finishers_started_before_its_trace_completes(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    finisher = embedded.context.otlp_finisher
    assert finisher is not None
    assert [w.pid for w in finisher.workers] == [None, None]
    spans = refund_run()
    assert (await post_protobuf(http, spans[:4])).status_code == 200  # no root yet: nothing to finish
    with anyio.fail_after(30):
        while not all(w.answered for w in finisher.workers):  # noqa: ASYNC110 (threads: started, imports done)
            await anyio.sleep(0.05)
    assert None not in [w.pid for w in finisher.workers]
    assert finisher.finished == 0
    assert (await only_trace(http))["status"] == "running"


async def test_two_traces_completed_at_once_are_finished_side_by_side_by_two_workers(embedded: Embedded) -> None:
    ctx = embedded.context
    finisher = ctx.otlp_finisher
    assert finisher is not None
    first, second = refund_run(), record(nested_run)
    _accept(ctx, LOCAL_ORG_ID, [*first, *second])  # one export completing both
    await convert_pending(ctx)
    assert finisher.finished == 2
    assert [w.answered for w in finisher.workers] == [1, 1]  # the second did not wait for the first
    assert len({w.pid for w in finisher.workers}) == 2
    for spans in (first, second):
        kept = ctx.otlp.kept(LOCAL_ORG_ID, _otel_id(spans))
        assert kept is not None
        assert kept.finished
