"""Runs in the embedded store (component "runs"): a run row and the traces linked to it, test by test.

A trace joins a run at ingest (`run_id` of `POST /v1/traces/ingest`, or the run a report upload makes).
The run's counts and failing tests are derived from its linked traces on every read.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

from molar_mcp.models.runs import FAILING_OUTCOMES, NewRun, RepoRef, Run, RunCounts, RunList, RunTest
from molar_mcp.store.db import Database

RUNS_MIGRATIONS: tuple[str, ...] = (
    # 1: runs and their traces.
    """
    CREATE TABLE runs (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        short_id TEXT NOT NULL UNIQUE,
        org_id TEXT NOT NULL,
        name TEXT,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        commit_sha TEXT,
        branch TEXT,
        pr_number INTEGER,
        ci_url TEXT,
        repo_path TEXT,
        repo_remote TEXT,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER
    );
    CREATE INDEX runs_org_created ON runs(org_id, created_ms DESC, pk DESC);
    CREATE TABLE run_traces (
        run_pk INTEGER NOT NULL REFERENCES runs(pk) ON DELETE CASCADE,
        trace_id TEXT NOT NULL,
        short_id TEXT NOT NULL,
        test_key TEXT NOT NULL,
        title TEXT,
        status TEXT NOT NULL,
        retry INTEGER NOT NULL DEFAULT 0,
        position INTEGER NOT NULL,
        PRIMARY KEY (run_pk, trace_id)
    );
    CREATE INDEX run_traces_trace ON run_traces(trace_id);
    """,
)
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_COLUMNS = (
    "pk, id, short_id, name, kind, status, commit_sha, branch, pr_number, ci_url, repo_path, repo_remote,"
    " created_ms, finished_ms, org_id"
)


class RunNotFound(LookupError):
    pass


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms is not None else None


class SqliteRunStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("runs", RUNS_MIGRATIONS)

    def create(self, org_id: str, new: NewRun, *, status: str = "running") -> Run:
        run_id = str(uuid.uuid4())
        with self.db.tx() as conn:
            short = self._short_id(conn)
            conn.execute(
                "INSERT INTO runs (id, short_id, org_id, name, kind, status, commit_sha, branch, pr_number, ci_url,"
                " repo_path, repo_remote, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    short,
                    org_id,
                    new.name,
                    new.kind,
                    status,
                    new.commit,
                    new.branch,
                    new.pr_number,
                    new.ci_url,
                    new.repo.path if new.repo else None,
                    new.repo.remote if new.repo else None,
                    _ms(datetime.now(UTC)),
                ),
            )
        return self.get(org_id, run_id)

    def _short_id(self, conn: sqlite3.Connection) -> str:
        while True:
            candidate = "r" + "".join(secrets.choice(_ALPHABET) for _ in range(8))
            if conn.execute("SELECT 1 FROM runs WHERE short_id = ?", (candidate,)).fetchone() is None:
                return candidate

    def _row(self, conn: sqlite3.Connection, org_id: str, ref: str) -> tuple[Any, ...]:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE org_id = ? AND (id = ? OR short_id = ?)", (org_id, ref, ref)
        ).fetchone()
        if row is None:
            raise RunNotFound(f"no run {ref!r}")
        return tuple(row)

    def resolve(self, org_id: str, ref: str) -> str:
        with self.db.read() as conn:
            return str(self._row(conn, org_id, ref)[1])

    def get(self, org_id: str, ref: str) -> Run:
        with self.db.read() as conn:
            row = self._row(conn, org_id, ref)
            links = conn.execute(
                "SELECT trace_id, short_id, test_key, title, status, retry FROM run_traces WHERE run_pk = ?"
                " ORDER BY position",
                (row[0],),
            ).fetchall()
        return _run(row, links)

    def list_runs(
        self, org_id: str, *, limit: int = 50, cursor: str | None = None, status: str | None = None
    ) -> RunList:
        where: list[str] = ["org_id = ?"]
        args: list[Any] = [org_id]
        if status:
            where.append("status = ?")
            args.append(status)
        if cursor:
            try:
                created, pk = (int(x) for x in cursor.split(".", 1))
            except ValueError:
                raise ValueError(f"cursor {cursor!r} is not a runs cursor") from None
            where.append("(created_ms < ? OR (created_ms = ? AND pk < ?))")
            args += [created, created, pk]
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY created_ms DESC, pk DESC LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
            items = []
            for row in rows[:limit]:
                links = conn.execute(
                    "SELECT trace_id, short_id, test_key, title, status, retry FROM run_traces WHERE run_pk = ?"
                    " ORDER BY position",
                    (row[0],),
                ).fetchall()
                items.append(_run(tuple(row), links))
        nxt = f"{rows[limit - 1][12]}.{rows[limit - 1][0]}" if len(rows) > limit else None
        return RunList(items=items, next_cursor=nxt)

    def add_trace(
        self,
        org_id: str,
        run_ref: str,
        *,
        trace_id: str,
        short_id: str,
        test_key: str,
        title: str | None,
        status: str,
        retry: int = 0,
    ) -> None:
        with self.db.tx() as conn:
            row = self._row(conn, org_id, run_ref)
            position = conn.execute("SELECT COUNT(*) FROM run_traces WHERE run_pk = ?", (row[0],)).fetchone()[0]
            conn.execute(
                "INSERT OR IGNORE INTO run_traces"
                " (run_pk, trace_id, short_id, test_key, title, status, retry, position) VALUES (?,?,?,?,?,?,?,?)",
                (row[0], trace_id, short_id, test_key, title, status, retry, position),
            )
            if row[5] == "queued":
                conn.execute("UPDATE runs SET status = 'running' WHERE pk = ?", (row[0],))

    def finish(self, org_id: str, run_ref: str, status: str | None = None) -> Run:
        run = self.get(org_id, run_ref)
        final = status or ("failed" if run.counts.failed + run.counts.timed_out + run.counts.interrupted else "passed")
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, finished_ms = ? WHERE org_id = ? AND id = ?",
                (final, _ms(datetime.now(UTC)), org_id, run.id),
            )
        return self.get(org_id, run.id)

    def trace_ids(self, org_id: str, run_ref: str) -> list[str]:
        run = self.get(org_id, run_ref)
        return [t for test in run.failing + run.flaky for t in test.trace_ids]


def _run(row: tuple[Any, ...], links: list[Any]) -> Run:
    tests: dict[str, list[Any]] = {}
    for link in links:
        tests.setdefault(link[2], []).append(link)
    counts = RunCounts(tests=len(tests), attempts=len(links))
    failing: list[RunTest] = []
    flaky: list[RunTest] = []
    for key, attempts in tests.items():
        attempts.sort(key=lambda a: a[5])
        last = attempts[-1]
        outcome = str(last[4])
        if outcome == "passed" and any(a[4] in FAILING_OUTCOMES for a in attempts[:-1]):
            outcome = "flaky"
        field = outcome if outcome in ("passed", "failed", "flaky", "skipped", "timed_out", "interrupted") else "other"
        setattr(counts, field, getattr(counts, field) + 1)
        test = RunTest(
            scenario_slug=key,
            title=last[3],
            status=outcome,
            attempts=len(attempts),
            trace_id=last[0],
            short_id=last[1],
            trace_ids=[a[0] for a in attempts],
        )
        if outcome in FAILING_OUTCOMES:
            failing.append(test)
        elif outcome == "flaky":
            flaky.append(test)
    return Run(
        id=row[1],
        short_id=row[2],
        org_id=row[14],
        name=row[3],
        kind=row[4],
        status=row[5],
        commit=row[6],
        branch=row[7],
        pr_number=row[8],
        ci_url=row[9],
        repo=RepoRef(path=row[10], remote=row[11]) if row[10] or row[11] else None,
        created_at=_dt(row[12]) or datetime.now(UTC),
        finished_at=_dt(row[13]),
        counts=counts,
        failing=failing,
        flaky=flaky,
    )
