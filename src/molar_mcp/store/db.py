"""The embedded store's SQLite database: one connection, a lock, transactions, and migrations kept
per component (traces, live ingest, debugger, replays…), each an append-only list of its own.

Components migrate independently (`schema_versions` holds one row each), so features can add
tables without renumbering each other's migrations.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DB_FILE = "molar.sqlite3"


class Database:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(data_dir / DB_FILE, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all or nothing."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    def versions(self) -> dict[str, int]:
        """Every component's schema version."""
        with self._lock:
            rows = self._conn.execute("SELECT component, version FROM schema_versions").fetchall()
        return {str(c): int(v) for c, v in rows}

    def version(self, component: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
        return int(row[0]) if row else 0

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply `component`'s migrations past its recorded version, each in one transaction."""
        current = self.version(component)
        if current > len(migrations):
            raise RuntimeError(
                f"the data dir's {component} schema is version {current}, newer than this molar-mcp knows "
                f"({len(migrations)}); upgrade molar-mcp"
            )
        for version in range(current, len(migrations)):
            with self._lock:
                try:
                    self._conn.executescript(
                        "BEGIN IMMEDIATE;"
                        + migrations[version]
                        + ";INSERT INTO schema_versions (component, version) VALUES "
                        + f"('{component}', {version + 1}) ON CONFLICT(component) DO UPDATE SET version = "
                        + f"{version + 1}; COMMIT;"
                    )
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
        return len(migrations)
