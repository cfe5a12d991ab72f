"""Text search (store/search.py): every plan returns exactly what a plain sort of all matches returns,
whatever the order traces arrived in, the filters, the page size and the cursor; the facets that let
the text index meet a filter stay true when a trace's status, scenario or signature changes."""

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
from molar_mcp.store.search import (
    SEARCH_MIGRATIONS,
    by_filters,
    by_matches,
    facet_word,
    fetch_rows,
    run,
    search,
    streaming_match,
)
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
    ("40", {"status": "failed"}),
    ("we", {"status": "queued"}),
    ("webhook 40", {"scenario_slug": "refund-3"}),
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


FACETED = ("status", "scenario_slug")


PLANS = ("matches", "matches, facets", "filters", "race")


def plan_alone(
    conn: sqlite3.Connection,
    name: str,
    where: list[str],
    args: list[Any],
    q: str,
    filters: dict[str, Any],
    n: int,
    **bounds: Any,
) -> list[str]:
    """The answer of one plan run alone to its end (or of the race), as trace ids."""
    match = streaming_match(conn, fts_words(q))
    assert match is not None
    facets = {k: v for k, v in filters.items() if k in FACETED}
    if name == "race":
        return [r[2] for r in search(conn, COLUMNS, where, args, match, n, facets=facets, **bounds)]
    if name == "filters":
        return [r[2] for r in fetch_rows(conn, COLUMNS, run(by_filters(conn, where, args, match, n)))]
    if name == "matches, facets":
        match = " AND ".join([f"({match})", *(f'"{facet_word(k, v)}"' for k, v in facets.items())])
    return [r[2] for r in fetch_rows(conn, COLUMNS, run(by_matches(conn, where, args, match, n, **bounds)))]


@pytest.mark.parametrize(("q", "filters"), [x for x in QUERIES if "created_from" not in x[1]])
def test_each_plan_alone_gives_the_same_rows(shuffled: SqliteTraceStore, q: str, filters: dict[str, Any]) -> None:
    where = ["t.org_id = ?"] + [f"t.{k} = ?" for k in filters]
    args = [LOCAL_ORG_ID, *filters.values()]
    with shuffled.db.read() as conn:
        expected = reference(conn, q, filters)[:20]
        if streaming_match(conn, fts_words(q)) is None:
            assert expected == []
            return
        answers = {name: plan_alone(conn, name, where, args, q, filters, 20) for name in PLANS}
    for name, ids in answers.items():
        assert ids == expected, name


# The plans' edge cases on the shuffled data: a rare word with a common filter, a common word with a
# rare filter (few or no traces meet both), a filter no facet names (a tier), and no match at all.
EDGES: list[tuple[str, dict[str, Any]]] = [
    ("cafe 404", {"status": "failed"}),  # rare text, common filter
    ("passed", {"status": "queued"}),  # common text, rare filter, no trace has both
    ("webhook", {"status": "queued"}),  # common text, rare filter, a few have both
    ("billing", {"scenario_slug": "coupon-2"}),  # common text, rare scenario
    ("login", {"tier": "hot"}),  # a filter no facet names: plan 2 walks it, plan 1 tests it
    ("coupon timeout", {"status": "error", "scenario_slug": "refund-5"}),  # two facets
    ("zyzz", {"status": "failed"}),  # a prefix of no word
]


@pytest.mark.parametrize(("q", "filters"), EDGES)
@pytest.mark.parametrize("limit", [1, 3, 25])
def test_cursor_pages_agree_whichever_plan_answers_each_page(
    shuffled: SqliteTraceStore, q: str, filters: dict[str, Any], limit: int
) -> None:
    """Pages through every plan alone (the cursor condition and bound as list_traces writes them) and
    through list_traces (the race picks a plan per page): all give the sorted matches, page by page."""
    with shuffled.db.read() as conn:
        expected = reference(conn, q, filters) if "tier" not in filters else reference_tier(conn, q, filters["tier"])
        by_store: list[str] = []
        cursor = None
        for _ in range(200):
            page = shuffled.list_traces(LOCAL_ORG_ID, TraceQuery(q=q, limit=limit, cursor=cursor, **filters))
            by_store.extend(item.id for item in page.items)
            if (cursor := page.next_cursor) is None:
                break
        assert by_store == expected
        if streaming_match(conn, fts_words(q)) is None:
            assert expected == []
            return
        where = ["t.org_id = ?"] + [f"t.{k} = ?" for k in filters]
        args: list[Any] = [LOCAL_ORG_ID, *filters.values()]
        pages: dict[str, list[str]] = {}
        after: dict[str, tuple[int, int] | None] = {}
        done: set[str] = set()
        for _ in range(200):
            answers = {}
            for name in PLANS:
                if name in done:
                    continue
                key = after.get(name)
                w, a, bounds = list(where), list(args), {}
                if key is not None:
                    w.append("(t.created_ms < ? OR (t.created_ms = ? AND t.pk < ?))")
                    a += [key[0], key[0], key[1]]
                    bounds = {"newest_ms": key[0]}
                answers[name] = plan_alone(conn, name, w, a, q, filters, limit + 1, **bounds)
            for name, ids in answers.items():
                pages.setdefault(name, []).extend(ids[:limit])
                if len(ids) <= limit:
                    done.add(name)
                else:
                    last = ids[limit - 1]
                    row = conn.execute("SELECT created_ms, pk FROM traces WHERE id = ?", (last,)).fetchone()
                    after[name] = (row[0], row[1])
            if len(done) == len(PLANS):
                break
    for name, ids in pages.items():
        assert ids == expected, name
    if q == "webhook":
        assert expected, "the data has traces with both"


