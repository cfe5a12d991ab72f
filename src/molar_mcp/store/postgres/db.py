"""The store's database on PostgreSQL: a connection pool, transactions that carry the org for row-level
security, and the components' migrations (kept per component, as in the embedded store).

`PgDatabase` stands where `store.db.Database` stands, so every component (traces, live ingest, tiers,
analysis, sharing, chats, replays) runs unchanged on either engine; its connections speak the part of
`sqlite3.Connection` the components use (`execute`, `executemany`, `fetchone`, `fetchall`, `rowcount`,
`lastrowid`), translating each statement once (`dialect.py`).

Row-level security: every transaction starts with `app.org_id` set (`SET LOCAL`) to the org of the
request (`store.port.org_scope`), and every table that holds org data only shows that org's rows. Work
that spans orgs (retention, replay workers, migrations) runs unscoped (`*`).
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import weakref
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Dumper, Loader, PyFormat
from psycopg.pq import Format, TransactionStatus
from psycopg.rows import RowFactory
from psycopg.types.string import StrBinaryDumper, StrDumperUnknown
from psycopg_pool import ConnectionPool

from molar_mcp.store.db import CleanRows, Database, store_text
from molar_mcp.store.port import current_org_scope
from molar_mcp.store.postgres import dialect
from molar_mcp.store.postgres.migrations import pg_migration, secure_tables

UNSCOPED = "*"
_MIGRATION_LOCK = 0x6D6F6C6172  # pg_advisory_xact_lock key: one replica migrates at a time


class _BoolAsInt(Dumper):
    """SQLite stores booleans as 0/1 in INTEGER columns; so do we (the components bind Python bools)."""

    oid = psycopg.postgres.types["int8"].oid
    format = Format.TEXT

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _NumericAsNumber(Loader):
    """`sum()` of BIGINT is NUMERIC in PostgreSQL: give ints back, as SQLite does."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _StoreText(StrDumperUnknown):
    """Text as the store keeps it on both engines: each NUL (which PostgreSQL's text refuses) becomes
    U+FFFD (`store.db.store_text`)."""

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(store_text(obj))


class _StoreTextBinary(StrBinaryDumper):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(store_text(obj))


def _configure(conn: psycopg.Connection[Any]) -> None:
    # No JIT compilation: the store's queries are short, and on a big table the planner's cost estimates
    # (a scan it never runs, behind a false condition or a LIMIT) pass `jit_above_cost`, which made a
    # millisecond query spend 0.5–1 s compiling.
    conn.execute("SET jit = off")
    conn.adapters.register_dumper(bool, _BoolAsInt)
    conn.adapters.register_dumper(str, _StoreText)
    conn.adapters.register_dumper(str, _StoreTextBinary)
    conn.adapters.register_loader("numeric", _NumericAsNumber)


_PLAIN_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)\s*VALUES\s*\((?:\s*%s\s*,)*\s*%s\s*\)\s*$", re.I)


class PgCursor:
    def __init__(self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], *, rowcount: int | None = None) -> None:
        self._conn = conn
        self._cur = cur
        self._rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cur.fetchall() if self._cur.description is not None else []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount if self._rowcount is None else self._rowcount

    @property
    def lastrowid(self) -> int | None:
        row = self._conn.execute("SELECT lastval()").fetchone()
        return None if row is None else int(row[0])


