"""The PostgreSQL contract tests share one database, cleaned before each test (`pg_url`): whatever the last
test left, the next one starts from what TRUNCATE of every table RESTART IDENTITY leaves."""

from __future__ import annotations

from pathlib import Path

import psycopg

from molar_mcp.compose import open_store
from molar_mcp.store import LOCAL_ORG_ID
from tests.engines import PgCluster
from tests.store.factory import new_trace


def _leftovers(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, object]:
    """Tables of the schema with any pages (rows, or dead rows a DELETE left) and sequences drawn from."""
    pages = conn.execute(
        "SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
        " AND relkind = 'r' AND relname <> 'schema_versions' AND pg_relation_size(oid) > 0"
    ).fetchall()
    drawn = conn.execute(
        "SELECT sequencename, last_value FROM pg_sequences"
        " WHERE schemaname = current_schema() AND last_value IS NOT NULL"
    ).fetchall()
    return {str(name): value for name, value in [*pages, *drawn]}


def _add_trace(url: str, data: Path) -> None:
    store = open_store(data, database_url=url)
    try:
        store.add_trace(LOCAL_ORG_ID, new_trace(), {})
    finally:
        store.close()


def test_a_cleaned_database_has_empty_tables_and_unread_sequences_whatever_the_last_test_left(
    pg: PgCluster, tmp_path: Path
) -> None:
    url = pg.clean_database()
    with psycopg.connect(pg.admin_url(url.rsplit("/", 1)[1]), autocommit=True) as conn:
        # Rows left behind, and a sequence drawn from without a row (as by a rolled-back insert).
        _add_trace(url, tmp_path / "a")
        conn.execute("SELECT nextval('runs_pk_seq')")
        left = _leftovers(conn)
        assert {"traces", "events", "runs_pk_seq", "traces_pk_seq"} <= set(left), left
        assert pg.clean_database() == url
        assert _leftovers(conn) == {}

        # Tables a test emptied again itself: no rows, but pages.
        _add_trace(url, tmp_path / "b")
        written = [t for t in _leftovers(conn) if not t.endswith("_seq")]
        conn.execute("SET session_replication_role = replica")  # the rows in any order: no foreign key checks
        for table in written:
            conn.execute(f'DELETE FROM "{table}"')
        conn.execute("RESET session_replication_role")
        assert set(written) <= set(_leftovers(conn))
        assert pg.clean_database() == url
        assert _leftovers(conn) == {}

        assert pg.clean_database() == url  # nothing to do on a clean one
        assert _leftovers(conn) == {}
