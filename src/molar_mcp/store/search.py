"""Text search over traces that stops after `limit` hits, newest first, at any store size.

A search is "every trace whose indexed text matches, and that passes the filters, ordered by
`(created_ms, pk)` descending". Collecting every match and sorting is linear in the matches (a common
word matches half the store); walking every trace and testing the text is linear in the traces (a word
that matches nothing reads them all). Instead two exact plans run side by side (`race`), each a few
rows at a time, the one that has spent less time going next, until one has the answer:

1. **Matches newest first** (`by_matches`; it runs alone for its first millisecond). FTS5 gives a
   query's matches in descending rowid (= trace pk) order without collecting them. Traces arrive
   roughly in time order, so the first matches are the newest. To know when to stop,
   `trace_time_blocks` keeps the smallest and largest `created_ms` of each block of 256 pks (a trigger
   keeps it current): once `limit` hits are in hand, no trace in a block whose newest trace is older
   than the oldest hit can displace one, so the walk stops at the first such block. A cursor (or `to`)
   skips the blocks that hold only newer traces. Filters on a facet column (status, source, scenario,
   failure signature) are part of the text query: every trace's indexed text ends with one facet word
   per column (`facet_word`), so FTS5 itself intersects a common word with a rare status by skipping
   through both lists, and never reads the matches the filter would drop. The filters are still tested
   on each row: a facet only narrows what is read.
2. **Filtered traces newest first** (`by_filters`): the filters' index in time order, the text of a
   batch of traces tested at once. Wins when the filters keep few traces that facets cannot name
   (a run, a commit, a tier) or when most of what they keep matches.

Racing costs at most twice the cheaper plan's CPU time (plus the head start) whatever the text's and
the filters' selectivity, which no estimate has to guess. A word no trace holds answers at once (`streaming_match`).
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from molar_mcp.store.db import store_text

BLOCK_BITS = 8

# Facets: one word per filter column, made of a private-use character (U+E000, a letter to FTS5's
# tokenizer, never typed) and the value's UTF-8 bytes in hex, appended to each trace's indexed text.
FACET_MARK = "\ue000"
FACET_COLUMNS = {"status": "s", "source": "o", "scenario_slug": "n", "scenario_id": "i", "failure_signature": "g"}


def _facets_sql(alias: str) -> str:
    """The facet words of the `traces` row `alias`, in SQL (the same words as `facet_word`; none for NULL)."""
    return " || ".join(
        f"CASE WHEN {alias}.{column} IS NULL THEN '' ELSE ' ' || char({ord(FACET_MARK)}) || '{tag}' ||"
        f" lower(hex({alias}.{column})) END"
        for column, tag in FACET_COLUMNS.items()
    )


def facet_word(column: str, value: str) -> str:
    """The facet word every trace whose `column` is `value` has in its indexed text. (FTS5 keeps a word's
    first 32,768 bytes: two long values alike that far share a facet, which only widens what is read.)"""
    return f"{FACET_MARK}{FACET_COLUMNS[column]}{store_text(value).encode().hex()}"


_RECHECK = 4  # rows read between two looks at the stopping block


def _facets_of(pk: str) -> str:
    """SQL: a newline and the facet words of the trace whose pk is `pk` ('' when there is no such trace)."""
    return f"coalesce((SELECT char(10) || {_facets_sql('t')} FROM traces t WHERE t.pk = {pk}), '')"


_FACETS_CHANGED = " OR ".join(f"old.{c} IS NOT new.{c}" for c in FACET_COLUMNS)
_FACETS_TRIGGER = f"""CREATE TRIGGER traces_search_facets AFTER UPDATE OF {", ".join(FACET_COLUMNS)} ON traces
        WHEN {_FACETS_CHANGED} BEGIN
        UPDATE traces_fts SET body = body || char(10) || {_facets_sql("new")} WHERE rowid = new.pk;
    END;"""
# The tokenizer of `traces_fts` (store/schema.py, migration 2); words are cut the same way here.
_TOKENIZE = "unicode61 remove_diacritics 2"
# Prefixes (in characters) the index keeps lists of (search migration 5).
_PREFIX_LENGTHS = "2 3"
_INDEXED_PREFIXES = frozenset(int(n) for n in _PREFIX_LENGTHS.split())

# Statuses whose traces' text is also kept in a table of their own (`status_table`), so a search with a
# status filter reads only that status's lists: a word common in the store that the status's traces never
# hold (`passed` among the queued traces, `failed` among the passed ones) is an empty list there, where
# the shared index must step through the word's list and the status's facet together (7.9 ms for
# `passed` + queued, 24 ms for `failed` + passed at 1,000,000 traces). Every status has one: a common
# status crossed with a word of another status is as slow as a rare one. Search migration 6 made these
# tables; a status added to `TRACE_STATUSES` needs a migration that adds its table here.
STATUS_PARTITIONS: tuple[str, ...] = (
    "queued",
    "running",
    "passed",
    "failed",
    "error",
    "aborted",
    "timed_out",
    "skipped",
    "interrupted",
    "flaky",
)


def status_table(status: str) -> str:
    """The full-text table holding the text of the traces whose status is `status` (one of `STATUS_PARTITIONS`)."""
    return f"status_fts_{status}"


def _status_sync_sql(old: str, new: str) -> str:
    """A trigger's statements: take the trace's text out of the table of its `old` status and put the text
    `traces_fts` holds for it into the table of its `new` status (`old` / `new`: the trigger's row names)."""
    out = []
    for status in STATUS_PARTITIONS:
        table = status_table(status)
        out.append(f"DELETE FROM {table} WHERE rowid = {old}.pk AND {old}.status = '{status}';")
        out.append(
            f"INSERT INTO {table} (rowid, body) SELECT rowid, body FROM traces_fts"
            f" WHERE rowid = {new}.pk AND {new}.status = '{status}';"
        )
    return "\n        ".join(out)


# The facet trigger of migration 6: the new facets go into the shared index (as before), then the trace's
# text moves to its (new) status's table — the same body the shared index holds, facets and all.
_STATUS_TRIGGER = f"""CREATE TRIGGER traces_search_facets AFTER UPDATE OF {", ".join(FACET_COLUMNS)} ON traces
        WHEN {_FACETS_CHANGED} BEGIN
        UPDATE traces_fts SET body = body || char(10) || {_facets_sql("new")} WHERE rowid = new.pk;
        {_status_sync_sql("old", "new")}
    END;"""


def _status_tables_sql() -> str:
    """Migration 6: one full-text table per status (the shared index's tokenizer and prefix lists), filled
    with the text of the traces of that status, merged into one segment each."""
    out = ["DROP TRIGGER IF EXISTS traces_search_facets;"]
    for status in STATUS_PARTITIONS:
        table = status_table(status)
        out += [
            # (IF EXISTS: a data dir whose search version was set back by hand gets its tables made anew.)
            f"DROP TABLE IF EXISTS {table};",
            f"CREATE VIRTUAL TABLE {table} USING fts5(body, tokenize = '{_TOKENIZE}', prefix = '{_PREFIX_LENGTHS}');",
            f"INSERT INTO {table} (rowid, body) SELECT f.rowid, f.body FROM traces t JOIN traces_fts f"
            f" ON f.rowid = t.pk WHERE t.status = '{status}' ORDER BY t.pk;",
            f"INSERT INTO {table} ({table}) VALUES ('optimize');",
        ]
    out.append(_STATUS_TRIGGER)
    return "\n    ".join(out)


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
    # 4: each trace's text carries its facets (`FACET_COLUMNS`), so the text index itself meets those
    # filters; a trigger adds the new facets whenever one changes (the old ones stay: the filter on
    # the row is exact, a facet only narrows what is read). The rebuilt index is merged into one
    # segment (a query opens each of its words once per segment).
    f"""
    CREATE VIRTUAL TABLE traces_fts_v3 USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');
    INSERT INTO traces_fts_v3 (rowid, body)
        SELECT f.rowid, f.body || {_facets_of("f.rowid")} FROM traces_fts f;
    DROP TABLE traces_fts;
    ALTER TABLE traces_fts_v3 RENAME TO traces_fts;
    INSERT INTO traces_fts (traces_fts) VALUES ('optimize');
    {_FACETS_TRIGGER}
    """,
    # 5: prefix indexes of 2 and 3 characters. A short prefix stands for many words (`404` for hundreds
    # of commit SHAs) and a query opens each word once per segment of the index (a growing index has
    # ~15): with these, such a prefix is one look-up per segment, streamed newest first (`streaming_match`).
    f"""
    DROP TRIGGER traces_search_facets;
    CREATE VIRTUAL TABLE traces_fts_v5 USING fts5(body, tokenize = '{_TOKENIZE}', prefix = '{_PREFIX_LENGTHS}');
    INSERT INTO traces_fts_v5 (rowid, body) SELECT rowid, body FROM traces_fts;
    DROP TABLE traces_fts;
    ALTER TABLE traces_fts_v5 RENAME TO traces_fts;
    INSERT INTO traces_fts (traces_fts) VALUES ('optimize');
    {_FACETS_TRIGGER}
    """,
    # 6: the text of each status's traces in a table of its own (`STATUS_PARTITIONS`), kept in step by
    # the facet trigger (a status change moves the text) and by `index_text` / `copy_to_status_table`.
    _status_tables_sql(),
)

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


