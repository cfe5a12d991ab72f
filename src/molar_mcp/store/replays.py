"""Replays in the store (component "replays"): the scenario each replayable trace was recorded from, and
every replay's request, progress and outcome. Every query is filtered by org.

The `replays` table is also the replay queue that every replica of a server shares. A request inserts a
`queued` row; a replica's worker claims one (`claim`): it becomes `running`, owned by that replica, with
a lease (`lease_until_ms`) the worker renews while the replay runs (`renew`). Every write of a running
replay's progress names its owner and changes nothing once another replica holds it. A replica that
dies mid-replay stops renewing: when the lease runs out the row is claimable again and another replica
(or this one restarted) runs it from the start, up to `max_attempts` times in all. On PostgreSQL a claim
locks the row it takes with `FOR UPDATE SKIP LOCKED` (replicas claiming at once never wait for each other
nor take the same row); on SQLite the claim is one write transaction (`BEGIN IMMEDIATE`: one writer)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from molar_mcp.models.replays import PromoteFixResult, ReplayOrigin, ReplayStatus
from molar_mcp.store.db import Database
from molar_mcp.store.port import StoreError

REPLAY_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE replay_scenarios (
        trace_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        app TEXT,
        scenario_slug TEXT NOT NULL,
        scenario_text TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE replays (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        from_step INTEGER NOT NULL,
        status TEXT NOT NULL,
        phase TEXT NOT NULL,
        triggered_via TEXT NOT NULL,
        app TEXT,
        scenario_diff TEXT,
        source_diffs TEXT NOT NULL DEFAULT '[]',
        replay_trace_id TEXT,
        replay_short_id TEXT,
        trace_status TEXT,
        failure_signature TEXT,
        message TEXT,
        error TEXT,
        log_tail TEXT,
        owner TEXT,
        created_ms INTEGER NOT NULL,
        started_ms INTEGER,
        finished_ms INTEGER,
        duration_ms INTEGER,
        promotion TEXT
    );
    CREATE INDEX replays_org_trace ON replays(org_id, trace_id, created_ms DESC);
    """,
    """
    CREATE TABLE replay_origins (
        trace_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        origin TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    """,
    # The shared queue: a lease per running replay, the attempts made, the order of arrival. Replays left
    # queued or running by a server before this version had no lease: they were interrupted.
    """
    ALTER TABLE replays ADD COLUMN lease_until_ms INTEGER;
    ALTER TABLE replays ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE replays ADD COLUMN queued_ns INTEGER NOT NULL DEFAULT 0;
    UPDATE replays SET status = 'failed', phase = 'done', error = 'interrupted',
        message = 'interrupted: the server running this replay stopped before it finished; start it again',
        finished_ms = created_ms
        WHERE status IN ('queued', 'running');
    UPDATE replays SET queued_ns = created_ms * 1000000;
    CREATE INDEX replays_queue ON replays(status, queued_ns);
    """,
)

ACTIVE_STATES = ("queued", "running")
_UPDATABLE = frozenset(
    {
        "status",
        "phase",
        "replay_trace_id",
        "replay_short_id",
        "trace_status",
        "failure_signature",
        "message",
        "error",
        "log_tail",
        "started_ms",
        "finished_ms",
        "duration_ms",
    }
)
_COLUMNS = (
    "id, org_id, trace_id, from_step, status, phase, triggered_via, app, scenario_diff, source_diffs, "
    "replay_trace_id, replay_short_id, trace_status, failure_signature, message, error, log_tail, owner, "
    "created_ms, started_ms, finished_ms, duration_ms, promotion, lease_until_ms, attempts"
)
_CLAIMABLE = "status IN ('queued', 'running') AND coalesce(lease_until_ms, 0) < ?"
CLAIM_CANDIDATES = 32  # rows looked at per claim (the oldest claimable ones)


class ReplayNotFound(StoreError):
    def __init__(self, replay_id: str) -> None:
        super().__init__(f"no replay {replay_id!r} in this org")
        self.replay_id = replay_id


class LeaseLost(StoreError):
    """This replica no longer holds the replay (its lease ran out and another replica claimed it)."""

    def __init__(self, replay_id: str) -> None:
        super().__init__(f"replay {replay_id} is no longer held by this replica")
        self.replay_id = replay_id


@dataclass(frozen=True)
class RecordedScenario:
    """The scenario a trace was recorded from, so a replay can run it again."""

    trace_id: str
    app: str | None
    scenario_slug: str
    scenario_text: str


