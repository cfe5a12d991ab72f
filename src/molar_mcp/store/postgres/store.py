"""`TraceStore` on PostgreSQL (metadata, events, search) with blobs in an object store or on a disk.

The trace component's SQL is the embedded store's (`SqliteTraceStore`), run through `PgDatabase`; only
search differs by engine (`text_filter`: a `tsquery` against the GIN-indexed `tsvector`; `text_search_rows`:
the newest traces the other filters keep are checked first, the whole index only when they hold too few
matches)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from molar_mcp.store.blobs import BlobStore
from molar_mcp.store.postgres.db import PgDatabase
from molar_mcp.store.postgres.fts import ts_query
from molar_mcp.store.postgres.migrations import PG_MIGRATIONS
from molar_mcp.store.sqlite import _TRACE_COLUMNS, SqliteTraceStore, _prefixed

# Traces a search looks at newest first before it asks the whole text index. A common word (a status, a
# route) has its newest matches among the newest traces: checking them one by one stops after `limit`
# hits. A rare word has few matches in all: the index gives them at once. Each plan alone is exact.
SEARCH_WINDOW = 1000


class PostgresTraceStore(SqliteTraceStore):
    # Smaller than the embedded store's: the database inserts each batch while the next one is built
    # (`PgConnection.executemany_behind`), and smaller batches keep both busy for more of the ingest.
    event_batch = 2_500

    def __init__(
        self,
        url: str,
        data_dir: Path,
        *,
        blobs: BlobStore | None = None,
        pool_min: int = 1,
        pool_max: int = 10,
    ) -> None:
        # Not SqliteTraceStore.__init__: the same attributes, on other engines.
        self.data_dir = data_dir
        self.db = PgDatabase(url, data_dir, min_size=pool_min, max_size=pool_max)
        self.search_window = SEARCH_WINDOW
        self.blobs = blobs if blobs is not None else BlobStore(data_dir / "blobs")
        try:
            self.migrate_components()
            self.db.migrate("postgres", PG_MIGRATIONS)
        except BaseException:
            self.db.close()
            raise

    def text_filter(self, q: str) -> tuple[str, str] | None:
        query = ts_query(q)
        if not query:
            return None
        return "t.pk IN (SELECT rowid FROM traces_fts WHERE tsv @@ to_tsquery('simple', ?))", query

    def text_search_rows(
        self, conn: sqlite3.Connection, where: list[str], args: list[Any], text_filter: tuple[str, str], want: int
    ) -> list[Any]:
        columns = _prefixed(_TRACE_COLUMNS, "t")
        conditions = " AND ".join(where)
        order = "ORDER BY t.created_ms DESC, t.pk DESC"
        # 1: the newest SEARCH_WINDOW traces the filters keep, each checked against the text. When they
        # hold `want` matches, those are the newest matches of all (every other trace is older).
        # The window is read in time order and stays in it (no join, no sort after the check), so the
        # check stops at the `want`th match: 1,000 index probes and a sort became ~600 probes (36 → 2 ms
        # at 1,000,000 traces).
        recent = (
            f"SELECT {columns} FROM (SELECT {columns} FROM traces t WHERE {conditions} {order} LIMIT ?) t"
            " WHERE EXISTS (SELECT 1 FROM traces_fts f WHERE f.rowid = t.pk"
            f" AND f.tsv @@ to_tsquery('simple', ?)) {order} LIMIT ?"
        )
        rows = list(conn.execute(recent, [*args, self.search_window, text_filter[1], want]).fetchall())
        if len(rows) >= want:
            return rows
        # 2: few matches among the newest: every match, from the index, sorted.
        return super().text_search_rows(conn, where, args, text_filter, want)