# A trace's indexed text: its words, then its facets (read from its row, on the embedded store only).
INSERT_TEXT_SQL = f"INSERT INTO traces_fts (rowid, body) VALUES (?, ? || {_facets_of('?')})"
_REPLACE_TEXT_SQL = f"UPDATE traces_fts SET body = ? || {_facets_of('?')} WHERE rowid = ?"


def index_text(conn: sqlite3.Connection, pk: int, body: str, *, replace: bool = False) -> None:
    """Put a trace's text in the search index (or replace it). Call it after the trace's row is written."""
    if not isinstance(conn, sqlite3.Connection):  # PostgreSQL (store/postgres): its own full text
        if replace:
            conn.execute("UPDATE traces_fts SET body = ? WHERE rowid = ?", (body, pk))
        else:
            conn.execute("INSERT INTO traces_fts (rowid, body) VALUES (?, ?)", (pk, body))
        return
    if replace:
        conn.execute(_REPLACE_TEXT_SQL, (body, pk, pk))
    else:
        conn.execute(INSERT_TEXT_SQL, (pk, body, pk))
    copy_to_status_table(conn, pk, replace=replace)
    remember_words(conn, [body])


def copy_to_status_table(conn: sqlite3.Connection, pk: int, *, replace: bool = True) -> None:
    """Put the text the shared index holds for trace `pk` into its status's table (replacing what that
    table held for it). Call it whenever a trace's text in `traces_fts` changes; a status change moves
    the text by trigger. The embedded store only."""
    if not isinstance(conn, sqlite3.Connection):
        return
    row = conn.execute("SELECT status FROM traces WHERE pk = ?", (pk,)).fetchone()
    if row is None or row[0] not in STATUS_PARTITIONS:
        return
    table = status_table(row[0])
    if replace:
        conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (pk,))
    conn.execute(f"INSERT INTO {table} (rowid, body) SELECT rowid, body FROM traces_fts WHERE rowid = ?", (pk,))


