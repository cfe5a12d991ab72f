"""The data dir on disk: schema versions, WAL, content-addressed blob files, atomic writes."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.schema import MIGRATIONS
from tests.store.factory import AddTrace, new_trace

PNG = b"\x89PNG\r\n\x1a\nnot-really-a-png"
VIDEO = b"\x1aE\xdf\xa3webm-ish"


@pytest.fixture
def engine() -> dict[str, str]:
    """The embedded store's files (test_store_engines.py checks the same on PostgreSQL and S3)."""
    return {}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pragma(data_dir: Path, name: str) -> object:
    conn = sqlite3.connect(data_dir / "molar.sqlite3")
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def _traces_version(data_dir: Path) -> object:
    """The "traces" component's schema version, as `store/db.py` records it."""
    conn = sqlite3.connect(data_dir / "molar.sqlite3")
    try:
        return conn.execute("SELECT version FROM schema_versions WHERE component = 'traces'").fetchone()[0]
    finally:
        conn.close()


def _blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").rglob("*") if p.is_file())


def test_a_new_data_dir_is_at_the_newest_schema_version(store: SqliteTraceStore, data_dir: Path) -> None:
    assert store.schema_version == len(MIGRATIONS)
    assert _traces_version(data_dir) == len(MIGRATIONS)


def test_the_database_runs_in_wal_mode(store: SqliteTraceStore, data_dir: Path) -> None:
    assert _pragma(data_dir, "journal_mode") == "wal"


def test_reopening_the_same_data_dir_keeps_every_trace_and_migrates_nothing(
    store: SqliteTraceStore, add: AddTrace, data_dir: Path
) -> None:
    trace_id, short_id = add()
    before = store.get_trace(LOCAL_ORG_ID, trace_id)
    events = store.list_events(LOCAL_ORG_ID, trace_id)
    store.close()
    reopened = SqliteTraceStore(data_dir)
    try:
        assert reopened.schema_version == len(MIGRATIONS)
        assert reopened.get_trace(LOCAL_ORG_ID, short_id) == before
        assert reopened.list_events(LOCAL_ORG_ID, trace_id) == events
        assert [t.id for t in reopened.list_traces(LOCAL_ORG_ID, TraceQuery(q="webhook")).items] == [trace_id]
    finally:
        reopened.close()
    assert _traces_version(data_dir) == len(MIGRATIONS)


def test_a_data_dir_at_schema_version_1_is_migrated_and_its_traces_stay_searchable(data_dir: Path) -> None:
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "molar.sqlite3", isolation_level=None)
    conn.executescript(
        MIGRATIONS[0] + "; CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL);"
        " INSERT INTO schema_versions VALUES ('traces', 1);"
    )
    conn.execute(
        "INSERT INTO traces (pk, id, short_id, org_id, status, created_ms) VALUES (1, ?, ?, ?, ?, ?)",
        ("00000000-0000-4000-8000-000000000001", "oldTrace1", LOCAL_ORG_ID, "failed", 1_700_000_000_000),
    )
    conn.execute("INSERT INTO traces_fts (rowid, body) VALUES (1, 'expected url /billing?upgraded=true')")
    conn.close()
    store = SqliteTraceStore(data_dir)
    try:
        assert store.schema_version == len(MIGRATIONS)
        found = store.list_traces(LOCAL_ORG_ID, TraceQuery(q="billing")).items
        assert [t.short_id for t in found] == ["oldTrace1"]
    finally:
        store.close()


def test_a_data_dir_from_a_newer_molar_mcp_is_refused_and_left_as_it_is(data_dir: Path) -> None:
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / "molar.sqlite3", isolation_level=None)
    conn.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_versions VALUES ('traces', ?)", (len(MIGRATIONS) + 1,))
    conn.close()
    with pytest.raises(RuntimeError, match="upgrade molar-mcp"):
        SqliteTraceStore(data_dir)
    assert _traces_version(data_dir) == len(MIGRATIONS) + 1


def test_blobs_are_written_once_under_their_sha256(store: SqliteTraceStore, add: AddTrace, data_dir: Path) -> None:
    add(blobs={_sha(PNG): PNG, _sha(VIDEO): VIDEO})
    add(blobs={_sha(PNG): PNG})
    files = _blob_files(data_dir)
    assert files == sorted(data_dir / "blobs" / _sha(d)[:2] / _sha(d) for d in (PNG, VIDEO))
    assert {p.read_bytes() for p in files} == {PNG, VIDEO}
    assert store.blobs.read(_sha(PNG)) == PNG
    assert store.blobs.exists(_sha(VIDEO))
    assert not store.blobs.exists(_sha(b"never stored"))


def test_a_trace_whose_blob_does_not_hash_to_its_name_is_refused_and_nothing_is_written(
    store: SqliteTraceStore, add: AddTrace, data_dir: Path
) -> None:
    with pytest.raises(ValueError, match="hashes to"):
        add(blobs={_sha(PNG): PNG, _sha(b"other"): VIDEO})
    assert _blob_files(data_dir) == []
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []


def test_a_trace_the_database_refuses_leaves_no_row_and_no_blob(store: SqliteTraceStore, data_dir: Path) -> None:
    trace = new_trace(events=[{"seq": 0, "ts": 1, "kind": "log"}], pr_number=2**63)
    with pytest.raises(OverflowError):
        store.add_trace(LOCAL_ORG_ID, trace, {_sha(PNG): PNG})
    assert _blob_files(data_dir) == []
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
    store.add_trace(LOCAL_ORG_ID, new_trace(), {})  # the connection is usable afterwards
