"""Search with a status filter reads that status's own full-text table (store/search.py `status_table`):
the same rows in the same order as the shared index gives, for every status, whatever happened to the
trace since its text was indexed (its status changed, its text was replaced or grew, it was deleted)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.models import Event
from molar_mcp.models.traces import TRACE_STATUSES
from molar_mcp.store import LOCAL_ORG_ID, NewTrace, SqliteTraceStore, TraceQuery
from molar_mcp.store.analysis import SqliteAnalysisStore
from molar_mcp.store.live import IncomingEvent, LiveTraces
from molar_mcp.store.search import (
    SEARCH_MIGRATIONS,
    STATUS_PARTITIONS,
    by_matches,
    facet_word,
    fetch_rows,
    run,
    status_table,
    streaming_match,
)
from molar_mcp.store.sqlite import fts_words

T0 = datetime(2026, 6, 1, tzinfo=UTC)
WORDS = ["billing", "webhook", "checkout", "coupon", "timeout"]
# Words of the text, statuses' names among them: a trace's text holds its status at indexing, and a
# message may name any status ("3 passed, 1 queued").
QUERIES = ["passed", "queued", "failed", "error", "webhook", "billing coupon", "time", "pass", "zyzzyva", "xyloph"]


def _fill(store: SqliteTraceStore) -> dict[str, str]:
    """Traces of every status, then changes after their text was indexed. Returns notable ids."""
    rng = random.Random(7)
    notable: dict[str, str] = {}
    for i in range(400):
        status = TRACE_STATUSES[i % len(TRACE_STATUSES)] if i < 100 else rng.choice(("passed", "failed"))
        other = rng.choice(TRACE_STATUSES)
        trace_id, _ = store.add_trace(
            LOCAL_ORG_ID,
            NewTrace(
                scenario_slug=f"{rng.choice(WORDS)}-{i % 9}",
                status=status,
                created_at=T0 + timedelta(minutes=i if rng.random() < 0.85 else rng.randrange(0, 500)),
                events=[
                    Event(seq=0, ts=1, kind="step.start", step_id="s", message=f"{rng.choice(WORDS)} 3 {other}"),
                    Event(seq=1, ts=2, kind="log", step_id="s", message=f"{rng.choice(WORDS)} {rng.choice(WORDS)}"),
                ],
            ),
            {},
        )
        notable.setdefault(f"first {status}", trace_id)
    live = LiveTraces(store.db)
    # Indexed while running, then finished: the text moves from the running table to the failed one.
    notable["live"], _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="xylophone-run")
    live.append_events(
        LOCAL_ORG_ID,
        notable["live"],
        [IncomingEvent(0, Event(seq=0, ts=1, kind="error", step_id="s", message="queued webhook passed"))],
    )
    live.finish_trace(LOCAL_ORG_ID, notable["live"], status="failed")
    notable["running"], _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="xylophone-still")
    with store.db.tx() as conn:
        # A status changed by hand after indexing (queued → passed) and another facet changed (source).
        conn.execute("UPDATE traces SET status = 'passed' WHERE id = ?", (notable["first queued"],))
        conn.execute("UPDATE traces SET source = 'schedule' WHERE id = ?", (notable["first failed"],))
        # A deleted trace: its text stays in the index, the search never returns it.
        conn.execute("DELETE FROM traces WHERE id = ?", (notable["first error"],))
    # The analysis appends a signature it found to the text of a trace that had none.
    analysis = SqliteAnalysisStore(store.db)
    subject, _ = analysis.reusable(LOCAL_ORG_ID, notable["first timed_out"], "test")
    analysis.save_analysis(
        LOCAL_ORG_ID,
        subject,
        analyzer_version="test",
        findings=[],
        signature="assertion:xylophage",
        suggested_replay=None,
    )
    return notable


@pytest.fixture(scope="module")
def every_status(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqliteTraceStore, dict[str, str]]]:
    store = SqliteTraceStore(Path(tmp_path_factory.mktemp("status-search")) / "data")
    notable = _fill(store)
    yield store, notable
    store.close()


def _plain(conn: sqlite3.Connection, q: str, status: str | None) -> list[str]:
    """Every match in the shared index, sorted: the plain answer."""
    match = streaming_match(conn, fts_words(q))
    if match is None:
        return []
    rows = conn.execute(
        "SELECT t.id FROM traces t WHERE t.org_id = ? AND (? IS NULL OR t.status = ?) AND t.pk IN"
        " (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?) ORDER BY t.created_ms DESC, t.pk DESC",
        (LOCAL_ORG_ID, status, status, match),
    ).fetchall()
    return [r[0] for r in rows]


def _paged(store: SqliteTraceStore, q: str, limit: int, **filters: Any) -> list[str]:
    got: list[str] = []
    cursor = None
    for _ in range(500):
        page = store.list_traces(LOCAL_ORG_ID, TraceQuery(q=q, limit=limit, cursor=cursor, **filters))
        got.extend(item.id for item in page.items)
        if (cursor := page.next_cursor) is None:
            return got
    raise AssertionError("too many pages")


def test_every_status_has_its_table() -> None:
    """A status without a table would be searched in the shared index (right, but slow): a new status
    needs a search migration that makes its table."""
    assert STATUS_PARTITIONS == TRACE_STATUSES


@pytest.mark.parametrize("status", TRACE_STATUSES)
def test_a_status_filter_gives_what_the_shared_index_gives(
    every_status: tuple[SqliteTraceStore, dict[str, str]], status: str
) -> None:
    store, _ = every_status
    for q in QUERIES:
        with store.db.read() as conn:
            expected = _plain(conn, q, status)
        for limit in (1, 4, 50):
            assert _paged(store, q, limit, status=status) == expected, (q, limit)


@pytest.mark.parametrize("status", TRACE_STATUSES)
def test_the_status_table_plan_alone_equals_the_shared_index_plan(
    every_status: tuple[SqliteTraceStore, dict[str, str]], status: str
) -> None:
    """Plan 1 run alone over the status's table (no status facet) and over the shared index (with it)."""
    store, _ = every_status
    where, args = ["t.org_id = ?", "t.status = ?"], [LOCAL_ORG_ID, status]
    with store.db.read() as conn:
        for q in QUERIES:
            match = streaming_match(conn, fts_words(q))
            if match is None:
                continue
            shared = run(by_matches(conn, where, args, f'({match}) AND "{facet_word("status", status)}"', 10))
            own = run(by_matches(conn, where, args, match, 10, table=status_table(status)))
            assert own == shared, q
            assert [r[0] for r in fetch_rows(conn, "t.pk", own)] == own


