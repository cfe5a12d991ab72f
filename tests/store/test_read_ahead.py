"""A streamed trace's chunks are read one ahead on a thread of their own (`models/batch.py ReadAhead`)
while the store writes the current one: the same chunks in the same order, a source's error raised to
the consumer where its chunk would have come, and on leaving (done, or early on the consumer's error)
the thread stopped and the source closed."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from molar_mcp.ingest import BundleError, ingest_bundle
from molar_mcp.ingest.bundle import EVENT_CHUNK, open_bundle
from molar_mcp.models.batch import ReadAhead
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.port import TooManyEvents
from tests.bundles import make_bundle, summary

TS = 1_763_629_200_000


class Source:
    """Numbers 0..n-1 as chunks, recording the thread that made each, whether the collector was on, and
    whether the source was closed (a generator's `finally`)."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.threads: list[str] = []
        self.collector_on: list[bool] = []
        self.closed = False

    def chunks(self) -> Iterator[list[int]]:
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise ValueError(f"bad chunk {i}")
                self.threads.append(threading.current_thread().name)
                self.collector_on.append(gc.isenabled())
                yield [i]
        finally:
            self.closed = True


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "molar-read-ahead"]


def test_the_same_chunks_in_order_made_on_another_thread_with_the_collector_paused() -> None:
    source = Source(50)
    with ReadAhead(source.chunks()) as ahead:
        got = list(ahead)
    assert got == [[i] for i in range(50)]
    assert set(source.threads) == {"molar-read-ahead"}
    assert not any(source.collector_on)
    assert source.closed
    assert _read_ahead_threads() == []
    assert gc.isenabled()


def test_a_source_error_is_raised_where_its_chunk_would_have_come() -> None:
    source = Source(10, fail_at=4)
    got: list[list[int]] = []

    def consume() -> None:
        with ReadAhead(source.chunks()) as ahead:
            got.extend(ahead)

    with pytest.raises(ValueError, match="bad chunk 4"):
        consume()
    assert got == [[0], [1], [2], [3]]
    assert source.closed
    assert _read_ahead_threads() == []


def test_leaving_early_stops_the_thread_and_closes_the_source() -> None:
    source = Source(1_000)

    def consume() -> None:
        with ReadAhead(source.chunks()) as ahead:
            for chunk in ahead:
                if chunk == [3]:
                    raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        consume()
    assert source.closed
    assert len(source.threads) < 10  # at most a chunk or two ahead, never the rest
    assert _read_ahead_threads() == []
    assert gc.isenabled()


def _events(count: int) -> list[dict[str, object]]:
    return [
        {"seq": n, "ts": TS + n, "kind": "log", "step_id": f"s{n // 700}", "message": f"line {n}", "payload": {"n": n}}
        for n in range(count)
    ]


def test_a_bundle_refused_by_the_store_mid_stream_stops_its_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses the trace after its second chunk (too many events): nothing is stored, and the
    thread reading the bundle ahead is stopped, its archive closed."""
    store = SqliteTraceStore(tmp_path / "data")
    try:
        monkeypatch.setenv("MOLAR_MAX_TRACE_EVENTS", str(EVENT_CHUNK + 1))
        parsed = open_bundle(make_bundle(summary(), _events(5 * EVENT_CHUNK)))
        with pytest.raises(TooManyEvents):
            store.add_trace(LOCAL_ORG_ID, parsed.trace, parsed.blobs)
        assert _read_ahead_threads() == []
        assert parsed.events_read <= 4 * EVENT_CHUNK  # the reader stopped before the end
        assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
        monkeypatch.delenv("MOLAR_MAX_TRACE_EVENTS")
        # A bad line in the fourth chunk, read ahead while the third is written: nothing stored either.
        events = _events(4 * EVENT_CHUNK)
        events[3 * EVENT_CHUNK + 5]["kind"] = ""
        with pytest.raises(BundleError, match=f"line {3 * EVENT_CHUNK + 6}"):
            ingest_bundle(store, LOCAL_ORG_ID, make_bundle(summary(), events))
        assert _read_ahead_threads() == []
        assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
        trace_id, _ = ingest_bundle(store, LOCAL_ORG_ID, make_bundle(summary(), _events(4 * EVENT_CHUNK + 3)))
        detail = store.get_trace(LOCAL_ORG_ID, trace_id)
        assert detail.event_count == 4 * EVENT_CHUNK + 3
        assert [s.first_seq for s in detail.steps] == list(range(0, 4 * EVENT_CHUNK + 3, 700))
    finally:
        store.close()
