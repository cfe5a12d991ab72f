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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, overload

import pydantic_core

from molar_mcp.models import Event
from molar_mcp.store.db import Database
from molar_mcp.store.search import index_text
from molar_mcp.store.sqlite import insert_steps, load_step_tree, new_short_id, scenario_id_for

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
)

SOURCE = "agent"


@dataclass(frozen=True)
class IncomingSpan:
    """A span whose live events are to be made: its ids, and what the caller decoded it to."""

    span_id: str
    parent_id: str | None
    record: Any


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

    def __init__(self, rows: Sequence[EventRow], drafts: Sequence[DraftEvent]) -> None:
        self._rows, self._drafts = rows, drafts

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | Sequence[Event]:
        if isinstance(index, slice):
            return StoredEvents(self._rows[index], self._drafts[index])
        r, d = self._rows[index], self._drafts[index]
        return Event.model_construct(
            seq=r[1],
            ts=r[2],
            kind=r[3],
            step_id=r[4],
            step=r[5],
            ok=None if r[6] is None else bool(r[6]),
            message=r[7],
            payload=d.payload,
        )


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


@dataclass(frozen=True)
class Batch:
    """A stored export request whose spans have no events yet."""

    pk: int
    org_id: str
    spans: int
    body: bytes


# Builds a span's live events (the store numbers them).
LiveEventBuilder = Callable[[IncomingSpan, SpanContext], Sequence[DraftEvent]]
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
    ) -> list[tuple[str, str, bool | None, int]]:
        """Keep log records by their span, per OTel trace `(otel trace id, slug, title, [(span id, record)])`,
        in one transaction; a trace id not seen yet starts a running trace (its spans may come later).
        Per trace: (otel trace id, trace id, finished already — None: longer than `late_ms` ago, the
        records refused —, records new)."""
        out: list[tuple[str, str, bool | None, int]] = []
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
                        out.append((otel_id, trace_id, None, 0))
                        continue
                new = 0
                for span_id, record in records:
                    body = pydantic_core.to_json(record).decode()
                    digest = hashlib.sha256(f"{span_id}\n{body}".encode()).hexdigest()
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO otlp_logs (trace_pk, span_id, digest, body) VALUES (?,?,?,?)",
                        (pk, span_id, digest, body),
                    )
                    new += max(0, cur.rowcount)
                if not finished:
                    conn.execute("UPDATE otlp_traces SET last_arrival_ms = ? WHERE trace_pk = ?", (now_ms, pk))
                out.append((otel_id, trace_id, finished, new))
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
        plans: list[tuple[int, str, str, str, str, bool, list[DraftEvent]]] = []
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
                todo = [s for s in spans if s.span_id in mine]
                if not todo:
                    continue
                wanted = {s.parent_id for s in todo if s.parent_id} - {s.span_id for s in todo}
                shown = _shown_spans(conn, pk, wanted)  # parents whose events are stored: id → parent id
                drafts: list[DraftEvent] = []
                for span in todo:
                    parent = span.parent_id
                    context = SpanContext(
                        parent_stored=parent is not None and parent in shown,
                        parent_is_root=parent is not None and parent in shown and shown[parent] is None,
                        has_children=parent is None and _has_children(conn, pk, span.span_id),
                    )
                    drafts.extend(build(span, context))
                    shown[span.span_id] = parent
                plans.append((pk, otel_id, str(row[2]), slug, title, int(row[3]) == 0, drafts))
        out: list[Converted] = []
        with self.db.tx() as conn:
            claimed = conn.execute("UPDATE otlp_batches SET converted = 1 WHERE pk = ? AND converted = 0", (batch.pk,))
            if claimed.rowcount != 1:
                return out
            for pk, otel_id, trace_id, slug, title, first, drafts in plans:
                (finished,) = conn.execute("SELECT finished FROM otlp_traces WHERE trace_pk = ?", (pk,)).fetchone()
                if finished:
                    continue
                if first:  # the scenario as the spans name it (the request named it from ids alone)
                    conn.execute(
                        "UPDATE traces SET scenario_slug = ?, scenario_title = ?, scenario_id = ? WHERE pk = ?",
                        (slug, title, scenario_id_for(slug), pk),
                    )
                events = _append(conn, pk, drafts)
                out.append(Converted(otel_id, trace_id, events, complete=_complete(conn, pk)))
        self.pending_spans = max(0, self.pending_spans - batch.spans)
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
            bodies: list[tuple[int, bytes]] = []
            for i in range(0, len(batches), 500):
                chunk = batches[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT pk, body FROM otlp_batches WHERE pk IN ({marks})", chunk).fetchall()
                bodies += sorted((int(b), bytes(body)) for b, body in rows)
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
    ) -> tuple[str, Sequence[Event]] | Literal["finished", "more"]:
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


def _known_spans(conn: Any, pk: int, ids: set[str]) -> dict[str, str | None]:
    """span id → parent id of those of `ids` already stored."""
    found: dict[str, str | None] = {}
    wanted = sorted(ids)
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for span_id, parent_id in conn.execute(
            f"SELECT span_id, parent_id FROM otlp_spans WHERE trace_pk = ? AND span_id IN ({marks})", (pk, *chunk)
        ):
            found[span_id] = parent_id
    return found


def _shown_spans(conn: Any, pk: int, ids: set[str]) -> dict[str, str | None]:
    """span id → parent id of those of `ids` whose events are stored (their batch was converted, or
    they were stored one by one by an earlier version)."""
    found: dict[str, str | None] = {}
    wanted = sorted(ids)
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for span_id, parent_id in conn.execute(
            f"SELECT s.span_id, s.parent_id FROM otlp_spans s LEFT JOIN otlp_batches b ON b.pk = s.batch_pk"
            f" WHERE s.trace_pk = ? AND s.span_id IN ({marks}) AND (s.batch_pk IS NULL OR b.converted = 1)",
            (pk, *chunk),
        ):
            found[span_id] = parent_id
    return found


def _has_children(conn: Any, pk: int, span_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM otlp_spans WHERE trace_pk = ? AND parent_id = ? LIMIT 1", (pk, span_id))
    return row.fetchone() is not None


def _append(conn: Any, pk: int, drafts: Sequence[DraftEvent]) -> StoredEvents:
    """Append events after the trace's last seq, in one statement; the store numbers their steps
    (store/steps.py) and folds them into the trace's counts."""
    (last,) = conn.execute("SELECT max(seq) FROM events WHERE trace_pk = ?", (pk,)).fetchone()
    seq = 0 if last is None else int(last) + 1
    tree = load_step_tree(conn, pk)
    rows: list[EventRow] = []
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
        rows.append((pk, seq, d.ts, kind, d.step_id, step, None if ok is None else int(ok), d.message, payload))
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
    return StoredEvents(rows, drafts)


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
