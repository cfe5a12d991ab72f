"""OpenTelemetry traces in the embedded store: one OTel trace id is one Molar trace, kept `running` while
its spans arrive (in batches, out of order, sometimes twice) and laid out again in span-tree order
when it finishes.

The store keeps each span (bounded, as JSON) beside the trace's events, so a span seen again changes
nothing, and the finished trace can be rebuilt whatever order its spans came in. The events are built
by the caller (`ingest.formats.agent_spans`): this module only stores and numbers them.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, cast, overload

import pydantic_core

from molar_mcp.models import Event
from molar_mcp.models.rows import StoredEvents as LightEvents
from molar_mcp.models.rows import trusted_event
from molar_mcp.store.db import NUL, CleanRows, Database, rows_in, store_text
from molar_mcp.store.search import index_text
from molar_mcp.store.sqlite import insert_steps, load_steps_for, new_short_id, scenario_id_for
from molar_mcp.store.steps import StepTree

OTLP_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE otlp_traces (
        org_id TEXT NOT NULL,
        otel_trace_id TEXT NOT NULL,
        trace_pk INTEGER NOT NULL UNIQUE REFERENCES traces(pk) ON DELETE CASCADE,
        root_span_id TEXT,
        last_arrival_ms INTEGER NOT NULL,
        finished INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (org_id, otel_trace_id)
    );
    CREATE INDEX otlp_traces_open ON otlp_traces(finished, last_arrival_ms);
    CREATE TABLE otlp_spans (
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        span_id TEXT NOT NULL,
        parent_id TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY (trace_pk, span_id)
    ) WITHOUT ROWID;
    CREATE INDEX otlp_spans_parent ON otlp_spans(trace_pk, parent_id);
    """,
    # Export requests are kept as they came (protobuf) until the traces they hold have finished: the
    # answer waits only for the spans' ids; events are made from the kept body after it.
    """
    CREATE TABLE otlp_batches (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        org_id TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        spans INTEGER NOT NULL,
        converted INTEGER NOT NULL DEFAULT 0,
        body BLOB NOT NULL
    );
    CREATE INDEX otlp_batches_pending ON otlp_batches(converted, pk);
    ALTER TABLE otlp_spans ADD COLUMN batch_pk INTEGER;
    CREATE INDEX otlp_spans_batch ON otlp_spans(batch_pk, trace_pk);
    """,
    # Log records of a trace's spans (GenAI messages sent through the Logs API), folded into their
    # spans' events when the trace is laid out; `digest` makes a record sent twice count once.
    """
    CREATE TABLE otlp_logs (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        trace_pk INTEGER NOT NULL REFERENCES traces(pk) ON DELETE CASCADE,
        span_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE UNIQUE INDEX otlp_logs_once ON otlp_logs(trace_pk, digest);
    ALTER TABLE otlp_traces ADD COLUMN finished_ms INTEGER;
    """,
    # Where each span's live events are (`live_seq`, and how many open, sit between and close its
    # subtree) and how they showed it (`shown_as`: the run, or the parent step they named, '' for
    # none; with `logs_folded` of its log records): at the finish those rows are moved into the span-tree
    # order as they are, and only a span shown otherwise is made again.
    """
    ALTER TABLE otlp_spans ADD COLUMN live_seq INTEGER;
    ALTER TABLE otlp_spans ADD COLUMN n_open INTEGER;
    ALTER TABLE otlp_spans ADD COLUMN n_mid INTEGER;
    ALTER TABLE otlp_spans ADD COLUMN n_close INTEGER;
    ALTER TABLE otlp_spans ADD COLUMN start_ns INTEGER;
    ALTER TABLE otlp_spans ADD COLUMN shown_as TEXT;
    ALTER TABLE otlp_spans ADD COLUMN logs_folded INTEGER;
    """,
)

SOURCE = "agent"


@dataclass(frozen=True)
class IncomingSpan:
    """A span whose live events are to be made: its ids, start, and what the caller decoded it to."""

    span_id: str
    parent_id: str | None
    record: Any
    start_ns: int = 0


class DraftEvent(Protocol):
    """An event before the store numbers it (`ingest.formats.agent_spans.Draft`)."""

    ts: int
    kind: str
    step_id: str | None
    ok: bool | None
    message: str | None
    payload: dict[str, Any]


# An event row as stored: (trace_pk, seq, ts, kind, step_id, step, ok, message, payload JSON).
EventRow = tuple[int, int, int, str, str | None, int | None, int | None, str | None, str]


class StoredEvents(Sequence[Event]):
    """Events just stored, as rows; an `Event` is made only when a reader asks for it (a follower, the
    detectors): at OTLP rates most batches have no follower, and building the models was most of the cost."""

    def __init__(self, rows: Sequence[EventRow], payloads: Sequence[dict[str, Any] | None]) -> None:
        self._rows, self._payloads = rows, payloads

    @property
    def first_seq(self) -> int:
        return self._rows[0][1] if self._rows else 0

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | Sequence[Event]:
        if isinstance(index, slice):
            return StoredEvents(self._rows[index], self._payloads[index])
        r = self._rows[index]
        ok = None if r[6] is None else bool(r[6])
        payload = self._payloads[index]
        if payload is None:  # (moved as stored: parsed only when read)
            payload = {} if r[8] == "{}" else pydantic_core.from_json(r[8])
        return trusted_event(r[1], r[2], r[3], r[4], r[5], ok, r[7], payload)

    def messages(self) -> list[tuple[str, int | None, str | None]]:
        """`(kind, ok, message)` of the events that have a message, in order, as stored (what a trace's
        search text is made of: `LiveTraces.finish_trace`)."""
        return [(r[3], r[6], r[7]) for r in self._rows if r[7] is not None]

    def rows(self) -> LightEvents:
        """The same events as light rows (`models.rows.StoredEvents`: columns as attributes, a payload
        parsed from its stored JSON only when read), as the detectors read a stored trace: no `Event`
        is built for the events they never look at."""
        return LightEvents([r[1:] for r in self._rows])


