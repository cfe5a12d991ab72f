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


def test_a_replica_spends_a_lease_of_a_hundredth_of_the_limit_from_memory(pg_url: str, tmp_path: Path) -> None:
    now = [1_000.0]
    dbs = [PgDatabase(pg_url, tmp_path / name) for name in ("a", "b")]

    def bucket() -> float:
        with dbs[0].pool.connection() as conn:
            row = conn.execute(
                "SELECT tokens FROM rate_buckets WHERE org = 'org_a' AND limit_class = 'read'"
            ).fetchone()
        assert row is not None
        return float(row[0])

    try:
        a, b = (PgRateLimiter(limits=RateLimits(read=400), db=db, wall_clock=lambda: now[0]) for db in dbs)
        assert a.take("org_a", "read") == 0.0
        assert bucket() == 396  # a lease of 4 taken from the shared bucket at once
        assert [a.take_now("org_a", "read") for _ in range(4)] == [0.0, 0.0, 0.0, None]  # 3 left, then spent
        assert bucket() == 396
        # Two replicas together still allow the org its limit, not more.
        allowed = sum(limiter.take("org_a", "read") == 0.0 for _ in range(300) for limiter in (a, b))
        assert allowed == 396
    finally:
        for db in dbs:
            db.close()
