"""A bundle's events are parsed while they are stored, a chunk at a time, in one transaction: a bundle of
many chunks is stored whole and exactly; a bad line or the event cap in a late chunk stores nothing;
readers are answered while a bundle is being stored and never see half of it; memory holds a chunk,
not the trace."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.ingest import BundleError, ingest_bundle
from molar_mcp.ingest import bundle as bundle_module
from molar_mcp.ingest.bundle import open_bundle, read_bundle
from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.port import TooManyEvents
from tests.bundles import make_bundle, summary
from tests.ingest.archives import stored

TS = 1_763_629_200_000
# Chunks smaller than the server's (the same code at a tenth of the test's time): three full chunks and a
# part of a fourth, steps that cross chunk boundaries.
EVENT_CHUNK = 500
EVENTS = 3 * EVENT_CHUNK + 123
STEP_EVENTS = 170


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_module, "EVENT_CHUNK", EVENT_CHUNK)


def long_events(count: int = EVENTS) -> list[dict[str, Any]]:
    """`count` events in steps of STEP_EVENTS (each step a parent with one nested step), one failed
    assertion in the last step, and an error message in the last chunk (searchable)."""
    events: list[dict[str, Any]] = []
    for seq in range(count):
        step = seq // STEP_EVENTS + 1
        at = seq % STEP_EVENTS
        ev: dict[str, Any] = {"seq": seq, "ts": TS + seq, "kind": "log", "message": f"line {seq}"}
        if at == 0:
            ev.update(kind="step.start", step_id=f"s{step}", message=f"step {step}", payload={"category": "test.step"})
        elif at == 1:
            ev.update(kind="step.start", step_id=f"s{step}.a", payload={"parent_step_id": f"s{step}"})
        elif at < STEP_EVENTS // 2:
            ev.update(step_id=f"s{step}.a", payload={"n": seq, "tags": ["a", "b"], "nested": {"k": "v" * 20}})
        else:
            ev.update(step_id=f"s{step}", payload={"n": seq})
        events.append(ev)
    events[-3].update(kind="assertion", ok=False, message="expected 45.00, got 5.00 in the coupon total")
    events[-2].update(kind="error", message="zanzibar-checkout-exploded")
    return events


def big_bundle(events: list[dict[str, Any]] | None = None, **fields: Any) -> bytes:
    return make_bundle(summary(scenario_slug="many-chunks", **fields), events if events is not None else long_events())


def test_a_bundle_of_many_chunks_is_stored_whole_and_exactly(store: SqliteTraceStore) -> None:
    events = long_events()
    trace_id, _ = ingest_bundle(store, LOCAL_ORG_ID, big_bundle(events))
    detail = store.get_trace(LOCAL_ORG_ID, trace_id)
    assert detail.event_count == EVENTS
    assert detail.duration_ms == EVENTS - 1
    assert detail.created_at.timestamp() * 1000 == TS
    assert sum(detail.event_counts.values()) == EVENTS
    assert detail.event_counts["assertion"] == 1
    assert detail.event_counts["error"] == 1
    # Steps that span chunks: one top-level step per STEP_EVENTS, each with its nested step, counted whole.
    tops = [s for s in detail.steps if s.depth == 0]
    assert [s.step for s in tops] == list(range(1, EVENTS // STEP_EVENTS + 2))
    first = tops[0]
    assert (first.first_seq, first.last_seq, first.event_count) == (0, STEP_EVENTS - 1, STEP_EVENTS)
    nested = [s for s in detail.steps if s.parent_step_id == "s3"]
    assert [s.path for s in nested] == ["3.1"]
    assert tops[-1].ok is False  # the failed assertion in the last chunk fails its step
    # Every event stored, in order, as sent (spot checks across every chunk boundary).
    page = store.list_events(LOCAL_ORG_ID, trace_id, limit=EVENTS)
    assert [e.seq for e in page.events] == list(range(EVENTS))
    for seq in (0, EVENT_CHUNK - 1, EVENT_CHUNK, 2 * EVENT_CHUNK + 1, EVENTS - 1):
        sent, got = events[seq], page.events[seq]
        assert (got.kind, got.message, got.step_id) == (sent["kind"], sent["message"], sent.get("step_id"))
        assert got.payload == sent.get("payload", {})
    assert store.list_events(LOCAL_ORG_ID, trace_id, step="5").total == STEP_EVENTS
    assert store.list_events(LOCAL_ORG_ID, trace_id, ok=False).events[0].seq == EVENTS - 3
    # The text of the last chunk is searchable.
    found = store.list_traces(LOCAL_ORG_ID, TraceQuery(q="zanzibar-checkout-exploded"))
    assert [t.id for t in found.items] == [trace_id]


def test_streamed_and_whole_bundles_store_the_same_trace(store: SqliteTraceStore) -> None:
    data = big_bundle()
    streamed_id, _ = ingest_bundle(store, LOCAL_ORG_ID, data)
    whole = read_bundle(data)
    whole_id, _ = store.add_trace(LOCAL_ORG_ID, whole.trace, whole.blobs)
    a, b = store.get_trace(LOCAL_ORG_ID, streamed_id), store.get_trace(LOCAL_ORG_ID, whole_id)
    same = ("event_count", "event_counts", "duration_ms", "created_at", "steps", "status", "failure_signature")
    assert {k: getattr(a, k) for k in same} == {k: getattr(b, k) for k in same}
    ea = store.list_events(LOCAL_ORG_ID, streamed_id, limit=EVENTS).events
    eb = store.list_events(LOCAL_ORG_ID, whole_id, limit=EVENTS).events
    assert ea == eb


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_a_bad_line_in_the_last_chunk_stores_nothing(store: SqliteTraceStore, fmt: str) -> None:
    ingest_bundle(store, LOCAL_ORG_ID, make_bundle())  # something stored before, which must stay
    before = stored(store)
    events = long_events()
    raw = [json.dumps(e) for e in events]
    bad_line = EVENTS - 10
    raw[bad_line - 1] = '{"seq": "not a number", "ts": 1, "kind": "log"}'
    data = make_bundle(summary(scenario_slug="bad-late"), events_raw="\n".join(raw).encode(), fmt=fmt)
    with pytest.raises(BundleError) as caught:
        ingest_bundle(store, LOCAL_ORG_ID, data)
    assert caught.value.kind == "validation_error"
    assert f"line {bad_line}" in caught.value.message
    assert stored(store) == before
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery(scenario_slug="bad-late")).items == []


def test_a_seq_going_back_across_a_chunk_boundary_is_refused(store: SqliteTraceStore) -> None:
    events = long_events()
    events[EVENT_CHUNK]["seq"] = events[EVENT_CHUNK - 1]["seq"]  # first event of the second chunk
    before = stored(store)
    with pytest.raises(BundleError) as caught:
        ingest_bundle(store, LOCAL_ORG_ID, big_bundle(events))
    assert f"line {EVENT_CHUNK + 1}: seq {EVENT_CHUNK - 1} does not increase" in caught.value.message
    assert stored(store) == before


def test_a_streamed_bundle_past_the_event_cap_stores_nothing(
    store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLAR_MAX_TRACE_EVENTS", str(2 * EVENT_CHUNK + 1))
    before = stored(store)
    with pytest.raises(TooManyEvents) as caught:
        ingest_bundle(store, LOCAL_ORG_ID, big_bundle())
    assert f"at most {2 * EVENT_CHUNK + 1:,} events" in str(caught.value)
    assert f"more than {2 * EVENT_CHUNK + 1:,}" in str(caught.value)
    assert stored(store) == before


@pytest.mark.parametrize("in_child", [False, True], ids=["read-here", "read-in-child"])
def test_readers_are_answered_while_a_bundle_is_stored_and_never_see_half_of_it(
    store: SqliteTraceStore, in_child: bool, tmp_path: Path
) -> None:
    store.read_in_child = in_child
    old_id, _ = ingest_bundle(store, LOCAL_ORG_ID, make_bundle())
    parsed = open_bundle(big_bundle())
    # The reader of the chunks says it holds the transaction open, then waits to go on, through two named
    # pipes (it may be a forked child: store/child_reader.py).
    said, told = tmp_path / "in-storing", tmp_path / "go-on"
    os.mkfifo(said)
    os.mkfifo(told)
    in_storing = threading.Event()
    go_on = threading.Event()
    chunks = parsed.trace.event_chunks
    assert chunks is not None

    def paused() -> Iterator[Sequence[Event]]:
        for n, chunk in enumerate(chunks):
            if n == 2:  # two chunks written inside the transaction: hold it open
                said.write_bytes(b"1")
                assert told.read_bytes() == b"1"
            yield chunk

    def listen() -> None:
        assert said.read_bytes() == b"1"
        in_storing.set()
        assert go_on.wait(60)
        told.write_bytes(b"1")

    parsed.trace.event_chunks = paused()
    with ThreadPoolExecutor(2) as pool:
        listening = pool.submit(listen)
        writing = pool.submit(store.add_trace, LOCAL_ORG_ID, parsed.trace, parsed.blobs)
        try:
            assert in_storing.wait(60)
            # Mid-transaction: reads are answered (they do not wait for the writer) and see the store as
            # it was before the bundle.
            listed = store.list_traces(LOCAL_ORG_ID, TraceQuery())
            assert [t.id for t in listed.items] == [old_id]
            assert store.get_trace(LOCAL_ORG_ID, old_id).event_count > 0
            assert stored(store).events == store.get_trace(LOCAL_ORG_ID, old_id).event_count
            assert not writing.done()
        finally:
            go_on.set()
        new_id, _ = writing.result(60)
        listening.result(60)
    assert store.get_trace(LOCAL_ORG_ID, new_id).event_count == EVENTS


def _peak_while_storing(store: SqliteTraceStore, data: bytes) -> int:
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        ingest_bundle(store, LOCAL_ORG_ID, data)
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_storing_a_bundle_holds_a_chunk_of_events_not_the_trace(
    store: SqliteTraceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peak memory while storing does not grow with the events (three times the events: about the
    same peak), and stays a fraction of what the trace takes read whole."""
    monkeypatch.setattr(bundle_module, "EVENT_CHUNK", 100)
    monkeypatch.setattr(bundle_module, "_READ_BLOCK", 64 * 1024)  # both bundles' events are longer
    small, large = big_bundle(long_events(20 * 100)), big_bundle(long_events(60 * 100))
    tracemalloc.start()
    try:
        whole = read_bundle(large)
        whole_bytes = tracemalloc.get_traced_memory()[0]
        del whole
    finally:
        tracemalloc.stop()
    small_peak = _peak_while_storing(store, small)
    large_peak = _peak_while_storing(store, large)
    assert large_peak < small_peak * 1.5, (small_peak, large_peak)
    assert large_peak < whole_bytes / 3, (large_peak, whole_bytes)