@dataclass
class TraceOutcome:
    """What one request did to one OTel trace."""

    otel_trace_id: str
    trace_id: str
    created: bool = False
    stored_spans: int = 0
    duplicates: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (span id, reason)


@dataclass
class Converted:
    """What the conversion of one stored batch did to one OTel trace: its new live events."""

    otel_trace_id: str
    trace_id: str
    events: Sequence[Event] = ()
    complete: bool = False  # the root has arrived and every span's parent is here


@dataclass(frozen=True)
class OpenTrace:
    org_id: str
    otel_trace_id: str
    trace_id: str
    has_root: bool
    last_arrival_ms: int


@dataclass(frozen=True)
class SpanContext:
    """What the store knows about a span's place in its trace when its live events are made."""

    parent_stored: bool  # its parent span's events are stored
    parent_is_root: bool  # … and that parent is the root span
    has_children: bool  # (a root span) some of its children have arrived
    logs: Sequence[dict[str, Any]] = ()  # its log records stored so far (`accept_logs`), to fold in


@dataclass(frozen=True)
class LiveParts:
    """A span's live events: those that open its subtree, its own events in between (by time), those
    that close it; and how they show it (`shown_as`: `RUN`, the parent step they name, '' for none)."""

    opening: Sequence[DraftEvent]
    middle: Sequence[DraftEvent]
    closing: Sequence[DraftEvent]
    shown_as: str


RUN = "run"  # `shown_as` of a root span shown as the run itself


class KeptSpan(NamedTuple):
    """A span as stored, with where its live events are (`live_seq` None: none made yet)."""

    span_id: str
    parent_id: str | None
    batch_pk: int | None
    live_seq: int | None
    n_open: int
    n_mid: int
    n_close: int
    start_ns: int | None
    shown_as: str | None
    logs_folded: int
    as_json: bool  # stored one by one as JSON (by earlier versions), not in a kept body


@dataclass(frozen=True)
class KeptTrace:
    trace_pk: int
    trace_id: str
    finished: bool
    spans: tuple[KeptSpan, ...]
    logs: dict[str, int]  # log records stored, per span id


@dataclass(frozen=True)
class FreshSpan:
    """A span's events made at the finish (its live ones showed it otherwise, or there were none)."""

    start_ns: int
    opening: Sequence[DraftEvent]
    middle: Sequence[DraftEvent]
    closing: Sequence[DraftEvent]


# An event laid out at the finish: (ts, kind, step id, ok, message, payload JSON or None, payload or None).
LaidItem = tuple[int, str, str | None, bool | None, str | None, str | None, dict[str, Any] | None]
Timed = tuple[int, LaidItem]
S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """A stored export request whose spans have no events yet."""

    pk: int
    org_id: str
    spans: int
    body: bytes


# Builds a span's live events (the store numbers them).
LiveEventBuilder = Callable[[IncomingSpan, SpanContext], LiveParts]
# Builds the live events of a log record of a shown span: (record, span id, how the span is shown).
LogEventBuilder = Callable[[dict[str, Any], str, str], Sequence[DraftEvent]]


@dataclass(frozen=True)
class LogsTaken:
    """What one log export did to one OTel trace: `finished` None when it had finished longer ago than
    late records are taken (the records refused); the records new; the live events they made."""

    otel_trace_id: str
    trace_id: str
    finished: bool | None
    new: int
    events: Sequence[Event] = ()


# One OTel trace of a request: (otel trace id, scenario slug, scenario title, its spans' ids).
AcceptedTrace = tuple[str, str, str, Sequence[tuple[str, str | None]]]


