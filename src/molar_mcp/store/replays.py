"""Replays in the embedded store (component "replays"): the scenario each replayable trace was recorded
from, and every replay's request, progress and outcome. Every query is filtered by org."""

from __future__ import annotations

import json
import os
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
    "created_ms, started_ms, finished_ms, duration_ms, promotion"
)


class ReplayNotFound(StoreError):
    def __init__(self, replay_id: str) -> None:
        super().__init__(f"no replay {replay_id!r} in this org")
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


def this_owner() -> str:
    """Who runs a replay: this process. A row whose owner process is gone was interrupted."""
    return f"pid:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    if owner is None or not owner.startswith("pid:"):
        return False
    try:
        pid = int(owner[4:])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    ) -> ReplayRecord:
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
            owner=this_owner(),
        )
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO replays (id, org_id, trace_id, from_step, status, phase, triggered_via, app,"
                " scenario_diff, source_diffs, message, owner, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
        return self._settled(_record(row))

    def list_for_trace(self, org_id: str, trace_id: str, limit: int = 100) -> list[ReplayRecord]:
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM replays WHERE org_id = ? AND trace_id = ? ORDER BY created_ms DESC LIMIT ?",
                (org_id, trace_id, limit),
            ).fetchall()
        return [self._settled(_record(row)) for row in rows]

    def update(self, org_id: str, replay_id: str, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update replay fields {sorted(unknown)}")
        if not fields:
            return
        names = sorted(fields)
        with self.db.tx() as conn:
            cur = conn.execute(
                f"UPDATE replays SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ? AND org_id = ?",
                [*(fields[n] for n in names), replay_id, org_id],
            )
            if cur.rowcount == 0:
                raise ReplayNotFound(replay_id)

    def set_promotion(self, org_id: str, replay_id: str, promotion: PromoteFixResult) -> None:
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE replays SET promotion = ? WHERE id = ? AND org_id = ?",
                (promotion.model_dump_json(), replay_id, org_id),
            )

    def fail_active(self, org_id: str, replay_id: str, *, error: str, message: str) -> None:
        """Mark a replay failed if it is still queued or running (e.g. the server stopped)."""
        with self.db.tx() as conn:
            _fail_if_active(conn, org_id, replay_id, error=error, message=message)

    def _settled(self, record: ReplayRecord) -> ReplayRecord:
        """A queued or running replay whose owner process is gone will never finish: say so."""
        if record.status not in ACTIVE_STATES or _owner_alive(record.owner):
            return record
        message = "interrupted: the server running this replay stopped before it finished; start it again"
        with self.db.tx() as conn:
            _fail_if_active(conn, record.org_id, record.id, error="interrupted", message=message)
        record.status, record.phase, record.error, record.message = "failed", "done", "interrupted", message
        return record


def _fail_if_active(conn: sqlite3.Connection, org_id: str, replay_id: str, *, error: str, message: str) -> None:
    conn.execute(
        "UPDATE replays SET status = 'failed', phase = 'done', error = ?, message = ?, finished_ms = ?"
        " WHERE id = ? AND org_id = ? AND status IN ('queued', 'running')",
        (error, message, now_ms(), replay_id, org_id),
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
    )