def test_a_chunk_is_bounded_in_bytes_as_well_as_in_lines() -> None:
    """Long lines make short chunks: memory (and one validation call) holds at most ~512 KB of lines."""
    events = [{"seq": n, "ts": TS + n, "kind": "log", "message": "m" * 200_000} for n in range(10)]
    chunks = open_bundle(make_bundle(summary(), events)).trace.event_chunks
    assert chunks is not None
    sizes = [len(chunk) for chunk in chunks]
    assert sum(sizes) == 10
    assert max(sizes) <= 3


def test_line_ends_and_blank_lines_across_blocks_and_chunks_read_as_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lines are split a block at a time and chunks are cut by the running sizes of a block's lines: "\\n",
    "\\r\\n" and "\\r" line ends, blank lines (empty or spaces) and a last line with no end, across block
    and chunk boundaries, give exactly the events of reading each non-blank line alone, and a bad line late
    on is named by its number counting every line before it."""
    monkeypatch.setattr(bundle_module, "_READ_BLOCK", 4096)
    monkeypatch.setattr(bundle_module, "EVENT_CHUNK", 7)
    ends = [b"\n", b"\r\n", b"\r", b"\n\n", b"\n   \n", b"\r\n\r\n"]
    lines = [json.dumps(ev).encode() for ev in long_events(600)]
    raw = b"".join(line + ends[n % len(ends)] for n, line in enumerate(lines[:-1])) + lines[-1]
    expected = [Event.model_validate_json(line) for line in raw.splitlines() if line.strip()]
    chunks = open_bundle(make_bundle(summary(), events_raw=raw)).trace.event_chunks
    assert chunks is not None
    read = [bundle_module._as_event(ev) for chunk in chunks for ev in chunk]
    assert read == expected
    bad = raw.splitlines(keepends=True)
    assert len(bad) > 800
    bad[800] = b"not json\n"
    with pytest.raises(BundleError) as caught:
        read_bundle(make_bundle(summary(), events_raw=b"".join(bad)))
    assert "events.ndjson line 801 is not JSON" in caught.value.message
