"""The embedded store's SQLite database: one writer connection behind a lock, a reader connection per
thread (WAL: a long write never blocks a read), transactions, and migrations kept per component
(traces, live ingest, debugger, replays…), each an append-only list of its own.

Components migrate independently (`schema_versions` holds one row each), so features can add
tables without renumbering each other's migrations.

Text the store keeps never holds U+0000: PostgreSQL's text type cannot, so on both engines every NUL
in a bound value becomes U+FFFD (the replacement character) — the same rows whichever engine stores
them (`store_text`; the PostgreSQL connection does the same in `postgres/db.py`).
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

log = logging.getLogger("molar_mcp")

DB_FILE = "molar.sqlite3"
MAX_IDLE_READERS = 16
# The WAL is copied back into the database file by a thread of its own (`Database._checkpoints`), at most
# every `CHECKPOINT_SECONDS` while there are writes, not by the commit that crosses SQLite's 1,000 pages
# (that commit ran the copy and its fsync inside the request that made it: 12-16 ms about every 100 live
# appends). Should that thread fall behind, a commit still copies past `BACKSTOP_PAGES` of WAL.
CHECKPOINT_SECONDS = 0.5
BACKSTOP_PAGES = 10_000
NUL, REPLACEMENT = "\x00", "\ufffd"
_NULL = {None}


def store_text(value: str) -> str:
    """`value` as the store keeps it: each NUL replaced by U+FFFD."""
    return value.replace(NUL, REPLACEMENT) if NUL in value else value


def _clean(params: Any) -> Any:
    if isinstance(params, (list, tuple)):
        for v in params:  # (a plain loop: this runs for every row written)
            if isinstance(v, str) and NUL in v:
                return [store_text(v) if isinstance(v, str) else v for v in params]
        return params
    if isinstance(params, dict):
        return {k: store_text(v) if isinstance(v, str) else v for k, v in params.items()}
    return params


IN_CHUNK = 500  # values per IN (…) of a lookup (SQLite's limit on bound parameters is far above)


def rows_in(
    conn: Any, sql: str, values: Sequence[Any], *, before: Sequence[Any] = (), after: Sequence[Any] = ()
) -> Iterator[Any]:
    """The rows of `sql` for all of `values`, asked `IN_CHUNK` values at a time: `sql` holds `{marks}` where
    the IN list goes, and its other parameters are `before` and `after` the values. Rows come chunk by chunk,
    in the order of `values`."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        yield from conn.execute(sql.replace("{marks}", ",".join("?" * len(chunk))), (*before, *chunk, *after))


def insert_many_behind(conn: Any, sql: str, rows: Sequence[Any]) -> None:
    """`conn.executemany(sql, rows)`, which the connection may go on running after this returns (PostgreSQL:
    on a writer thread, `PgConnection.executemany_behind`; SQLite: at once). The transaction's next statement
    or its commit waits for it and raises its error; `rows` must stay as they are until then."""
    behind = getattr(conn, "executemany_behind", None)
    if behind is None:
        conn.executemany(sql, rows)
    else:
        behind(sql, rows)


class CleanRows(list[Any]):
    """Rows whose text is already as the store keeps it (`store_text`): bound without a second look
    (a bundle's events, cleaned while their rows are built)."""


class FlatRows(list[Any]):
    """Clean rows (as `CleanRows`) laid end to end in one list, `width` values a row: a bundle's events are
    built so, with no tuple per row, and a many-row statement's values are then a slice of it, not a list
    made of the rows (`TextConnection._insert_flat`). `rows()` gives them as `CleanRows` of tuples."""

    def __init__(self, width: int, values: Iterable[Any] = ()) -> None:
        super().__init__(values)
        self.width = width

    def rows(self) -> CleanRows:
        return CleanRows(zip(*[iter(self)] * self.width, strict=True))


def insert_rows(conn: Any, sql: str, rows: CleanRows | FlatRows) -> None:
    """`insert_many_behind` of rows given flat or not (a connection that does not take `FlatRows` whole,
    PostgreSQL's, gets them as `CleanRows`)."""
    if isinstance(rows, FlatRows) and not isinstance(conn, TextConnection):
        rows = rows.rows()
    insert_many_behind(conn, sql, rows)


# Rows per statement when `CleanRows` go into a table by a plain `INSERT … VALUES (?, …)`: one statement
# of many rows, not one execution per row (a bundle's events: ~25% less of SQLite's and the binding's CPU
# per row, and the GIL is released for the whole statement rather than for each row). Statements hold a
# power of two of rows (the rest of a batch is split so: 100 rows are 64 + 32 + 4), so a connection's cache
# of compiled statements keeps at most nine of them per table (~0.25 MB for 256 rows), whatever the sizes
# of the batches.
MULTI_ROWS = 256
_PLAIN_INSERT = re.compile(
    r"\s*INSERT\s+INTO\s+\w+\s*\([\w\s,]+\)\s*VALUES\s*(\(\s*\?(?:\s*,\s*\?)*\s*\))\s*$", re.IGNORECASE
)


