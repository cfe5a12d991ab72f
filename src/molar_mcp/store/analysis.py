"""Analyses and incidents in the embedded store (component "debugger").

- `analyses`: the latest detector findings of a trace, with the facts they were computed from (status,
  event count, last seq, analyzer version): the detectors are deterministic, so a stored analysis of the
  same facts is the analysis, and `reusable` hands it back instead of running them again.
- `incidents`: an org's failures clustered by failure signature (cluster key: org + signature), with
  `incident_traces` linking each failed trace to its one incident.

Every query is scoped to one org; a trace or incident of another org is "not found".
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

from pydantic import TypeAdapter

from molar_mcp.models import (
    INCIDENT_STATUSES,
    Analysis,
    AnalysisFinding,
    Incident,
    IncidentListResponse,
    SuggestedReplay,
)
from molar_mcp.store.db import Database
from molar_mcp.store.port import InvalidCursor, StoreError
from molar_mcp.store.search import copy_to_status_table, remember_words
from molar_mcp.store.sqlite import find_trace_row

MIGRATIONS: tuple[str, ...] = (
    # 1: analyses (one per trace: the latest), incidents, and the trace ↔ incident links.
    """
    CREATE TABLE analyses (
        trace_pk INTEGER PRIMARY KEY REFERENCES traces(pk) ON DELETE CASCADE,
        org_id TEXT NOT NULL,
        analyzer_version TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        findings TEXT NOT NULL,
        signature TEXT,
        suggested_replay TEXT,
        trace_status TEXT NOT NULL,
        event_count INTEGER NOT NULL,
        last_seq INTEGER
    );
    CREATE TABLE incidents (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        org_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open'
            CHECK (status IN ('open', 'acknowledged', 'resolved', 'muted')),
        status_ms INTEGER NOT NULL,
        owner TEXT,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        trace_count INTEGER NOT NULL DEFAULT 0,
        last_trace_id TEXT,
        title TEXT NOT NULL,
        label TEXT NOT NULL,
        UNIQUE (org_id, signature)
    );
    CREATE INDEX incidents_org_seen ON incidents(org_id, last_seen_ms DESC, pk DESC);
    CREATE INDEX incidents_org_status_seen ON incidents(org_id, status, last_seen_ms DESC, pk DESC);
    CREATE TABLE incident_traces (
        incident_pk INTEGER NOT NULL REFERENCES incidents(pk) ON DELETE CASCADE,
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        PRIMARY KEY (incident_pk, trace_pk)
    ) WITHOUT ROWID;
    CREATE INDEX incident_traces_trace ON incident_traces(trace_pk);
    """,
    # 2: an incident is the failures of one cause (the signature without its step) across runs and tests.
    """
    ALTER TABLE incidents ADD COLUMN cause TEXT;
    CREATE INDEX incidents_org_cause ON incidents(org_id, cause);
    """,
)

FAILED_STATUSES: Final = frozenset({"failed", "error", "aborted"})
_FINDINGS = TypeAdapter(list[AnalysisFinding])
_INCIDENT_COLUMNS = (
    "id, signature, status, owner, title, label, trace_count, last_trace_id, first_seen_ms, last_seen_ms, pk"
)
_MAX_SQLITE_INT = 2**63 - 1


class IncidentNotFound(StoreError):
    def __init__(self, incident_id: str) -> None:
        super().__init__(f"no incident {incident_id!r}")
        self.incident_id = incident_id


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""`update_incident(owner=KEEP)`: leave the owner as it is (None clears it)."""


@dataclass(frozen=True)
class AnalysisSubject:
    """The facts about a trace that its analysis depends on: the same facts analysed by the same
    analyzer version give the same findings."""

    trace_id: str
    status: str
    event_count: int
    last_seq: int | None


class SqliteAnalysisStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("debugger", MIGRATIONS)

    # ---- analyses -----------------------------------------------------------------------------

    def reusable(self, org_id: str, trace_ref: str, analyzer_version: str) -> tuple[AnalysisSubject, Analysis | None]:
        """The trace's current facts, and its stored analysis when it was made from exactly those facts
        by `analyzer_version` (else None: run the detectors). Raises `TraceNotFound`."""
        with self.db.read() as conn:
            row = find_trace_row(conn, org_id, trace_ref)
            pk = int(row[0])
            (last_seq,) = conn.execute("SELECT max(seq) FROM events WHERE trace_pk = ?", (pk,)).fetchone()
            subject = AnalysisSubject(
                trace_id=str(row[1]), status=str(row[7]), event_count=int(row[20]), last_seq=last_seq
            )
            stored = conn.execute(
                "SELECT analyzer_version, trace_status, event_count, last_seq FROM analyses"
                " WHERE trace_pk = ? AND org_id = ?",
                (pk, org_id),
            ).fetchone()
            same = stored is not None and tuple(stored) == (
                analyzer_version,
                subject.status,
                subject.event_count,
                subject.last_seq,
            )
            analysis = _read_analysis(conn, org_id, pk, subject.trace_id) if same else None
        return subject, analysis

    def save_analysis(
        self,
        org_id: str,
        subject: AnalysisSubject,
        *,
        analyzer_version: str,
        findings: Sequence[AnalysisFinding],
        signature: str | None,
        suggested_replay: SuggestedReplay | None,
        now: datetime | None = None,
    ) -> Analysis:
        """Store a trace's findings (best first) in place of its previous analysis, in one transaction.

        Also: the trace takes `signature` as its failure signature when it had none; a failed trace
        (failed, error, aborted) with a signature joins the org's incident of that signature (created
        when new, reopened when resolved before this failure was recorded) and leaves any other.
        """
        created_ms = _ms(now or datetime.now(UTC))
        with self.db.tx() as conn:
            row = find_trace_row(conn, org_id, subject.trace_id)
            pk, trace_created_ms, had_signature = int(row[0]), int(row[15]), row[14]
            conn.execute(
                "INSERT INTO analyses (trace_pk, org_id, analyzer_version, created_ms, findings, signature,"
                " suggested_replay, trace_status, event_count, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(trace_pk) DO UPDATE SET analyzer_version = excluded.analyzer_version,"
                " created_ms = excluded.created_ms, findings = excluded.findings, signature = excluded.signature,"
                " suggested_replay = excluded.suggested_replay, trace_status = excluded.trace_status,"
                " event_count = excluded.event_count, last_seq = excluded.last_seq",
                (
                    pk,
                    org_id,
                    analyzer_version,
                    created_ms,
                    _FINDINGS.dump_json(list(findings)).decode(),
                    signature,
                    suggested_replay.model_dump_json() if suggested_replay else None,
                    subject.status,
                    subject.event_count,
                    subject.last_seq,
                ),
            )
            if signature and not had_signature:
                conn.execute(
                    "UPDATE traces SET failure_signature = ? WHERE pk = ? AND org_id = ?", (signature, pk, org_id)
                )
                # Searchable like a signature given at ingest (the full-text body holds the signature).
                conn.execute("UPDATE traces_fts SET body = body || ? WHERE rowid = ?", ("\n" + signature, pk))
                copy_to_status_table(conn, pk)
                remember_words(conn, [signature])
            keep: int | None = None
            if signature and findings and subject.status in FAILED_STATUSES:
                keep = _join_incident(conn, org_id, pk, subject.trace_id, trace_created_ms, signature, findings[0])
            _leave_incidents(conn, org_id, pk, keep)
            analysis = _read_analysis(conn, org_id, pk, subject.trace_id)
        assert analysis is not None
        return analysis

    def get_analysis(self, org_id: str, trace_ref: str) -> Analysis | None:
        """The trace's stored analysis, or None when it was never analysed. Raises `TraceNotFound`."""
        with self.db.read() as conn:
            row = find_trace_row(conn, org_id, trace_ref)
            return _read_analysis(conn, org_id, int(row[0]), str(row[1]))

    # ---- incidents ----------------------------------------------------------------------------

    def list_incidents(
        self, org_id: str, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> IncidentListResponse:
        """The org's incidents, most recently seen first; `next_cursor` continues the list."""
        where = ["org_id = ?"]
        args: list[Any] = [org_id]
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if cursor:
            last_seen_ms, pk = _decode_cursor(cursor)
            where.append("(last_seen_ms < ? OR (last_seen_ms = ? AND pk < ?))")
            args.extend([last_seen_ms, last_seen_ms, pk])
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE {' AND '.join(where)}"
                " ORDER BY last_seen_ms DESC, pk DESC LIMIT ?",
                [*args, limit + 1],
            ).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            items = [_incident(conn, r) for r in rows]
        next_cursor = _encode_cursor(rows[-1][9], rows[-1][10]) if more and rows else None
        return IncidentListResponse(org_id=org_id, items=items, next_cursor=next_cursor)

    def get_incident(self, org_id: str, incident_id: str) -> Incident:
        with self.db.read() as conn:
            return _incident(conn, _find_incident(conn, org_id, incident_id))

    def update_incident(
        self,
        org_id: str,
        incident_id: str,
        *,
        status: str | None = None,
        owner: str | _Keep | None = KEEP,
        now: datetime | None = None,
    ) -> Incident:
        """Set an incident's status and/or owner (`owner=None` clears it). Raises `IncidentNotFound`."""
        if status is not None and status not in INCIDENT_STATUSES:
            raise ValueError(f"status must be one of {', '.join(INCIDENT_STATUSES)}")
        with self.db.tx() as conn:
            row = _find_incident(conn, org_id, incident_id)
            pk = row[10]
            if status is not None and status != row[2]:
                conn.execute(
                    "UPDATE incidents SET status = ?, status_ms = ? WHERE pk = ? AND org_id = ?",
                    (status, _ms(now or datetime.now(UTC)), pk, org_id),
                )
            if owner is not KEEP:
                conn.execute("UPDATE incidents SET owner = ? WHERE pk = ? AND org_id = ?", (owner, pk, org_id))
            return _incident(conn, _find_incident(conn, org_id, incident_id))


