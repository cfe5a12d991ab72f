"""The PostgreSQL database and the S3 bucket under the store: schema versions, blobs keyed per org,
all-or-nothing writes, row-level security, two stores (replicas) on one database."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from molar_mcp.compose import open_store
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.db import CleanRows, store_text
from molar_mcp.store.port import org_scope
from molar_mcp.store.postgres.db import PgDatabase
from molar_mcp.store.postgres.migrations import PG_MIGRATIONS
from molar_mcp.store.s3 import parse_blob_url
from molar_mcp.store.schema import MIGRATIONS
from tests.engines import PgCluster, S3Endpoint
from tests.store.factory import AddTrace, minutes, new_trace

PNG = b"\x89PNG\r\n\x1a\nnot-really-a-png"
VIDEO = b"\x1aE\xdf\xa3webm-ish"


@pytest.fixture
def engine(pg_url: str, s3_url: str) -> dict[str, str]:
    return {"database_url": pg_url, "blob_url": s3_url}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _objects(s3: S3Endpoint, s3_url: str) -> list[str]:
    bucket, _ = parse_blob_url(s3_url)
    listed = s3.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _version(url: str, component: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_versions WHERE component = %s", (component,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_new_database_is_migrated_to_the_newest_version_and_reopening_migrates_nothing(
    pg: PgCluster, tmp_path: Path
) -> None:
    url = pg.new_database()
    first = open_store(tmp_path / "a", database_url=url)
    trace_id, _ = first.add_trace(LOCAL_ORG_ID, new_trace(), {})
    before = first.get_trace(LOCAL_ORG_ID, trace_id)
    first.close()
    assert _version(url, "traces") == len(MIGRATIONS)
    assert _version(url, "postgres") == len(PG_MIGRATIONS)  # what only PostgreSQL has, versioned apart
    again = open_store(tmp_path / "b", database_url=url)
    try:
        assert again.schema_version == len(MIGRATIONS)
        assert again.get_trace(LOCAL_ORG_ID, trace_id) == before
    finally:
        again.close()


def test_a_database_from_a_newer_molar_mcp_is_refused_and_left_as_it_is(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.new_database()
    open_store(tmp_path / "a", database_url=url).close()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE schema_versions SET version = %s WHERE component = 'traces'", (len(MIGRATIONS) + 1,))
    with pytest.raises(RuntimeError, match="upgrade molar-mcp"):
        open_store(tmp_path / "b", database_url=url)
    assert _version(url, "traces") == len(MIGRATIONS) + 1


def test_blobs_go_to_the_bucket_once_under_their_org_and_sha256(
    store: SqliteTraceStore, add: AddTrace, s3: S3Endpoint, s3_url: str
) -> None:
    add(blobs={_sha(PNG): PNG, _sha(VIDEO): VIDEO})
    add(blobs={_sha(PNG): PNG})
    add(org_id="org_b", blobs={_sha(PNG): PNG})
    expected = sorted(
        f"molar/orgs/{org}/blobs/{_sha(d)[:2]}/{_sha(d)}"
        for org, d in [(LOCAL_ORG_ID, PNG), (LOCAL_ORG_ID, VIDEO), ("org_b", PNG)]
    )
    assert _objects(s3, s3_url) == expected
    assert store.blobs.read(_sha(PNG), LOCAL_ORG_ID) == PNG
    assert store.blobs.exists(_sha(VIDEO), LOCAL_ORG_ID)
    assert not store.blobs.exists(_sha(VIDEO), "org_b")
    assert not store.blobs.exists(_sha(b"never stored"), LOCAL_ORG_ID)


def test_a_refused_trace_leaves_no_row_and_no_object(
    store: SqliteTraceStore, add: AddTrace, s3: S3Endpoint, s3_url: str
) -> None:
    with pytest.raises(ValueError, match="hashes to"):
        add(blobs={_sha(PNG): PNG, _sha(b"other"): VIDEO})
    trace = new_trace(events=[{"seq": 0, "ts": 1, "kind": "log"}], pr_number=2**63)
    with pytest.raises(OverflowError):
        store.add_trace(LOCAL_ORG_ID, trace, {_sha(PNG): PNG})
    assert _objects(s3, s3_url) == []
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
    store.add_trace(LOCAL_ORG_ID, new_trace(), {})  # the pool's connections are usable afterwards


def test_row_level_security_shows_a_scoped_transaction_only_its_orgs_rows(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    mine, _ = add(org_id="org_a")
    theirs, _ = add(org_id="org_b")
    with org_scope("org_a"), store.db.read() as conn:
        # No org filter in the query: the database itself keeps org_b's rows out.
        ids = [r[0] for r in conn.execute("SELECT id FROM traces").fetchall()]
        events = conn.execute("SELECT count(DISTINCT trace_pk) FROM events").fetchone()
    assert ids == [mine]
    assert events == (1,)
    with org_scope("org_a"), store.db.tx() as conn:
        # An update of another org's row finds no row.
        assert conn.execute("UPDATE traces SET org_id = 'org_a' WHERE id = ?", (theirs,)).rowcount == 0
    insert = "INSERT INTO traces (id, short_id, org_id, status, created_ms) VALUES ('x', 'x', 'org_b', 'passed', 0)"
    with org_scope("org_a"), store.db.tx() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(insert)
    with org_scope("org_b"):
        assert [t.id for t in store.list_traces("org_b", TraceQuery()).items] == [theirs]


def test_two_stores_on_one_database_and_bucket_see_each_others_traces(
    store: SqliteTraceStore, pg_url: str, s3_url: str, tmp_path: Path
) -> None:
    other = open_store(tmp_path / "replica", database_url=pg_url, blob_url=s3_url)
    try:
        trace_id, short_id = store.add_trace(LOCAL_ORG_ID, new_trace(), {_sha(PNG): PNG})
        assert other.get_trace(LOCAL_ORG_ID, short_id).id == trace_id
        assert other.blobs.read(_sha(PNG), LOCAL_ORG_ID) == PNG
        assert [t.id for t in other.list_traces(LOCAL_ORG_ID, TraceQuery(q="webhook")).items] == [trace_id]
    finally:
        other.close()


SEARCHES = [("webhook", {}), ("404", {}), ("billing", {}), ("billing", {"status": "passed"}), ("zyzzyva", {})]


@pytest.mark.parametrize("window", [3, 1000])
def test_a_search_pages_through_every_match_newest_first_whichever_plan_answers(
    store: SqliteTraceStore, add: AddTrace, window: int
) -> None:
    """PostgreSQL's search checks the newest traces first and asks the whole index only when they hold
    too few matches (a small window makes it fall back often): either way the pages are every match in
    time order, exactly what one sorted query over all matches gives."""
    order = list(range(90))
    order = order[::3] + order[1::3] + order[2::3]  # stored out of time order
    for i in order:
        signature = "webhook-404" if i % 7 == 0 else ("/billing?upgraded=false" if i % 5 == 0 else "timeout")
        add(
            scenario_slug=f"flow-{i % 4}",
            status="passed" if i % 2 else "failed",
            failure_signature=signature,
            created_at=minutes(i // 2),  # pairs share a millisecond: the tie-break is the row key
        )
    store.search_window = window  # type: ignore[attr-defined]
    for q, filters in SEARCHES:
        with org_scope(LOCAL_ORG_ID), store.db.read() as conn:
            where = " AND t.status = ?" if filters else ""
            expected = [
                r[0]
                for r in conn.execute(
                    "SELECT t.id FROM traces t WHERE t.org_id = ?" + where + " AND t.pk IN (SELECT rowid FROM"
                    " traces_fts WHERE tsv @@ to_tsquery('simple', ?)) ORDER BY t.created_ms DESC, t.pk DESC",
                    [LOCAL_ORG_ID, *filters.values(), f"'{q}':*"],
                ).fetchall()
            ]
        for limit in (1, 4, 50):
            got: list[str] = []
            cursor = None
            while True:
                page = store.list_traces(LOCAL_ORG_ID, TraceQuery(q=q, limit=limit, cursor=cursor, **filters))
                got.extend(item.id for item in page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert got == expected, (q, filters, limit)
        assert expected or q == "zyzzyva"


def test_each_event_carries_its_traces_org_whoever_writes_it(store: SqliteTraceStore, add: AddTrace) -> None:
    # Row-level security on events compares a column (no lookup of the trace per row): the column is the
    # trace's org whether the writer was scoped to it or unscoped (a CLI, a background worker), and an
    # event can't be written under another org's trace.
    with org_scope("org_a"):
        scoped, _ = add(org_id="org_a")
    unscoped, _ = add(org_id="org_b")
    with org_scope(None), store.db.read() as conn:
        orgs = conn.execute(
            "SELECT t.id, e.org_id, count(*) FROM events e JOIN traces t ON t.pk = e.trace_pk GROUP BY t.id, e.org_id"
        ).fetchall()
        (b_pk,) = conn.execute("SELECT pk FROM traces WHERE id = ?", (unscoped,)).fetchone()
    assert sorted((i, o) for i, o, _ in orgs) == sorted([(scoped, "org_a"), (unscoped, "org_b")])
    with org_scope("org_a"), store.db.tx() as conn, pytest.raises(sqlite3.IntegrityError, match="trace reference"):
        conn.execute("INSERT INTO events (trace_pk, seq, ts, kind) VALUES (?, 999, 0, 'log')", (b_pk,))
    with org_scope(None), store.db.tx() as conn, pytest.raises(sqlite3.IntegrityError, match="trace reference"):
        conn.executemany("INSERT INTO events (trace_pk, seq, ts, kind) VALUES (?, ?, 0, 'log')", [(b_pk, 998), (-1, 0)])
    assert store.list_events("org_b", unscoped).total == len(new_trace().events)
    with org_scope(None), store.db.tx() as conn:  # a deleted trace takes its events along
        conn.execute("DELETE FROM traces WHERE pk = ?", (b_pk,))
        assert conn.execute("SELECT count(*) FROM events WHERE trace_pk = ?", (b_pk,)).fetchone() == (0,)


def test_store_connections_do_not_jit_compile(store: SqliteTraceStore) -> None:
    # JIT compiling took 0.5–1 s of a millisecond query on a big events table (the planner's costs of a
    # scan it never runs pass jit_above_cost): the store's connections turn it off.
    with store.db.read() as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)


def test_events_stored_before_they_carried_an_org_get_their_traces_on_upgrade(pg: PgCluster, tmp_path: Path) -> None:
    url = pg.new_database()
    old = PgDatabase(url, tmp_path / "old")
    try:
        old.migrate("traces", MIGRATIONS[:3])  # the schema before events carried an org
        with org_scope(None), old.tx() as conn:
            for org in ("org_a", "org_b"):
                conn.execute(
                    "INSERT INTO traces (id, short_id, org_id, status, created_ms) VALUES (?, ?, ?, 'passed', 0)",
                    (f"id-{org}", f"short-{org}", org),
                )
                (pk,) = conn.execute("SELECT pk FROM traces WHERE org_id = ?", (org,)).fetchone()
                conn.executemany(
                    "INSERT INTO events (trace_pk, seq, ts, kind) VALUES (?, ?, 0, 'log')", [(pk, 0), (pk, 1)]
                )
    finally:
        old.close()
    store = open_store(tmp_path / "new", database_url=url)
    try:
        assert _version(url, "traces") == len(MIGRATIONS)
        for org in ("org_a", "org_b"):
            with org_scope(org):
                assert store.list_events(org, f"short-{org}").total == 2
        with org_scope("org_a"), store.db.read() as conn:
            assert conn.execute("SELECT DISTINCT org_id FROM events").fetchall() == [("org_a",)]
    finally:
        store.close()


@pytest.mark.parametrize("clean", [False, True], ids=["text-copy", "binary-copy"])
@pytest.mark.parametrize(
    ("values", "ok"),
    [
        ([("log", "plain"), ("log", "ünïcödé ✓ \\u0000 \\\\ \" '\t\n\r"), ("log", None)], int),
        # A NUL (PostgreSQL's text refuses it) and booleans (0/1 in an integer column, as in SQLite).
        ([("log", "a NUL \x00 here"), ("log", "x")], int),
        ([("log", "x"), ("log", "y")], bool),
    ],
)
def test_many_rows_are_stored_as_bound_whichever_way_they_travel(
    store: SqliteTraceStore, add: AddTrace, values: list[tuple[str, str | None]], ok: type, clean: bool
) -> None:
    # Many rows go through COPY: in binary when the caller says their text is as the store keeps it
    # (`CleanRows`, cleaned as they were built), else in text through the connection's dumpers.
    _, short_id = add(events=[])
    rows = [(i, 2**62 + i, kind, ok(i % 2 == 0), message) for i, (kind, message) in enumerate(values)]
    if clean:
        rows = CleanRows((i, ts, kind, o, store_text(m) if m else m) for i, ts, kind, o, m in rows)
    with org_scope(None), store.db.tx() as conn:
        (pk,) = conn.execute("SELECT pk FROM traces WHERE short_id = ?", (short_id,)).fetchone()
        conn.executemany(
            "INSERT INTO events (trace_pk, seq, ts, kind, ok, message) VALUES (?, ?, ?, ?, ?, ?)",
            CleanRows((pk, *row) for row in rows) if clean else [(pk, *row) for row in rows],
        )
    page = store.list_events(LOCAL_ORG_ID, short_id)
    expected = [(m.replace("\x00", "\ufffd") if m else m) for _, m in values]
    assert [e.message for e in page.events] == expected
    assert [(e.ts, e.ok) for e in page.events] == [(2**62 + i, i % 2 == 0) for i in range(len(values))]


MANY_EVENTS = "INSERT INTO events (trace_pk, seq, ts, kind) VALUES (?, ?, ?, ?)"  # every value bound: COPY


def test_many_rows_after_a_rolled_back_transaction_on_the_same_connection(pg: PgCluster, tmp_path: Path) -> None:
    # Many rows are copied into a staging table the connection makes on first use; a transaction that
    # rolls back takes that table with it, and the connection's next many-row insert makes it again.
    store = open_store(tmp_path / "data", database_url=pg.new_database(), pool_max=1)
    try:

        def insert_then_fail() -> None:
            with org_scope(LOCAL_ORG_ID), store.db.tx() as conn:
                conn.execute(
                    "INSERT INTO traces (id, short_id, org_id, status, created_ms) VALUES ('a', 'a', ?, 'passed', 0)",
                    (LOCAL_ORG_ID,),
                )
                (pk,) = conn.execute("SELECT pk FROM traces WHERE id = 'a'").fetchone()
                conn.executemany(MANY_EVENTS, [(pk, 0, 0, "log"), (pk, 1, 0, "log")])
                raise RuntimeError("the caller fails after the insert")

        with pytest.raises(RuntimeError):
            insert_then_fail()
        _, short_id = store.add_trace(LOCAL_ORG_ID, new_trace(), {})
        assert store.list_events(LOCAL_ORG_ID, short_id).total == len(new_trace().events)
        # Two many-row inserts in one transaction store each row once (the staging table empties as it moves).
        with org_scope(LOCAL_ORG_ID), store.db.tx() as conn:
            (pk,) = conn.execute("SELECT pk FROM traces WHERE short_id = ?", (short_id,)).fetchone()
            for start in (100, 200):
                conn.executemany(MANY_EVENTS, [(pk, start + i, 0, "log") for i in range(3)])
        assert store.list_events(LOCAL_ORG_ID, short_id).total == len(new_trace().events) + 6
        # Row-level security and the trace reference hold for copied rows: org_a can't add to this trace.
        with org_scope("org_a"), store.db.tx() as conn, pytest.raises(sqlite3.IntegrityError, match="trace reference"):
            conn.executemany(MANY_EVENTS, [(pk, 900, 0, "log"), (pk, 901, 0, "log")])
    finally:
        store.close()


def test_a_trace_whose_events_fail_while_the_next_are_built_is_absent(
    store: SqliteTraceStore, s3: S3Endpoint, s3_url: str
) -> None:
    # A bundle's events are inserted by the database while the next ones are built (a writer thread): an
    # insert that fails there fails the whole trace, as one failing at once did — no row, no object.
    events = [{"seq": i, "ts": 1_000 + i, "kind": "log", "message": f"line {i}"} for i in range(3_000)]
    events[11]["seq"] = 10  # a second event 10, in the first batch: the database refuses it (primary key)
    with pytest.raises(sqlite3.IntegrityError, match="events_pkey"):
        store.add_trace(LOCAL_ORG_ID, new_trace(events=events), {_sha(PNG): PNG})
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery()).items == []
    assert _objects(s3, s3_url) == []
    with org_scope(None), store.db.read() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    _, short_id = store.add_trace(LOCAL_ORG_ID, new_trace(events=events[:11] + events[12:]), {})
    assert store.list_events(LOCAL_ORG_ID, short_id).total == 2_999  # two batches (of 2,500 and 499)


def test_many_rows_inserted_behind_the_caller_are_in_its_transaction(pg: PgCluster, tmp_path: Path) -> None:
    # `executemany_behind` hands the rows to a writer thread and returns while the database inserts them
    # (here: while another session's lock holds the insert up); the transaction's next statement waits
    # for them, and its commit holds them.
    url = pg.new_database()
    store = open_store(tmp_path / "data", database_url=url)
    _, short_id = store.add_trace(LOCAL_ORG_ID, new_trace(events=[]), {})
    locker = psycopg.connect(url)
    try:
        locker.execute("LOCK TABLE events IN SHARE MODE")  # inserts into events wait for this transaction
        release = threading.Timer(1.0, locker.commit)
        with org_scope(LOCAL_ORG_ID), store.db.tx() as conn:
            (pk,) = conn.execute("SELECT pk FROM traces WHERE short_id = ?", (short_id,)).fetchone()
            t = time.perf_counter()
            release.start()
            conn.executemany_behind(MANY_EVENTS, [(pk, i, 0, "log") for i in range(500)])  # type: ignore[attr-defined]
            returned = time.perf_counter() - t
            count = conn.execute("SELECT count(*) FROM events WHERE trace_pk = ?", (pk,)).fetchone()
            waited = time.perf_counter() - t
        release.join()
        assert returned < 0.5 < waited  # it returned at once; the next statement waited for the insert
        assert count == (500,)
        assert store.list_events(LOCAL_ORG_ID, short_id).total == 500
    finally:
        locker.close()
        store.close()


def test_one_insert_of_events_of_several_traces_checks_each_trace(pg_url: str, tmp_path: Path) -> None:
    # The trace check reads the new rows once: one trace (most inserts) or several (each checked).
    store = open_store(tmp_path / "data", database_url=pg_url)
    try:
        shorts = [store.add_trace(org, new_trace(events=[]), {})[1] for org in (LOCAL_ORG_ID, LOCAL_ORG_ID, "org_b")]
        with org_scope(None), store.db.read() as conn:
            pks = [conn.execute("SELECT pk FROM traces WHERE short_id = ?", (s,)).fetchone()[0] for s in shorts]
        with org_scope(LOCAL_ORG_ID), store.db.tx() as conn:  # two traces of the org: stored
            conn.executemany(MANY_EVENTS, [(pk, i, 0, "log") for pk in pks[:2] for i in range(3)])
        with org_scope(LOCAL_ORG_ID), store.db.tx() as conn, pytest.raises(sqlite3.IntegrityError, match="trace ref"):
            conn.executemany(MANY_EVENTS, [(pk, i, 0, "log") for pk in (pks[0], pks[2]) for i in range(10, 13)])
        with org_scope(None), store.db.tx() as conn, pytest.raises(sqlite3.IntegrityError, match="trace reference"):
            conn.executemany(  # unscoped, the rows say their org: one trace, two orgs
                "INSERT INTO events (trace_pk, seq, ts, kind, org_id) VALUES (?, ?, 0, 'log', ?)",
                [(pks[0], 20, LOCAL_ORG_ID), (pks[0], 21, "org_b")],
            )
        assert [store.list_events(LOCAL_ORG_ID, s).total for s in shorts[:2]] == [3, 3]
        assert store.list_events("org_b", shorts[2]).total == 0
    finally:
        store.close()


def test_auth_lookups_leave_pooled_connections_giving_tuples(pg: PgCluster, tmp_path: Path) -> None:
    # The auth database reads rows by column name; that row type is its transactions' own: the pooled
    # connection it used gives the next transaction plain tuples.
    from molar_mcp.store.postgres.authdb import PgAuthDB

    url = pg.new_database()
    open_store(tmp_path / "store", database_url=url).close()  # the store's migrations come first, as in serve
    db = PgDatabase(url, tmp_path / "data", min_size=1, max_size=1)
    try:
        auth = PgAuthDB.open_url(db)
        row = auth.fetch_one("SELECT version FROM schema_versions WHERE component = ?", ("auth",))
        assert row is not None
        assert row["version"] == row[0]
        with db.read() as conn:
            plain = conn.execute("SELECT version FROM schema_versions WHERE component = 'auth'").fetchone()
        assert type(plain) is tuple
    finally:
        db.close()


def _plain_pg(store: SqliteTraceStore, q: str, status: str | None) -> list[str]:
    """Every match, sorted, in one query over the whole text index: the plain answer."""
    where, args = ("", [LOCAL_ORG_ID]) if status is None else (" AND t.status = ?", [LOCAL_ORG_ID, status])
    with org_scope(LOCAL_ORG_ID), store.db.read() as conn:
        rows = conn.execute(
            f"SELECT t.id FROM traces t WHERE t.org_id = ?{where} AND t.pk IN (SELECT rowid FROM traces_fts"
            " WHERE tsv @@ to_tsquery('simple', ?)) ORDER BY t.created_ms DESC, t.pk DESC",
            [*args, f"'{q}':*"],
        ).fetchall()
    return [r[0] for r in rows]


def _all_pages(store: SqliteTraceStore, q: str, status: str | None, limit: int) -> list[str]:
    got: list[str] = []
    cursor = None
    while True:
        with org_scope(LOCAL_ORG_ID):
            page = store.list_traces(LOCAL_ORG_ID, TraceQuery(q=q, status=status, limit=limit, cursor=cursor))
        got.extend(item.id for item in page.items)
        if (cursor := page.next_cursor) is None:
            return got


def _every_status(store: SqliteTraceStore, add: AddTrace) -> dict[str, str]:
    """Traces of every status whose texts name other statuses; then a status changed after the text was
    indexed, a live trace indexed while running and finished, and a deleted trace."""
    from molar_mcp.models.traces import TRACE_STATUSES
    from molar_mcp.store.live import LiveTraces

    ids: dict[str, str] = {}
    for i in range(60):
        status = TRACE_STATUSES[i % len(TRACE_STATUSES)]
        other = TRACE_STATUSES[(i * 7 + 3) % len(TRACE_STATUSES)]
        trace_id, _ = add(
            scenario_slug=f"flow-{i % 4}",
            status=status,
            failure_signature=f"{'billing' if i % 3 else 'webhook'} then {other}",
            created_at=minutes(i if i % 5 else 60 - i),
        )
        ids.setdefault(status, trace_id)
    with org_scope(LOCAL_ORG_ID):
        live = LiveTraces(store.db)
        ids["live"], _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="xylophone-run")
        live.finish_trace(LOCAL_ORG_ID, ids["live"], status="failed")
        with store.db.tx() as conn:
            conn.execute("UPDATE traces SET status = 'passed' WHERE id = ?", (ids["queued"],))
            conn.execute("DELETE FROM traces WHERE id = ?", (ids["error"],))
    return ids


STATUS_QUERIES = ["passed", "queued", "failed", "billing", "webhook", "xylophone", "zyzzyva", "flow"]


@pytest.mark.parametrize("window", [2, 256])
def test_a_status_filter_reads_the_index_of_its_status_and_answers_as_the_plain_sort(
    store: SqliteTraceStore, add: AddTrace, window: int
) -> None:
    """PostgreSQL keeps a GIN index of each status's traces (`traces_fts.status` follows the trace's): a
    word the status's traces never hold is an empty list there. Whether the newest traces, a wider window
    or the index answers (a window of 2 makes every path run), pages are every match in time order."""
    from molar_mcp.models.traces import TRACE_STATUSES

    ids = _every_status(store, add)
    store.search_window = window  # type: ignore[attr-defined]
    for q in STATUS_QUERIES:
        for status in [None, *TRACE_STATUSES]:
            expected = _plain_pg(store, q, status)
            for limit in (2, 50):
                assert _all_pages(store, q, status, limit) == expected, (q, status, limit)
    assert _all_pages(store, "xylophone", "failed", 5) == [ids["live"]]
    assert _all_pages(store, "xylophone", "running", 5) == []
    assert ids["queued"] in _all_pages(store, "flow", "passed", 50)
    assert ids["error"] not in _all_pages(store, "flow", None, 100)
    with org_scope(LOCAL_ORG_ID), store.db.read() as conn:
        # Kept in step: every text's status is its trace's.
        assert conn.execute(
            "SELECT count(*) FROM traces_fts f JOIN traces t ON t.pk = f.rowid WHERE f.status IS DISTINCT FROM t.status"
        ).fetchone() == (0,)
        # 60 traces and the live one; the deleted trace's text went with it (ON DELETE CASCADE).
        assert conn.execute("SELECT count(*) FROM traces_fts").fetchone() == (60,)
        # The text of a status's traces has an index of its own (a table this small would be scanned, so
        # the scan is ruled out to see which index the planner can take).
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT rowid FROM traces_fts WHERE status = 'queued' AND tsv @@ to_tsquery('simple', 'x')"
            ).fetchall()
        )
        assert "Bitmap Index Scan on traces_fts_tsv_queued" in plan


def test_a_database_searched_before_status_indexes_gets_them_on_upgrade(pg: PgCluster, tmp_path: Path) -> None:
    """PostgreSQL migration 2 fills `traces_fts.status` from the traces, makes the status indexes and the
    triggers that keep the status in step: searches then answer as before, and a later status change moves
    the trace's text to its new status."""
    url = pg.new_database()
    first = open_store(tmp_path / "a", database_url=url)
    try:
        ids = {}
        for i, status in enumerate(["passed", "failed", "queued", "running", "error"]):
            ids[status], _ = first.add_trace(
                LOCAL_ORG_ID, new_trace(status=status, failure_signature=f"quokka {i}", created_at=minutes(i)), {}
            )
    finally:
        first.close()
    with psycopg.connect(pg.admin_url(url.rsplit("/", 1)[1]), autocommit=True) as conn:  # back to version 1
        conn.execute("DROP TRIGGER traces_status_text ON traces")
        conn.execute("DROP TRIGGER traces_fts_status ON traces_fts")
        conn.execute("DROP FUNCTION molar_trace_status_text(), molar_fts_status()")
        conn.execute("ALTER TABLE traces_fts DROP COLUMN status")  # (its indexes go with it)
        conn.execute("UPDATE schema_versions SET version = 1 WHERE component = 'postgres'")
    again = open_store(tmp_path / "b", database_url=url)
    try:
        assert _version(url, "postgres") == len(PG_MIGRATIONS)
        for status, trace_id in ids.items():
            assert _all_pages(again, "quokka", status, 10) == [trace_id]
        with org_scope(LOCAL_ORG_ID), again.db.tx() as conn:
            conn.execute("UPDATE traces SET status = 'skipped' WHERE id = ?", (ids["queued"],))
        assert _all_pages(again, "quokka", "skipped", 10) == [ids["queued"]]
        assert _all_pages(again, "quokka", "queued", 10) == []
    finally:
        again.close()