def test_the_changes_after_indexing_are_searched_by_status(
    every_status: tuple[SqliteTraceStore, dict[str, str]],
) -> None:
    store, notable = every_status

    def found(q: str, status: str) -> list[str]:
        return [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(q=q, status=status)).items]

    assert found("xylophone", "failed") == [notable["live"]]
    assert found("xylophone queued", "failed") == [notable["live"]]  # its text replaced at the finish
    assert found("xylophone", "running") == [notable["running"]]
    assert notable["first queued"] in found("queued", "passed")
    assert notable["first queued"] not in found("queued", "queued")
    assert found("xylophage", "timed_out") == [notable["first timed_out"]]
    assert notable["first error"] not in found("error", "error")
    assert found("queued", "failed") != []


def test_each_status_table_holds_the_shared_text_of_its_traces(
    every_status: tuple[SqliteTraceStore, dict[str, str]],
) -> None:
    """Kept in step: each status's table holds exactly the text the shared index holds for the traces of
    that status (a deleted trace's text may stay behind, as it stays in the shared index)."""
    store, _ = every_status
    with store.db.read() as conn:
        for status in TRACE_STATUSES:
            own = set(conn.execute(f"SELECT rowid, body FROM {status_table(status)}").fetchall())
            shared = set(
                conn.execute(
                    "SELECT f.rowid, f.body FROM traces_fts f JOIN traces t ON t.pk = f.rowid WHERE t.status = ?",
                    (status,),
                ).fetchall()
            )
            live_pks = {r[0] for r in conn.execute("SELECT pk FROM traces")}
            assert {r for r in own if r[0] in live_pks} == shared, status
            assert shared, status


def test_a_data_dir_searched_before_status_tables_gets_them_when_opened(tmp_path: Path) -> None:
    """Search migration 6 fills each status's table from the shared index and moves the facet trigger on:
    a status change after the migration moves the text."""
    store = SqliteTraceStore(tmp_path / "data")
    try:
        notable = _fill(store)
        with store.db.tx() as conn:  # back to search version 5: no status tables, the trigger of then
            for status in STATUS_PARTITIONS:
                conn.execute(f"DROP TABLE {status_table(status)}")
            conn.execute("DROP TRIGGER traces_search_facets")
            conn.execute(SEARCH_MIGRATIONS[4].split("VALUES ('optimize');")[1].strip())  # its one trigger
            conn.execute("UPDATE schema_versions SET version = 5 WHERE component = 'search'")
        with store.db.read() as conn:
            before = {(q, s): _plain(conn, q, s) for q in QUERIES for s in TRACE_STATUSES}
    finally:
        store.close()
    store = SqliteTraceStore(tmp_path / "data")
    try:
        with store.db.read() as conn:
            assert conn.execute("SELECT version FROM schema_versions WHERE component = 'search'").fetchone() == (
                len(SEARCH_MIGRATIONS),
            )
        for (q, status), expected in before.items():
            assert _paged(store, q, 50, status=status) == expected, (q, status)
        with store.db.tx() as conn:
            conn.execute("UPDATE traces SET status = 'skipped' WHERE id = ?", (notable["live"],))
        assert [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(q="xylophone", status="skipped")).items] == [
            notable["live"]
        ]
        assert store.list_traces(LOCAL_ORG_ID, TraceQuery(q="xylophone", status="failed")).items == []
    finally:
        store.close()