def streaming_match(conn: sqlite3.Connection, words: Sequence[str]) -> str | None:
    """The FTS5 query for `words` (already stripped of quotes and control characters), every word
    required, the last one as a prefix — written so FTS5 can stream it: a prefix of 2 or 3 characters
    reads the index's list of that prefix, a longer one becomes the words of the index it stands for.
    None when no trace can match."""
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
    indexed = len(prefix) in _INDEXED_PREFIXES and not prefix.startswith(FACET_MARK)  # (no facet is reached)
    if len(found) > _MAX_EXPANSION or (len(found) > 1 and indexed):
        # FTS5 itself: a prefix of an indexed length streams from its own list, one look-up per segment
        # of the index (the words it stands for would be one each).
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
    facets: Mapping[str, str] | None = None,
    newest_ms: int | None = None,
    oldest_ms: int | None = None,
) -> list[tuple[Any, ...]]:
    """The first `n` rows of `SELECT columns FROM traces t WHERE where AND <text matches>` in
    `(created_ms, pk)` descending order. `columns` must start with `t.pk`. `facets` are filters among
    `where` on a facet column (`{"status": "failed"}`), `newest_ms` / `oldest_ms` bounds `where`
    already implies (a cursor, `to`, `from`): they only let the search skip what cannot match."""
    facets = dict(facets or {})
    table = "traces_fts"
    status = facets.get("status")
    if status in STATUS_PARTITIONS:
        # Only that status's traces are in its table: its facet would narrow nothing.
        table = status_table(facets.pop("status"))
    narrowed = " AND ".join([f"({match})", *(f'"{facet_word(c, v)}"' for c, v in facets.items())])
    _, pks = race(
        {
            "matches": by_matches(
                conn, where, args, narrowed, n, newest_ms=newest_ms, oldest_ms=oldest_ms, table=table
            ),
            "filters": by_filters(conn, where, args, match, n),
        },
        head_start=HEAD_START_S,
    )
    return fetch_rows(conn, columns, pks)


