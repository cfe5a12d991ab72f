"""Storage tiers: hot → warm → cold by age (pinned and running traces never move down), and back.

- hot: everything in SQLite.
- warm: the same rows; a label for "older, less likely to be read" (a hosted store may move it).
- cold: the events are written as one gzip NDJSON blob (content-addressed, like every blob) and their
  rows are dropped; the trace row, steps and artifacts stay, so listing and the summary still work.
  What needs the events answers 409 until `restore` brings the trace back hot.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from molar_mcp.store.blobs import BlobStore
from molar_mcp.store.db import Database
from molar_mcp.store.port import StoreError
from molar_mcp.store.sqlite import find_trace_pk

TIER_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE cold_events (
        trace_pk INTEGER PRIMARY KEY REFERENCES traces(pk) ON DELETE CASCADE,
        sha256 TEXT NOT NULL,
        event_count INTEGER NOT NULL,
        frozen_ms INTEGER NOT NULL
    );
    CREATE INDEX traces_tier_age ON traces(tier, created_ms);
    """,
)

_EVENT_COLUMNS = ("seq", "ts", "kind", "step_id", "step", "ok", "message", "payload", "idempotency_key")


class TraceIsCold(StoreError):
    def __init__(self, trace_ref: str) -> None:
        super().__init__(
            f"trace {trace_ref} is in cold storage: its events are archived. "
            f"POST /v1/traces/{trace_ref}/restore brings it back hot"
        )
        self.trace_ref = trace_ref


@dataclass(frozen=True)
class RetentionPolicy:
    warm_after_days: float = 7
    cold_after_days: float = 30


@dataclass
class RetentionResult:
    warmed: int = 0
    frozen: int = 0
    events_archived: int = 0


class SqliteTiers:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs
        db.migrate("tiers", TIER_MIGRATIONS)

    def require_hot(self, org_id: str, trace_ref: str) -> None:
        """Raise `TraceIsCold` when the trace's events are archived (for what needs the events)."""
        with self.db.read() as conn:
            pk, _ = find_trace_pk(conn, org_id, trace_ref)
            (tier,) = conn.execute("SELECT tier FROM traces WHERE pk = ?", (pk,)).fetchone()
        if tier == "cold":
            raise TraceIsCold(trace_ref)

    def apply(self, policy: RetentionPolicy, *, now: datetime | None = None) -> RetentionResult:
        """Move traces down by age, in every org. Pinned and unfinished traces stay where they are."""
        now = now or datetime.now(UTC)
        warm_before = int((now - timedelta(days=policy.warm_after_days)).timestamp() * 1000)
        cold_before = int((now - timedelta(days=policy.cold_after_days)).timestamp() * 1000)
        result = RetentionResult()
        with self.db.tx() as conn:
            result.warmed = conn.execute(
                "UPDATE traces SET tier = 'warm' WHERE tier = 'hot' AND pinned = 0 AND created_ms < ?"
                " AND status NOT IN ('queued', 'running')",
                (warm_before,),
            ).rowcount
            candidates = [
                pk
                for (pk,) in conn.execute(
                    "SELECT pk FROM traces WHERE tier IN ('hot', 'warm') AND pinned = 0 AND created_ms < ?"
                    " AND status NOT IN ('queued', 'running') ORDER BY pk",
                    (cold_before,),
                ).fetchall()
            ]
        for pk in candidates:
            result.events_archived += self._freeze(pk, int(now.timestamp() * 1000))
            result.frozen += 1
        return result

    def _freeze(self, pk: int, now_ms: int) -> int:
        with self.db.tx() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events WHERE trace_pk = ? ORDER BY seq", (pk,)
            ).fetchall()
            lines = "\n".join(json.dumps(dict(zip(_EVENT_COLUMNS, row, strict=True))) for row in rows)
            # mtime=0: the same events always make the same blob (content addressing holds).
            (org_id,) = conn.execute("SELECT org_id FROM traces WHERE pk = ?", (pk,)).fetchone()
            # In an object store, the archive goes to the org's part of the bucket.
            sha = self.blobs.put(gzip.compress(lines.encode(), mtime=0), org_id)
            conn.execute(
                "INSERT INTO cold_events (trace_pk, sha256, event_count, frozen_ms) VALUES (?,?,?,?)"
                " ON CONFLICT(trace_pk) DO UPDATE SET sha256 = excluded.sha256,"
                " event_count = excluded.event_count, frozen_ms = excluded.frozen_ms",
                (pk, sha, len(rows), now_ms),
            )
            conn.execute("DELETE FROM events WHERE trace_pk = ?", (pk,))
            conn.execute("UPDATE traces SET tier = 'cold' WHERE pk = ?", (pk,))
        return len(rows)

    def restore(self, org_id: str, trace_ref: str) -> int:
        """Bring a cold trace back hot (its events back into SQLite); return how many events."""
        with self.db.tx() as conn:
            pk, _ = find_trace_pk(conn, org_id, trace_ref)
            row = conn.execute("SELECT sha256 FROM cold_events WHERE trace_pk = ?", (pk,)).fetchone()
            if row is None:
                conn.execute("UPDATE traces SET tier = 'hot' WHERE pk = ?", (pk,))
                return 0
            text = gzip.decompress(self.blobs.read(row[0], org_id)).decode()
            events = [json.loads(line) for line in text.splitlines() if line]
            conn.executemany(
                f"INSERT INTO events (trace_pk, {', '.join(_EVENT_COLUMNS)}) VALUES (?, {', '.join('?' * 9)})",
                [(pk, *(e[c] for c in _EVENT_COLUMNS)) for e in events],
            )
            conn.execute("DELETE FROM cold_events WHERE trace_pk = ?", (pk,))
            conn.execute("UPDATE traces SET tier = 'hot' WHERE pk = ?", (pk,))
        return len(events)

    def archived_size(self, org_id: str, trace_ref: str) -> int:
        """Bytes of the archived events blob (0 when hot): what a restore has to read."""
        with self.db.read() as conn:
            pk, _ = find_trace_pk(conn, org_id, trace_ref)
            row = conn.execute("SELECT sha256 FROM cold_events WHERE trace_pk = ?", (pk,)).fetchone()
        if row is None:
            return 0
        return self.blobs.size(row[0], org_id)
