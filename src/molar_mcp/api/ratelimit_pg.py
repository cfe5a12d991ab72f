"""Rate limits shared by every replica: the token buckets of `RateLimiter`, kept in PostgreSQL and
updated in one statement per request (refill by elapsed wall-clock time, then spend one if there is one),
so N replicas allow an org its limit, not N times it. (Counters, not an org's data: keyed by `org`, outside
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

_TAKE = """
INSERT INTO rate_buckets AS b (org, limit_class, tokens, updated_ms, allowed)
VALUES (%(org)s, %(cls)s, %(limit)s - 1, %(now)s, 1)
ON CONFLICT (org, limit_class) DO UPDATE SET
    allowed = CASE WHEN LEAST(%(limit)s, b.tokens + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s) >= 1
                   THEN 1 ELSE 0 END,
    tokens = LEAST(%(limit)s, b.tokens + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s)
             - CASE WHEN LEAST(%(limit)s, b.tokens + GREATEST(0, %(now)s - b.updated_ms) * %(rate)s) >= 1
                    THEN 1 ELSE 0 END,
    updated_ms = GREATEST(b.updated_ms, %(now)s)
RETURNING allowed, tokens
"""


@dataclass
class PgRateLimiter(RateLimiter):
    db: Any = None
    wall_clock: Any = field(default=time.time)

    def __post_init__(self) -> None:
        assert isinstance(self.db, PgDatabase)
        self.db.migrate("rate_limits", RATE_LIMIT_MIGRATIONS)

    def take(self, org_id: str, limit_class: str) -> float:
        limit: int = getattr(self.limits, limit_class)
        rate_per_ms = limit / 60_000.0
        now_ms = int(self.wall_clock() * 1000)
        params = {"org": org_id, "cls": limit_class, "limit": float(limit), "now": now_ms, "rate": rate_per_ms}
        with self.db.pool.connection() as conn:
            row = conn.execute(_TAKE, params).fetchone()
        assert row is not None
        allowed, tokens = int(row[0]), float(row[1])
        if allowed:
            return 0.0
        return (1 - tokens) / (rate_per_ms * 1000)
