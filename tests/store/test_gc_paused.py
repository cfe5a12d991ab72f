"""Events are built and stored with the cyclic garbage collector paused (`models/batch.py`): a bundle's
chunks are read, validated and inserted with it off, and it is on again after the trace is stored, after
a refused one too; a pause never turns on a collector it found off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.ingest import BundleError
from molar_mcp.ingest.bundle import open_bundle
from molar_mcp.models import Event
from molar_mcp.models.batch import gc_paused
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from tests.bundles import make_bundle, summary

TS = 1_763_629_200_000


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    """The embedded store (its writer connection's statements are traced below)."""
    s = SqliteTraceStore(tmp_path / "data")
    yield s
    s.close()


def _events(count: int) -> list[dict[str, Any]]:
    return [
        {
            "seq": n,
            "ts": TS + n,
            "kind": "log",
            "step_id": f"s{n // 500}",
            "message": f"line {n}",
            "payload": {"n": [n]},
        }
        for n in range(count)
    ]


def test_a_pause_turns_the_collector_off_and_on_again_even_on_an_error() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_pause_leaves_a_collector_it_found_off_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            with gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner pause did not turn it on
        assert not gc.isenabled()
    finally:
        gc.enable()


def _recording(chunks: Sequence[Event] | Any, seen: list[bool]) -> Iterator[Sequence[Event]]:
    for chunk in chunks:
        seen.append(gc.isenabled())
        yield chunk


def test_pauses_of_two_threads_keep_the_collector_off_until_the_last_one_ends() -> None:
    """Pauses are counted across threads: a pause that ends while another thread's is still in effect
    does not turn the collector on under it."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with gc_paused():
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert first_in.wait(10)
    with gc_paused():
        second_in.set()
        assert first_out.wait(10)
        seen.append(gc.isenabled())  # the other thread's pause ended first: still off
    thread.join()
    assert seen == [False]
    assert gc.isenabled()


def test_a_bundle_is_read_and_inserted_chunk_by_chunk_with_the_collector_paused(sqlite_store: SqliteTraceStore) -> None:
    # 5,000 events: three chunks of the bundle reader (2,000 lines each), as the server reads them. Read here,
    # on this thread (a forked child reading them keeps its collector off: store/child_reader.py).
    sqlite_store.read_in_child = False
    parsed = open_bundle(make_bundle(summary(), _events(5_000)))
    read: list[bool] = []
    parsed.trace.event_chunks = _recording(parsed.trace.event_chunks or (), read)
    inserted: list[bool] = []
    conn = sqlite_store.db._conn  # the writer: every statement it runs is traced
    conn.set_trace_callback(
        lambda sql: inserted.append(gc.isenabled()) if sql.startswith("INSERT INTO events") else None
    )
    try:
        trace_id, _ = sqlite_store.add_trace(LOCAL_ORG_ID, parsed.trace, parsed.blobs)
    finally:
        conn.set_trace_callback(None)
    assert read == [False, False, False]
    # Chunks of 2,000, 2,000 and 1,000 rows, each 256 rows a statement and the rest in powers of two
    # (store/db.py MULTI_ROWS): 7 + 3, 7 + 3, 3 + 4 statements.
    assert len(inserted) == 27
    assert not any(inserted)
    assert gc.isenabled()
    assert sqlite_store.get_trace(LOCAL_ORG_ID, trace_id).event_count == 5_000


def test_the_collector_is_on_again_after_a_refused_bundle(sqlite_store: SqliteTraceStore) -> None:
    events = _events(4_500)
    events[4_400]["seq"] = 3  # a bad line in the last chunk: nothing is stored
    parsed = open_bundle(make_bundle(summary(), events))
    with pytest.raises(BundleError, match="line 4401"):
        sqlite_store.add_trace(LOCAL_ORG_ID, parsed.trace, parsed.blobs)
    assert gc.isenabled()
    assert sqlite_store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