class OtlpTraces:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("otlp", OTLP_MIGRATIONS)
        with db.read() as conn:
            (pending,) = conn.execute("SELECT coalesce(sum(spans), 0) FROM otlp_batches WHERE converted = 0").fetchone()
        self.pending_spans = int(pending)  # spans stored and not yet converted (bounds what is accepted)

    def accept(
        self, org_id: str, body: bytes, traces: Sequence[AcceptedTrace], now_ms: int
    ) -> tuple[list[TraceOutcome], Batch | None]:
        """Take one request's spans in ONE transaction (all or nothing): the request body is kept as it
        came, and each span's ids are recorded: a new trace id starts a running trace; a span id already
        stored is a duplicate (no change); a new span of a finished trace is refused. Making the spans'
        events is left to `convert` (the stored batch is returned: None when no span was new)."""
        outcomes: list[TraceOutcome] = []
        with self.db.tx() as conn:
            batch_pk: int | None = None
            fresh_total = 0
            for otel_id, slug, title, spans in traces:
                row = conn.execute(
                    "SELECT o.trace_pk, o.finished, t.id FROM otlp_traces o JOIN traces t ON t.pk = o.trace_pk"
                    " WHERE o.org_id = ? AND o.otel_trace_id = ?",
                    (org_id, otel_id),
                ).fetchone()
                created = row is None
                if row is None:
                    pk, finished, trace_id = _create_trace(conn, org_id, otel_id, slug, title, now_ms)
                else:
                    pk, finished, trace_id = int(row[0]), bool(row[1]), str(row[2])
                outcome = TraceOutcome(otel_id, trace_id, created=created)
                outcomes.append(outcome)
                known = _known_spans(conn, pk, {span_id for span_id, _ in spans})
                fresh: list[tuple[str, str | None]] = []
                for span_id, parent_id in spans:
                    if span_id in known:
                        outcome.duplicates += 1
                    elif finished:
                        outcome.refused.append((span_id, f"trace {otel_id} had finished before this span arrived"))
                    else:
                        fresh.append((span_id, parent_id))
                        known[span_id] = parent_id
                if not fresh:
                    continue
                if batch_pk is None:
                    batch_pk = _insert_batch(conn, org_id, body, now_ms)
                conn.executemany(
                    "INSERT INTO otlp_spans (trace_pk, span_id, parent_id, body, batch_pk) VALUES (?,?,?,'',?)",
                    [(pk, span_id, parent_id, batch_pk) for span_id, parent_id in fresh],
                )
                root = next((span_id for span_id, parent_id in fresh if parent_id is None), None)
                conn.execute(
                    "UPDATE otlp_traces SET last_arrival_ms = ?, root_span_id = coalesce(root_span_id, ?)"
                    " WHERE trace_pk = ?",
                    (now_ms, root, pk),
                )
                outcome.stored_spans = len(fresh)
                fresh_total += len(fresh)
            if batch_pk is not None:
                conn.execute("UPDATE otlp_batches SET spans = ? WHERE pk = ?", (fresh_total, batch_pk))
        self.pending_spans += fresh_total
        return outcomes, None if batch_pk is None else Batch(batch_pk, org_id, fresh_total, body)

    def accept_logs(
        self,
        org_id: str,
        traces: Sequence[tuple[str, str, str, Sequence[tuple[str, dict[str, Any]]]]],
        now_ms: int,
        late_ms: int,
        build: LogEventBuilder | None = None,
    ) -> list[LogsTaken]:
        """Keep log records by their span, per OTel trace `(otel trace id, slug, title, [(span id, record)])`,
        in one transaction; a trace id not seen yet starts a running trace (its spans may come later). A
        new record of a span a running trace already shows gets its live events now (`build(record, how
        the span is shown)`); the others are folded into their span when it is shown (`convert`)."""
        out: list[LogsTaken] = []
        with self.db.tx() as conn:
            for otel_id, slug, title, records in traces:
                row = conn.execute(
                    "SELECT o.trace_pk, o.finished, t.id, o.finished_ms FROM otlp_traces o"
                    " JOIN traces t ON t.pk = o.trace_pk WHERE o.org_id = ? AND o.otel_trace_id = ?",
                    (org_id, otel_id),
                ).fetchone()
                if row is None:
                    pk, finished, trace_id = _create_trace(conn, org_id, otel_id, slug, title, now_ms)
                else:
                    pk, finished, trace_id = int(row[0]), bool(row[1]), str(row[2])
                    if finished and (row[3] is None or now_ms - int(row[3]) > late_ms):
                        out.append(LogsTaken(otel_id, trace_id, None, 0))
                        continue
                fresh: list[tuple[str, dict[str, Any]]] = []
                for span_id, record in records:
                    body = pydantic_core.to_json(record).decode()
                    digest = hashlib.sha256(f"{span_id}\n{body}".encode()).hexdigest()
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO otlp_logs (trace_pk, span_id, digest, body) VALUES (?,?,?,?)",
                        (pk, span_id, digest, body),
                    )
                    if cur.rowcount == 1:
                        fresh.append((span_id, record))
                events: Sequence[Event] = ()
                if not finished:
                    conn.execute("UPDATE otlp_traces SET last_arrival_ms = ? WHERE trace_pk = ?", (now_ms, pk))
                    shown = _shown_as(conn, pk, {span_id for span_id, _ in fresh}) if build and fresh else {}
                    drafts = (
                        [
                            d
                            for span_id, record in fresh
                            if span_id in shown
                            for d in build(record, span_id, shown[span_id])
                        ]
                        if build
                        else []
                    )
                    if drafts:
                        events = _append(conn, pk, drafts)
                out.append(LogsTaken(otel_id, trace_id, finished, len(fresh), events))
        return out

    def logs_of(self, org_id: str, otel_trace_id: str) -> dict[str, list[dict[str, Any]]]:
        """A trace's log records by span id, in arrival order."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT l.span_id, l.body FROM otlp_logs l JOIN otlp_traces o ON o.trace_pk = l.trace_pk"
                " WHERE o.org_id = ? AND o.otel_trace_id = ? ORDER BY l.pk",
                (org_id, otel_trace_id),
            ).fetchall()
        out: dict[str, list[dict[str, Any]]] = {}
        for span_id, body in rows:
            out.setdefault(str(span_id), []).append(pydantic_core.from_json(body))
        return out

    def pending(self, limit: int = 1) -> list[Batch]:
        """Stored batches whose spans have no events yet, oldest first (every org: run it unscoped)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT pk, org_id, spans, body FROM otlp_batches WHERE converted = 0 ORDER BY pk LIMIT ?", (limit,)
            ).fetchall()
        return [Batch(int(r[0]), str(r[1]), int(r[2]), bytes(r[3])) for r in rows]

    def convert(
        self,
        batch: Batch,
        traces: Sequence[tuple[str, str, str, Sequence[IncomingSpan]]],
        build: LiveEventBuilder,
    ) -> list[Converted]:
        """Append the live events of a stored batch's spans (`traces` as decoded from its body: those
        recorded for this batch get events, in the order given) and mark it converted. The events are
        made before the write, so exports are not kept waiting for them. A trace that finished
        meanwhile is left alone: its finish read every span it had. A batch another replica converted
        first is left alone too."""
        plans: list[tuple[int, str, str, str, str, bool, list[tuple[IncomingSpan, LiveParts, int]]]] = []
        with self.db.read() as conn:
            for otel_id, slug, title, spans in traces:
                row = conn.execute(
                    "SELECT o.trace_pk, o.finished, t.id, t.event_count FROM otlp_traces o"
                    " JOIN traces t ON t.pk = o.trace_pk WHERE o.org_id = ? AND o.otel_trace_id = ?",
                    (batch.org_id, otel_id),
                ).fetchone()
                if row is None or row[1]:
                    continue
                pk = int(row[0])
                mine = {
                    r[0]
                    for r in conn.execute(
                        "SELECT span_id FROM otlp_spans WHERE batch_pk = ? AND trace_pk = ?", (batch.pk, pk)
                    )
                }
                todo: list[IncomingSpan] = []
                for s in spans:  # a span twice in one request counts once (the first)
                    if s.span_id in mine:
                        mine.discard(s.span_id)
                        todo.append(s)
                if not todo:
                    continue
                wanted = {s.parent_id for s in todo if s.parent_id} - {s.span_id for s in todo}
                shown = _shown_spans(conn, pk, wanted)  # parents whose events are stored: id → parent id
                logs = _logs_by_span(conn, pk)
                built: list[tuple[IncomingSpan, LiveParts, int]] = []
                for span in todo:
                    parent = span.parent_id
                    folded = logs.get(span.span_id, [])
                    context = SpanContext(
                        parent_stored=parent is not None and parent in shown,
                        parent_is_root=parent is not None and parent in shown and shown[parent] is None,
                        has_children=parent is None and _has_children(conn, pk, span.span_id),
                        logs=folded,
                    )
                    built.append((span, build(span, context), len(folded)))
                    shown[span.span_id] = parent
                plans.append((pk, otel_id, str(row[2]), slug, title, int(row[3]) == 0, built))
        out: list[Converted] = []
        with self.db.tx() as conn:
            claimed = conn.execute("UPDATE otlp_batches SET converted = 1 WHERE pk = ? AND converted = 0", (batch.pk,))
            if claimed.rowcount != 1:
                return out
            for pk, otel_id, trace_id, slug, title, first, built in plans:
                (finished,) = conn.execute("SELECT finished FROM otlp_traces WHERE trace_pk = ?", (pk,)).fetchone()
                if finished:
                    continue
                if first:  # the scenario as the spans name it (the request named it from ids alone)
                    conn.execute(
                        "UPDATE traces SET scenario_slug = ?, scenario_title = ?, scenario_id = ? WHERE pk = ?",
                        (slug, title, scenario_id_for(slug), pk),
                    )
                drafts: list[DraftEvent] = []
                for _span, parts, _folded in built:
                    drafts += parts.opening
                    drafts += parts.middle
                    drafts += parts.closing
                events = _append(conn, pk, drafts)
                seq = events.first_seq
                layout = []
                for span, parts, n_logs in built:
                    n_open, n_mid, n_close = len(parts.opening), len(parts.middle), len(parts.closing)
                    layout.append(
                        (seq, n_open, n_mid, n_close, span.start_ns, parts.shown_as, n_logs, pk, span.span_id)
                    )
                    seq += n_open + n_mid + n_close
                conn.executemany(
                    "UPDATE otlp_spans SET live_seq = ?, n_open = ?, n_mid = ?, n_close = ?, start_ns = ?,"
                    " shown_as = ?, logs_folded = ? WHERE trace_pk = ? AND span_id = ?",
                    layout,
                )
                out.append(Converted(otel_id, trace_id, events, complete=_complete(conn, pk)))
        self.pending_spans = max(0, self.pending_spans - batch.spans)
        return out

    def span_count(self, org_id: str, otel_trace_id: str) -> int:
        """How many spans of an OTel trace are stored."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM otlp_spans s JOIN otlp_traces o ON o.trace_pk = s.trace_pk"
                " WHERE o.org_id = ? AND o.otel_trace_id = ?",
                (org_id, otel_trace_id),
            ).fetchone()
        return int(row[0])

    def spans_waiting(self, org_id: str, trace_id: str) -> int:
        """How many spans of an unfinished OTel trace (by its trace id) are stored and not shown as events
        yet: 0 for any other trace."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT count(*) FROM otlp_traces o JOIN traces t ON t.pk = o.trace_pk"
                " JOIN otlp_spans s ON s.trace_pk = o.trace_pk"
                " WHERE t.id = ? AND o.org_id = ? AND o.finished = 0 AND s.live_seq IS NULL",
                (trace_id, org_id),
            ).fetchone()
        return int(row[0])

    def finished_traces(self, org_id: str, otel_trace_ids: Iterable[str]) -> set[str]:
        """Of these OTel traces, those finished already: a stored batch's spans of them get no live events
        (their finish read every span they had), so the converter does not decode them."""
        wanted = sorted(set(otel_trace_ids))
        out: set[str] = set()
        with self.db.read() as conn:
            for (otel_id,) in rows_in(
                conn,
                "SELECT otel_trace_id FROM otlp_traces WHERE org_id = ? AND otel_trace_id IN ({marks})"
                " AND finished = 1",
                wanted,
                before=(org_id,),
            ):
                out.add(str(otel_id))
        return out

    def ready_traces(self, org_id: str, otel_trace_ids: Iterable[str]) -> dict[str, str]:
        """Of these OTel traces, those running with no events yet whose every span is already taken (the
        root, and every span's parent): a converter that is behind lays them out at once (`lay_out_kept`)
        instead of showing them live first. OTel trace id → trace id."""
        out: dict[str, str] = {}
        with self.db.read() as conn:
            for otel_id in otel_trace_ids:
                row = _running_without_events(conn, org_id, otel_id)
                if row is not None and _complete(conn, int(row[0])):
                    out[otel_id] = str(row[1])
        return out

    def unshown_traces(self, org_id: str, otel_trace_ids: Iterable[str]) -> dict[str, tuple[str, bool, bool]]:
        """Of these OTel traces, those running with no events yet: OTel trace id → (trace id, whether every
        span is taken — the root, and every span's parent —, whether spans of it were read and left
        unshown already)."""
        out: dict[str, tuple[str, bool, bool]] = {}
        with self.db.read() as conn:
            for otel_id in otel_trace_ids:
                row = _running_without_events(conn, org_id, otel_id)
                if row is None:
                    continue
                pk = int(row[0])
                left = conn.execute(
                    "SELECT 1 FROM otlp_spans s JOIN otlp_batches b ON b.pk = s.batch_pk"
                    " WHERE s.trace_pk = ? AND b.converted = 1 AND s.live_seq IS NULL LIMIT 1",
                    (pk,),
                ).fetchone()
                out[otel_id] = (str(row[1]), _complete(conn, pk), left is not None)
        return out

    def forget_batches(self, finished_before_ms: int) -> int:
        """Delete the stored batches every trace of which finished before `finished_before_ms` (until
        then, log records that come late can still be laid out with the spans). Returns how many."""
        with self.db.tx() as conn:
            cur = conn.execute(
                "DELETE FROM otlp_batches WHERE converted = 1 AND NOT EXISTS (SELECT 1 FROM otlp_spans s"
                " JOIN otlp_traces o ON o.trace_pk = s.trace_pk WHERE s.batch_pk = otlp_batches.pk"
                " AND (o.finished = 0 OR o.finished_ms IS NULL OR o.finished_ms >= ?))",
                (finished_before_ms,),
            )
            return max(0, cur.rowcount)

    def open_traces(self) -> list[OpenTrace]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT o.org_id, o.otel_trace_id, t.id, o.root_span_id IS NOT NULL, o.last_arrival_ms"
                " FROM otlp_traces o JOIN traces t ON t.pk = o.trace_pk WHERE o.finished = 0"
            ).fetchall()
        return [OpenTrace(r[0], r[1], r[2], bool(r[3]), int(r[4])) for r in rows]

    def stored_spans(
        self, org_id: str, otel_trace_id: str
    ) -> tuple[list[tuple[int, bytes]], set[tuple[int, str]], list[Any]]:
        """What a trace's spans were stored as: the bodies of its batches, which span of which batch is
        its (`(batch pk, span id)`: a span sent twice counts once), and the JSON of spans stored one by
        one (by earlier versions)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT trace_pk FROM otlp_traces WHERE org_id = ? AND otel_trace_id = ?", (org_id, otel_trace_id)
            ).fetchone()
            if row is None:
                return [], set(), []
            pk = int(row[0])
            mine: set[tuple[int, str]] = set()
            old: list[Any] = []
            for span_id, batch_pk, body in conn.execute(
                "SELECT span_id, batch_pk, body FROM otlp_spans WHERE trace_pk = ?", (pk,)
            ):
                if batch_pk is not None:
                    mine.add((int(batch_pk), str(span_id)))
                elif body:
                    old.append(pydantic_core.from_json(body))
            batches = sorted({b for b, _ in mine})
            rows = rows_in(conn, "SELECT pk, body FROM otlp_batches WHERE pk IN ({marks})", batches)
            bodies = sorted((int(b), bytes(body)) for b, body in rows)
            return bodies, mine, old

    def lay_out(
        self,
        org_id: str,
        otel_trace_id: str,
        events: Sequence[DraftEvent],
        *,
        scenario_slug: str,
        scenario_title: str,
        span_count: int,
        again: bool = False,
    ) -> tuple[str, StoredEvents] | Literal["finished", "more"]:
        """Replace a running trace's events with their final span-tree order (renumbered by the store)
        and fix its scenario; mark it finished for OTLP (later spans are refused), and let go of the
        stored batches no running trace needs any more. `finished` when another caller finished it
        first; `more` when spans arrived since the caller read `span_count` of them (read them again);
        else the trace's id and its events as stored (numbered). `again`: lay out a finished trace
        once more (log records came after its finish)."""
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT o.trace_pk, o.finished, t.id FROM otlp_traces o JOIN traces t ON t.pk = o.trace_pk"
                " WHERE o.org_id = ? AND o.otel_trace_id = ?",
                (org_id, otel_trace_id),
            ).fetchone()
            if row is None or (bool(row[1]) != again):
                return "finished"
            pk = int(row[0])
            (count,) = conn.execute("SELECT count(*) FROM otlp_spans WHERE trace_pk = ?", (pk,)).fetchone()
            if int(count) != span_count:
                return "more"
            conn.execute("UPDATE otlp_traces SET finished = 1, finished_ms = ? WHERE trace_pk = ?", (now_ms(), pk))
            conn.execute("DELETE FROM events WHERE trace_pk = ?", (pk,))
            conn.execute("DELETE FROM steps WHERE trace_pk = ?", (pk,))
            conn.execute(
                "UPDATE traces SET kind_counts = '{}', event_count = 0, scenario_slug = ?, scenario_title = ?,"
                " scenario_id = ? WHERE pk = ?",
                (scenario_slug, scenario_title, scenario_id_for(scenario_slug), pk),
            )
            stored = _append(conn, pk, events)
        return str(row[2]), stored

    def kept(self, org_id: str, otel_trace_id: str) -> KeptTrace | None:
        """A trace's spans as stored, with where their live events are, and its log records per span."""
        with self.db.read() as conn:
            return _kept(conn, org_id, otel_trace_id)

    def batch_bodies(self, batch_pks: Iterable[int]) -> dict[int, bytes]:
        """The kept bodies of these stored batches (those still kept), by batch."""
        wanted = sorted(set(batch_pks))
        out: dict[int, bytes] = {}
        with self.db.read() as conn:
            for pk, body in rows_in(conn, "SELECT pk, body FROM otlp_batches WHERE pk IN ({marks})", wanted):
                out[int(pk)] = bytes(body)
        return out

    def lay_out_kept(
        self,
        org_id: str,
        otel_trace_id: str,
        seen: KeptTrace,
        fresh: Mapping[str, FreshSpan],
        *,
        scenario_slug: str,
        scenario_title: str,
    ) -> tuple[str, StoredEvents, bool] | Literal["finished", "more"]:
        """Finish a running trace with its events in span-tree order (`tree_layout`, renumbered by the
        store), in one transaction: the live events of each span are moved there as they are; the spans
        named in `fresh` (shown otherwise while running, or not shown yet) get those events instead. Fix
        its scenario and mark it finished for OTLP. `finished` when another caller finished it first;
        `more` when it changed since `seen` was read (read it again); else the trace's id, its events
        as stored (numbered), and whether it had none before (no follower has seen any of them)."""
        with self.db.tx() as conn:
            now = _kept(conn, org_id, otel_trace_id)
            if now is None or now.finished:
                return "finished"
            if now != seen:
                return "more"
            pk = now.trace_pk
            (shown,) = conn.execute("SELECT event_count FROM traces WHERE pk = ?", (pk,)).fetchone()
            rows: dict[int, tuple[Any, ...]] = {
                int(r[0]): r
                for r in conn.execute(
                    "SELECT seq, ts, kind, step_id, ok, message, payload FROM events WHERE trace_pk = ?", (pk,)
                )
            }

            def kept_item(seq: int) -> LaidItem:
                r = rows[seq]
                return (r[1], r[2], r[3], None if r[4] is None else bool(r[4]), r[5], r[6], None)

            def parts(
                span: KeptSpan, run: bool, parent: str | None
            ) -> tuple[list[LaidItem], list[Timed], list[LaidItem]]:
                got = fresh.get(span.span_id)
                if got is not None:
                    return (
                        [_draft_item(d) for d in got.opening],
                        [(d.ts, _draft_item(d)) for d in got.middle],
                        [_draft_item(d) for d in got.closing],
                    )
                if span.live_seq is None:
                    raise KeyError(span.span_id)
                a = span.live_seq
                b, c = a + span.n_open, a + span.n_open + span.n_mid
                d = c + span.n_close
                middle = [kept_item(i) for i in range(b, c)]
                return (
                    [kept_item(i) for i in range(a, b)],
                    [(m[0], m) for m in middle],
                    [kept_item(i) for i in range(c, d)],
                )

            starts = {sid: f.start_ns for sid, f in fresh.items()}
            try:
                items = tree_layout(
                    [(sp.span_id, sp.parent_id, starts.get(sp.span_id, sp.start_ns or 0), sp) for sp in now.spans],
                    parts,
                )
            except KeyError:  # live events not where the spans say (changed meanwhile): read it again
                return "more"
            conn.execute("UPDATE otlp_traces SET finished = 1, finished_ms = ? WHERE trace_pk = ?", (now_ms(), pk))
            conn.execute("DELETE FROM events WHERE trace_pk = ?", (pk,))
            conn.execute("DELETE FROM steps WHERE trace_pk = ?", (pk,))
            conn.execute(
                "UPDATE traces SET scenario_slug = ?, scenario_title = ?, scenario_id = ? WHERE pk = ?",
                (scenario_slug, scenario_title, scenario_id_for(scenario_slug), pk),
            )
            stored = _write_laid(conn, pk, items)
        return now.trace_id, stored, int(shown) == 0


