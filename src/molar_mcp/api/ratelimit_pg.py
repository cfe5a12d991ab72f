"""Rate limits shared by every replica: the token buckets of `RateLimiter`, kept in PostgreSQL and
updated in one statement per request (refill by elapsed wall-clock time, then spend one if there is one),
so N replicas allow an org its limit, not N times it. A replica takes a small lease of tokens at a time
(`lease_size`), so most requests spend from memory. (Counters, not an org's data: keyed by `org`, outside
row-level security, one statement in autocommit.)"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from molar_mcp.api.telemetry import RateLimiter
from molar_mcp.store.postgres.db import PgDatabase

RATE_LIMIT_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE rate_buckets (
        org TEXT NOT NULL,
        limit_class TEXT NOT NULL,
        tokens REAL NOT NULL,
        updated_ms INTEGER NOT NULL,
        allowed INTEGER NOT NULL,
        PRIMARY KEY (org, limit_class)
    );
    """,
)

# Spend up to %(want)s tokens at once (a replica's lease): `allowed` is how many were granted.
_TAKE = """
INSERT INTO rate_buckets AS b (org, limit_class, tokens, updated_ms, allowed)
VALUES (%(org)s, %(cls)s, %(limit)s - %(want)s, %(now)s, %(want)s)
ON CONFLICT (org, limit_class) DO UPDATE SET
    allowed = LEAST(%(want)s, floor(LEAST(%(limit)s, b.tokens + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s))),
    tokens = LEAST(%(limit)s, b.tokens + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s)
             - LEAST(%(want)s, floor(LEAST(%(limit)s, b.tokens + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s))),
    updated_ms = GREATEST(b.updated_ms, %(now)s)
RETURNING allowed, tokens
"""

# A replica takes a hundredth of a limit at a time (one, for limits under 200): a request then costs no
# round trip to the database most of the time. The org's total stays its limit (a lease is spent from
# the shared bucket); a replica holds at most one lease unspent, so another replica may be refused up to
# that many requests early.
LEASE_FRACTION = 100


def lease_size(limit: int) -> int:
    return max(1, limit // LEASE_FRACTION)


@dataclass
class LeasingRateLimiter(RateLimiter):
    """Buckets kept where every process of the server spends from them, taken a lease at a time."""

    _leased: dict[tuple[str, str], int] = field(default_factory=dict)

    def take_now(self, org_id: str, limit_class: str) -> float | None:
        """Spend one request of this process's lease: 0, or None when the lease is spent (`take` asks the
        shared bucket: a round trip or a file lock, not for the event loop)."""
        key = (org_id, limit_class)
        with self._lock:
            left = self._leased.get(key, 0)
            if left <= 0:
                return None
            self._leased[key] = left - 1
            return 0.0


@dataclass
class PgRateLimiter(LeasingRateLimiter):
    db: Any = None
    wall_clock: Any = field(default=time.time)

    def __post_init__(self) -> None:
        assert isinstance(self.db, PgDatabase)
        self.db.migrate("rate_limits", RATE_LIMIT_MIGRATIONS)

    def take(self, org_id: str, limit_class: str) -> float:
        spent = self.take_now(org_id, limit_class)
        if spent is not None:
            return spent
        limit: int = getattr(self.limits, limit_class)
        rate_per_ms = limit / 60_000.0
        now_ms = int(self.wall_clock() * 1000)
        want = lease_size(limit)
        params = {
            "org": org_id,
            "cls": limit_class,
            "limit": float(limit),
            "now": now_ms,
            "rate": rate_per_ms,
            "want": want,
        }
        with self.db.pool.connection() as conn:
            row = conn.execute(_TAKE, params).fetchone()
        assert row is not None
        granted, tokens = int(row[0]), float(row[1])
        if granted >= 1:
            with self._lock:
                key = (org_id, limit_class)
                self._leased[key] = self._leased.get(key, 0) + granted - 1
            return 0.0
        return (1 - tokens) / (rate_per_ms * 1000)
