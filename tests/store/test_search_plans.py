"""Text search (store/search.py): every plan returns exactly what a plain sort of all matches returns,
whatever the order traces arrived in, the filters, the page size and the cursor."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, NewTrace, SqliteTraceStore, TraceQuery
from molar_mcp.store.search import by_everything, by_filters, by_matches, search, streaming_match
from molar_mcp.store.sqlite import fts_words

WORDS = ["billing", "webhook", "checkout", "coupon", "refund", "login", "timeout", "upgrade"]
STATUSES = ["passed", "failed", "error", "queued"]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
COLUMNS = "t.pk, t.created_ms, t.id"


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteTraceStore]:
    """700 traces in two orgs, mostly in time order, some from the past, some from the future, some
    created in the same millisecond."""
    rng = random.Random(16)
    store = SqliteTraceStore(Path(tmp_path_factory.mktemp("search")) / "data")
    for i in range(700):
        minute = i if rng.random() < 0.8 else rng.randrange(0, 900)
        if rng.random() < 0.05:
            minute = 300  # ties on created_ms
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        status = rng.choice(STATUSES)
        store.add_trace(
            LOCAL_ORG_ID if rng.random() < 0.9 else "org_other",
            NewTrace(
                scenario_slug=f"{a}-{i % 7}",
                status=status,
                failure_signature=f"assertion:{b}-40{i % 5}" if status != "passed" else None,
                created_at=T0 + timedelta(minutes=minute),
                events=[Event(seq=0, ts=1, kind="step.start", step_id="s", message=f"{b} /{a}?x=1 Café")],
            ),
            {},
        )
    yield store
    store.close()


QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("billing", {}),
    ("webh", {}),
    ("404", {}),
    ("webhook-40", {}),
    ("cafe", {}),
    ("billing coupon", {"status": "failed"}),
    ("timeout", {"status": "queued"}),
    ("passed", {"status": "failed"}),
    ("refund", {"scenario_slug": "refund-3"}),
    ("zyzzyva", {}),
    ("login", {"created_from": T0 + timedelta(minutes=100), "created_to": T0 + timedelta(minutes=400)}),
]


def reference(conn: sqlite3.Connection, q: str, filters: dict[str, Any], org: str = LOCAL_ORG_ID) -> list[str]:
    """Every match, sorted: the plain answer."""
    where = ["t.org_id = ?"]
    args: list[Any] = [org]
    for key, column in (("status", "status"), ("scenario_slug", "scenario_slug")):
        if key in filters:
            where.append(f"t.{column} = ?")
            args.append(filters[key])
    rows = conn.execute(
        f"SELECT t.id, t.created_ms FROM traces t WHERE {' AND '.join(where)} AND t.pk IN "
        "(SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?) ORDER BY t.created_ms DESC, t.pk DESC",
        [*args, _prefix_query(q)],
    ).fetchall()
    lo = filters.get("created_from")
    hi = filters.get("created_to")
    return [
        r[0]
        for r in rows
        if (lo is None or r[1] >= int(lo.timestamp() * 1000)) and (hi is None or r[1] < int(hi.timestamp() * 1000))
    ]


def _prefix_query(q: str) -> str:
    words = fts_words(q)
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " AND ".join(quoted)


@pytest.mark.parametrize(("q", "filters"), QUERIES)
@pytest.mark.parametrize("limit", [1, 7, 50])
def test_pages_of_a_search_are_the_sorted_matches(
    shuffled: SqliteTraceStore, q: str, filters: dict[str, Any], limit: int
) -> None:
    with shuffled.db.read() as conn:
        expected = reference(conn, q, filters)
    got: list[str] = []
    cursor = None
    for _ in range(1000):
        page = shuffled.list_traces(LOCAL_ORG_ID, TraceQuery(q=q, limit=limit, cursor=cursor, **filters))
        got.extend(item.id for item in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert got == expected
    if q not in ("zyzzyva",) and not filters:
        assert expected, f"the data has matches for {q!r}"


@pytest.mark.parametrize(("q", "filters"), [x for x in QUERIES if "created_from" not in x[1]])
def test_each_plan_alone_gives_the_same_rows(shuffled: SqliteTraceStore, q: str, filters: dict[str, Any]) -> None:
    where = ["t.org_id = ?"] + [f"t.{k} = ?" for k in filters]
    args = [LOCAL_ORG_ID, *filters.values()]
    with shuffled.db.read() as conn:
        expected = reference(conn, q, filters)[:20]
        match = streaming_match(conn, fts_words(q))
        if match is None:
            assert expected == []
            return
        plans = {
            "matches": by_matches(conn, COLUMNS, where, args, match, 20, budget=60),
            "filters": by_filters(conn, COLUMNS, where, args, match, 20, budget=60),
            "everything": by_everything(conn, COLUMNS, where, args, match, 20),
            "chosen": search(conn, COLUMNS, where, args, match, 20),
        }
    for name, rows in plans.items():
        assert rows is not None, name
        assert [r[2] for r in rows] == expected, name


def test_a_plan_out_of_time_says_so(shuffled: SqliteTraceStore) -> None:
    with shuffled.db.read() as conn:
        match = streaming_match(conn, ["billing"])
        assert match is not None
        where, args = ["t.org_id = ?", "t.status = ?"], [LOCAL_ORG_ID, "queued"]
        assert by_matches(conn, COLUMNS, where, args, match, 500, budget=0) is None
        assert by_filters(conn, COLUMNS, where, args, match, 500, budget=0) is None


def test_a_prefix_of_no_indexed_word_matches_nothing_without_searching(shuffled: SqliteTraceStore) -> None:
    with shuffled.db.read() as conn:
        assert streaming_match(conn, ["zyzzyva"]) is None
        # A prefix stands for the indexed words it begins; a phrase keeps its head.
        assert streaming_match(conn, ["webhook-40"]) == (
            '("webhook 400" OR "webhook 401" OR "webhook 402" OR "webhook 403" OR "webhook 404")'
        )


def test_text_added_after_ingest_is_searchable_by_prefix(tmp_path: Path) -> None:
    """Live traces index their text when they finish; the debugger appends a signature it found."""
    from molar_mcp.store.live import IncomingEvent, LiveTraces

    store = SqliteTraceStore(tmp_path / "data")
    try:
        live = LiveTraces(store.db)
        trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="quokka-run")
        assert [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(q="quok")).items] == [trace_id]
        ev = Event(seq=0, ts=1, kind="error", step_id="s", message="Xylophonic failure")
        live.append_events(LOCAL_ORG_ID, trace_id, [IncomingEvent(0, ev)])
        live.finish_trace(LOCAL_ORG_ID, trace_id, status="failed")
        assert [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(q="xyloph")).items] == [trace_id]
    finally:
        store.close()
