"""Readers have their own SQLite connections: a write in progress neither blocks a read nor shows
through half done; a read inside a write transaction reads that transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from molar_mcp.store import LOCAL_ORG_ID, NewTrace, SqliteTraceStore, TraceQuery


@pytest.fixture
def embedded_store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    """The embedded store's `Database` (PostgreSQL has a pool of its own)."""
    s = SqliteTraceStore(tmp_path / "data")
    yield s
    s.close()


def test_a_read_runs_while_a_write_transaction_is_open(embedded_store: SqliteTraceStore) -> None:
    kept, _ = embedded_store.add_trace(LOCAL_ORG_ID, NewTrace(scenario_slug="kept", status="passed"), {})
    inside = threading.Event()
    release = threading.Event()

    def long_write() -> None:
        with embedded_store.db.tx() as conn:
            conn.execute("UPDATE traces SET status = 'failed'")
            inside.set()
            release.wait(10)
            conn.execute("UPDATE traces SET status = 'passed'")

    writer = threading.Thread(target=long_write)
    writer.start()
    try:
        assert inside.wait(10)
        started = time.perf_counter()
        items = embedded_store.list_traces(LOCAL_ORG_ID, TraceQuery()).items
        detail = embedded_store.get_trace(LOCAL_ORG_ID, kept)
        assert time.perf_counter() - started < 2  # not behind the writer's lock
        # The uncommitted update does not show.
        assert [i.status for i in items] == ["passed"]
        assert detail.status == "passed"
    finally:
        release.set()
        writer.join(10)


def test_a_read_inside_a_write_sees_the_write(embedded_store: SqliteTraceStore) -> None:
    with embedded_store.db.tx() as conn:
        conn.execute(
            "INSERT INTO traces (id, short_id, org_id, status, created_ms) VALUES ('x', 'x', ?, 'queued', 1)",
            (LOCAL_ORG_ID,),
        )
        with embedded_store.db.read() as reader:
            assert reader.execute("SELECT count(*) FROM traces").fetchone()[0] == 1


def test_many_threads_read_at_once_and_the_store_closes_cleanly(embedded_store: SqliteTraceStore) -> None:
    embedded_store.add_trace(LOCAL_ORG_ID, NewTrace(scenario_slug="one", status="passed"), {})
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(20):
                assert len(embedded_store.list_traces(LOCAL_ORG_ID, TraceQuery(q="one")).items) == 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


def test_closing_the_store_under_a_running_read_lets_the_read_finish_then_closes_its_connection(
    tmp_path: Path,
) -> None:
    """A server stopping (its store closed) while a request's read is still running in a worker thread:
    closing that reader's connection under its running statement crashed the whole process (seen once in
    CI as a segfault). The read finishes; its connection is closed when the read ends; new reads are refused."""
    store = SqliteTraceStore(tmp_path / "data")
    running = threading.Event()
    seen: list[object] = []

    def long_read() -> None:
        try:
            with store.db.read() as conn:
                seen.append(conn)
                running.set()
                count = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
                seen.append(conn.execute(count + "SELECT count(*) FROM c").fetchone()[0])
        except Exception as exc:  # the test reports what the read got
            seen.append(exc)

    reader = threading.Thread(target=long_read)
    reader.start()
    assert running.wait(10)
    time.sleep(0.05)  # the statement is under way
    store.close()
    reader.join(60)
    assert not reader.is_alive()
    conn, count = seen
    assert count == 2_000_000
    assert isinstance(conn, sqlite3.Connection)
    with pytest.raises(sqlite3.ProgrammingError):  # closed once its read ended
        conn.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError), store.db.read():
        pass
