"""Live ingest in the embedded store: create a running trace, append events, finish it, under `/v1`:
partial accept, strictly increasing seq, idempotency keys, 409 on conflict."""

from __future__ import annotations

import json
import operator
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

from molar_mcp.models import Event
from molar_mcp.models.incoming import EventIn
from molar_mcp.store.db import NUL, CleanRows, Database, rows_in, store_text
from molar_mcp.store.history import refresh_health
from molar_mcp.store.port import StoreError, TooManyEvents, max_trace_events
from molar_mcp.store.search import index_text
from molar_mcp.store.sqlite import (
    EVENT_SELECT,
    derived_ok,
    event_from_row,
    event_rows,
    find_trace_pk,
    find_trace_row,
    fts_body_from_rows,
    insert_steps,
    load_steps_for,
    new_short_id,
    scenario_id_for,
)
from molar_mcp.store.steps import StepTree

LIVE_MIGRATIONS: tuple[str, ...] = (
    """
    ALTER TABLE events ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX events_idempotency ON events(trace_pk, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    """,
    # 2: when a live trace last heard from its producer (created, or a batch appended): the reaper marks a
    # trace `interrupted` once it has been quiet past the configured period (a crashed producer).
    """
    ALTER TABLE traces ADD COLUMN live_touched_ms INTEGER;
    CREATE INDEX traces_live_quiet ON traces(live_touched_ms) WHERE live_touched_ms IS NOT NULL;
    """,
)

# An append's events; a batch without idempotency keys leaves the key column out (NULL), its rows as
# `event_rows` builds them (not rebuilt a tuple an event to add a key of None).
_INSERT = "INSERT INTO events (trace_pk, seq, ts, kind, step_id, step, ok, message, payload) VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_KEYED = (
    "INSERT INTO events (trace_pk, seq, ts, kind, step_id, step, ok, message, payload, idempotency_key)"
    " VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_KIND = operator.attrgetter("kind")

RUNNING_STATUSES = ("queued", "running")
FINAL_STATUSES = ("passed", "failed", "error", "aborted")
INTERRUPTED = "interrupted"  # set by the reaper, never by a producer


class TraceNotRunning(StoreError):
    def __init__(self, trace_ref: str, status: str) -> None:
        super().__init__(f"trace {trace_ref} is {status}: finished traces take no more events")
        self.status = status


