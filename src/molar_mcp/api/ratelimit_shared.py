"""Rate limits shared by the worker processes of one `serve --workers N` on the embedded store: the token
buckets of `RateLimiter` in one SQLite file of the workers' run directory, so N workers allow an org its
limit, not N times it. As on PostgreSQL (ratelimit_pg.py), a worker takes a lease of a hundredth of a limit
at a time, so most requests spend from memory; the file lives as long as the server (limits start afresh
on a restart, as in one process)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from molar_mcp.api.ratelimit_pg import LeasingRateLimiter, lease_size

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_buckets (
    org TEXT NOT NULL,
    limit_class TEXT NOT NULL,
    tokens REAL NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (org, limit_class)
)
"""


@dataclass
class SharedRateLimiter(LeasingRateLimiter):
    path: Path = field(default_factory=Path)
    wall_clock: Callable[[], float] = time.time
    _conn: sqlite3.Connection | None = None

    def __post_init__(self) -> None:
        # One connection, used under the lock; autocommit off: BEGIN IMMEDIATE takes the file's write lock.
        self._conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(_SCHEMA)

    def take(self, org_id: str, limit_class: str) -> float:
        limit: int = getattr(self.limits, limit_class)
        rate_per_ms = limit / 60_000.0
        want = lease_size(limit)
        key = (org_id, limit_class)
        with self._lock:
            left = self._leased.get(key, 0)
            if left > 0:
                self._leased[key] = left - 1
                return 0.0
            conn = self._conn
            assert conn is not None
            now_ms = int(self.wall_clock() * 1000)
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT tokens, updated_ms FROM rate_buckets WHERE org = ? AND limit_class = ?", key
                ).fetchone()
                tokens = float(limit)
                if row is not None:  # refilled by the wall-clock time since (shared by the workers' clocks)
                    tokens = min(tokens, row[0] + max(0, now_ms - row[1]) * rate_per_ms)
                granted = min(want, int(tokens))
                conn.execute(
                    "INSERT INTO rate_buckets (org, limit_class, tokens, updated_ms) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (org, limit_class) DO UPDATE SET tokens = excluded.tokens,"
                    " updated_ms = max(updated_ms, excluded.updated_ms)",
                    (*key, tokens - granted, now_ms),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if granted >= 1:
                self._leased[key] = granted - 1
                return 0.0
            return (1 - (tokens - granted)) / (rate_per_ms * 1000)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
