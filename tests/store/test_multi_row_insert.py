"""Rows the store built clean (`CleanRows`) go into a table by a plain INSERT many rows a statement
(`store/db.py MULTI_ROWS`), on the embedded store's real connection: the same rows as one execution per
row, whatever the count; a row of the wrong width and a constraint violation are the errors
`executemany` raises; other statements keep one execution per row."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.store.db import MULTI_ROWS, CleanRows, Database, FlatRows, _multi_row

INSERT = "INSERT INTO t (a, b, c) VALUES (?, ?, ?)"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "data")
    with database.tx() as conn:
        conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB)")
    yield database
    database.close()


def _rows(n: int) -> CleanRows:
    return CleanRows((i, f"text {i}" if i % 3 else None, b"\x00\x01" * (i % 4)) for i in range(n))


@pytest.mark.parametrize("count", [2, 100, MULTI_ROWS - 1, MULTI_ROWS, MULTI_ROWS + 1, 3 * MULTI_ROWS + 17])
def test_the_same_rows_as_one_execution_per_row_in_fewer_statements(db: Database, count: int) -> None:
    statements: list[str] = []
    with db.tx() as conn:
        conn.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT") else None)
        conn.executemany(INSERT, _rows(count))
        conn.set_trace_callback(None)
        stored = conn.execute("SELECT a, b, c FROM t ORDER BY a").fetchall()
    assert stored == list(_rows(count))
    # MULTI_ROWS a statement, the rest in powers of two (a bounded set of statements to compile and cache)
    assert len(statements) == count // MULTI_ROWS + (count % MULTI_ROWS).bit_count()
    sizes = {sql.count("),(") + 1 for sql in statements}  # the trace holds the values bound
    assert sizes <= {MULTI_ROWS >> k for k in range(MULTI_ROWS.bit_length())}


def test_a_row_of_the_wrong_width_is_refused_and_nothing_goes_in(db: Database) -> None:
    rows = _rows(MULTI_ROWS + 5)
    rows[7] = (7, "seven")  # two values, then a row of four: the flat total would still fit
    rows[8] = (8, "eight", b"", b"extra")
    with pytest.raises(sqlite3.ProgrammingError), db.tx() as conn:
        conn.executemany(INSERT, rows)
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_a_constraint_violation_raises_and_the_transaction_stores_nothing(db: Database) -> None:
    rows = _rows(2 * MULTI_ROWS)
    rows[MULTI_ROWS + 3] = (5, "again", b"")  # primary key 5 is in the first statement's rows
    with pytest.raises(sqlite3.IntegrityError), db.tx() as conn:
        conn.executemany(INSERT, rows)
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_other_statements_and_uncleaned_rows_run_row_by_row(db: Database) -> None:
    statements: list[str] = []
    with db.tx() as conn:
        conn.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT") else None)
        conn.executemany("INSERT OR REPLACE INTO t (a, b, c) VALUES (?, ?, ?)", _rows(10))
        conn.executemany(INSERT, [(100 + i, "a\x00b", b"") for i in range(10)])  # a plain list: cleaned
        conn.set_trace_callback(None)
        texts = {r[0] for r in conn.execute("SELECT b FROM t WHERE a >= 100").fetchall()}
    assert len(statements) == 20
    assert texts == {"a\ufffdb"}


def test_a_column_null_in_every_row_of_a_statement_is_written_not_bound(db: Database) -> None:
    # 100 rows: statements of 64, 32 and 4. Column b is NULL in every row of the first two statements
    # and in one row of the last; column c is NULL in every row of the last.
    rows = CleanRows((i, None if i < 96 or i == 97 else f"text {i}", None if i >= 96 else b"\x01") for i in range(100))
    statements: list[str] = []
    bound_nones = []  # the sqlite3 module looks every bound None up among its adapters: count them there
    sqlite3.register_adapter(type(None), lambda value: bound_nones.append(value))
    try:
        with db.tx() as conn:
            conn.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT") else None)
            conn.executemany(INSERT, rows)
            conn.set_trace_callback(None)
    finally:
        del sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)]
    with db.read() as conn:
        stored = conn.execute("SELECT a, b, c FROM t ORDER BY a").fetchall()
    assert stored == list(rows)  # the same rows as binding every None
    assert len(statements) == 3
    assert len(bound_nones) == 1  # row 97's b: the only None in a column not NULL throughout its statement
    # what the statements bind: b is written NULL where it is NULL throughout, c likewise
    assert _multi_row(INSERT, 64, (1,)) == (f"INSERT INTO t (a, b, c) VALUES {','.join(['(?,NULL,?)'] * 64)}", 3)
    assert _multi_row(INSERT, 4, (2,)) == (f"INSERT INTO t (a, b, c) VALUES {','.join(['(?,?,NULL)'] * 4)}", 3)
    assert _multi_row(INSERT, 2) == ("INSERT INTO t (a, b, c) VALUES (?, ?, ?),(?, ?, ?)", 3)


ONE_OR_NONE_LEFT = [[(None, None, None)] * 3, [(i, None, None) for i in range(5)]]


@pytest.mark.parametrize("rows", ONE_OR_NONE_LEFT, ids=["all", "one-left"])
def test_rows_with_one_value_or_none_left_to_bind_go_in_as_they_are(db: Database, rows: list[tuple[Any, ...]]) -> None:
    with db.tx() as conn:
        conn.execute("CREATE TABLE u (a INTEGER, b TEXT, c BLOB)")
        conn.executemany("INSERT INTO u (a, b, c) VALUES (?, ?, ?)", CleanRows(rows))
        assert conn.execute("SELECT a, b, c FROM u ORDER BY rowid").fetchall() == rows


def _flat(rows: CleanRows) -> FlatRows:
    return FlatRows(3, (value for row in rows for value in row))


def _null_rows() -> CleanRows:
    # As the test above: b NULL throughout the first two statements (64 and 32 rows) and in one row of the last,
    # c NULL throughout the last.
    return CleanRows((i, None if i < 96 or i == 97 else f"text {i}", None if i >= 96 else b"\x01") for i in range(100))


def _stored_by(path: Path, rows: CleanRows | FlatRows) -> tuple[list[Any], list[str], int]:
    """What `executemany` of `rows` stores in a fresh table, by which statements, binding how many Nones."""
    database = Database(path)
    statements: list[str] = []
    bound_nones: list[None] = []
    sqlite3.register_adapter(type(None), lambda value: bound_nones.append(value))
    try:
        with database.tx() as conn:
            conn.execute("CREATE TABLE u (a INTEGER, b TEXT, c BLOB)")
            conn.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT") else None)
            conn.executemany("INSERT INTO u (a, b, c) VALUES (?, ?, ?)", rows)
            conn.set_trace_callback(None)
            stored = conn.execute("SELECT a, b, c, typeof(b), typeof(c) FROM u ORDER BY rowid").fetchall()
    finally:
        del sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)]
        database.close()
    return stored, statements, len(bound_nones)


@pytest.mark.parametrize(
    "rows",
    [_rows(2), _rows(3 * MULTI_ROWS + 17), _null_rows(), CleanRows(ONE_OR_NONE_LEFT[1] * 40)],
    ids=["two", "many", "null-columns", "one-left"],
)
def test_rows_laid_end_to_end_go_in_by_the_same_statements_and_values(tmp_path: Path, rows: CleanRows) -> None:
    """`FlatRows` (a bundle's events) are the rows `CleanRows` would be, by the same statements, binding the
    same values (the same Nones left to bind)."""
    as_rows, as_flat = _stored_by(tmp_path / "rows", rows), _stored_by(tmp_path / "flat", _flat(rows))
    assert as_flat == as_rows
    assert [row[:3] for row in as_flat[0]] == list(rows)


def test_flat_rows_that_are_not_whole_rows_are_refused_and_nothing_goes_in(db: Database) -> None:
    flat = _flat(_rows(MULTI_ROWS + 5))
    flat.pop()
    with pytest.raises(ValueError, match="not rows of 3"), db.tx() as conn:
        conn.executemany(INSERT, flat)
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