class EventConflict(StoreError):
    """An event reuses a seq or an idempotency key with a different body (409)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


@dataclass(slots=True)
class IncomingEvent:
    """A validated event of an append request, with its position in the request (slots, not frozen:
    a batch of 1,000 makes 1,000 of them, and a frozen dataclass is several times slower to build). The
    event is an `Event`, or the `EventIn` the usual append's body was decoded into (`api/live.py`): the
    store reads the same attributes of both, and followers are sent `Event`s (`AppendResult.stored`)."""

    index: int
    event: Event | EventIn
    idempotency_key: str | None = None


class UnkeyedEvents(Sequence[IncomingEvent]):
    """A batch's events without idempotency keys, each at its index in the request: the usual append
    (`api/live.py`), given to `LiveTraces.append_events` without an `IncomingEvent` built for each (the
    store reads the events themselves; the items are made only where a batch is sorted out event by event)."""

    __slots__ = ("events",)

    def __init__(self, events: Sequence[Event | EventIn]) -> None:
        self.events = events

    def __len__(self) -> int:
        return len(self.events)

    @overload
    def __getitem__(self, index: int) -> IncomingEvent: ...
    @overload
    def __getitem__(self, index: slice) -> list[IncomingEvent]: ...
    def __getitem__(self, index: int | slice) -> IncomingEvent | list[IncomingEvent]:
        return list(self)[index] if isinstance(index, slice) else IncomingEvent(index % len(self), self.events[index])

    def __iter__(self) -> Iterator[IncomingEvent]:
        return (IncomingEvent(index, event) for index, event in enumerate(self.events))


class StoredBatch(Sequence[Event]):
    """The events a batch stored, as `Event`s built the first time they are read (a follower is sent
    them): a batch decoded into `EventIn`s that nobody follows builds no model (a third of its CPU). An
    `EventIn` takes its step number and derived `ok` from its stored row (`rows`), where they were set:
    they are not written back into it (a Python loop over every event, for followers that may not be)."""

    __slots__ = ("_events", "_given", "_rows")

    def __init__(self, given: Sequence[Event | EventIn] = (), rows: Sequence[Sequence[Any]] | None = None) -> None:
        self._given = given
        self._rows = rows
        self._events: list[Event] | None = None

    def _built(self) -> list[Event]:
        if self._events is None:
            rows = self._rows
            if rows is None:
                self._events = [ev if isinstance(ev, Event) else ev.to_event() for ev in self._given]
            else:  # the `events` table's columns: step and ok are the 6th and 7th
                self._events = [
                    ev if isinstance(ev, Event) else ev.numbered(row[5], None if row[6] is None else bool(row[6]))
                    for ev, row in zip(self._given, rows, strict=True)
                ]
        return self._events

    def __len__(self) -> int:
        return len(self._given)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        return self._built()[index]

    def __iter__(self) -> Iterator[Event]:
        return iter(self._built())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, StoredBatch) else other)

    __hash__ = None  # type: ignore[assignment]


@dataclass
class Rejected:
    index: int
    idempotency_key: str | None
    reason: str


@dataclass
class AppendResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    last_seq: int | None = None
    stored: StoredBatch = field(default_factory=StoredBatch)
    trace_id: str = ""  # the trace's UUID, whichever reference the caller gave


@dataclass(slots=True)
class _Pending:
    """An append waiting for the writer (`LiveTraces.append_events`), then its outcome."""

    org_id: str
    trace_ref: str
    incoming: Sequence[IncomingEvent]
    result: AppendResult | None = None
    error: BaseException | None = None
    done: bool = False


def _body(ev: Event | EventIn) -> tuple[Any, ...]:
    """What makes two events with one seq the same, text and `ok` as the store keeps them (a retried event
    whose text had a NUL is the stored one: `store.db.store_text`)."""
    step_id, message = ev.step_id, ev.message
    return (
        ev.ts,
        store_text(ev.kind),
        None if step_id is None else store_text(step_id),
        derived_ok(ev),  # stored as derived: a retried HTTP response without `ok` is the same event
        None if message is None else store_text(message),
        json.dumps(ev.payload, sort_keys=True),
    )


def _row_body(row: Sequence[Any]) -> tuple[Any, ...]:
    ts, kind, step_id, ok, message, payload = row
    return (
        ts,
        kind,
        step_id,
        None if ok is None else bool(ok),
        message,
        json.dumps(json.loads(payload), sort_keys=True),
    )


class LiveTraces:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("live", LIVE_MIGRATIONS)
        # Group commit (`append_events`), where the store has one writer (SQLite): appends that wait for
        # it are stored together. PostgreSQL's appends run on connections of their own, side by side.
        self._grouped = type(db) is Database
        self._waiting: list[_Pending] = []
        self._waiting_lock = threading.Lock()
        self._writer = threading.Lock()

    def create_trace(
        self,
        org_id: str,
        *,
        scenario_slug: str,
        scenario_title: str | None = None,
        source: str | None = None,
        code_sha: str | None = None,
        pr_number: int | None = None,
        now: datetime | None = None,
    ) -> tuple[str, str]:
        created = now or datetime.now(UTC)
        trace_id = str(uuid.uuid4())
        with self.db.tx() as conn:
            short_id = new_short_id(conn)
            cur = conn.execute(
                "INSERT INTO traces (id, short_id, org_id, scenario_id, scenario_slug, scenario_title, status,"
                " source, code_sha, pr_number, created_ms, live_touched_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    trace_id,
                    short_id,
                    org_id,
                    scenario_id_for(scenario_slug),
                    scenario_slug,
                    scenario_title or scenario_slug.replace("-", " ").capitalize(),
                    "running",
                    source,
                    code_sha,
                    pr_number,
                    int(created.timestamp() * 1000),
                    _now_ms(),
                ),
            )
            index_text(conn, int(cur.lastrowid or 0), scenario_slug)
        return trace_id, short_id

    def append_events(self, org_id: str, trace_ref: str, incoming: Sequence[IncomingEvent]) -> AppendResult:
        """Store the acceptable events of a batch (see `_append`), with group commit on SQLite: the appends
        of one org that came while another was being stored are stored together, in one transaction, by
        the thread that takes the writer next; each caller returns once its own events are committed.
        When one batch of a group fails (a conflict, a finished trace, …), the group is rolled back and
        each batch is stored alone, in its own transaction: a batch's error is its own, and nothing of
        a failed batch is stored. Same results as one transaction per batch in arrival order."""
        if not self._grouped:
            with self.db.tx() as conn:
                return self._append(conn, org_id, trace_ref, incoming)
        mine = _Pending(org_id, trace_ref, incoming)
        with self._waiting_lock:
            self._waiting.append(mine)
        with self._writer:
            if not mine.done:  # no other thread stored it meanwhile: store every waiting append of the org
                with self._waiting_lock:
                    group = [p for p in self._waiting if p.org_id == org_id]  # one org: one scope a transaction
                    self._waiting = [p for p in self._waiting if p.org_id != org_id]
                self._store_group(group)
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _store_group(self, group: list[_Pending]) -> None:
        try:
            if len(group) > 1:
                results: list[AppendResult] | None = None
                try:
                    with self.db.tx() as conn:
                        results = [self._append(conn, p.org_id, p.trace_ref, p.incoming) for p in group]
                except Exception:  # rolled back: each batch alone below, its error its own
                    results = None
                if results is not None:
                    for pending, result in zip(group, results, strict=True):
                        pending.result, pending.done = result, True
                    return
            for pending in group:
                try:
                    with self.db.tx() as conn:
                        pending.result = self._append(conn, pending.org_id, pending.trace_ref, pending.incoming)
                except Exception as exc:
                    pending.error = exc
                pending.done = True
        finally:
            for pending in group:  # stopped by a BaseException: its waiters hear it, none waits forever
                if not pending.done:
                    pending.error = pending.error or RuntimeError("the append was interrupted before it was stored")
                    pending.done = True

    def _append(self, conn: Any, org_id: str, trace_ref: str, incoming: Sequence[IncomingEvent]) -> AppendResult:
        """Store the acceptable events of a batch in the transaction of `conn`.

        - a retried event (same idempotency key, or same seq, with the same body) is a no-op duplicate;
        - the same key or seq with a different body raises `EventConflict` and stores nothing;
        - a seq not above the last stored one is rejected (reported, not stored); the rest are stored.

        Work per batch, not per event: one read of the trace, one of the retried keys and one of the
        retried seqs (when the batch has any), one insert of the events, one of the steps they touched
        and one update of the trace. The stored events are the given ones (they are the request's own), their
        text as stored; `result.stored` gives them with their step number and derived `ok`."""
        result = AppendResult()
        row = find_trace_row(conn, org_id, trace_ref, "(SELECT max(seq) FROM events WHERE trace_pk = traces.pk)")
        pk, status, result.trace_id = int(row[0]), str(row[7]), str(row[1])
        if status not in RUNNING_STATUSES:
            raise TraceNotRunning(trace_ref, status)
        stored_count, kind_counts, last = int(row[20]), str(row[21]), row[22]
        last_seq: int = -1 if last is None else int(last)
        given = incoming.events if isinstance(incoming, UnkeyedEvents) else None
        if given is not None:
            keys: list[str] = []
            seqs = [ev.seq for ev in given]
        else:
            keys = [i.idempotency_key for i in incoming if i.idempotency_key is not None]
            seqs = [i.event.seq for i in incoming]
        events: Sequence[Event | EventIn]
        accepted_keys: list[str | None] | None = None
        if not keys and seqs and seqs[0] > last_seq and all(map(operator.lt, seqs, seqs[1:])):
            # The usual batch: no keys, every seq above the last stored and above the one before it. Each
            # event would be accepted in turn by `_sort_out`, which looks nothing up for such a batch.
            events, last_seq = (given if given is not None else [i.event for i in incoming]), seqs[-1]
        else:
            accepted, last_seq = _sort_out(conn, pk, incoming, keys, last_seq, result)
            events = [a.event for a in accepted]
            if keys:
                accepted_keys = [a.idempotency_key for a in accepted]
        # The producer is alive (a retry of stored events too): the reaper leaves the trace alone.
        touched = _now_ms()
        if events:
            if stored_count + len(events) > (limit := max_trace_events()):
                raise TooManyEvents(stored_count + len(events), limit)
            _as_stored(events)
            tree = load_steps_for(conn, pk, events)
            rows = _number_rows(events, accepted_keys, tree, pk)
            conn.executemany(_INSERT if accepted_keys is None else _INSERT_KEYED, rows)
            insert_steps(conn, pk, tree.take_touched())
            counts: Counter[str] = Counter(json.loads(kind_counts))
            counts.update(map(_KIND, events))  # counted in C: a Python loop of 1,000 was ~3% of a batch's CPU
            conn.execute(
                "UPDATE traces SET kind_counts = ?, event_count = ?, live_touched_ms = ? WHERE pk = ?",
                (json.dumps(dict(sorted(counts.items()))), stored_count + len(events), touched, pk),
            )
            result.stored = StoredBatch(events, rows)
        else:
            conn.execute("UPDATE traces SET live_touched_ms = ? WHERE pk = ?", (touched, pk))
        result.accepted = len(events)
        result.last_seq = last_seq if last_seq >= 0 else None
        return result

    def finish_trace(
        self,
        org_id: str,
        trace_ref: str,
        *,
        status: str,
        failure_signature: str | None = None,
        duration_ms: int | None = None,
        now: datetime | None = None,
        messages: Sequence[tuple[str, int | None, str | None]] | None = None,
    ) -> None:
        """Close a running trace: fix its status, duration and failure signature, index its text.
        `messages`: the `(kind, ok, message)` of its events that have a message, in order, as stored, when
        the caller has just written them (else they are read again to make the search text)."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}")
        with self.db.tx() as conn:
            pk, current = find_trace_pk(conn, org_id, trace_ref)
            if current not in RUNNING_STATUSES:
                raise TraceNotRunning(trace_ref, current)
            _close(conn, org_id, pk, status, failure_signature, duration_ms, now, messages)

    def quiet_traces(self, quiet_seconds: float, now_ms: int | None = None) -> list[tuple[str, str]]:
        """(org, trace id) of every live trace still running that no producer touched for `quiet_seconds`
        (every org: the reaper's work spans orgs)."""
        cutoff = (now_ms if now_ms is not None else _now_ms()) - int(quiet_seconds * 1000)
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT org_id, id FROM traces WHERE live_touched_ms IS NOT NULL AND live_touched_ms < ?"
                " AND status IN ('queued', 'running') ORDER BY live_touched_ms LIMIT 500",
                (cutoff,),
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def interrupt(
        self, org_id: str, trace_id: str, quiet_seconds: float, failure_signature: str | None, now_ms: int | None = None
    ) -> bool:
        """Mark a quiet live trace `interrupted` (what it holds is kept, indexed and searchable). False when
        it is no longer quiet or no longer running (an append or a finish came first)."""
        cutoff = (now_ms if now_ms is not None else _now_ms()) - int(quiet_seconds * 1000)
        with self.db.tx() as conn:
            try:
                pk, status = find_trace_pk(conn, org_id, trace_id)  # locks the row (another replica's reaper)
            except StoreError:
                return False
            (touched,) = conn.execute("SELECT live_touched_ms FROM traces WHERE pk = ?", (pk,)).fetchone()
            if status not in RUNNING_STATUSES or touched is None or int(touched) >= cutoff:
                return False
            _close(conn, org_id, pk, INTERRUPTED, failure_signature, None, None)
            return True

    def events_after(self, org_id: str, trace_ref: str, after_seq: int, limit: int = 500) -> tuple[list[Event], str]:
        """Events with seq > `after_seq` (for SSE backfill), and the trace's status."""
        with self.db.read() as conn:
            pk, status = find_trace_pk(conn, org_id, trace_ref)
            rows = conn.execute(
                f"SELECT {EVENT_SELECT} FROM events WHERE trace_pk = ? AND seq > ? ORDER BY seq LIMIT ?",
                (pk, after_seq, limit),
            ).fetchall()
        return [event_from_row(r) for r in rows], status