class PgConnection:
    """One pooled connection inside a transaction, spoken to as the components speak to SQLite."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        *,
        write: bool,
        keys: dict[str, tuple[str, ...]],
        types: dict[str, dict[str, str]] | None = None,
        staged: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[str]] | None = None,
    ) -> None:
        self.raw = conn
        self._keys = keys
        self._types = types if types is not None else {}
        self._staged = staged if staged is not None else weakref.WeakKeyDictionary()
        # How this transaction's cursors make rows (None: tuples). Set on the cursors, never on the pooled
        # connection, so the next transaction on it gets tuples again.
        self.row_factory: RowFactory[Any] | None = None
        self.write = write
        # find_trace_row reads this: writers lock the trace row they change, as BEGIN IMMEDIATE
        # serialises writers in SQLite (two appends to one trace never interleave).
        self.row_lock = " FOR UPDATE" if write else ""
        self._behind: Future[PgCursor] | None = None  # an `executemany_behind` still running

    def _statement(self, sql: str) -> str:
        table = dialect.replaced_table(sql)
        if table is None:
            return dialect.statement(sql)
        return dialect.replace_statement(sql, self._primary_key(table))

    def _primary_key(self, table: str) -> tuple[str, ...]:
        key = self._keys.get(table)
        if key is None:
            rows = self.raw.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
                " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
                " ORDER BY array_position(i.indkey, a.attnum)",
                (table,),
            ).fetchall()
            key = self._keys[table] = tuple(r[0] for r in rows)
        return key

    def _column_types(self, table: str) -> dict[str, str]:
        types = self._types.get(table)
        if types is None:
            rows = self.raw.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (table,),
            ).fetchall()
            types = self._types[table] = {str(name): str(kind) for name, kind in rows}
        return types

    def _cursor(self) -> psycopg.Cursor[Any]:
        return self.raw.cursor() if self.row_factory is None else self.raw.cursor(row_factory=self.row_factory)

    def executemany_behind(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """`executemany`, run on a writer thread while the caller goes on (`store.db.insert_many_behind`):
        the database inserts these rows while the caller builds the next ones, so a bundle's ingest uses
        both cores. One runs at a time; every other use of this connection (a statement, the commit, the
        rollback) first waits for it and raises its error, so the transaction sees its statements in the
        order they were given and stays whole or absent."""
        self.wait()
        self._behind = _WRITERS.submit(self._executemany, sql, rows)

    def wait(self) -> None:
        """Wait for the `executemany_behind` still running, if any; raise its error."""
        behind, self._behind = self._behind, None
        if behind is not None:
            behind.result()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        self.wait()
        cur = self._cursor()
        with _as_sqlite_errors():
            if params:
                cur.execute(self._statement(sql), params)
            else:
                cur.execute(dialect.statement(sql, False))
        return PgCursor(self.raw, cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]] | Iterator[Sequence[Any]]) -> PgCursor:
        self.wait()
        return self._executemany(sql, rows)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]] | Iterator[Sequence[Any]]) -> PgCursor:
        cur = self._cursor()
        clean = isinstance(rows, CleanRows)
        rows = list(rows)
        statement = self._statement(sql)
        plain = _PLAIN_INSERT.match(statement)
        with _as_sqlite_errors():
            if plain is None or len(rows) < 2:
                cur.executemany(statement, rows)
                return PgCursor(self.raw, cur)
            # A plain INSERT of many rows (a bundle's events, a live batch): the rows stream in with `COPY`
            # (no statement to parse per row, no JSON or arrays to take apart) into a staging table of this
            # connection, and one `INSERT … SELECT` moves them into the table, so row-level security's
            # check, the table's statement triggers and its constraints apply as to any INSERT (`COPY FROM`
            # itself is refused on a table with row-level security).
            table, columns = plain.group(1), [c.strip() for c in plain.group(2).split(",")]
            types = self._column_types(table)
            kinds = [types[c] for c in columns]
            staging = self._staging(table, columns, types)
            names = ", ".join(columns)
            # Binary when every value's text is already as the store keeps it and every type has a binary
            # form psycopg knows by name; else text, through the connection's dumpers (NUL → U+FFFD).
            binary = clean and all(k in _BINARY_TYPES for k in kinds)
            if binary:
                # Clean text needs no second look: psycopg's own text dumper (C), not the cleaning one (a
                # Python call per value: a seventh of the storing process's CPU for a bundle's events).
                cur.adapters.register_dumper(str, _PLAIN_TEXT_BINARY)
            with cur.copy(f"COPY {staging} ({names}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")) as copy:
                if binary:
                    copy.set_types(kinds)
                for row in rows:
                    copy.write_row(row)
            # The staging table is emptied once its rows have moved (another chunk may follow in this
            # transaction): `TRUNCATE` swaps in an empty file, where deleting the rows one by one as they
            # moved cost a tenth of the move.
            cur.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging}; TRUNCATE {staging}")
        return PgCursor(self.raw, cur, rowcount=len(rows))

    def _staging(self, table: str, columns: Sequence[str], types: dict[str, str]) -> str:
        """This connection's temporary table for `table`'s `columns` (same types, no constraints; emptied at
        every commit), created on first use. A transaction that rolls back takes its creation with it
        (`PgDatabase._transaction` then forgets it)."""
        shape = ",".join(f"{c} {types[c]}" for c in columns)  # a column whose type changes gets another table
        name = f"molar_in_{table}_{zlib.crc32(shape.encode()):08x}"
        made = self._staged.setdefault(self.raw, set())
        if name not in made:
            self.raw.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS"
                f" AS SELECT {', '.join(columns)} FROM {table} WITH NO DATA"
            )
            made.add(name)
        return name


# The threads that run `executemany_behind` (each transaction has at most one running: a transaction past
# these waits its turn, never on another's work).
_WRITERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="molar-pg-writer")

# psycopg's binary text dumper as it comes (its C one when installed), for rows already clean.
_PLAIN_TEXT_BINARY = psycopg.adapters.get_dumper(str, PyFormat.BINARY)

# Column types `COPY … (FORMAT BINARY)` takes from Python values as they are bound (booleans as 0/1 in
# integer columns, integers in a float column).
_BINARY_TYPES = frozenset({"bigint", "integer", "smallint", "text", "double precision"})


@contextmanager
def _as_sqlite_errors() -> Iterator[None]:
    """The errors callers already handle from SQLite: an integer past 64 bits is `OverflowError`, a
    constraint is `sqlite3.IntegrityError` (a duplicate e-mail, say)."""
    try:
        yield
    except psycopg.errors.NumericValueOutOfRange as exc:
        raise OverflowError(str(exc)) from exc
    except psycopg.errors.IntegrityError as exc:
        raise sqlite3.IntegrityError(str(exc)) from exc


@functools.lru_cache(maxsize=1024)
def _begin(org: str) -> bytes:
    """`BEGIN` and the transaction's org (`app.org_id`, read by row-level security) as one statement text."""
    return b"BEGIN; SET LOCAL app.org_id = " + sql.Literal(org).as_bytes(None)


