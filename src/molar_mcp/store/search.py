"""Text search over traces that stops after `limit` hits, newest first, at any store size.

A search is "every trace whose indexed text matches, and that passes the filters, ordered by
`(created_ms, pk)` descending". Collecting every match and sorting is linear in the matches (a common
word matches half the store); walking every trace and testing the text is linear in the traces (a word
that matches nothing reads them all). Instead, in order:

1. **Matches newest first.** FTS5 gives a term's matches in descending rowid (= trace pk) order without
   collecting them. Traces arrive roughly in time order, so the first matches are the newest. To know
   when to stop, `trace_time_blocks` keeps the smallest and largest `created_ms` of each block of 256
   pks (a trigger keeps it current): once `limit` hits are in hand, no trace in a block whose newest
   trace is older than the oldest hit can displace one, so the walk stops at the first such block. A
   cursor (or `to`) skips the blocks that hold only newer traces. Bounded: it gives up after
   `_BUDGET_S` (filters that most matches fail).
2. **Filtered traces newest first**, each tested against the text (selective filters, common words):
   the filter's index gives the order; bounded by time through SQLite's progress handler.
3. **Every match**, joined to its trace, filtered and sorted: exact, linear in the matches. Only a
   common word with a filter it rarely meets gets here.

All three return exactly the same rows; only their cost differs.
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

BLOCK_BITS = 8
_BUDGET_S = 0.004  # time plans 1 and 2 each get before the next is tried
_RECHECK = 4  # rows read between two looks at the stopping block

SEARCH_MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE trace_time_blocks (
        block INTEGER PRIMARY KEY,
        min_created_ms INTEGER NOT NULL,
        max_created_ms INTEGER NOT NULL
    );
    CREATE INDEX trace_time_blocks_max ON trace_time_blocks(max_created_ms);
    INSERT INTO trace_time_blocks (block, min_created_ms, max_created_ms)
        SELECT pk >> {BLOCK_BITS}, min(created_ms), max(created_ms) FROM traces GROUP BY pk >> {BLOCK_BITS};
    CREATE TRIGGER traces_time_block_insert AFTER INSERT ON traces BEGIN
        INSERT INTO trace_time_blocks (block, min_created_ms, max_created_ms)
            VALUES (new.pk >> {BLOCK_BITS}, new.created_ms, new.created_ms)
            ON CONFLICT(block) DO UPDATE SET
                min_created_ms = min(min_created_ms, excluded.min_created_ms),
                max_created_ms = max(max_created_ms, excluded.max_created_ms);
    END;
    CREATE TRIGGER traces_time_block_update AFTER UPDATE OF created_ms ON traces BEGIN
        INSERT INTO trace_time_blocks (block, min_created_ms, max_created_ms)
            VALUES (new.pk >> {BLOCK_BITS}, new.created_ms, new.created_ms)
            ON CONFLICT(block) DO UPDATE SET
                min_created_ms = min(min_created_ms, excluded.min_created_ms),
                max_created_ms = max(max_created_ms, excluded.max_created_ms);
    END;
    """,
    # 2: the words of the index, so a prefix ("webh") becomes the few words it stands for and the
    # search streams (FTS5 gathers every match of a prefix query before giving the first).
    """
    CREATE TABLE search_terms (term TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE VIRTUAL TABLE search_terms_vocab USING fts5vocab(traces_fts, row);
    INSERT INTO search_terms (term) SELECT term FROM search_terms_vocab;
    DROP TABLE search_terms_vocab;
    """,
    # 3: the scenario filter (`scenario=` slug) walks an index in time order like the others.
    """
    CREATE INDEX traces_org_slug_created ON traces(org_id, scenario_slug, created_ms DESC, pk DESC);
    """,
)

# The tokenizer of `traces_fts` (store/schema.py, migration 2); words are cut the same way here.
_TOKENIZE = "unicode61 remove_diacritics 2"
_MAX_EXPANSION = 512  # a prefix standing for more words than this is left to FTS5 as a prefix