# ---- helpers -------------------------------------------------------------------------------------


def _join_incident(
    conn: sqlite3.Connection,
    org_id: str,
    trace_pk: int,
    trace_id: str,
    seen_ms: int,
    signature: str,
    top: AnalysisFinding,
) -> int:
    """Link the trace to the org's incident of `signature` (creating it); return the incident's pk."""
    # One cause, wherever it struck: the same failure at another step of another test is the same incident.
    # (Incidents made before causes were kept are found by their signature, and take their cause now.)
    key = cause_of(signature)
    row = conn.execute(
        "SELECT pk, status, status_ms, last_seen_ms FROM incidents WHERE org_id = ?"
        " AND (cause = ? OR (cause IS NULL AND signature = ?)) ORDER BY pk LIMIT 1",
        (org_id, key, signature),
    ).fetchone()
    if row is None:
        cur = conn.execute(
            "INSERT INTO incidents (id, org_id, signature, cause, status, status_ms, first_seen_ms, last_seen_ms,"
            " trace_count, last_trace_id, title, label) VALUES (?,?,?,?,'open',?,?,?,0,?,?,?)",
            (str(uuid.uuid4()), org_id, signature, key, seen_ms, seen_ms, seen_ms, trace_id, top.summary, top.label),
        )
        assert cur.lastrowid is not None
        incident_pk, status, status_ms, last_seen_ms = cur.lastrowid, "open", seen_ms, seen_ms
    else:
        incident_pk, status, status_ms, last_seen_ms = int(row[0]), str(row[1]), int(row[2]), int(row[3])
        conn.execute("UPDATE incidents SET cause = ? WHERE pk = ? AND org_id = ?", (key, incident_pk, org_id))
    linked = conn.execute(
        "INSERT OR IGNORE INTO incident_traces (incident_pk, trace_pk) VALUES (?, ?)", (incident_pk, trace_pk)
    ).rowcount
    if not linked:
        return incident_pk
    conn.execute(
        "UPDATE incidents SET trace_count = trace_count + 1, first_seen_ms = min(first_seen_ms, ?),"
        " last_seen_ms = max(last_seen_ms, ?) WHERE pk = ? AND org_id = ?",
        (seen_ms, seen_ms, incident_pk, org_id),
    )
    if seen_ms >= last_seen_ms:
        # The latest failure names the incident.
        conn.execute(
            "UPDATE incidents SET last_trace_id = ?, title = ?, label = ? WHERE pk = ? AND org_id = ?",
            (trace_id, top.summary, top.label, incident_pk, org_id),
        )
    if status == "resolved" and seen_ms > status_ms:
        # A failure recorded after the fix is a regression. Muted and acknowledged incidents stay so.
        conn.execute(
            "UPDATE incidents SET status = 'open', status_ms = ? WHERE pk = ? AND org_id = ?",
            (seen_ms, incident_pk, org_id),
        )
    return incident_pk