def now_ms() -> int:
    return int(time.time() * 1000)


def _insert_batch(conn: Any, org_id: str, body: bytes, now_ms: int) -> int:
    conn.execute(
        "INSERT INTO otlp_batches (org_id, received_ms, spans, converted, body) VALUES (?,?,0,0,?)",
        (org_id, now_ms, body),
    )
    (pk,) = conn.execute("SELECT last_insert_rowid()").fetchone()
    return int(pk)


def _create_trace(conn: Any, org_id: str, otel_id: str, slug: str, title: str, now_ms: int) -> tuple[int, bool, str]:
    trace_id = str(uuid.uuid4())
    short_id = new_short_id(conn)
    conn.execute(
        "INSERT INTO traces (id, short_id, org_id, scenario_id, scenario_slug, scenario_title, status, source,"
        " created_ms) VALUES (?,?,?,?,?,?,?,?,?)",
        (trace_id, short_id, org_id, scenario_id_for(slug), slug, title, "running", SOURCE, now_ms),
    )
    pk = int(conn.execute("SELECT pk FROM traces WHERE id = ?", (trace_id,)).fetchone()[0])
    index_text(conn, pk, f"{slug} {otel_id}")
    conn.execute(
        "INSERT INTO otlp_traces (org_id, otel_trace_id, trace_pk, last_arrival_ms) VALUES (?,?,?,?)",
        (org_id, otel_id, pk, now_ms),
    )
    return pk, False, trace_id