class _Tokenizer:
    """FTS5's own tokenizer on a private in-memory database: the words of a text, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._conn.execute(f"CREATE VIRTUAL TABLE tok USING fts5(body, content='', tokenize='{_TOKENIZE}')")
        self._conn.execute("CREATE VIRTUAL TABLE tok_words USING fts5vocab(tok, instance)")

    def words(self, texts: Sequence[str]) -> list[list[str]]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany("INSERT INTO tok (rowid, body) VALUES (?, ?)", enumerate(texts))
                out: list[list[str]] = [[] for _ in texts]
                for doc, term in self._conn.execute("SELECT doc, term FROM tok_words ORDER BY doc, offset"):
                    out[doc].append(term)
                self._conn.execute("INSERT INTO tok (tok) VALUES ('delete-all')")
            finally:
                self._conn.execute("COMMIT")
        return out


_tokenizer = _Tokenizer()


def remember_words(conn: sqlite3.Connection, texts: Sequence[str]) -> None:
    """Add the words of `texts` to `search_terms`. Call it wherever text goes into `traces_fts`.
    The embedded store only: on PostgreSQL (`store/postgres`) a prefix is a `tsquery` of its own."""
    if not isinstance(conn, sqlite3.Connection):
        return
    words = {w for ws in _tokenizer.words(texts) for w in ws}
    conn.executemany("INSERT OR IGNORE INTO search_terms (term) VALUES (?)", ((w,) for w in words))


def index_text(conn: sqlite3.Connection, pk: int, body: str, *, replace: bool = False) -> None:
    """Put a trace's text in the search index (or replace it)."""
    if replace:
        conn.execute("UPDATE traces_fts SET body = ? WHERE rowid = ?", (body, pk))
    else:
        conn.execute("INSERT INTO traces_fts (rowid, body) VALUES (?, ?)", (pk, body))
    remember_words(conn, [body])


def streaming_match(conn: sqlite3.Connection, words: Sequence[str]) -> str | None:
    """The FTS5 query for `words` (already stripped of quotes and control characters), every word
    required, the last one as a prefix — written so FTS5 can stream it: the prefix becomes the words
    of the index it stands for. None when no trace can match."""
    if not words:
        return None
    quoted = [f'"{w}"' for w in words[:-1]]
    last = words[-1]
    tokens = _tokenizer.words([last])[0]
    if not tokens:
        return " AND ".join([*quoted, f'"{last}"*'])
    prefix = tokens[-1]
    found = [
        r[0]
        for r in conn.execute(
            "SELECT term FROM search_terms WHERE term >= ? AND term < ? ORDER BY term LIMIT ?",
            (prefix, prefix + "\U0010ffff", _MAX_EXPANSION + 1),
        )
    ]
    if not found:
        return None
    if len(found) > _MAX_EXPANSION:
        return " AND ".join([*quoted, f'"{last}"*'])
    head = " ".join(tokens[:-1])
    alternatives = " OR ".join(f'"{head} {term}"' if head else f'"{term}"' for term in found)
    return " AND ".join([*quoted, f"({alternatives})"])


def search(
    conn: sqlite3.Connection,
    columns: str,
    where: Sequence[str],
    args: Sequence[Any],
    match: str,
    n: int,
    *,
    newest_ms: int | None = None,
    oldest_ms: int | None = None,
) -> list[tuple[Any, ...]]:
    """The first `n` rows of `SELECT columns FROM traces t WHERE where AND <text matches>` in
    `(created_ms, pk)` descending order. `columns` must start with `t.pk` and `t.created_ms`.
    `newest_ms` / `oldest_ms` are bounds the filters already imply (a cursor, `to`, `from`): they only
    let the search skip what cannot match."""
    rows = by_matches(conn, columns, where, args, match, n, newest_ms=newest_ms, oldest_ms=oldest_ms)
    if rows is None:
        rows = by_filters(conn, columns, where, args, match, n)
    if rows is None:
        rows = by_everything(conn, columns, where, args, match, n)
    return rows


def _ordered(columns: str, where: Sequence[str], test: str) -> str:
    clause = " AND ".join([*where, test])
    return f"SELECT {columns} FROM traces t WHERE {clause} ORDER BY t.created_ms DESC, t.pk DESC LIMIT ?"


def by_filters(
    conn: sqlite3.Connection,
    columns: str,
    where: Sequence[str],
    args: Sequence[Any],
    match: str,
    n: int,
    *,
    budget: float = _BUDGET_S,
) -> list[tuple[Any, ...]] | None:
    """Plan 2: the filters' index in time order, each trace tested against the text; None after
    `budget` seconds."""
    deadline = time.perf_counter() + budget

    def over() -> int:
        return 1 if time.perf_counter() > deadline else 0

    probe = "EXISTS (SELECT 1 FROM traces_fts WHERE traces_fts MATCH ? AND rowid = t.pk)"
    conn.set_progress_handler(over, 1000)
    try:
        return [tuple(r) for r in conn.execute(_ordered(columns, where, probe), [*args, match, n]).fetchall()]
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise
        return None
    finally:
        conn.set_progress_handler(None, 0)