def _leave_incidents(conn: sqlite3.Connection, org_id: str, trace_pk: int, keep: int | None) -> None:
    """Unlink the trace from every incident but `keep` (its signature changed, or it no longer fails)."""
    others = conn.execute(
        "SELECT it.incident_pk FROM incident_traces it JOIN incidents i ON i.pk = it.incident_pk"
        " WHERE it.trace_pk = ? AND i.org_id = ? AND it.incident_pk IS NOT ?",
        (trace_pk, org_id, keep),
    ).fetchall()
    for (incident_pk,) in others:
        conn.execute("DELETE FROM incident_traces WHERE incident_pk = ? AND trace_pk = ?", (incident_pk, trace_pk))
        conn.execute(
            "UPDATE incidents SET trace_count = max(0, trace_count - 1) WHERE pk = ? AND org_id = ?",
            (incident_pk, org_id),
        )


def _read_analysis(conn: sqlite3.Connection, org_id: str, trace_pk: int, trace_id: str) -> Analysis | None:
    row = conn.execute(
        "SELECT a.analyzer_version, a.created_ms, a.findings, a.signature, a.suggested_replay, i.id"
        " FROM analyses a LEFT JOIN incident_traces it ON it.trace_pk = a.trace_pk"
        " LEFT JOIN incidents i ON i.pk = it.incident_pk AND i.org_id = a.org_id"
        " WHERE a.trace_pk = ? AND a.org_id = ?",
        (trace_pk, org_id),
    ).fetchone()
    if row is None:
        return None
    return Analysis(
        trace_id=trace_id,
        analyzer_version=row[0],
        findings=_FINDINGS.validate_json(row[2]),
        failure_signature=row[3],
        suggested_replay=SuggestedReplay.model_validate_json(row[4]) if row[4] else None,
        incident_id=row[5],
        created_at=_dt(row[1]),
    )


_STEP_PREFIX: Final = re.compile(r"^step-\d+: ")
SPREAD_SHOWN: Final = 10  # tests and commits an incident lists


def cause_of(signature: str) -> str:
    """What an incident clusters on: the failure signature without its step ("step-5: http 404 POST
    /api/x" → "http 404 POST /api/x"), so one cause in several tests (at different steps) is one incident."""
    return _STEP_PREFIX.sub("", signature)


def _spread(conn: sqlite3.Connection, incident_pk: int) -> dict[str, Any]:
    """The tests (scenarios) and commits an incident's failures span, from its traces."""
    rows = conn.execute(
        "SELECT t.scenario_slug, t.code_sha FROM incident_traces it JOIN traces t ON t.pk = it.trace_pk"
        " WHERE it.incident_pk = ? ORDER BY t.created_ms, t.pk",
        (incident_pk,),
    ).fetchall()
    tests = list(dict.fromkeys(str(r[0]) for r in rows if r[0]))
    commits = list(dict.fromkeys(str(r[1]) for r in rows if r[1]))
    return {
        "test_count": len(tests),
        "tests": tests[-SPREAD_SHOWN:][::-1],
        "commit_count": len(commits),
        "commits": commits[:SPREAD_SHOWN],
        "first_commit": commits[0] if commits else None,
        "last_commit": str(rows[-1][1]) if rows and rows[-1][1] else None,
    }


def _find_incident(conn: sqlite3.Connection, org_id: str, incident_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {_INCIDENT_COLUMNS} FROM incidents WHERE id = ? AND org_id = ?", (incident_id, org_id)
    ).fetchone()
    if row is None:
        raise IncidentNotFound(incident_id)
    return tuple(row)


def _incident(conn: sqlite3.Connection, row: Sequence[Any]) -> Incident:
    return Incident(
        **_spread(conn, int(row[10])),
        id=row[0],
        signature=row[1],
        status=row[2],
        owner=row[3],
        title=row[4],
        label=row[5],
        trace_count=row[6],
        last_trace_id=row[7],
        first_seen_at=_dt(row[8]),
        last_seen_at=_dt(row[9]),
    )


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _encode_cursor(last_seen_ms: int, pk: int) -> str:
    raw = json.dumps([last_seen_ms, pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        last_seen_ms, pk = json.loads(raw)
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and -_MAX_SQLITE_INT <= v <= _MAX_SQLITE_INT
            for v in (last_seen_ms, pk)
        ):
            raise ValueError("cursor fields are not integers SQLite can hold")
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this server issued; start again without it") from exc
    return last_seen_ms, pk
