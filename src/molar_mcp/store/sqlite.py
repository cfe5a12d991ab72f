"""The embedded store: one SQLite file (WAL, FTS5) plus content-addressed blob files."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import string
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import chain, compress, repeat
from operator import eq, itemgetter, or_
from pathlib import Path
from typing import Any, cast

import pydantic_core

from molar_mcp.models import (
    ArtifactRef,
    Event,
    EventsResponse,
    StepSummary,
    TraceDetail,
    TraceListItem,
    TraceListResponse,
)
from molar_mcp.models.batch import gc_paused
from molar_mcp.models.rows import EventView, StoredEvents, trusted, trusted_event
from molar_mcp.store.blobs import BlobStore
from molar_mcp.store.child_reader import WAIT_SECONDS as CHILD_WAIT_SECONDS
from molar_mcp.store.child_reader import ChildReader, can_fork
from molar_mcp.store.db import NUL, CleanRows, Database, FlatRows, insert_rows, rows_in, store_text
from molar_mcp.store.history import (
    FAILING_STATUS_SQL,
    HISTORY_MIGRATIONS,
    backfill_health,
    read_history,
    refresh_health,
)
from molar_mcp.store.port import (
    EventChunk,
    EventFields,
    InvalidCursor,
    NewTrace,
    TooManyEvents,
    TraceNotFound,
    TraceQuery,
    event_ts,
    max_trace_events,
    org_scope,
)
from molar_mcp.store.schema import MIGRATIONS
from molar_mcp.store.search import SEARCH_MIGRATIONS, index_text, search, streaming_match
from molar_mcp.store.steps import STEP_COLUMNS, StepNode, StepTree

_SHORT_ALPHABET = string.ascii_letters + string.digits
# Event kinds whose text goes into the full-text index besides the trace's own fields.
_FTS_EVENT_KINDS = frozenset({"assertion", "error", "console", "step.start", "tool.result", "llm.response"})
_FTS_MAX_CHARS = 64_000
_SCENARIO_NS = uuid.UUID("6f1b7a52-4f0e-4a7e-9d7e-6d6f6c61722e")
# SQLite integers are signed 64-bit: a larger Python int raises OverflowError when bound.
_MAX_SQLITE_INT = 2**63 - 1
# Stored times whose datetimes the process keeps (`_dt`): ~0.1 KB each.
DATETIMES_KEPT = 4096

_TRACE_COLUMNS = (
    "pk, id, short_id, org_id, scenario_id, scenario_slug, scenario_title, status, source, tier, pinned, "
    "duration_ms, code_sha, pr_number, failure_signature, created_ms, parent_trace_id, replay_from_step, "
    "total_size_bytes, blob_count, event_count, kind_counts"
)


def scenario_id_for(slug: str) -> str:
    """The scenario UUID of a slug, when a producer gives none (stable across stores)."""
    return str(uuid.uuid5(_SCENARIO_NS, slug))


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


@functools.lru_cache(maxsize=DATETIMES_KEPT)
def _dt(ms: int) -> datetime:
    """The aware datetime of a stored time, once per process for the last `DATETIMES_KEPT` asked (they
    are immutable): a page of traces comes back call after call, and a datetime seen before also keeps
    its hash, which what renders it looks it up by (mcp/render.py `utc_seconds`)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def derived_ok(ev: EventView) -> bool | None:
    """`ok` when the producer left it out but the payload says: an HTTP status, a console level."""
    return ev.ok if ev.ok is not None else _derived_ok(ev.kind, ev.payload)


def _derived_ok(kind: str, payload: Mapping[str, Any]) -> bool | None:
    """`derived_ok` of an event without `ok`."""
    if kind == "network.response":
        status = payload.get("status")
        if isinstance(status, int):
            return status < 400
    if kind == "console" and payload.get("level") == "error":
        return False
    if kind == "error":
        return False
    return None


def number_event(tree: StepTree, ev: Event) -> tuple[int | None, bool | None]:
    """An event's top-level step number through `tree` (which it grows) and its `ok`, derived from the
    payload where the producer left it out."""
    return _number(tree, ev.seq, ev.ts, ev.kind, ev.step_id, derived_ok(ev), ev.message, ev.payload)


def _number(
    tree: StepTree,
    seq: int,
    ts: int,
    kind: str,
    step_id: str | None,
    ok: bool | None,
    message: str | None,
    payload: Mapping[str, Any],
) -> tuple[int | None, bool | None]:
    node = tree.number(step_id, kind, payload)
    if node is None:
        return None, ok
    tree.observe(node, seq=seq, ts=ts, kind=kind, ok=ok, message=message, payload=payload)
    return node.step, ok


def normalize_events(events: Sequence[Event], tree: StepTree | None = None) -> list[Event]:
    """Number the events' steps (top-level steps 1, 2, … in order; a nested step's events carry
    their top-level ancestor's number; docs/bundle-format.md), growing `tree`, and fill in `ok` where
    the payload decides it, so "failed events" is one indexed query."""
    tree = StepTree() if tree is None else tree
    out: list[Event] = []
    for ev in events:
        number, ok = number_event(tree, ev)
        out.append(ev if ev.step == number and ev.ok == ok else ev.model_copy(update={"step": number, "ok": ok}))
    return out


EventRow = tuple[int, int, str, str | None, int | None, int | None, str | None, str]
# Events per INSERT when a trace's events come as one list (a stream comes in its own chunks).
EVENT_BATCH = 5_000