def _running_without_events(conn: Any, org_id: str, otel_id: str) -> tuple[Any, Any] | None:
    """(trace pk, trace id) of an unfinished OTel trace that has no events yet; None for any other."""
    row = conn.execute(
        "SELECT o.trace_pk, t.id FROM otlp_traces o JOIN traces t ON t.pk = o.trace_pk"
        " WHERE o.org_id = ? AND o.otel_trace_id = ? AND o.finished = 0 AND t.event_count = 0",
        (org_id, otel_id),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _known_spans(conn: Any, pk: int, ids: set[str]) -> dict[str, str | None]:
    """span id → parent id of those of `ids` already stored."""
    sql = "SELECT span_id, parent_id FROM otlp_spans WHERE trace_pk = ? AND span_id IN ({marks})"
    return dict(rows_in(conn, sql, sorted(ids), before=(pk,)))


def _shown_spans(conn: Any, pk: int, ids: set[str]) -> dict[str, str | None]:
    """span id → parent id of those of `ids` whose events are stored (their batch was converted, or
    they were stored one by one by an earlier version)."""
    sql = (
        "SELECT s.span_id, s.parent_id FROM otlp_spans s LEFT JOIN otlp_batches b ON b.pk = s.batch_pk"
        " WHERE s.trace_pk = ? AND s.span_id IN ({marks}) AND (s.batch_pk IS NULL OR b.converted = 1)"
    )
    return dict(rows_in(conn, sql, sorted(ids), before=(pk,)))


def _shown_as(conn: Any, pk: int, ids: set[str]) -> dict[str, str]:
    """span id → how its live events show it (`LiveParts.shown_as`), of those of `ids` shown already."""
    sql = "SELECT span_id, shown_as FROM otlp_spans WHERE trace_pk = ? AND span_id IN ({marks})"
    sql += " AND live_seq IS NOT NULL"
    return {str(span_id): str(shown_as or "") for span_id, shown_as in rows_in(conn, sql, sorted(ids), before=(pk,))}


def _has_children(conn: Any, pk: int, span_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM otlp_spans WHERE trace_pk = ? AND parent_id = ? LIMIT 1", (pk, span_id))
    return row.fetchone() is not None


def _append(conn: Any, pk: int, drafts: Sequence[DraftEvent]) -> StoredEvents:
    """Append events after the trace's last seq, in one statement; the store numbers their steps
    (store/steps.py) and folds them into the trace's counts."""
    (last,) = conn.execute("SELECT max(seq) FROM events WHERE trace_pk = ?", (pk,)).fetchone()
    seq = 0 if last is None else int(last) + 1
    # Only the steps these events name (with their ancestors), not the trace's whole tree: a trace of
    # thousands of spans converted batch by batch is not read whole per batch. (It reads `step_id`, `kind`
    # and `payload` alone, which drafts have as events do.)
    tree = load_steps_for(conn, pk, cast(Sequence[Event], drafts))
    rows: list[EventRow] = CleanRows()  # kinds and step ids are ours, payloads JSON (NUL escaped), messages cleaned
    counts: dict[str, int] = {}
    dump = pydantic_core.to_json
    for d in drafts:
        kind = d.kind
        ok = d.ok if d.ok is not None or kind != "error" else False  # an error is a failure (sqlite.derived_ok)
        step = None
        node = tree.number(d.step_id, kind, d.payload)
        if node is not None:
            step = node.step
            tree.observe(node, seq=seq, ts=d.ts, kind=kind, ok=ok, message=d.message, payload=d.payload)
        payload = dump(d.payload).decode() if d.payload else "{}"
        message = d.message
        if message is not None and NUL in message:
            message = store_text(message)
        rows.append((pk, seq, d.ts, kind, d.step_id, step, None if ok is None else int(ok), message, payload))
        counts[kind] = counts.get(kind, 0) + 1
        seq += 1
    conn.executemany(
        "INSERT INTO events (trace_pk, seq, ts, kind, step_id, step, ok, message, payload) VALUES (?,?,?,?,?,?,?,?,?)",
        rows,
    )
    row = conn.execute("SELECT kind_counts, event_count FROM traces WHERE pk = ?", (pk,)).fetchone()
    kind_counts, event_count = row
    merged: dict[str, int] = json.loads(kind_counts)
    for kind, n in counts.items():
        merged[kind] = merged.get(kind, 0) + n
    conn.execute(
        "UPDATE traces SET kind_counts = ?, event_count = ? WHERE pk = ?",
        (json.dumps(dict(sorted(merged.items()))), event_count + len(rows), pk),
    )
    insert_steps(conn, pk, tree.take_touched())
    return StoredEvents(rows, [d.payload for d in drafts])


def _complete(conn: Any, pk: int) -> bool:
    """The root span has arrived and every stored span's parent is stored too: nothing is still open."""
    (root,) = conn.execute("SELECT root_span_id FROM otlp_traces WHERE trace_pk = ?", (pk,)).fetchone()
    if root is None:
        return False
    missing = conn.execute(
        "SELECT 1 FROM otlp_spans s WHERE s.trace_pk = ? AND s.parent_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM otlp_spans p WHERE p.trace_pk = s.trace_pk AND p.span_id = s.parent_id) LIMIT 1",
        (pk,),
    ).fetchone()
    return missing is None


def _kept(conn: Any, org_id: str, otel_trace_id: str) -> KeptTrace | None:
    row = conn.execute(
        "SELECT o.trace_pk, o.finished, t.id FROM otlp_traces o JOIN traces t ON t.pk = o.trace_pk"
        " WHERE o.org_id = ? AND o.otel_trace_id = ?",
        (org_id, otel_trace_id),
    ).fetchone()
    if row is None:
        return None
    pk = int(row[0])
    spans = tuple(
        KeptSpan(
            str(r[0]),
            r[1],
            None if r[2] is None else int(r[2]),
            None if r[3] is None else int(r[3]),
            int(r[4] or 0),
            int(r[5] or 0),
            int(r[6] or 0),
            None if r[7] is None else int(r[7]),
            r[8],
            int(r[9] or 0),
            bool(r[10]),
        )
        for r in conn.execute(
            "SELECT span_id, parent_id, batch_pk, live_seq, n_open, n_mid, n_close, start_ns, shown_as,"
            " logs_folded, body <> '' FROM otlp_spans WHERE trace_pk = ? ORDER BY span_id",
            (pk,),
        )
    )
    logs = {
        str(r[0]): int(r[1])
        for r in conn.execute("SELECT span_id, count(*) FROM otlp_logs WHERE trace_pk = ? GROUP BY span_id", (pk,))
    }
    return KeptTrace(pk, str(row[2]), bool(row[1]), spans, logs)


def _logs_by_span(conn: Any, pk: int) -> dict[str, list[dict[str, Any]]]:
    """A trace's log records by span id, in arrival order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for span_id, body in conn.execute("SELECT span_id, body FROM otlp_logs WHERE trace_pk = ? ORDER BY pk", (pk,)):
        out.setdefault(str(span_id), []).append(pydantic_core.from_json(body))
    return out


def tree_layout(
    spans: Iterable[tuple[str, str | None, int, S]],
    parts: Callable[[S, bool, str | None], tuple[Sequence[T], Sequence[tuple[int, T]], Sequence[T]]],
) -> list[T]:
    """A trace's items in span-tree order: a span's opening items, then its own items in between
    (`(ts in ms, item)`) and its children's subtrees by time, then its closing items. Spans are
    `(span id, parent id, start ns, span)`; a span whose parent is not among them is a root; children
    come in order of (start, span id). `parts(span, run, parent)` gives a span's items: `run` when it
    is a root with children (the run itself), `parent` the span id of the step it sits in (None under
    the run or at the top). The same spans give the same order whatever order they came in."""
    by_id: dict[str, tuple[str, str | None, int, S]] = {}
    for span in spans:
        by_id[span[0]] = span
    children: dict[str | None, list[tuple[str, str | None, int, S]]] = {}
    for span in by_id.values():
        parent = span[1] if span[1] in by_id else None
        children.setdefault(parent, []).append(span)
    for items in children.values():
        items.sort(key=lambda sp: (sp[2], sp[0]))
    out: list[T] = []
    # Depth first without recursion (a chain of spans may be as deep as the request is long): a stack of
    # what is left to emit, a span standing for its whole subtree.
    stack: list[tuple[bool, Any, str | None]] = [(True, root, None) for root in reversed(children.get(None, []))]
    while stack:
        is_span, item, parent_step = stack.pop()
        if not is_span:
            out.append(item)
            continue
        span_id, parent_id, _start, span = item
        kids = children.get(span_id, [])
        run = parent_id is None and bool(kids)
        opening, middle, closing = parts(span, run, parent_step)
        out.extend(opening)
        inner = None if run else span_id
        between: list[tuple[int, int, int, bool, Any]] = [
            (ts * 1_000_000, 0, i, False, it) for i, (ts, it) in enumerate(middle)
        ]
        between += [(kid[2], 1, i, True, kid) for i, kid in enumerate(kids)]
        between.sort(key=lambda x: (x[0], x[1], x[2]))
        then: list[tuple[bool, Any, str | None]] = [(is_kid, it, inner) for _, _, _, is_kid, it in between]
        then += [(False, it, None) for it in closing]
        stack.extend(reversed(then))  # popped in order: what is in between, then the closing items
    return out


def _draft_item(d: DraftEvent) -> LaidItem:
    ok = d.ok if d.ok is not None or d.kind != "error" else False  # an error is a failure (sqlite.derived_ok)
    return (d.ts, d.kind, d.step_id, ok, d.message, None, d.payload)


_NO_PAYLOAD: Mapping[str, Any] = MappingProxyType({})


def _write_laid(conn: Any, pk: int, items: Sequence[LaidItem]) -> StoredEvents:
    """Write a trace's events (numbered 0…n-1 in the given order) and its steps, counts and kind counts
    anew (the caller has deleted the old ones)."""
    tree = StepTree()
    rows: list[EventRow] = CleanRows()  # kinds and step ids are ours, payloads JSON (NUL escaped), messages cleaned
    payloads: list[dict[str, Any] | None] = []
    counts: dict[str, int] = {}
    dump, load = pydantic_core.to_json, pydantic_core.from_json
    for seq, (ts, kind, step_id, ok, message, text, payload) in enumerate(items):
        if payload is None:
            # An event moved as stored keeps its JSON: the step tree reads a payload only for `step.start`
            # (parent, category, title); the others are parsed only if a reader asks (`StoredEvents`).
            if kind == "step.start":
                payload = load(text) if text else {}
        elif text is None:
            text = dump(payload).decode() if payload else "{}"
        step = None
        node = tree.number(step_id, kind, payload or _NO_PAYLOAD)
        if node is not None:
            step = node.step
            tree.observe(node, seq=seq, ts=ts, kind=kind, ok=ok, message=message, payload=payload or _NO_PAYLOAD)
        if message is not None and NUL in message:
            message = store_text(message)
        rows.append((pk, seq, ts, kind, step_id, step, None if ok is None else int(ok), message, text or "{}"))
        payloads.append(payload)
        counts[kind] = counts.get(kind, 0) + 1
    conn.executemany(
        "INSERT INTO events (trace_pk, seq, ts, kind, step_id, step, ok, message, payload) VALUES (?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.execute(
        "UPDATE traces SET kind_counts = ?, event_count = ? WHERE pk = ?",
        (json.dumps(dict(sorted(counts.items()))), len(rows), pk),
    )
    insert_steps(conn, pk, tree.take_touched())
    return StoredEvents(rows, payloads)