def reference_tier(conn: sqlite3.Connection, q: str, tier: str) -> list[str]:
    rows = conn.execute(
        "SELECT t.id FROM traces t WHERE t.org_id = ? AND t.tier = ? AND t.pk IN "
        "(SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?) ORDER BY t.created_ms DESC, t.pk DESC",
        [LOCAL_ORG_ID, tier, _prefix_query(q)],
    ).fetchall()
    return [r[0] for r in rows]


def test_a_facet_word_is_never_a_search_word(shuffled: SqliteTraceStore) -> None:
    """Facets are in the index but never in the words a prefix stands for, so no user's text reaches them."""
    with shuffled.db.read() as conn:
        facet = facet_word("status", "failed")
        assert conn.execute("SELECT count(*) FROM search_terms WHERE term >= ?", ("\ue000",)).fetchone() == (0,)
        (with_facet,) = conn.execute(
            "SELECT count(*) FROM traces_fts WHERE traces_fts MATCH ?", (f'"{facet}"',)
        ).fetchone()
        (failed,) = conn.execute("SELECT count(*) FROM traces WHERE status = 'failed'").fetchone()
        assert with_facet == failed > 0


def test_a_prefix_of_no_indexed_word_matches_nothing_without_searching(shuffled: SqliteTraceStore) -> None:
    with shuffled.db.read() as conn:
        assert streaming_match(conn, ["zyzzyva"]) is None
        # A prefix stands for the indexed words it begins; a phrase keeps its head.
        assert streaming_match(conn, ["webhook-4"]) == (
            '("webhook 4" OR "webhook 400" OR "webhook 401" OR "webhook 402" OR "webhook 403" OR "webhook 404")'
        )
        # A prefix of 2 or 3 characters standing for several words reads the index's own list of it;
        # standing for one word, it is that word.
        assert streaming_match(conn, ["webhook-40"]) == '"webhook-40"*'
        assert streaming_match(conn, ["40"]) == '"40"*'
        assert streaming_match(conn, ["webhook-404"]) == '("webhook 404")'


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


def _found(store: SqliteTraceStore, q: str, **filters: Any) -> list[str]:
    return [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(q=q, **filters)).items]


def test_facets_follow_a_trace_whose_status_scenario_or_signature_changes(tmp_path: Path) -> None:
    """A live trace is indexed at creation (running) and again when it finishes; any other update of a
    facet column (the OTLP receiver renaming a scenario, the debugger setting a signature) adds the new
    facet by trigger. The filter on the row stays exact: the old facet never brings the trace back."""
    from molar_mcp.store.live import LiveTraces

    store = SqliteTraceStore(tmp_path / "data")
    try:
        live = LiveTraces(store.db)
        trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="quokka-run")
        assert _found(store, "quokka", status="running") == [trace_id]
        assert _found(store, "quokka", scenario_slug="quokka-run") == [trace_id]
        live.finish_trace(LOCAL_ORG_ID, trace_id, status="failed")
        assert _found(store, "quokka", status="failed") == [trace_id]
        assert _found(store, "quokka", status="running") == []
        with store.db.tx() as conn:
            conn.execute(
                "UPDATE traces SET scenario_slug = 'wombat-run', failure_signature = 'assertion:pouch' WHERE id = ?",
                (trace_id,),
            )
        assert _found(store, "quokka", scenario_slug="wombat-run") == [trace_id]
        assert _found(store, "quokka", scenario_slug="quokka-run") == []
        assert _found(store, "quokka", signature="assertion:pouch") == [trace_id]
        assert _found(store, "quokka", signature="assertion:pouch", status="failed", source="manual") == []
    finally:
        store.close()


