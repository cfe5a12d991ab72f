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
from molar_mcp.store.search import STATUS_PARTITIONS
from molar_mcp.store.sqlite import _TRACE_COLUMNS, SqliteTraceStore, _prefixed

# Traces a search looks at newest first before it asks the text index for every match. A common word (a
# status, a route) has its newest matches among the newest traces: checking them one by one stops after
# `limit` hits. A rare word has few matches in all: the index gives them at once. The first window is
# small, to tell the two apart: with no match in it, the index answers; with some, the traces after it are
# checked, as many as that density needs to hold `limit` hits, up to WIDEST_WINDOW in all (~3–5 µs a
# check), and past that the index answers. At 1,000,000 traces (load 4.6) every search measured 1.1–3.5 ms
# with a first window of 100, 1.1–5.5 ms with 1,000 (a word no trace holds paid 1,000 checks; a common one
# now pays two more statements, ~0.5 ms). Each plan alone is exact.
SEARCH_WINDOW = 100
WIDEST_WINDOW = 10_000


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
        self,
        conn: sqlite3.Connection,
        where: list[str],
        args: list[Any],
        text_filter: tuple[str, str],
        want: int,
        *,
        status: str | None = None,
    ) -> list[Any]:
        columns = _prefixed(_TRACE_COLUMNS, "t")
        conditions = " AND ".join(where)
        order = "ORDER BY t.created_ms DESC, t.pk DESC"

        # 1: the newest `search_window` traces the filters keep, each checked against the text. When they
        # hold `want` matches, those are the newest matches of all (every other trace is older).
        # The window is read in time order and stays in it (no join, no sort after the check), so the
        # check stops at the `want`th match: 1,000 index probes and a sort became ~600 probes (36 → 2 ms
        # at 1,000,000 traces).
        # Each trace's text is checked by its key (a subquery per row: the planner may not turn it into a
        # join that reads every match of a common word from the text index first).
        def checked(conds: str) -> str:
            return (
                f"SELECT {columns} FROM (SELECT {columns} FROM traces t WHERE {conds} {order} LIMIT ?) t"
                " WHERE (SELECT f.tsv @@ to_tsquery('simple', ?) FROM traces_fts f WHERE f.rowid = t.pk)"
                f" {order} LIMIT ?"
            )

        window = self.search_window
        rows = list(conn.execute(checked(conditions), [*args, window, text_filter[1], want]).fetchall())
        if len(rows) >= want:
            return rows
        edge = conn.execute(
            f"SELECT t.created_ms, t.pk FROM traces t WHERE {conditions} {order} LIMIT 1 OFFSET ?", [*args, window - 1]
        ).fetchone()
        if edge is None:  # the window held every trace the filters keep: these are all the matches
            return rows
        if rows:
            # 2: some matches among the newest: the traces after the window, as many more as that density
            # needs to hold `want` (with room to spare), when that is fewer than the widest window.
            wider = -(-want * window * 3 // (2 * len(rows)))
            if wider <= WIDEST_WINDOW:
                older = checked(f"{conditions} AND (t.created_ms < ? OR (t.created_ms = ? AND t.pk < ?))")
                bound = [*args, edge[0], edge[0], edge[1], wider - window, text_filter[1], want - len(rows)]
                rows += conn.execute(older, bound).fetchall()
                if len(rows) >= want:
                    return rows
        # 3: the text is rare among the newest traces the filters keep: every match from the text index
        # first (of the filter's status alone, when it names one: a partial index per status), then the
        # filters and the sort. Left to itself, the planner walks the filters' index in time order and
        # probes each trace's text (it cannot tell a rare word from a common one): 0.9–2.3 s at 1,000,000
        # traces for a word no trace holds, or one the status's traces never hold.
        own = f"status = '{status}' AND " if status in STATUS_PARTITIONS else ""  # a name from our list
        matches = (
            f"WITH m AS MATERIALIZED (SELECT rowid FROM traces_fts WHERE {own}tsv @@ to_tsquery('simple', ?))"
            f" SELECT {columns} FROM traces t WHERE {conditions} AND t.pk IN (SELECT rowid FROM m) {order} LIMIT ?"
        )
        return list(conn.execute(matches, [text_filter[1], *args, want]).fetchall())