def _sort_out(
    conn: Any, pk: int, incoming: Sequence[IncomingEvent], keys: list[str], last_seq: int, result: AppendResult
) -> tuple[list[IncomingEvent], int]:
    """The events of a batch to store, and the seq they end at: a retried event (same key, or same seq with
    the same body) is counted a duplicate in `result`, a seq not above the last is rejected there, a key or
    seq reused with another body raises `EventConflict` (see `LiveTraces._append`)."""
    by_key = _stored_by(conn, pk, "idempotency_key", keys)
    by_seq = _stored_by(conn, pk, "seq", [i.event.seq for i in incoming if i.event.seq <= last_seq])
    accepted: list[IncomingEvent] = []
    seen_keys: dict[str, IncomingEvent] = {}
    for item in incoming:
        ev, key = item.event, item.idempotency_key
        if key is not None:
            prior = seen_keys.get(key)
            if prior is not None:
                if _body(prior.event) != _body(ev) or prior.event.seq != ev.seq:
                    raise EventConflict(item.index, f"idempotency key {key!r} is used twice in the batch")
                result.duplicates += 1
                continue
            keyed = by_key.get(key)
            if keyed is not None:
                if keyed[0] != ev.seq or _row_body(keyed[1:]) != _body(ev):
                    raise EventConflict(
                        item.index,
                        f"idempotency key {key!r} was used for a different event (seq {keyed[0]})",
                    )
                result.duplicates += 1
                continue
        if ev.seq <= last_seq:
            same_seq = by_seq.get(ev.seq)
            if same_seq is not None and _row_body(same_seq) == _body(ev):
                result.duplicates += 1
            elif same_seq is not None:
                raise EventConflict(item.index, f"seq {ev.seq} is already stored with a different body")
            else:
                result.rejected.append(
                    Rejected(item.index, key, f"seq must be monotonic for this trace (last is {last_seq})")
                )
            continue
        last_seq = ev.seq
        if key is not None:
            seen_keys[key] = item
        accepted.append(item)
    return accepted, last_seq


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _close(
    conn: Any,
    org_id: str,
    pk: int,
    status: str,
    failure_signature: str | None,
    duration_ms: int | None,
    now: datetime | None,
    messages: Sequence[tuple[str, int | None, str | None]] | None = None,
) -> None:
    """Fix a running trace's status, duration and failure signature, index its text, refresh its history.
    `messages`: see `LiveTraces.finish_trace` (None: read here)."""
    created_ms, slug, title, code_sha = conn.execute(
        "SELECT created_ms, scenario_slug, scenario_title, code_sha FROM traces WHERE pk = ?", (pk,)
    ).fetchone()
    if duration_ms is None:
        first_ts, last_ts = conn.execute("SELECT min(ts), max(ts) FROM events WHERE trace_pk = ?", (pk,)).fetchone()
        end_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
        duration_ms = (last_ts - first_ts) if first_ts is not None else max(0, end_ms - created_ms)
    conn.execute(
        "UPDATE traces SET status = ?, failure_signature = ?, duration_ms = ? WHERE pk = ?",
        (status, failure_signature, duration_ms, pk),
    )
    if messages is None:
        messages = conn.execute(
            "SELECT kind, ok, message FROM events WHERE trace_pk = ? AND message IS NOT NULL ORDER BY seq",
            (pk,),
        ).fetchall()
    body = fts_body_from_rows([slug, title or "", failure_signature or "", status, code_sha or ""], messages)
    index_text(conn, pk, body, replace=True)
    (scenario_id, parent) = conn.execute(
        "SELECT scenario_id, parent_trace_id FROM traces WHERE pk = ?", (pk,)
    ).fetchone()
    if parent is None:
        refresh_health(conn, org_id, scenario_id)


