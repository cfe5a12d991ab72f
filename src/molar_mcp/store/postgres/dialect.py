"""The SQL the store's components write (SQLite's dialect, a small portable subset) as PostgreSQL runs it.

Components keep one SQL text and one migration list each; this module maps the few places where the two
engines spell the same thing differently, so a component added for the embedded store runs on
PostgreSQL too, and the contract tests (run on both) catch any statement outside the subset.

Statements: `?` → `%s` (a literal `%` doubled), `INSERT OR IGNORE` → `ON CONFLICT DO NOTHING`,
`last_insert_rowid()` → `lastval()`, `LIKE` → `ILIKE` (SQLite's LIKE ignores ASCII case), `INDEXED BY
name` (a hint to SQLite's planner) dropped.
Migrations (DDL): integer columns are 64-bit (`BIGINT`), an `INTEGER PRIMARY KEY` is an identity column,
`COLLATE NOCASE` text is `citext`, `WITHOUT ROWID` goes; FTS5 tables are declared per migration
(`migrations.py`).
"""

from __future__ import annotations

import functools
import re

_INSERT_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_INSERT_OR_REPLACE = re.compile(r"\bINSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.IGNORECASE)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)
_IS_NOT = re.compile(r"\bIS\s+NOT\s+(%s)", re.IGNORECASE)
_IS = re.compile(r"\bIS\s+(%s)", re.IGNORECASE)
_MIN_MAX = re.compile(r"(?<![\w.])(max|min)\s*\(", re.IGNORECASE)
_LIKE = re.compile(r"(?<![A-Za-z_])LIKE\b", re.IGNORECASE)
_INDEXED_BY = re.compile(r"\s+INDEXED\s+BY\s+\w+", re.IGNORECASE)


def _placeholders(sql: str) -> str:
    """`?` → `%s` and `%` → `%%`, outside quoted strings and names (only for statements with parameters:
    psycopg reads `%` only then)."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def statement(sql: str, with_params: bool = True) -> str:
    """One statement (with `?` parameters when `with_params`), as psycopg takes it."""
    text = _placeholders(sql) if with_params else sql
    if _INSERT_OR_IGNORE.search(text):
        text = _INSERT_OR_IGNORE.sub("INSERT INTO", text)
        returning = _RETURNING.search(text)
        if returning:
            text = text[: returning.start()] + "ON CONFLICT DO NOTHING " + text[returning.start() :]
        else:
            text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    text = text.replace("last_insert_rowid()", "lastval()")
    text = _INDEXED_BY.sub("", text)  # an index SQLite is told to use; PostgreSQL's planner chooses its own
    text = _IS_NOT.sub(r"IS DISTINCT FROM \1", text)
    text = _IS.sub(r"IS NOT DISTINCT FROM \1", text)
    return _LIKE.sub("ILIKE", _scalar_min_max(text))


def _scalar_min_max(text: str) -> str:
    """SQLite's two-argument `max(a, b)` / `min(a, b)` are PostgreSQL's GREATEST / LEAST (one argument:
    the aggregate, the same in both)."""
    out: list[str] = []
    i = 0
    for found in _MIN_MAX.finditer(text):
        start = found.end()  # just past "("
        depth, j, comma = 1, start, False
        while j < len(text) and depth:
            ch = text[j]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "," and depth == 1:
                comma = True
            j += 1
        if comma:
            out.append(text[i : found.start()])
            out.append("GREATEST(" if found.group(1).lower() == "max" else "LEAST(")
            i = start
    out.append(text[i:])
    return "".join(out)


def replaced_table(sql: str) -> str | None:
    """The table of an `INSERT OR REPLACE`, else None."""
    found = _INSERT_OR_REPLACE.search(sql)
    return found.group(1) if found else None


@functools.lru_cache(maxsize=256)
def replace_statement(sql: str, key: tuple[str, ...]) -> str:
    """`INSERT OR REPLACE INTO t (cols) …` as an upsert on `t`'s primary key `key` (SQLite's REPLACE
    of a row with the same key: every listed column takes the new value)."""
    found = _INSERT_OR_REPLACE.search(sql)
    assert found is not None
    columns = [c.strip() for c in found.group(2).split(",")]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key) or f"{key[0]} = excluded.{key[0]}"
    text = statement(_INSERT_OR_REPLACE.sub(lambda m: f"INSERT INTO {m.group(1)} ({m.group(2)})", sql))
    return text.rstrip().rstrip(";") + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


_IDENTITY = re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?(?!\s+REFERENCES)", re.IGNORECASE)
_NOCASE = re.compile(r"\bTEXT\b([^,()]*?)\s+COLLATE\s+NOCASE", re.IGNORECASE)
_TYPES = (
    (re.compile(r"\bINTEGER\b", re.IGNORECASE), "BIGINT"),
    (re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"),
    (re.compile(r"\)\s*WITHOUT\s+ROWID", re.IGNORECASE), ")"),
)


def ddl(script: str) -> str:
    """A migration script of the embedded store, in PostgreSQL's types."""
    text = _IDENTITY.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", script)
    text = _NOCASE.sub(r"CITEXT\1", text)
    for pattern, replacement in _TYPES:
        text = pattern.sub(replacement, text)
    return text
