"""Replicas on one PostgreSQL database share rate limits and the debugger budget."""

from __future__ import annotations

from pathlib import Path

from molar_mcp.api.ratelimit_pg import PgRateLimiter
from molar_mcp.api.telemetry import RateLimits
from molar_mcp.store.postgres.db import PgDatabase


def test_two_replicas_allow_an_org_its_limit_once_not_twice(pg_url: str, tmp_path: Path) -> None:
    now = [1_000.0]
    dbs = [PgDatabase(pg_url, tmp_path / name) for name in ("a", "b")]
    try:
        a, b = (PgRateLimiter(limits=RateLimits(write=4), db=db, wall_clock=lambda: now[0]) for db in dbs)
        waits = [limiter.take("org_a", "write") for limiter in (a, b, a, b, a, b)]
        assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
        # Spent: 4 a minute is one every 15 s.
        assert 14.9 < waits[4] <= 15.0
        assert waits[5] > 0
        assert b.take("org_b", "write") == 0.0  # another org has its own bucket
        now[0] += 15
        assert a.take("org_a", "write") == 0.0  # refilled by wall-clock time, whichever replica asks
        assert b.take("org_a", "write") > 0
    finally:
        for db in dbs:
            db.close()