# A plan is a generator: it yields whenever it has done a little work and returns the pks of its
# answer, newest first.
Plan = Generator[None, None, list[int]]

_CHUNK = 32  # rows plan 1 reads between two yields
# Plan 1 alone answers most searches within this (a common word, a rare one, any word with a status
# or scenario filter: facets); plan 2 joins only when it has not.
HEAD_START_S = 0.001


def race(plans: dict[str, Plan], *, head_start: float = 0.0) -> tuple[str, list[int]]:
    """Run the plans side by side, always advancing the one that has spent the least CPU time so far,
    and return the first answer (with its plan's name). Every plan is exact, so the first to finish
    is the answer, found in at most (number of plans) × the cheapest plan's time — whatever the
    selectivity of the text and of the filters, which no estimate has to guess. The first plan runs
    alone for its first `head_start` seconds (it answers most searches in less)."""
    spent = [(0.0 if i == 0 else head_start, i, name) for i, name in enumerate(plans)]
    heapq.heapify(spent)
    try:
        while True:
            elapsed, i, name = spent[0]
            t = time.thread_time()  # this thread's CPU time: what other processes take is not charged
            try:
                next(plans[name])
            except StopIteration as done:
                return name, list(done.value)
            heapq.heapreplace(spent, (elapsed + time.thread_time() - t, i, name))
    finally:
        for plan in plans.values():
            plan.close()


def run(plan: Plan) -> list[int]:
    """One plan alone, to the end."""
    while True:
        try:
            next(plan)
        except StopIteration as done:
            return list(done.value)


def fetch_rows(conn: sqlite3.Connection, columns: str, pks: Sequence[int]) -> list[tuple[Any, ...]]:
    """The rows of `pks`, in that order."""
    if not pks:
        return []
    rows = {
        r[0]: tuple(r)
        for r in conn.execute(f"SELECT {columns} FROM traces t WHERE t.pk IN ({','.join('?' * len(pks))})", pks)
    }
    return [rows[pk] for pk in pks if pk in rows]