def by_everything(
    conn: sqlite3.Connection, columns: str, where: Sequence[str], args: Sequence[Any], match: str, n: int
) -> list[tuple[Any, ...]]:
    """Plan 3: every match, then the filters' index in time order. Exact; linear in the matches."""
    every = "t.pk IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?)"
    return [tuple(r) for r in conn.execute(_ordered(columns, where, every), [*args, match, n]).fetchall()]


def by_matches(
    conn: sqlite3.Connection,
    columns: str,
    where: Sequence[str],
    args: Sequence[Any],
    match: str,
    n: int,
    *,
    newest_ms: int | None = None,
    oldest_ms: int | None = None,
    budget: float = _BUDGET_S,
) -> list[tuple[Any, ...]] | None:
    """Plan 1: the text's matches newest pk first, stopped by the time blocks; None after `budget`
    seconds."""
    deadline = time.perf_counter() + budget
    start_pk = _start_pk(conn, newest_ms)
    if start_pk is None:
        return []
    end_pk = _end_pk(conn, oldest_ms)
    filters = "".join(f" AND {w}" for w in where)
    cur = conn.execute(
        f"SELECT f.rowid, (t.pk IS NOT NULL{filters}), t.created_ms FROM traces_fts f"
        " LEFT JOIN traces t ON t.pk = f.rowid"
        " WHERE traces_fts MATCH ? AND f.rowid < ? AND f.rowid >= ? ORDER BY f.rowid DESC",
        [*args, match, start_pk, end_pk],
    )
    heap: list[tuple[int, int]] = []  # (created_ms, pk) of the n best so far
    stop_pk = -(2**62)  # matches below this pk cannot displace the n-th hit
    stop_for: int | None = None  # the n-th hit's created_ms that `stop_pk` was worked out for
    since = 0
    for count, (rowid, passes, created) in enumerate(cur):
        if rowid < stop_pk:
            break
        since += 1
        if count & 63 == 63 and time.perf_counter() > deadline:
            return None
        if not passes:
            continue
        key = (created, rowid)
        if len(heap) < n:
            heapq.heappush(heap, key)
        elif key > heap[0]:
            heapq.heapreplace(heap, key)
        # When the n-th hit has moved, look again where to stop (cheap, indexed; not on every row).
        if len(heap) == n and heap[0][0] != stop_for and (stop_for is None or since >= _RECHECK):
            stop_for = heap[0][0]
            stop_pk = _stop_pk(conn, stop_for)
            since = 0
    if not heap:
        return []
    pks = [pk for _, pk in sorted(heap, reverse=True)]
    rows = {
        r[0]: tuple(r)
        for r in conn.execute(f"SELECT {columns} FROM traces t WHERE t.pk IN ({','.join('?' * len(pks))})", pks)
    }
    return [rows[pk] for pk in pks if pk in rows]


def _stop_pk(conn: sqlite3.Connection, created_ms: int) -> int:
    """The first pk of the oldest block holding a trace created after `created_ms`: every trace below
    it is older than `created_ms` (or as old, with a smaller pk)."""
    (block,) = conn.execute(
        "SELECT min(block) FROM trace_time_blocks INDEXED BY trace_time_blocks_max WHERE max_created_ms > ?",
        (created_ms,),
    ).fetchone()
    return 2**62 if block is None else int(block) << BLOCK_BITS


def _start_pk(conn: sqlite3.Connection, newest_ms: int | None) -> int | None:
    """An exclusive upper pk bound: the blocks above it hold only traces newer than `newest_ms`. None
    when no trace is that old."""
    if newest_ms is None:
        return 2**62
    row = conn.execute(
        "SELECT block FROM trace_time_blocks WHERE min_created_ms <= ? ORDER BY block DESC LIMIT 1", (newest_ms,)
    ).fetchone()
    return None if row is None else (int(row[0]) + 1) << BLOCK_BITS


def _end_pk(conn: sqlite3.Connection, oldest_ms: int | None) -> int:
    """An inclusive lower pk bound: the blocks below it hold only traces older than `oldest_ms`."""
    if oldest_ms is None:
        return -(2**62)
    (block,) = conn.execute(
        "SELECT min(block) FROM trace_time_blocks WHERE max_created_ms >= ?", (oldest_ms,)
    ).fetchone()
    return 2**62 if block is None else int(block) << BLOCK_BITS