def test_a_data_dir_indexed_before_facets_gets_them_when_opened(tmp_path: Path) -> None:
    """The index of a data dir from before facets is rebuilt with them on first open: every filtered
    search then answers as the plain sort does."""
    store = SqliteTraceStore(tmp_path / "data")
    ids = {}
    try:
        for i, status in enumerate(["passed", "failed", "queued", "timed_out", "interrupted"]):
            ids[status], _ = store.add_trace(
                LOCAL_ORG_ID,
                NewTrace(
                    scenario_slug=f"café-{i}" if i != 3 else "nul\x00slug",
                    status=status,
                    created_at=T0 + timedelta(minutes=i),
                    events=[Event(seq=0, ts=1, kind="step.start", step_id="s", message="billing webhook")],
                ),
                {},
            )
        with store.db.tx() as conn:  # back to the index as it was: no facets, no trigger
            bodies = conn.execute("SELECT rowid, body FROM traces_fts").fetchall()
            assert all("\ue000" in body for _, body in bodies)
            for rowid, body in bodies:
                conn.execute("UPDATE traces_fts SET body = ? WHERE rowid = ?", (body.rsplit("\n", 1)[0], rowid))
            conn.execute("DROP TRIGGER traces_search_facets")
            conn.execute("UPDATE schema_versions SET version = 3 WHERE component = 'search'")
    finally:
        store.close()
    store = SqliteTraceStore(tmp_path / "data")
    try:
        with store.db.read() as conn:
            assert conn.execute("SELECT version FROM schema_versions WHERE component = 'search'").fetchone() == (
                len(SEARCH_MIGRATIONS),
            )
        for status, trace_id in ids.items():
            assert _found(store, "billing", status=status) == [trace_id], status
        assert _found(store, "webhook", scenario_slug="café-4") == [ids["interrupted"]]
        assert _found(store, "webh", scenario_slug="nul\x00slug") == [ids["timed_out"]]  # NUL: stored as U+FFFD
        assert len(_found(store, "billing")) == 5
    finally:
        store.close()


def test_a_data_dir_indexed_without_prefix_lists_gets_them_when_opened(tmp_path: Path) -> None:
    """Search migration 5 rebuilds the index with lists of 2- and 3-character prefixes (and keeps the
    facet trigger): short prefixes then answer from them, the same traces as before."""
    store = SqliteTraceStore(tmp_path / "data")
    ids = []
    try:
        for i in range(6):
            trace_id, _ = store.add_trace(
                LOCAL_ORG_ID,
                NewTrace(
                    scenario_slug=f"quokka-{i}",
                    status="failed" if i % 2 else "passed",
                    created_at=T0 + timedelta(minutes=i),
                    events=[Event(seq=0, ts=1, kind="step.start", step_id="s", message=f"commit 40{i}a{i}")],
                ),
                {},
            )
            ids.append(trace_id)
        with store.db.tx() as conn:  # back to the index of search version 4: no prefix lists
            (trigger,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'traces_search_facets'").fetchone()
            conn.execute("DROP TRIGGER traces_search_facets")
            conn.execute(
                "CREATE VIRTUAL TABLE traces_fts_v4 USING fts5(body, tokenize = 'unicode61 remove_diacritics 2')"
            )
            conn.execute("INSERT INTO traces_fts_v4 (rowid, body) SELECT rowid, body FROM traces_fts")
            conn.execute("DROP TABLE traces_fts")
            conn.execute("ALTER TABLE traces_fts_v4 RENAME TO traces_fts")
            conn.execute(trigger)
            conn.execute("UPDATE schema_versions SET version = 4 WHERE component = 'search'")
    finally:
        store.close()
    store = SqliteTraceStore(tmp_path / "data")
    try:
        with store.db.read() as conn:
            (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'traces_fts'").fetchone()
            assert "prefix = '2 3'" in sql
            assert conn.execute("SELECT version FROM schema_versions WHERE component = 'search'").fetchone() == (
                len(SEARCH_MIGRATIONS),
            )
            assert streaming_match(conn, ["40"]) == '"40"*'
        newest_first = ids[::-1]
        assert _found(store, "40") == newest_first
        assert _found(store, "commit 40") == newest_first
        assert _found(store, "40", status="failed") == newest_first[0::2]
        assert _found(store, "quokka 40") == newest_first
        with store.db.tx() as conn:  # the facet trigger is back
            conn.execute("UPDATE traces SET status = 'error' WHERE id = ?", (ids[0],))
        assert _found(store, "40", status="error") == [ids[0]]
    finally:
        store.close()