def by_filters(conn: sqlite3.Connection, where: Sequence[str], args: Sequence[Any], match: str, n: int) -> Plan:
    """Plan 2: the filtered traces in time order, their text tested against the query in batches
    (growing from 16 to 64: most answers come from the first). Cheap when the filters keep few traces
    or most of what they keep matches. A batch is tested in a private in-memory index with the same
    tokenizer: the same answer as the store's index gives, ~4× cheaper than asking it trace by trace,
    and the same at any store size."""
    # SQLite walks the filters' index in time order (or the org's, testing the filters on each row)
    # rather than sort: the first rows come at once.
    cur = conn.execute(
        f"SELECT t.pk FROM traces t WHERE {' AND '.join(where)} ORDER BY t.created_ms DESC, t.pk DESC", args
    )
    hits: list[int] = []
    size = 16
    try:
        while batch := [r[0] for r in cur.fetchmany(size)]:
            texts = conn.execute(
                f"SELECT rowid, body FROM traces_fts WHERE rowid IN ({','.join('?' * len(batch))})", batch
            ).fetchall()
            found = _batch_index().matching(texts, match)
            for pk in batch:
                if pk in found:
                    hits.append(pk)
                    if len(hits) == n:
                        return hits
            size = min(size * 2, 64)
            yield None
    finally:
        cur.close()
    return hits


class _BatchIndex:
    """A private in-memory FTS5 index (the store's tokenizer) to test a few texts against a query."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", isolation_level=None)
        self._conn.execute(f"CREATE VIRTUAL TABLE batch USING fts5(body, content='', tokenize='{_TOKENIZE}')")

    def matching(self, texts: Sequence[tuple[int, str]], match: str) -> set[int]:
        """The rowids of `texts` (rowid, text) that `match` matches."""
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany("INSERT INTO batch (rowid, body) VALUES (?, ?)", texts)
            return {r[0] for r in self._conn.execute("SELECT rowid FROM batch WHERE batch MATCH ?", (match,))}
        finally:
            self._conn.execute("INSERT INTO batch (batch) VALUES ('delete-all')")
            self._conn.execute("COMMIT")


_batch_indexes = threading.local()


def _batch_index() -> _BatchIndex:
    """This thread's batch index (readers run on several threads)."""
    index: _BatchIndex | None = getattr(_batch_indexes, "index", None)
    if index is None:
        index = _batch_indexes.index = _BatchIndex()
    return index


def by_matches(
    conn: sqlite3.Connection,
    where: Sequence[str],
    args: Sequence[Any],
    match: str,
    n: int,
    *,
    newest_ms: int | None = None,
    oldest_ms: int | None = None,
    table: str = "traces_fts",
) -> Plan:
    """Plan 1: the text's matches newest pk first, each tested against the filters, stopped by the time
    blocks. Cheap when the text is rare or most of its matches pass the filters. `table`: the shared
    index, or the table of the one status the filters keep (`status_table`)."""
    start_pk = _start_pk(conn, newest_ms)
    if start_pk is None:
        return []
    end_pk = _end_pk(conn, oldest_ms)
    filters = "".join(f" AND {w}" for w in where)
    cur = conn.execute(
        f"SELECT f.rowid, (t.pk IS NOT NULL{filters}), t.created_ms FROM {table} f"
        " LEFT JOIN traces t ON t.pk = f.rowid"
        f" WHERE {table} MATCH ? AND f.rowid < ? AND f.rowid >= ? ORDER BY f.rowid DESC",
        [*args, match, start_pk, end_pk],
    )
    heap: list[tuple[int, int]] = []  # (created_ms, pk) of the n best so far
    stop_pk = -(2**62)  # matches below this pk cannot displace the n-th hit
    stop_for: int | None = None  # the n-th hit's created_ms that `stop_pk` was worked out for
    since = 0
    try:
        for count, (rowid, passes, created) in enumerate(cur, 1):
            if rowid < stop_pk:
                break
            since += 1
            if count % _CHUNK == 0:
                yield None
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
    finally:
        cur.close()
    return [pk for _, pk in sorted(heap, reverse=True)]


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
