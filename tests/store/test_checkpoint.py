"""The embedded store's WAL is copied into the database file by a thread of its own (`store/db.py`
`Database._checkpoints`), not by the commit that crosses 1,000 pages of WAL: a write's transaction
does not pay for the copy and its fsync (live appends waited 12-16 ms about every 100 batches). Past
the backstop a commit still copies (a checkpointer that fell behind). Observed on the real files: what
a checkpoint copies lands in `molar.sqlite3`; what it has not copied is only in the WAL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from molar_mcp.store.db import DB_FILE, Database

PAGE = 4096
ROW = 50 * PAGE  # each commit writes ~50 pages of WAL


def _write(db: Database, commits: int) -> None:
    for i in range(commits):
        with db.tx() as conn:
            conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", (i, bytes([i % 256]) * ROW))


def _open(data_dir: Path, **kwargs: float) -> Database:
    db = Database(data_dir, **kwargs)  # type: ignore[arg-type]
    with db.tx() as conn:
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)")
    return db


def _file_size(data_dir: Path) -> int:
    return (data_dir / DB_FILE).stat().st_size


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "molar-checkpoint"]


def test_a_commit_past_1000_pages_of_wal_does_not_copy_it_itself(tmp_path: Path) -> None:
    db = _open(tmp_path, checkpoint_seconds=3600)  # the checkpointer waits: only commits could copy
    try:
        before = _file_size(tmp_path)
        _write(db, 40)  # ~2,000 pages of WAL: SQLite's default would have copied at 1,000
        assert _file_size(tmp_path) == before
        with db.read() as conn:  # still all there, read from the WAL
            assert conn.execute("SELECT count(*), sum(length(b)) FROM t").fetchone() == (40, 40 * ROW)
    finally:
        db.close()


def test_the_checkpointer_copies_the_wal_soon_after_the_writes(tmp_path: Path) -> None:
    db = _open(tmp_path, checkpoint_seconds=0.05)
    try:
        _write(db, 40)
        deadline = time.monotonic() + 10
        while _file_size(tmp_path) < 40 * ROW and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _file_size(tmp_path) >= 40 * ROW  # every commit's pages, the last ones too
    finally:
        db.close()


def test_past_the_backstop_a_commit_copies_the_wal(tmp_path: Path) -> None:
    db = _open(tmp_path, checkpoint_seconds=3600, backstop_pages=200)
    try:
        _write(db, 10)  # ~500 pages
        assert _file_size(tmp_path) >= 4 * ROW
    finally:
        db.close()


def test_closing_stops_the_checkpointer_and_keeps_every_write(tmp_path: Path) -> None:
    before = len(_checkpointers())
    db = _open(tmp_path, checkpoint_seconds=3600)
    assert len(_checkpointers()) == before + 1
    _write(db, 5)
    db.close()
    assert len(_checkpointers()) == before
    again = Database(tmp_path)
    try:
        with again.read() as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 5
    finally:
        again.close()