@functools.lru_cache(maxsize=256)
def _multi_row(sql: str, rows: int, nulls: tuple[int, ...] = ()) -> tuple[str, int] | None:
    """`sql`, a plain one-row INSERT, made to insert `rows` rows at once, and the values a row takes (None:
    not such a statement). `nulls`: the positions of the values that are NULL in every row, written as
    `NULL` in the statement instead of bound."""
    plain = _PLAIN_INSERT.match(sql)
    if plain is None:
        return None
    one = plain.group(1)
    width = one.count("?")
    if nulls:
        one = "(" + ",".join("NULL" if i in nulls else "?" for i in range(width)) + ")"
    return sql[: plain.start(1)] + ",".join([one] * rows), width


class TextConnection(sqlite3.Connection):
    """A SQLite connection that binds text as the store keeps it (no NUL; see the module's docstring)."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return super().execute(sql, _clean(parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        if isinstance(parameters, FlatRows):
            plain = _multi_row(sql, 1)
            if plain is not None and plain[1] == parameters.width and len(parameters) > parameters.width:
                return self._insert_flat(sql, parameters)
            return self.executemany(sql, parameters.rows())
        if isinstance(parameters, CleanRows):
            if len(parameters) > 1 and _multi_row(sql, 1) is not None:
                return self._insert_many(sql, parameters)
            return super().executemany(sql, parameters)
        return super().executemany(sql, (_clean(row) for row in parameters))

    def _insert_flat(self, sql: str, flat: FlatRows) -> sqlite3.Cursor:
        """`_insert_many` of rows laid end to end: the same statements and values, each statement's values
        a slice of `flat` (or, with columns NULL throughout, the other columns' strided slices)."""
        width = flat.width
        if len(flat) % width:
            raise ValueError(f"{len(flat)} values are not rows of {width}")
        execute = super().execute
        cursor: sqlite3.Cursor | None = None
        start, left = 0, len(flat) // width
        while left:
            size = min(MULTI_ROWS, 1 << (left.bit_length() - 1))
            first, end = start * width, (start + size) * width
            # As `_insert_many`: a column NULL in every row of the statement is written NULL in it, not bound.
            nulls = tuple(
                i for i in range(width) if flat[first + i] is None and set(flat[first + i : end : width]) == _NULL
            )
            if not nulls:
                values = flat[first:end]
            else:
                kept = [i for i in range(width) if i not in nulls]
                values = [None] * (size * len(kept))
                for at, column in enumerate(kept):
                    values[at :: len(kept)] = flat[first + column : end : width]
            cursor = execute(_multi_row(sql, size, nulls)[0], values)  # type: ignore[index]
            start, left = start + size, left - size
        assert cursor is not None
        return cursor

    def _insert_many(self, sql: str, rows: CleanRows) -> sqlite3.Cursor:
        """Insert `rows` by a plain INSERT `sql`, `MULTI_ROWS` rows a statement, the rest in statements of
        fewer rows, each a power of two. The same rows as `executemany`; an error stops at the statement it
        happened in (the caller's transaction rolls back). The cursor is the last statement's."""
        width = _multi_row(sql, 1)[1]  # type: ignore[index]
        if set(map(len, rows)) != {width}:  # let executemany name the row that does not fit
            return super().executemany(sql, rows)
        execute = super().execute
        cursor: sqlite3.Cursor | None = None
        start, left = 0, len(rows)
        while left:
            size = min(MULTI_ROWS, 1 << (left.bit_length() - 1))
            part = rows[start : start + size]
            # A column NULL in every row of the statement is written NULL in it, not bound: the sqlite3
            # module binds a None (or any value not a str, int, float or bytes) through its adapter look-up,
            # ~0.4 µs each (a live append's rows have no idempotency key and often no message).
            nulls = tuple(i for i, v in enumerate(part[0]) if v is None and set(map(itemgetter(i), part)) == _NULL)
            if not nulls:
                values = list(chain.from_iterable(part))
            elif len(nulls) == width:
                values = []
            elif len(nulls) == width - 1:  # one value a row left (itemgetter of one gives it, not a tuple)
                values = list(map(itemgetter(next(i for i in range(width) if i not in nulls)), part))
            else:
                values = list(chain.from_iterable(map(itemgetter(*(i for i in range(width) if i not in nulls)), part)))
            cursor = execute(_multi_row(sql, size, nulls)[0], values)  # type: ignore[index]
            start, left = start + size, left - size
        assert cursor is not None
        return cursor


class Database:
    def __init__(
        self, data_dir: Path, *, checkpoint_seconds: float = CHECKPOINT_SECONDS, backstop_pages: int = BACKSTOP_PAGES
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # every open reader; `_idle` the ones free now
        self._idle: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._conn = sqlite3.connect(
            data_dir / DB_FILE, check_same_thread=False, isolation_level=None, factory=TextConnection
        )
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {int(backstop_pages)}")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
        except BaseException:
            self._conn.close()
            raise
        self._checkpoint_seconds = checkpoint_seconds
        # The checkpointer's state, changed only under `_wal` (so a stop is never missed): `_unsaved`, a
        # commit has written since the last copy began; `_stopping`, `close` was called.
        self._wal = threading.Condition(threading.Lock())
        self._unsaved = self._stopping = False
        self._checkpointer = threading.Thread(target=self._checkpoints, name="molar-checkpoint", daemon=True)
        self._checkpointer.start()

    def _committed(self) -> None:
        with self._wal:
            if not self._unsaved:  # the first commit since the last copy wakes the checkpointer
                self._unsaved = True
                self._wal.notify_all()

    def _checkpoints(self) -> None:
        """The checkpointer: once a commit has written, wait `checkpoint_seconds` (the commits meanwhile
        share the copy: a page written by many is copied once), then copy the WAL into the database file
        (PASSIVE: it neither waits for nor blocks writers and readers; what a reader still needs stays in
        the WAL for the next one), on a connection of its own, off every request's path. SQLite runs it
        without the GIL. A failed copy (the disk full, say) is retried after the next write."""
        conn = sqlite3.connect(self.data_dir / DB_FILE, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            while True:
                with self._wal:
                    self._wal.wait_for(lambda: self._unsaved or self._stopping)
                    if not self._stopping:
                        self._wal.wait(self._checkpoint_seconds)  # commits meanwhile do not wake it again
                    if self._stopping:
                        return
                    self._unsaved = False
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.warning("a WAL checkpoint failed; it is tried again after the next write", exc_info=True)
        finally:
            conn.close()

    def close(self) -> None:
        """Close the writer and the idle readers now; a reader another thread is using is closed when that
        read ends (`_checkin`): closing a SQLite connection under a running statement crashes the process."""
        with self._wal:
            self._stopping = True
            self._wal.notify_all()
        if self._checkpointer is not threading.current_thread():
            self._checkpointer.join()
        with self._lock, self._readers_lock:
            self._closed = True
            for reader in self._idle:
                self._readers.remove(reader)
                reader.close()
            self._idle.clear()
            self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all or nothing."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._local.writing = getattr(self._local, "writing", 0) + 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
                self._committed()
            finally:
                self._local.writing -= 1

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read: one snapshot on this thread's own connection, so it neither waits for a
        write in progress nor sees half of one. Inside a write transaction it reads that transaction."""
        if getattr(self._local, "writing", 0):
            with self._lock:
                yield self._conn
            return
        conn: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if conn is not None:  # a read inside a read: the same snapshot
            yield conn
            return
        conn = self._checkout()
        self._local.reader = conn
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            self._local.reader = None
            if conn.in_transaction:
                conn.execute("COMMIT")
            self._checkin(conn)

    def _checkout(self) -> sqlite3.Connection:
        with self._readers_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            if self._idle:
                return self._idle.pop()
        conn = sqlite3.connect(
            self.data_dir / DB_FILE, check_same_thread=False, isolation_level=None, factory=TextConnection
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = 1")
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def _checkin(self, conn: sqlite3.Connection) -> None:
        with self._readers_lock:
            if not self._closed and len(self._idle) < MAX_IDLE_READERS:
                self._idle.append(conn)
                return
            self._readers.remove(conn)
        conn.close()

    def versions(self) -> dict[str, int]:
        """Every component's schema version."""
        with self._lock:
            rows = self._conn.execute("SELECT component, version FROM schema_versions").fetchall()
        return {str(c): int(v) for c, v in rows}

    def version(self, component: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
        return int(row[0]) if row else 0

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply `component`'s migrations past its recorded version, each in one transaction."""
        current = self.version(component)
        if current > len(migrations):
            raise RuntimeError(
                f"the data dir's {component} schema is version {current}, newer than this molar-mcp knows "
                f"({len(migrations)}); upgrade molar-mcp"
            )
        for version in range(current, len(migrations)):
            with self._lock:
                try:
                    self._conn.executescript(
                        "BEGIN IMMEDIATE;"
                        + migrations[version]
                        + ";INSERT INTO schema_versions (component, version) VALUES "
                        + f"('{component}', {version + 1}) ON CONFLICT(component) DO UPDATE SET version = "
                        + f"{version + 1}; COMMIT;"
                    )
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
        return len(migrations)