def _stored_by(conn: Any, pk: int, column: str, values: Sequence[Any]) -> dict[Any, tuple[Any, ...]]:
    """The stored events whose `column` (idempotency_key or seq) is one of `values`: value → the rest of
    (seq, ts, kind, step_id, ok, message, payload)."""
    rest = "ts, kind, step_id, ok, message, payload"
    if column != "seq":
        rest = "seq, " + rest
    sql = f"SELECT {column}, {rest} FROM events WHERE trace_pk = ? AND {column} IN ({{marks}})"
    return {r[0]: tuple(r[1:]) for r in rows_in(conn, sql, list(dict.fromkeys(values)), before=(pk,))}


def _as_stored(events: Sequence[Event | EventIn]) -> None:
    """The events' text as the store keeps it (`store_text`: each NUL a U+FFFD), in place: their steps
    are looked up and numbered by the ids stored, and followers see what a read of the trace gives."""
    texts = [ev.kind for ev in events]
    texts += [ev.step_id for ev in events if ev.step_id is not None]
    texts += [ev.message for ev in events if ev.message is not None]
    if NUL not in "".join(texts):  # the usual batch: one look at its text, not three calls an event
        return
    for ev in events:
        kind, step_id, message = store_text(ev.kind), ev.step_id, ev.message
        if step_id is not None:
            step_id = store_text(step_id)
        if message is not None:
            message = store_text(message)
        if kind is not ev.kind or step_id is not ev.step_id or message is not ev.message:
            if isinstance(ev, EventIn):
                ev.kind, ev.step_id, ev.message = kind, step_id, message
            else:  # a model's fields, set as they were validated (no validation on assignment)
                ev.__dict__.update(kind=kind, step_id=step_id, message=message)


def _number_rows(
    events: Sequence[Event | EventIn], keys: Sequence[str | None] | None, tree: StepTree, pk: int
) -> list[tuple[Any, ...]]:
    """The events' rows (`event_rows`: each event's step numbered through `tree`, which grows, and its
    `ok` derived from the payload where the producer left it out), with their idempotency keys (`keys`
    None: a batch without any, whose rows go in by `_INSERT`, the table's key column left NULL); `step`
    and `ok` are also set on the events that are `Event` models (what followers are sent; an `EventIn`
    gets them from its row when its model is built: `StoredBatch`). Their text is as the store keeps it
    (`_as_stored`), so the rows are `CleanRows`."""
    rows: list[tuple[Any, ...]] = event_rows(events, tree, pk=pk)
    for ev, row in zip(events, rows, strict=True):
        if not isinstance(ev, EventIn):
            fields = ev.__dict__
            fields["step"], fields["ok"] = row[5], None if row[6] is None else bool(row[6])
    if keys is None:
        return rows
    keyed: list[tuple[Any, ...]] = CleanRows()
    keyed.extend((*row, None if key is None else store_text(key)) for row, key in zip(rows, keys, strict=True))
    return keyed
