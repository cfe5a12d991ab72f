"""The auth database (users, clients, API keys, grants, refresh-token families) on PostgreSQL: the same
`AuthDB` calls and SQL as the SQLite file, its migrations kept as the component `auth`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg.rows import RowMaker

from molar_mcp.auth.db import MIGRATIONS, AuthDB
from molar_mcp.store.port import org_scope
from molar_mcp.store.postgres.db import PgConnection, PgDatabase


class Row(tuple[Any, ...]):
    """A row read by position or by column name, as `sqlite3.Row` is."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row._names = names
        return row

    return make


class PgAuthDB(AuthDB):
    def __init__(self, db: PgDatabase) -> None:
        # Not AuthDB.__init__: no SQLite connection; every call takes a pooled connection.
        self._db = db

    @classmethod
    def open_url(cls, db: PgDatabase) -> PgAuthDB:
        auth = cls(db)
        auth.migrate()
        return auth

    @property
    def schema_version(self) -> int:
        return self._db.version("auth")

    def migrate(self) -> None:
        self._db.migrate("auth", MIGRATIONS)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _pg_conn(self) -> Iterator[sqlite3.Connection]:
        # Credentials are looked up by their hashes, across orgs (the org is what they tell): unscoped.
        with org_scope(None), self._db.tx() as conn:
            cast(PgConnection, conn).row_factory = _row_factory  # this transaction's cursors only
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._pg_conn() as conn:
            yield conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._pg_conn() as conn:
            return conn.execute(sql, params).rowcount

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._pg_conn() as conn:
            return cast("sqlite3.Row | None", conn.execute(sql, params).fetchone())

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._pg_conn() as conn:
            return cast("list[sqlite3.Row]", conn.execute(sql, params).fetchall())