def _batches(events: Sequence[Event], size: int) -> Iterator[Sequence[Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


_STEP_BOUNDS = frozenset({"step.start", "step.end"})
# The one kind the `events_kind` index leaves out (schema.py, migration 5): a read of it goes by the trace.
UNINDEXED_KIND = "assertion"


def event_rows(
    events: Sequence[EventView | EventFields],
    tree: StepTree | None = None,
    *,
    pk: int | None = None,
    flat: bool = False,
) -> list[Any]:
    """The rows `normalize_events` would give, built directly: a bundle's 10,000 events skip 10,000
    model copies (the ingest hot path; bench/README.md). Events come as models (or other `EventView`s:
    a bundle's fast reader gives structs with the same attributes) or as their validated fields
    (`EventFields`: what a bundle's pydantic reader makes). Grows `tree` as it goes. With `pk`, each row
    starts with it (the `events` table's columns) and is bound as it is: its text is already as the
    store keeps it (`store_text`), so the connection has nothing left to clean.

    A run of plain events of one known step (neither its start nor its end, none failed: most of a
    trace) is folded into the step tree once per run (`StepTree.observe_run`), not event by event.

    With `pk` and `flat`, the rows come laid end to end (`FlatRows`, `EVENT_WIDTH` values a row)."""
    tree = StepTree() if tree is None else tree
    rows: list[Any] = (FlatRows(EVENT_WIDTH) if flat else CleanRows()) if pk is not None else []
    put = rows.extend if flat and pk is not None else rows.append
    # The payloads' stored text as the reader made it (a bundle's fast reader: `EventChunk`), else made here.
    given = events.payload_texts if isinstance(events, EventChunk) else None
    if given is not None and len(given) != len(events):
        raise ValueError("an EventChunk's payload_texts must hold one text per event")
    next_text = iter(given).__next__ if given is not None else None
    nodes = tree.nodes
    to_json = pydantic_core.to_json
    run: StepNode | None = None  # the step of the run being gathered, and the run's seqs, times and size
    run_first_seq = run_first_ts = run_last_seq = run_end_ts = run_count = 0

    def fold_run(node: StepNode) -> None:
        tree.observe_run(
            node,
            first_seq=run_first_seq,
            first_ts=run_first_ts,
            last_seq=run_last_seq,
            end_ts=run_end_ts,
            count=run_count,
        )

    for ev in events:
        if type(ev) is dict:
            kind, step_id, message, seq, ts = ev["kind"], ev["step_id"], ev["message"], ev["seq"], ev["ts"]
            ok, event_payload = ev["ok"], ev["payload"]
        else:  # a model, or a bundle's fast reader's struct: the same attributes
            kind, step_id, message, seq, ts = ev.kind, ev.step_id, ev.message, ev.seq, ev.ts  # type: ignore[union-attr]
            ok, event_payload = ev.ok, ev.payload  # type: ignore[union-attr]
        if ok is None:
            ok = _derived_ok(kind, event_payload)
        node = nodes.get(step_id) if step_id is not None else None
        if node is not None and ok is not False and kind not in _STEP_BOUNDS:
            if node is not run:
                if run is not None:
                    fold_run(run)
                run, run_first_seq, run_first_ts, run_last_seq, run_end_ts, run_count = node, seq, ts, seq, ts, 0
            run_count += 1
            if seq > run_last_seq:
                run_last_seq = seq
            if ts > run_end_ts:
                run_end_ts = ts
            number: int | None = node.step
        else:
            if run is not None:  # the run ends before this event is observed: the order of folding is kept
                fold_run(run)
                run = None
            number, ok = _number(tree, seq, ts, kind, step_id, ok, message, event_payload)
        # The payload's JSON escapes NUL ("\\u0000"); only the plain text columns may hold one.
        if next_text is not None:
            payload = next_text()
        elif event_payload:
            payload = to_json(event_payload).decode()
        else:
            payload = "{}"
        if pk is None:
            rows.append((seq, ts, kind, step_id, number, None if ok is None else int(ok), message, payload))
            continue
        if NUL in kind or (step_id is not None and NUL in step_id) or (message is not None and NUL in message):
            kind, step_id = store_text(kind), None if step_id is None else store_text(step_id)
            message = None if message is None else store_text(message)
        put((pk, seq, ts, kind, step_id, number, None if ok is None else int(ok), message, payload))
    if run is not None:
        fold_run(run)
    return rows


def _fts_ident(text: str) -> str:
    # A double quote would end the FTS5 string; NUL and other control characters end the query
    # text itself ("unterminated string"). None of them is ever part of a token.
    return "".join(" " if c == '"' or (ord(c) < 32 or ord(c) == 127) else c for c in text)


def fts_words(q: str) -> list[str]:
    """A user's free text as words safe inside an FTS5 string."""
    return [w for w in (_fts_ident(part) for part in q.split()) if w.strip()]


def fts_query(q: str) -> str:
    """Turn a user's free text into a safe FTS5 query: every word must match (prefix on the last)."""
    words = fts_words(q)
    if not words:
        return ""
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " AND ".join(quoted)


EVENT_SELECT = "seq, ts, kind, step_id, step, ok, message, payload"


def event_from_row(r: Sequence[Any]) -> Event:
    """An event from a row of `EVENT_SELECT`. Rows we wrote ourselves, validated at ingest, are built
    without validating again (a 10,000-event trace reads in a fraction of the time; bench/README.md)."""
    return trusted_event(
        r[0], r[1], r[2], r[3], r[4], None if r[5] is None else bool(r[5]), r[6], pydantic_core.from_json(r[7])
    )


def new_short_id(conn: sqlite3.Connection) -> str:
    while True:
        candidate = "".join(secrets.choice(_SHORT_ALPHABET) for _ in range(9))
        if conn.execute("SELECT 1 FROM traces WHERE short_id = ?", (candidate,)).fetchone() is None:
            return candidate


def find_trace_row(conn: sqlite3.Connection, org_id: str, trace_ref: str, also: str = "") -> tuple[Any, ...]:
    """The trace's row (`_TRACE_COLUMNS`, then the columns `also` names, say a subquery on `traces.pk`)
    by UUID or short id, in `org_id` only."""
    column = "short_id"
    if _looks_like_uuid(trace_ref):
        column, trace_ref = "id", str(uuid.UUID(trace_ref))
    # A PostgreSQL writer locks the row (`row_lock`), as SQLite's BEGIN IMMEDIATE serialises writers.
    lock = getattr(conn, "row_lock", "")
    more = f", {also}" if also else ""
    row = conn.execute(
        f"SELECT {_TRACE_COLUMNS}{more} FROM traces WHERE {column} = ? AND org_id = ?{lock}", (trace_ref, org_id)
    ).fetchone()
    if row is None:
        raise TraceNotFound(trace_ref)
    return tuple(row)


def find_trace_pk(conn: sqlite3.Connection, org_id: str, trace_ref: str) -> tuple[int, str]:
    """`(pk, status)` of a trace in `org_id`; raises `TraceNotFound`."""
    row = find_trace_row(conn, org_id, trace_ref)
    return int(row[0]), str(row[7])


# The kind, ok and message of an `events` row as `event_rows` builds it with its trace's pk, and its width.
_KIND, _OK, _MESSAGE = itemgetter(3), itemgetter(6), itemgetter(7)
EVENT_WIDTH = 9
log = logging.getLogger("molar_mcp")


class SqliteTraceStore:
    """`TraceStore` over SQLite (`store/db.py`: one writer behind a lock, readers on their own connections)."""

    # Events of a trace given whole (not streamed) are written this many at a time.
    event_batch = EVENT_BATCH

    # Whether a streamed bundle of more than one chunk is read by a forked child while this process stores it
    # (`store/child_reader.py`; where processes fork). None: as MOLAR_INGEST_CHILD says (off unless "1": on
    # a busy machine it cost CPU and did not pay; its extra RSS is gone since session 11; bench/README.md).
    read_in_child: bool | None = None
    # How long the storing process waits for that child's next rows before it kills it and the ingest fails
    # (`ChildReaderError`, 503: nothing stored).
    child_wait_seconds: float = CHILD_WAIT_SECONDS

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.db = Database(data_dir)
        self.blobs = BlobStore(data_dir / "blobs")
        try:
            self.migrate_components()
            # The embedded store's search (store/search.py): time blocks and the index's words.
            self.db.migrate("search", SEARCH_MIGRATIONS)
        except BaseException:
            self.db.close()
            raise

    def migrate_components(self) -> None:
        """Create or upgrade the trace component and those its queries read (runs, test histories)."""
        self.schema_version = self.db.migrate("traces", MIGRATIONS)
        from molar_mcp.store.runs import RUNS_MIGRATIONS  # `list_traces(run=…)` reads its tables

        self.db.migrate("runs", RUNS_MIGRATIONS)
        had_history = self.db.version("history") > 0
        self.db.migrate("history", HISTORY_MIGRATIONS)
        if not had_history:
            with self.db.tx() as conn:
                backfill_health(conn)

    def close(self) -> None:
        self.db.close()

    def _reads_in_child(self) -> bool:
        if not can_fork():
            return False
        if self.read_in_child is not None:
            return self.read_in_child
        return os.environ.get("MOLAR_INGEST_CHILD", "0") == "1"

    # ---- writes -------------------------------------------------------------------------------

    def add_trace(self, org_id: str, trace: NewTrace, blobs: dict[str, bytes]) -> tuple[str, str]:
        """Store a trace in one transaction, its events written `EVENT_BATCH` at a time as they come
        (`NewTrace.event_chunks`: a streamed bundle is parsed while it is stored, never held whole).
        Readers keep their own snapshot until the commit: they never wait, and never see half a trace."""
        limit = max_trace_events()
        if len(trace.events) > limit:
            raise TooManyEvents(len(trace.events), limit)
        # Check every blob before anything is written: a refused trace leaves no file behind.
        for sha, data in blobs.items():
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha:
                raise ValueError(f"blob named {sha} hashes to {actual}")
        streamed = trace.event_chunks is not None
        chunks: Iterator[Sequence[EventView | EventFields]] = iter(
            trace.event_chunks if trace.event_chunks is not None else _batches(trace.events, self.event_batch)
        )
        trace_id = str(uuid.uuid4())
        scenario_id = trace.scenario_id or scenario_id_for(trace.scenario_slug)
        # Scoped to the trace's org whoever calls (a replay worker works for every org): on PostgreSQL each
        # event row then takes the transaction's org as it is (unscoped, a trigger looks the trace up per row).
        with org_scope(org_id), self.db.tx() as conn, _closing(chunks):
            # The first chunk is read before the trace's row is written: its first event dates the trace.
            # Each chunk is read (a bundle's: parsed and validated), numbered and written with the cyclic
            # garbage collector paused (`models/batch.py`: its events hold no cycles; ~40% of the CPU).
            with gc_paused():
                chunk = next(chunks, None)
            first_ts = event_ts(chunk[0]) if chunk else None
            created = trace.created_at or (_dt(first_ts) if first_ts is not None else datetime.now(UTC))
            short_id = new_short_id(conn)
            cur = conn.execute(
                "INSERT INTO traces (id, short_id, org_id, scenario_id, scenario_slug, scenario_title,"
                " status,"
                " source, duration_ms, code_sha, pr_number, failure_signature, created_ms, parent_trace_id,"
                " replay_from_step, total_size_bytes, blob_count, event_count, kind_counts)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    trace_id,
                    short_id,
                    org_id,
                    scenario_id,
                    trace.scenario_slug,
                    trace.scenario_title,
                    trace.status,
                    trace.source,
                    trace.duration_ms,
                    trace.code_sha,
                    trace.pr_number,
                    trace.failure_signature,
                    _ms(created),
                    trace.parent_trace_id,
                    trace.replay_from_step,
                    sum(a.size for a in trace.artifacts),
                    len(trace.artifacts),
                    0,
                    "{}",
                ),
            )
            pk = int(cur.lastrowid or 0)
            if trace.parent_trace_id is None:
                refresh_health(conn, org_id, scenario_id)
            got = _Gathered(first_ts, FtsText(_own_text(trace)))

            def build(chunk: Sequence[EventView | EventFields]) -> FlatRows:
                """A chunk's rows; its events counted, their steps, kinds and indexed text gathered in `got`."""
                got.count += len(chunk)
                if got.count > limit:
                    raise TooManyEvents(got.count, limit, streamed=streamed)
                rows = cast(FlatRows, event_rows(chunk, got.tree, pk=pk, flat=True))
                got.kind_counts.update(rows[3::EVENT_WIDTH])  # (the kinds' column: a slice, no Python per row)
                got.text.add_flat(rows)
                if chunk:
                    got.last_ts = event_ts(chunk[-1])
                return rows

            def gathered() -> _Gathered:
                return got

            in_child = streamed and self._reads_in_child()
            while chunk is not None:
                with gc_paused():
                    rows = build(chunk)
                    # PostgreSQL inserts this chunk while the next one is read and built (both cores).
                    insert_rows(conn, _INSERT_EVENTS, rows)
                    del rows  # freed inside the pause, as the chunk is once the next one replaces it
                    chunk = next(chunks, None)
                if chunk is not None and in_child:
                    # A bundle of more than one chunk: a child process reads and builds the rest while this
                    # one stores it (both cores; store/child_reader.py). It hands back what it gathered.
                    in_child = False  # tried once: when the fork fails, this process reads on
                    reader = ChildReader(chain((chunk,), chunks), build, gathered, wait_seconds=self.child_wait_seconds)
                    try:
                        reader.start()
                    except OSError as exc:  # no process to spare (EAGAIN, ENOMEM), or no pipe: nothing was read
                        log.warning("no child process to read the bundle (%s): this process reads it", exc)
                        continue
                    with reader:
                        # The child reads on from here: this process's copy of the source is never read
                        # again. Closed now, its suspended frame (a decompressed block of lines, the
                        # decompressor) is freed at once; left open, it outlived the ingest in a cycle (the
                        # trace holds the generator, the generator the parsed bundle) until a full collection.
                        _close_source(chunks)
                        chunk = None
                        for values in reader:
                            with gc_paused():
                                insert_rows(conn, _INSERT_EVENTS, FlatRows(EVENT_WIDTH, values))
                                del values
                    got = reader.result
            trace.events_stored = got.count
            count, last_ts, kind_counts, tree, text = got.count, got.last_ts, got.kind_counts, got.tree, got.text
            duration = trace.duration_ms
            if duration is None and first_ts is not None and last_ts is not None:
                duration = max(0, last_ts - first_ts)
            conn.execute(
                "UPDATE traces SET event_count = ?, kind_counts = ?, duration_ms = ? WHERE pk = ?",
                (count, json.dumps(dict(sorted(kind_counts.items()))), duration, pk),
            )
            insert_steps(conn, pk, tree.ordered())
            conn.executemany(
                "INSERT INTO artifacts (trace_pk, position, kind, sha256, name, content_type, size)"
                " VALUES (?,?,?,?,?,?,?)",
                [(pk, i, a.kind, a.sha256, a.name, a.content_type, a.size) for i, a in enumerate(trace.artifacts)],
            )
            index_text(conn, pk, text.text())
            # Blobs last, inside the transaction: when a row fails to insert, no blob is written;
            # when a blob fails to write, the rows roll back. Blobs are content-addressed, so one
            # written by a transaction that then fails is harmless.
            for data in blobs.values():
                self.blobs.put(data, org_id)
        return trace_id, short_id

    # ---- reads --------------------------------------------------------------------------------

    def text_filter(self, q: str) -> tuple[str, str] | None:
        """The condition on `t.pk` (and its one parameter) that keeps traces whose text matches `q`."""
        match = fts_query(q)
        if not match:
            return None
        return "t.pk IN (SELECT rowid FROM traces_fts WHERE traces_fts MATCH ?)", match

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
        """The newest `want` trace rows the conditions `where` keep whose text matches `text_filter`
        (`status`: the one status `where` keeps, if it keeps one)."""
        sql = (
            f"SELECT {_prefixed(_TRACE_COLUMNS, 't')} FROM traces t WHERE {' AND '.join([*where, text_filter[0]])}"
            " ORDER BY t.created_ms DESC, t.pk DESC LIMIT ?"
        )
        return list(conn.execute(sql, [*args, text_filter[1], want]).fetchall())

    def list_traces(self, org_id: str, query: TraceQuery) -> TraceListResponse:
        where = ["t.org_id = ?"]
        args: list[Any] = [org_id]
        for column, value in (
            ("scenario_id", query.scenario_id),
            ("scenario_slug", query.scenario_slug),
            ("status", query.status),
            ("source", query.source),
            ("failure_signature", query.signature),
            ("tier", query.tier),
        ):
            if value is not None:
                where.append(f"t.{column} = ?")
                args.append(value)
        if query.code_sha is not None:
            # A short sha matches the full one it abbreviates, as git users expect.
            where.append("t.code_sha LIKE ? ESCAPE '\\'")
            args.append(_like_prefix(query.code_sha))
        if query.run_id is not None:
            where.append(
                "t.id IN (SELECT rt.trace_id FROM run_traces rt JOIN runs r ON r.pk = rt.run_pk"
                " WHERE r.org_id = ? AND (r.id = ? OR r.short_id = ?))"
            )
            args += [org_id, query.run_id, query.run_id]
        if query.created_from is not None:
            where.append("t.created_ms >= ?")
            args.append(_ms(query.created_from))
        if query.created_to is not None:
            where.append("t.created_ms < ?")
            args.append(_ms(query.created_to))
        if query.flaky is not None:
            # A flaky test's runs (its passes too: they are half of what makes it flaky).
            where.append(
                ("" if query.flaky else "NOT ")
                + "t.scenario_id IN (SELECT scenario_id FROM scenario_health WHERE org_id = ? AND flaky = 1)"
            )
            args.append(org_id)
        if query.newly_failing is not None:
            # The failing runs of tests that passed before them.
            clause = (
                "t.scenario_id IN (SELECT scenario_id FROM scenario_health WHERE org_id = ? AND newly_failing = 1)"
                f" AND t.status IN ({FAILING_STATUS_SQL}) AND t.parent_trace_id IS NULL"
            )
            where.append(f"({clause})" if query.newly_failing else f"NOT ({clause})")
            args.append(org_id)
        newest: int | None = None
        if query.cursor:
            created_ms, pk = _decode_cursor(query.cursor)
            where.append("(t.created_ms < ? OR (t.created_ms = ? AND t.pk < ?))")
            args.extend([created_ms, created_ms, pk])
            newest = created_ms
        if query.created_to is not None:
            newest = min(newest if newest is not None else _MAX_SQLITE_INT, _ms(query.created_to) - 1)
        words = fts_words(query.q) if query.q else []
        with self.db.read() as conn:
            if words and isinstance(conn, sqlite3.Connection):
                # The embedded store's search stops after `limit` hits in time order (store/search.py).
                rows = _search_sqlite(conn, where, args, words, query, newest)
            else:
                text_filter = self.text_filter(query.q) if words and query.q else None
                if text_filter is not None:
                    rows = self.text_search_rows(conn, where, args, text_filter, query.limit + 1, status=query.status)
                else:
                    sql = (
                        f"SELECT {_prefixed(_TRACE_COLUMNS, 't')} FROM traces t WHERE {' AND '.join(where)}"
                        " ORDER BY t.created_ms DESC, t.pk DESC LIMIT ?"
                    )
                    rows = conn.execute(sql, [*args, query.limit + 1]).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        items = [_list_item(row) for row in rows]
        next_cursor = _encode_cursor(rows[-1][15], rows[-1][0]) if more and rows else None
        row_cursors = [_encode_cursor(row[15], row[0]) for row in rows] if query.row_cursors else None
        return TraceListResponse(items=items, next_cursor=next_cursor, row_cursors=row_cursors)

    def get_trace(self, org_id: str, trace_ref: str) -> TraceDetail:
        with self.db.read() as conn:
            return self._detail(conn, find_trace_row(conn, org_id, trace_ref))

    def get_trace_with_failures(
        self, org_id: str, trace_ref: str, limit: int
    ) -> tuple[TraceDetail, EventsResponse | None]:
        """`get_trace`, and in the same read (one snapshot, one transaction) what `list_events(ok=False,
        limit=limit)` answers; None in its place when the trace's events are archived (tier "cold")."""
        with self.db.read() as conn:
            row = find_trace_row(conn, org_id, trace_ref)
            detail = self._detail(conn, row)
            if row[9] == "cold":
                return detail, None
            return detail, self._events_page(conn, row, ok=False, limit=limit)

    def _detail(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> TraceDetail:
        pk = row[0]
        steps = conn.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE trace_pk = ? ORDER BY ord", (pk,)).fetchall()
        artifacts = conn.execute(
            "SELECT kind, sha256, name, content_type, size FROM artifacts WHERE trace_pk = ? ORDER BY position",
            (pk,),
        ).fetchall()
        history = read_history(conn, row[3], row[4])
        item = _list_item(row)
        created = item.created_at
        # From the stored row and models built from it (the steps' validators already ran: `step_summary`),
        # not validated again; no signed URLs, and no spans waiting, until the API adds them.
        return trusted(
            TraceDetail,
            {
                **item.__dict__,
                "org_id": row[3],
                "s3_prefix": f"traces/runs/{row[3]}/{created:%Y/%m/%d}/{row[1]}/",
                "signed_urls": {},
                "parent_trace_id": row[16],
                "replay_from_step": row[17],
                "total_size_bytes": row[18],
                "blob_count": row[19],
                "event_count": row[20],
                "pr_number": row[13],
                "artifacts": [
                    ArtifactRef(kind=a[0], sha256=a[1], name=a[2], content_type=a[3], size=a[4]) for a in artifacts
                ],
                "steps": [step_summary(s) for s in steps],
                "event_counts": json.loads(row[21]),
                "history": history,
                "spans_waiting": None,
            },
            defaults=("signed_urls", "spans_waiting"),
        )

    def list_events(
        self,
        org_id: str,
        trace_ref: str,
        *,
        step: str | None = None,
        kind: str | None = None,
        ok: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> EventsResponse:
        with self.db.read() as conn:
            row = find_trace_row(conn, org_id, trace_ref)
            return self._events_page(conn, row, step=step, kind=kind, ok=ok, limit=limit, offset=offset)

    def _events_page(
        self,
        conn: sqlite3.Connection,
        row: tuple[Any, ...],
        *,
        step: str | None = None,
        kind: str | None = None,
        ok: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> EventsResponse:
        pk = row[0]
        where = ["trace_pk = ?"]
        args: list[Any] = [pk]
        if step is not None:
            where_step, step_args = step_filter(conn, pk, step)
            where.append(where_step)
            args.extend(step_args)
        hint = ""
        total: int | None = None
        if kind is not None:
            # `network` matches `network.request` and `network.response`: kinds are dotted families.
            # The trace's kinds are on its row (`kind_counts`, kept in the transaction that adds
            # events): the family becomes `kind IN (…)`, an index range on either engine.
            counts: dict[str, int] = json.loads(row[21])
            kinds = kinds_of_family(counts, kind)
            where.append(f"kind IN ({', '.join('?' * len(kinds))})" if kinds else "1 = 0")
            args.extend(kinds)
            if kinds and UNINDEXED_KIND not in kinds:
                # The kind index leaves assertions out (schema.py, migration 5): SQLite uses it only for
                # a query that states its condition, and then only when told to (without statistics it
                # reads the whole trace by its primary key to keep `ORDER BY seq` free: 40 ms at 100,000
                # events, 0.1 ms by the index).
                where.append(f"kind <> '{UNINDEXED_KIND}'")
                hint = " INDEXED BY events_kind" if step is None and ok is None else ""
            elif step is None and ok is None and row[9] != "cold":
                # Counted on the trace's row, not by reading every one of its assertions.
                total = sum(counts[k] for k in kinds)
        if ok is not None:
            # A literal, not a bound value: only then can SQLite use the partial index on failures.
            where.append("ok = 1" if ok else "ok = 0")
        clause = " AND ".join(where)
        # Without statistics SQLite reads a trace's failures by its primary key, every event and
        # payload of the trace (14 ms at 10,000 events): name the partial index that holds only the
        # failures (0.1 ms). PostgreSQL plans by its own statistics (the dialect drops the hint).
        if ok is False:
            hint = " INDEXED BY events_failed"
        if total is None:
            (total,) = conn.execute(f"SELECT count(*) FROM events{hint} WHERE {clause}", args).fetchone()
        rows = conn.execute(
            f"SELECT {EVENT_SELECT} FROM events{hint} WHERE {clause} ORDER BY seq LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        events = [event_from_row(r) for r in rows]
        return EventsResponse.model_construct(events=events, total=total, offset=offset, limit=limit)

    def stored_events(self, org_id: str, trace_ref: str, *, limit: int | None = None) -> StoredEvents:
        """The trace's events in seq order (its first `limit` when given), each a `StoredEvent` (columns as
        attributes, the payload parsed when read) built when first read: for code that reads a whole
        trace, as the detectors and diffs do. Raises `TraceNotFound`."""
        with self.db.read() as conn:
            pk = find_trace_row(conn, org_id, trace_ref)[0]
            sql, args = f"SELECT {EVENT_SELECT} FROM events WHERE trace_pk = ? ORDER BY seq", [pk]
            if limit is not None:
                sql, args = sql + " LIMIT ?", [pk, limit]
            rows = conn.execute(sql, args).fetchall()
        return StoredEvents(rows)

    def get_event(self, org_id: str, trace_ref: str, seq: int) -> Event | None:
        if not 0 <= seq <= _MAX_SQLITE_INT:
            return None
        with self.db.read() as conn:
            pk = find_trace_row(conn, org_id, trace_ref)[0]
            row = conn.execute(
                f"SELECT {EVENT_SELECT} FROM events WHERE trace_pk = ? AND seq = ?", (pk, seq)
            ).fetchone()
        return event_from_row(row) if row is not None else None


def _search_sqlite(
    conn: sqlite3.Connection,
    where: list[str],
    args: list[Any],
    words: list[str],
    query: TraceQuery,
    newest: int | None,
) -> list[tuple[Any, ...]]:
    match = streaming_match(conn, words)
    if match is None:
        return []
    found = search(
        conn,
        f"t.pk, t.created_ms, {_prefixed(_TRACE_COLUMNS, 't')}",
        where,
        args,
        match,
        query.limit + 1,
        facets={
            column: value
            for column, value in (
                ("status", query.status),
                ("source", query.source),
                ("scenario_slug", query.scenario_slug),
                ("scenario_id", query.scenario_id),
                ("failure_signature", query.signature),
            )
            if value is not None
        },
        newest_ms=newest,
        oldest_ms=_ms(query.created_from) if query.created_from is not None else None,
    )
    return [r[2:] for r in found]


def insert_steps(conn: Any, pk: int | None, nodes: Sequence[StepNode]) -> None:
    """Write (or rewrite) step rows of a trace."""
    conn.executemany(
        f"INSERT OR REPLACE INTO steps (trace_pk, {STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(pk, *n.row()) for n in nodes],
    )


def load_step_tree(conn: Any, pk: int) -> StepTree:
    """A stored trace's step tree, to continue it with appended events."""
    return StepTree(conn.execute(f"SELECT {STEP_COLUMNS} FROM steps WHERE trace_pk = ?", (pk,)).fetchall())


def load_steps_for(conn: Any, pk: int, events: Sequence[EventView]) -> StepTree:
    """The part of a stored trace's step tree that appending `events` reads or changes: the steps they
    name (their own, and the parent a `step.start` names) with every ancestor — and, when they begin new
    steps, the trace's highest step number, its next `ord` and how many children the named parents
    have. A trace of thousands of steps appended to in batches of 100 is not read whole per batch
    (`load_step_tree` reads it all); a batch within known steps costs one query."""
    named: set[str] = set()
    parents: dict[str, str] = {}  # a step.start's step → the parent it names
    for ev in events:
        if ev.step_id is not None:
            named.add(ev.step_id)
            if ev.kind == "step.start":
                parent = ev.payload.get("parent_step_id")
                if isinstance(parent, str):
                    named.add(parent)
                    parents.setdefault(ev.step_id, parent)
    # The named steps and their ancestors, in one query a chunk (a recursive walk up `parent_step_id`).
    walk_up = (
        "WITH RECURSIVE up(step_id) AS ("
        " SELECT step_id FROM steps WHERE trace_pk = ? AND step_id IN ({marks})"
        " UNION SELECT s.parent_step_id FROM steps s JOIN up ON s.step_id = up.step_id"
        " WHERE s.trace_pk = ? AND s.parent_step_id IS NOT NULL)"
        f" SELECT {STEP_COLUMNS} FROM steps WHERE trace_pk = ? AND step_id IN (SELECT step_id FROM up)"
    )
    found = {str(r[0]): tuple(r) for r in rows_in(conn, walk_up, sorted(named), before=(pk,), after=(pk, pk))}
    new = [step_id for step_id in named if step_id not in found]
    if not new:
        return StepTree(found.values(), top=0, count=0)  # nothing begins: numbers and ords are not needed
    last_ord, top = conn.execute("SELECT max(ord), max(step) FROM steps WHERE trace_pk = ?", (pk,)).fetchone()
    adopting = sorted({parent for step_id, parent in parents.items() if step_id not in found and parent in found})
    children = dict.fromkeys(adopting, 0)
    sql = "SELECT parent_step_id, count(*) FROM steps WHERE trace_pk = ? AND parent_step_id IN ({marks})"
    sql += " GROUP BY parent_step_id"
    children.update((str(p), int(n)) for p, n in rows_in(conn, sql, adopting, before=(pk,)))
    return StepTree(
        found.values(), top=int(top or 0), count=0 if last_ord is None else int(last_ord) + 1, children=children
    )


def step_summary(r: Sequence[Any]) -> StepSummary:
    """A `StepSummary` from a row of `STEP_COLUMNS`, built from values validated when they were written
    (`trusted`; its validator's one rule, a top-level step's path is its number, applied here): a trace of
    50 steps spent most of its read validating them again."""
    start, end = r[12], r[13]
    return trusted(
        StepSummary,
        {
            "step": r[2],
            "step_id": r[0],
            "title": r[7],
            "ok": None if r[8] is None else bool(r[8]),
            "first_seq": r[9],
            "last_seq": r[10],
            "event_count": r[11],
            "path": r[3] or str(r[2]),
            "parent_step_id": r[4],
            "depth": r[5],
            "category": r[6],
            "duration_ms": None if start is None or end is None else max(0, end - start),
        },
    )


def step_filter(conn: Any, pk: int, step: str) -> tuple[str, list[Any]]:
    """The events condition for `?step=`: a top-level number ("7"), a path ("7.2") or a step id.

    A top-level step selects its whole subtree by the indexed top-level number; a nested step selects
    the events of its subtree by step id. Unknown steps select nothing."""
    number = int(step) if step.isascii() and step.isdigit() else None
    # ASCII only: "²".isdigit() is true yet int() refuses it; a number past SQLite's integer range
    # can only name a step id.
    if number is not None and number <= _MAX_SQLITE_INT:
        found = conn.execute(
            "SELECT path, depth, step FROM steps WHERE trace_pk = ? AND ((depth = 0 AND step = ?) OR step_id = ?)",
            (pk, number, step),
        ).fetchall()
    else:
        found = conn.execute(
            "SELECT path, depth, step FROM steps WHERE trace_pk = ? AND (path = ? OR step_id = ?)", (pk, step, step)
        ).fetchall()
    tops = sorted({r[2] for r in found if r[1] == 0})
    nested = [r for r in found if r[1] > 0 and r[2] not in tops]
    clauses: list[str] = []
    args: list[Any] = []
    if tops:
        clauses.append(f"step IN ({', '.join('?' * len(tops))})")
        args.extend(tops)
    for path, _, top in nested:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT step_id FROM steps WHERE trace_pk = ? AND step = ? AND (path = ? OR path LIKE ? ESCAPE '\\')",
                (pk, top, path, _like_prefix(path + ".")),
            ).fetchall()
        ]
        clauses.append(f"(step = ? AND step_id IN ({', '.join('?' * len(ids))}))")
        args.extend([top, *ids])
    if not clauses:
        return "1 = 0", []
    return "(" + " OR ".join(clauses) + ")", args


def _close_source(chunks: Iterator[Any]) -> None:
    """Close a chunk source this process will not read on (a generator's `close`; other iterators hold
    nothing to free)."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


@contextmanager
def _closing(chunks: Iterator[Any]) -> Iterator[None]:
    """`_close_source(chunks)` however the block ends: a bundle's chunk generator left suspended by an error
    (the event cap, a refused insert) would keep its block of lines, in a cycle through the parsed bundle,
    until the next full collection (spent, it holds nothing: closing it does nothing)."""
    try:
        yield
    finally:
        _close_source(chunks)


_INSERT_EVENTS = (
    "INSERT INTO events (trace_pk, seq, ts, kind, step_id, step, ok, message, payload) VALUES (?,?,?,?,?,?,?,?,?)"
)


class _Gathered:
    """What a trace's events tell as they are stored: how many, the last one's time, the step tree, the
    count of each kind and the indexed text (made where the chunks are read: this process or its child)."""

    def __init__(self, first_ts: int | None, text: FtsText) -> None:
        self.count = 0
        self.last_ts = first_ts
        self.tree = StepTree()
        self.kind_counts: Counter[str] = Counter()
        self.text = text


class FtsText:
    """The indexed text of a trace, gathered as its events go by: its own fields, then the messages of
    failures and key events, each distinct message once (a check repeated 2,000 times is one line: the
    same words to find, a 30th of the text to index), up to `_FTS_MAX_CHARS` (the first new message past
    it ends the text)."""

    def __init__(self, parts: Sequence[str]) -> None:
        self.parts = list(parts)
        self.size = sum(len(p) for p in self.parts)
        self.full = False
        self.seen: set[str] = set()

    def add(self, rows: Iterable[tuple[str, int | None, str | None]]) -> None:
        """Fold in events given as `(kind, ok, message)`, in order."""
        if self.full:
            return
        self._add_messages(message for kind, ok, message in rows if kind in _FTS_EVENT_KINDS or ok == 0)

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """`add` of `events` rows as `event_rows` builds them with a trace's pk: which of them count, and
        each message once, are found without a Python step per row (a bundle's chunk: most are checks
        whose few messages repeat)."""
        if self.full:
            return
        counted = map(or_, map(_FTS_EVENT_KINDS.__contains__, map(_KIND, rows)), map(eq, map(_OK, rows), repeat(0)))
        self._add_messages(dict.fromkeys(compress(map(_MESSAGE, rows), counted)))

    def add_flat(self, rows: FlatRows) -> None:
        """`add_rows` of rows laid end to end (`FlatRows`): the kind, ok and message columns are slices."""
        if self.full:
            return
        width = rows.width
        counted = map(or_, map(_FTS_EVENT_KINDS.__contains__, rows[3::width]), map(eq, rows[6::width], repeat(0)))
        self._add_messages(dict.fromkeys(compress(rows[7::width], counted)))

    def _add_messages(self, messages: Iterable[str | None]) -> None:
        seen = self.seen
        for message in messages:
            if message and message not in seen:
                if self.size + len(message) > _FTS_MAX_CHARS:
                    self.full = True
                    return
                seen.add(message)
                self.parts.append(message)
                self.size += len(message)

    def text(self) -> str:
        return "\n".join(self.parts)


def fts_body_from_rows(parts: list[str], rows: Sequence[tuple[str, int | None, str | None]]) -> str:
    """The indexed text of a trace: its own fields, then the messages of failures and key events."""
    text = FtsText(parts)
    text.add(rows)
    return text.text()


def _own_text(trace: NewTrace) -> list[str]:
    own = [trace.scenario_slug, trace.scenario_title or "", trace.failure_signature or "", trace.status]
    return [*own, trace.code_sha or ""]


def kinds_of_family(kinds: Iterable[str], family: str) -> list[str]:
    """The kinds among `kinds` that `family` selects: itself, and every kind below it (`network` →
    `network.request`, `network.response`); below it ignores ASCII case, as SQL's LIKE does."""
    below = family.translate(_ASCII_LOWER) + "."
    return sorted(k for k in kinds if k == family or k.translate(_ASCII_LOWER).startswith(below))


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _prefixed(columns: str, alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _looks_like_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def _list_item(row: Sequence[Any]) -> TraceListItem:
    """A row of `_TRACE_COLUMNS` as a list item, built from values validated when they were written
    (`trusted`: a fifth of what validating them again costs; a page of 50 is most of a list's time)."""
    return trusted(
        TraceListItem,
        {
            "id": row[1],
            "short_id": row[2],
            "scenario_id": row[4],
            "scenario_slug": row[5],
            "scenario_title": row[6],
            "status": row[7],
            "source": row[8],
            "tier": row[9],
            "pinned": bool(row[10]),
            "duration_ms": row[11],
            "code_sha": row[12],
            "failure_signature": row[14],
            "created_at": _dt(row[15]),
            "replay_of": row[16] if row[17] is not None else None,
        },
    )


def _encode_cursor(created_ms: int, pk: int) -> str:
    """`[created_ms,pk]` as compact JSON (written directly: what json.dumps writes for two integers, at a
    fraction of its cost; a page asked with `row_cursors` has one a row), urlsafe base64 without its padding."""
    return base64.urlsafe_b64encode(f"[{int(created_ms)},{int(pk)}]".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_ms, pk = json.loads(raw)
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and -_MAX_SQLITE_INT <= v <= _MAX_SQLITE_INT
            for v in (created_ms, pk)
        ):
            raise ValueError("cursor fields are not integers SQLite can hold")
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("cursor is not one this server issued; start again without it") from exc
    return created_ms, pk
