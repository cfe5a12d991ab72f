"""A test's history: how the recent ordinary runs of one scenario went (component "history").

A scenario is a test's identity (a Playwright test's project, file and title; an agent's name; a
scenario slug). Its health row is recomputed from its newest runs whenever one of them is stored or
finishes, so runs ingested out of order (an old bundle after a new one) still read in time order.
Replays (traces with a parent) are not runs of the test: they never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from molar_mcp.models import RunRef, ScenarioHistory

HISTORY_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE scenario_health (
        org_id TEXT NOT NULL,
        scenario_id TEXT NOT NULL,
        recent TEXT NOT NULL,
        flaky INTEGER NOT NULL,
        newly_failing INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (org_id, scenario_id)
    ) WITHOUT ROWID;
    CREATE INDEX scenario_health_flaky ON scenario_health(org_id, scenario_id) WHERE flaky = 1;
    CREATE INDEX scenario_health_newly ON scenario_health(org_id, scenario_id) WHERE newly_failing = 1;
    """,
    # 2: a scenario's runs newest first with a stable tie-break, read by the index (no sort of them all).
    """
    CREATE INDEX IF NOT EXISTS traces_org_scenario_newest ON traces(org_id, scenario_id, created_ms DESC, pk DESC);
    """,
)

WINDOW = 20  # runs a history looks back over
# One letter per finished run, newest first: p passed, f failed, k flaky (failed, then passed on retry).
_LETTER = {
    "passed": "p",
    "failed": "f",
    "error": "f",
    "aborted": "f",
    "timedOut": "f",
    "timed_out": "f",
    "interrupted": "f",
    "flaky": "k",
}
_RUN_COLUMNS = "id, short_id, status, code_sha, created_ms"
FAILING_STATUS_SQL = ", ".join(f"'{s}'" for s, letter in _LETTER.items() if letter == "f")


def _recent_rows(conn: Any, org_id: str, scenario_id: str, limit: int) -> list[tuple[Any, ...]]:
    # `traces_org_scenario_newest` gives this order, so the read walks the newest runs and stops after
    # `limit` (without it SQLite sorted all of a scenario's runs: seconds at 1M traces). Runs stored in
    # the same millisecond keep the order they were stored in.
    statuses = ", ".join(f"'{s}'" for s in _LETTER)
    rows: list[tuple[Any, ...]] = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM traces WHERE org_id = ? AND scenario_id = ? AND parent_trace_id IS NULL"
        f" AND status IN ({statuses}) ORDER BY created_ms DESC, pk DESC LIMIT ?",
        (org_id, scenario_id, limit),
    ).fetchall()
    return rows


def classify(recent: str) -> tuple[bool, bool]:
    """(flaky, newly failing) of a scenario from its recent letters, newest first.

    Flaky: a run passed only on retry, or passes and failures alternate (at least two changes
    between passing and failing in the window). Newly failing: the newest runs fail, not flaky, and
    the runs before them passed."""
    letters = recent.replace("k", "p")
    changes = sum(1 for a, b in pairwise(letters) if a != b)
    flaky = "k" in recent or changes >= 2
    streak = len(letters) - len(letters.lstrip("f"))
    newly = not flaky and 0 < streak < len(letters)
    return flaky, newly


def refresh_health(conn: Any, org_id: str, scenario_id: str | None, now_ms: int | None = None) -> None:
    """Recompute one scenario's health row (call inside the transaction that stored a run)."""
    if scenario_id is None:
        return
    rows = _recent_rows(conn, org_id, scenario_id, WINDOW)
    recent = "".join(_LETTER[r[2]] for r in rows)
    flaky, newly = classify(recent)
    now = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    conn.execute(
        "INSERT INTO scenario_health (org_id, scenario_id, recent, flaky, newly_failing, updated_ms)"
        " VALUES (?,?,?,?,?,?) ON CONFLICT(org_id, scenario_id) DO UPDATE SET recent = excluded.recent,"
        " flaky = excluded.flaky, newly_failing = excluded.newly_failing, updated_ms = excluded.updated_ms",
        (org_id, scenario_id, recent, int(flaky), int(newly), now),
    )


def backfill_health(conn: Any) -> None:
    """Fill the health rows of a store written before this component existed."""
    pairs = conn.execute("SELECT DISTINCT org_id, scenario_id FROM traces WHERE scenario_id IS NOT NULL").fetchall()
    for org_id, scenario_id in pairs:
        refresh_health(conn, org_id, scenario_id)


def _ref(row: Sequence[Any]) -> RunRef:
    return RunRef(
        trace_id=row[0],
        short_id=row[1],
        status=row[2],
        code_sha=row[3],
        created_at=datetime.fromtimestamp(row[4] / 1000, tz=UTC),
    )


def _sha(ref: RunRef | None) -> str:
    return f" at commit {ref.code_sha[:10]}" if ref is not None and ref.code_sha else ""


def read_history(conn: Any, org_id: str, scenario_id: str | None) -> ScenarioHistory | None:
    """The history of a scenario's ordinary runs, with a sentence that says it."""
    if scenario_id is None:
        return None
    rows = _recent_rows(conn, org_id, scenario_id, WINDOW)
    if not rows:
        return None
    recent = "".join(_LETTER[r[2]] for r in rows)
    flaky, newly = classify(recent)
    letters = recent.replace("k", "p")
    fail_streak = len(letters) - len(letters.lstrip("f"))
    pass_streak = len(letters) - len(letters.lstrip("p"))
    failed = sum(1 for c in recent if c in "fk")
    first_fail = _ref(rows[fail_streak - 1]) if fail_streak else None
    last_pass = _ref(rows[fail_streak]) if fail_streak < len(rows) else None
    n = len(rows)
    if flaky:
        sentence = f"flaky: {failed} of the last {n} runs failed"
        if "k" in recent:
            sentence += f" ({recent.count('k')} passed only on retry)"
    elif fail_streak == n:
        sentence = f"failing on all of the last {n} runs"
    elif fail_streak:
        before = len(letters[fail_streak:]) - len(letters[fail_streak:].lstrip("p"))
        since = f"commit {first_fail.code_sha[:10]}" if first_fail and first_fail.code_sha else "run"
        sentence = (
            f"failing since {since} {first_fail.short_id if first_fail else ''} "
            f"({fail_streak} run{'s' if fail_streak > 1 else ''}); "
            f"passed on the {before} run{'s' if before > 1 else ''} before, "
            f"last{_sha(last_pass)} in {last_pass.short_id if last_pass else '?'}"
        )
    elif pass_streak == n:
        sentence = f"passed on all of the last {n} runs"
    else:
        sentence = f"passed on the last {pass_streak} runs; {failed} of the last {n} failed"
    return ScenarioHistory(
        runs=n,
        failed=failed,
        recent=recent,
        flaky=flaky,
        newly_failing=newly,
        fail_streak=fail_streak,
        pass_streak=pass_streak,
        first_failing=first_fail,
        last_passing=last_pass,
        summary=sentence,
    )