@dataclass
class ReplayRecord:
    id: str
    org_id: str
    trace_id: str
    from_step: int
    status: str
    phase: str
    triggered_via: str
    app: str | None
    scenario_diff: str | None
    source_diffs: list[tuple[str, str]]
    created_ms: int
    replay_trace_id: str | None = None
    replay_short_id: str | None = None
    trace_status: str | None = None
    failure_signature: str | None = None
    message: str | None = None
    error: str | None = None
    log_tail: str | None = None
    owner: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    duration_ms: int | None = None
    promotion: dict[str, Any] | None = field(default=None)
    lease_until_ms: int | None = None
    attempts: int = 0

    def to_status(self, *, queue_position: int | None = None) -> ReplayStatus:
        return ReplayStatus.model_validate(
            {
                "id": self.id,
                "trace_id": self.trace_id,
                "status": self.status,
                "phase": self.phase,
                "from_step": self.from_step,
                "triggered_via": self.triggered_via,
                "app": self.app,
                "scenario_edited": bool(self.scenario_diff),
                "source_diff_paths": [path for path, _ in self.source_diffs],
                "replay_trace_id": self.replay_trace_id,
                "replay_short_id": self.replay_short_id,
                "trace_status": self.trace_status,
                "failure_signature": self.failure_signature,
                "message": self.message,
                "error": self.error,
                "log_tail": self.log_tail,
                "queue_position": queue_position if self.status == "queued" else None,
                "attempts": self.attempts,
                "created_at": _dt(self.created_ms),
                "started_at": _dt(self.started_ms),
                "finished_at": _dt(self.finished_ms),
                "duration_ms": self.duration_ms,
                "promotion": PromoteFixResult.model_validate(self.promotion) if self.promotion else None,
            }
        )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def replica_name() -> str:
    """A name for one replay worker, unique across the replicas of a server: host, process, random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ReplayStore:
    """The "replays" component of the embedded store (see `store/db.py` for the per-component migrations)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("replays", REPLAY_MIGRATIONS)

    # ---- recorded scenarios -------------------------------------------------------------------

    def record_scenario(self, org_id: str, trace_id: str, *, app: str | None, slug: str, text: str) -> None:
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO replay_scenarios (trace_id, org_id, app, scenario_slug, scenario_text, created_ms)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(trace_id) DO UPDATE SET app = excluded.app,"
                " scenario_slug = excluded.scenario_slug, scenario_text = excluded.scenario_text"
                " WHERE replay_scenarios.org_id = excluded.org_id",
                (trace_id, org_id, app, slug, text, now_ms()),
            )

    def scenario_of(self, org_id: str, trace_id: str) -> RecordedScenario | None:
        """The scenario trace `trace_id` (a UUID) was recorded from, or None: it is not replayable."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT trace_id, app, scenario_slug, scenario_text FROM replay_scenarios"
                " WHERE trace_id = ? AND org_id = ?",
                (trace_id, org_id),
            ).fetchone()
        return None if row is None else RecordedScenario(row[0], row[1], row[2], row[3])

    # ---- where a project's trace came from ----------------------------------------------------

    def record_origin(self, org_id: str, trace_id: str, origin: ReplayOrigin) -> None:
        """Remember the repository, commit and test a trace was recorded from (ingest calls this when an
        upload says so), so a registered project's trace can be replayed."""
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO replay_origins (trace_id, org_id, origin, created_ms) VALUES (?,?,?,?)"
                " ON CONFLICT(trace_id) DO UPDATE SET origin = excluded.origin"
                " WHERE replay_origins.org_id = excluded.org_id",
                (trace_id, org_id, origin.model_dump_json(exclude_none=True), now_ms()),
            )

    def origin_of(self, org_id: str, trace_id: str) -> ReplayOrigin | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT origin FROM replay_origins WHERE trace_id = ? AND org_id = ?", (trace_id, org_id)
            ).fetchone()
        return None if row is None else ReplayOrigin.model_validate_json(row[0])

    # ---- replays ------------------------------------------------------------------------------

    def create(
        self,
        org_id: str,
        *,
        trace_id: str,
        from_step: int,
        triggered_via: str,
        app: str | None,
        scenario_diff: str | None,
        source_diffs: Sequence[tuple[str, str]],
        message: str | None = None,
        owner: str | None = None,
    ) -> ReplayRecord:
        """A queued replay (`owner`: the replica that took the request, until a worker claims it)."""
        record = ReplayRecord(
            id=str(uuid.uuid4()),
            org_id=org_id,
            trace_id=trace_id,
            from_step=from_step,
            status="queued",
            phase="queued",
            triggered_via=triggered_via,
            app=app,
            scenario_diff=scenario_diff,
            source_diffs=list(source_diffs),
            created_ms=now_ms(),
            message=message,
            owner=owner,
        )
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO replays (id, org_id, trace_id, from_step, status, phase, triggered_via, app,"
                " scenario_diff, source_diffs, message, owner, created_ms, queued_ns)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id,
                    org_id,
                    trace_id,
                    from_step,
                    record.status,
                    record.phase,
                    triggered_via,
                    app,
                    scenario_diff,
                    json.dumps([{"path": p, "diff": d} for p, d in record.source_diffs]),
                    message,
                    record.owner,
                    record.created_ms,
                    time.time_ns(),
                ),
            )
        return record

    def get(self, org_id: str, replay_id: str) -> ReplayRecord:
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM replays WHERE id = ? AND org_id = ?", (replay_id, org_id)
            ).fetchone()
        if row is None:
            raise ReplayNotFound(replay_id)
        return _record(row)

    def list_for_trace(self, org_id: str, trace_id: str, limit: int = 100) -> list[ReplayRecord]:
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM replays WHERE org_id = ? AND trace_id = ? ORDER BY created_ms DESC LIMIT ?",
                (org_id, trace_id, limit),
            ).fetchall()
        return [_record(row) for row in rows]

    def update(self, org_id: str, replay_id: str, *, owner: str | None = None, **fields: Any) -> None:
        """Change a replay's progress; with `owner`, only while that replica holds it (else LeaseLost)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update replay fields {sorted(unknown)}")
        if not fields:
            return
        names = sorted(fields)
        fence = "" if owner is None else " AND owner = ? AND status = 'running'"
        with self.db.tx() as conn:
            cur = conn.execute(
                f"UPDATE replays SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ? AND org_id = ?{fence}",
                [*(fields[n] for n in names), replay_id, org_id, *([] if owner is None else [owner])],
            )
            if cur.rowcount == 0:
                if (
                    owner is not None
                    and conn.execute(
                        "SELECT 1 FROM replays WHERE id = ? AND org_id = ?", (replay_id, org_id)
                    ).fetchone()
                ):
                    raise LeaseLost(replay_id)
                raise ReplayNotFound(replay_id)

    def set_promotion(self, org_id: str, replay_id: str, promotion: PromoteFixResult) -> None:
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE replays SET promotion = ? WHERE id = ? AND org_id = ?",
                (promotion.model_dump_json(), replay_id, org_id),
            )

    def fail_active(self, org_id: str, replay_id: str, *, error: str, message: str, owner: str | None = None) -> None:
        """Mark a replay failed if it is still queued or running (e.g. the server stopped); with `owner`,
        only while that replica holds it (a replay another replica took over is left to it)."""
        with self.db.tx() as conn:
            _fail_if_active(conn, org_id, replay_id, error=error, message=message, owner=owner)

    # ---- the shared queue -----------------------------------------------------------------------

    def claim(
        self, owner: str, *, lease_ms: int, per_org_limit: int, max_attempts: int, now: int | None = None
    ) -> ReplayRecord | None:
        """Take the oldest claimable replay (queued, or running under a lease that ran out) of an org below
        its limit of running replays: it becomes `running`, held by `owner` until `now + lease_ms`. A
        claimable replay that was already tried `max_attempts` times fails instead. None: nothing to do."""
        now = now_ms() if now is None else now
        with self.db.read() as conn:  # most polls find nothing: a read, no write lock
            if conn.execute(f"SELECT 1 FROM replays WHERE {_CLAIMABLE} LIMIT 1", (now,)).fetchone() is None:
                return None
        with self.db.tx() as conn:
            # PostgreSQL: lock the row taken, skipping rows another replica is claiming right now.
            # SQLite: this transaction is the only writer (BEGIN IMMEDIATE), so nothing else can claim.
            skip_locked = " FOR UPDATE SKIP LOCKED" if getattr(conn, "row_lock", "") else ""
            candidates = conn.execute(
                f"SELECT id, org_id, attempts FROM replays WHERE {_CLAIMABLE} ORDER BY queued_ns, id LIMIT ?",
                (now, CLAIM_CANDIDATES),
            ).fetchall()
            full: set[str] = set()
            for replay_id, org_id, attempts in candidates:
                if org_id in full:
                    continue
                locked = conn.execute(
                    f"SELECT {_COLUMNS} FROM replays WHERE id = ? AND {_CLAIMABLE}{skip_locked}", (replay_id, now)
                ).fetchone()
                if locked is None:  # another replica holds it now
                    continue
                if attempts >= max_attempts:
                    _fail_if_active(
                        conn,
                        org_id,
                        replay_id,
                        error="interrupted",
                        message=f"interrupted: the server running this replay stopped before it finished, "
                        f"{attempts} times; start it again",
                    )
                    continue
                running = conn.execute(
                    "SELECT count(*) FROM replays WHERE org_id = ? AND status = 'running' AND lease_until_ms >= ?",
                    (org_id, now),
                ).fetchone()
                if running is not None and int(running[0]) >= per_org_limit:
                    full.add(org_id)
                    continue
                conn.execute(
                    "UPDATE replays SET status = 'running', owner = ?, lease_until_ms = ?, attempts = attempts + 1"
                    " WHERE id = ?",
                    (owner, now + lease_ms, replay_id),
                )
                record = _record(locked)
                record.status, record.owner, record.lease_until_ms = "running", owner, now + lease_ms
                record.attempts = attempts + 1
                return record
        return None

    def renew(self, owner: str, replay_ids: Sequence[str], *, lease_ms: int) -> set[str]:
        """Extend `owner`'s leases on these running replays; returns the ids it no longer holds."""
        lost: set[str] = set()
        if not replay_ids:
            return lost
        until = now_ms() + lease_ms
        with self.db.tx() as conn:
            for replay_id in replay_ids:
                cur = conn.execute(
                    "UPDATE replays SET lease_until_ms = ? WHERE id = ? AND owner = ? AND status = 'running'",
                    (until, replay_id, owner),
                )
                if cur.rowcount == 0:
                    lost.add(replay_id)
        return lost

    def fail_queued_by(self, owner: str, *, message: str) -> int:
        """Fail the replays `owner` took requests for that no worker has claimed yet (a replica stopping)."""
        with self.db.tx() as conn:
            cur = conn.execute(
                "UPDATE replays SET status = 'failed', phase = 'done', error = 'interrupted', message = ?,"
                " finished_ms = ? WHERE owner = ? AND status = 'queued'",
                (message, now_ms(), owner),
            )
            return int(cur.rowcount)

    def queued_count(self, org_id: str) -> int:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM replays WHERE org_id = ? AND status = 'queued'", (org_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def queue_position(self, org_id: str, replay_id: str) -> int | None:
        """1 = the next of this org's queued replays to start; None when it is not queued."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT status, queued_ns FROM replays WHERE id = ? AND org_id = ?", (replay_id, org_id)
            ).fetchone()
            if row is None or row[0] != "queued":
                return None
            ahead = conn.execute(
                "SELECT count(*) FROM replays WHERE org_id = ? AND status = 'queued'"
                " AND (queued_ns < ? OR (queued_ns = ? AND id < ?))",
                (org_id, row[1], row[1], replay_id),
            ).fetchone()
        return 1 + (int(ahead[0]) if ahead else 0)


def _fail_if_active(
    conn: sqlite3.Connection, org_id: str, replay_id: str, *, error: str, message: str, owner: str | None = None
) -> None:
    fence = "" if owner is None else " AND owner = ?"
    conn.execute(
        "UPDATE replays SET status = 'failed', phase = 'done', error = ?, message = ?, finished_ms = ?"
        f" WHERE id = ? AND org_id = ? AND status IN ('queued', 'running'){fence}",
        (error, message, now_ms(), replay_id, org_id, *([] if owner is None else [owner])),
    )


def _record(row: Sequence[Any]) -> ReplayRecord:
    diffs = [(str(d["path"]), str(d["diff"])) for d in json.loads(row[9])]
    return ReplayRecord(
        id=row[0],
        org_id=row[1],
        trace_id=row[2],
        from_step=row[3],
        status=row[4],
        phase=row[5],
        triggered_via=row[6],
        app=row[7],
        scenario_diff=row[8],
        source_diffs=diffs,
        replay_trace_id=row[10],
        replay_short_id=row[11],
        trace_status=row[12],
        failure_signature=row[13],
        message=row[14],
        error=row[15],
        log_tail=row[16],
        owner=row[17],
        created_ms=row[18],
        started_ms=row[19],
        finished_ms=row[20],
        duration_ms=row[21],
        promotion=json.loads(row[22]) if row[22] else None,
        lease_until_ms=row[23],
        attempts=int(row[24] or 0),
    )
