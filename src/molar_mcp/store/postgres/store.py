"""`TraceStore` on PostgreSQL (metadata, events, search) with blobs in an object store or on a disk.

The trace component's SQL is the embedded store's (`SqliteTraceStore`), run through `PgDatabase`; only
search differs by engine (`text_filter`: a `tsquery` against the GIN-indexed `tsvector`)."""

from __future__ import annotations

from pathlib import Path

from molar_mcp.store.blobs import BlobStore
from molar_mcp.store.postgres.db import PgDatabase
from molar_mcp.store.postgres.fts import ts_query
from molar_mcp.store.sqlite import SqliteTraceStore


class PostgresTraceStore(SqliteTraceStore):
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
        self.blobs = blobs if blobs is not None else BlobStore(data_dir / "blobs")
        try:
            self.migrate_components()
        except BaseException:
            self.db.close()
            raise

    def text_filter(self, q: str) -> tuple[str, str] | None:
        query = ts_query(q)
        if not query:
            return None
        return "t.pk IN (SELECT rowid FROM traces_fts WHERE tsv @@ to_tsquery('simple', ?))", query