def redacted(url: str) -> str:
    """A database URL without its password (for logs)."""
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urlunsplit(parsed._replace(netloc=netloc))


class PgDatabase(Database):
    """`Database` on a PostgreSQL pool. `data_dir` is a local scratch dir (never shared state)."""

    def __init__(self, url: str, data_dir: Path, *, min_size: int = 1, max_size: int = 10) -> None:
        # Not Database.__init__: there is no SQLite file. The attributes the components read are set here.
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.url = url
        self._lock = threading.RLock()
        self._keys: dict[str, tuple[str, ...]] = {}  # table → primary key columns (INSERT OR REPLACE)
        self._types: dict[str, dict[str, str]] = {}  # table → column → type (many-row INSERTs)
        # connection → its staging tables for many-row INSERTs (`PgConnection._staging`)
        self._staged: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[str]] = weakref.WeakKeyDictionary()
        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=_configure,
            open=True,
            name="molar",
        )
        try:
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version BIGINT NOT NULL)"
                )
        except BaseException:
            self.pool.close()
            raise

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        org = current_org_scope() or UNSCOPED
        with self.pool.connection() as conn:
            # BEGIN and the org in one round trip (two statements in the simple protocol, the org a quoted
            # literal), where `conn.transaction()` and `set_config` took two: a read is three round trips
            # in all (this, its query, COMMIT).
            conn.execute(_begin(org))
            pg = PgConnection(conn, write=write, keys=self._keys, types=self._types, staged=self._staged)
            try:
                yield cast(sqlite3.Connection, pg)
                pg.wait()  # rows still being inserted are part of the transaction: their error rolls it back
            except BaseException:
                with suppress(BaseException):  # the connection is free once the writer thread is done
                    pg.wait()
                self._staged.pop(conn, None)  # a staging table made in this transaction is gone with it
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    with suppress(psycopg.Error):  # a broken connection: the pool drops it
                        conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                self._staged.pop(conn, None)
                raise

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._transaction(write=True) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._transaction(write=False) as conn:
            yield conn

    def versions(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            return {
                str(c): int(v) for c, v in conn.execute("SELECT component, version FROM schema_versions").fetchall()
            }

    def version(self, component: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT version FROM schema_versions WHERE component = %s", (component,)).fetchone()
        return int(row[0]) if row else 0

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply `component`'s migrations (in PostgreSQL's dialect) past its recorded version, each in one
        transaction under an advisory lock, so replicas starting together migrate once."""
        for version in range(len(migrations)):
            with self.pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                row = conn.execute("SELECT version FROM schema_versions WHERE component = %s", (component,)).fetchone()
                current = int(row[0]) if row else 0
                if current > len(migrations):
                    raise RuntimeError(
                        f"the database's {component} schema is version {current}, newer than this molar-mcp knows "
                        f"({len(migrations)}); upgrade molar-mcp"
                    )
                if current > version:
                    continue
                # Unscoped: a migration that rewrites rows must see every org's (row-level security).
                conn.execute("SELECT set_config('app.org_id', %s, true)", (UNSCOPED,))
                conn.execute(pg_migration(component, version, migrations[version]))
                secure_tables(conn)
                self._keys.clear()
                self._types.clear()
                self._staged.clear()  # a table may have changed: staging tables are made again
                conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (%s, %s)"
                    " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, version + 1),
                )
        return len(migrations)
