"""The persistence port: what the API layer needs from a trace store, whatever backs it."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from molar_mcp.models import ArtifactRef, Event, EventsResponse, TraceDetail, TraceListResponse
from molar_mcp.models.rows import EventView, StoredEvents

LOCAL_ORG_ID = "org_local"

# The org the current request acts in. A store that enforces isolation a second time in the database
# (PostgreSQL's row-level security) scopes each transaction to it; unset: work that spans orgs.
_ORG_SCOPE: ContextVar[str | None] = ContextVar("molar_org_scope", default=None)


def current_org_scope() -> str | None:
    return _ORG_SCOPE.get()


def set_org_scope(org_id: str) -> None:
    """Scope the rest of the current task (an HTTP request) to `org_id`."""
    _ORG_SCOPE.set(org_id)


@contextmanager
def org_scope(org_id: str | None) -> Iterator[None]:
    token = _ORG_SCOPE.set(org_id)
    try:
        yield
    finally:
        _ORG_SCOPE.reset(token)


class StoreError(Exception):
    """Base of the errors a store raises; the API maps each subclass to one status code."""


class IngestInterrupted(StoreError, RuntimeError):
    """Storing a trace stopped for a reason of the server's, not of the upload (503): nothing of it was
    stored, and the same upload may be sent again."""


DEFAULT_MAX_TRACE_EVENTS = 1_000_000


def max_trace_events() -> int:
    """The most events one trace may hold: `MOLAR_MAX_TRACE_EVENTS`, else 1,000,000. A bundle or a live
    append past it is refused whole (413), so one producer cannot stall the store."""
    raw = os.environ.get("MOLAR_MAX_TRACE_EVENTS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_TRACE_EVENTS


class TooManyEvents(StoreError):
    """A trace would hold more events than `max_trace_events()` (413)."""

    def __init__(self, count: int, limit: int, *, streamed: bool = False) -> None:
        # A streamed trace is refused as soon as it passes the limit: how many it holds in all is not read.
        held = f"more than {limit:,}" if streamed else f"{count:,}"
        super().__init__(f"a trace holds at most {limit:,} events (MOLAR_MAX_TRACE_EVENTS); this one would hold {held}")
        self.count = count
        self.limit = limit
        self.streamed = streamed

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole (raised in a child process reading a bundle)
        return _too_many_events, (self.count, self.limit, self.streamed)


def _too_many_events(count: int, limit: int, streamed: bool) -> TooManyEvents:
    return TooManyEvents(count, limit, streamed=streamed)


class TraceNotFound(StoreError):
    def __init__(self, trace_ref: str) -> None:
        super().__init__(f"no trace {trace_ref!r}")
        self.trace_ref = trace_ref


class InvalidCursor(StoreError):
    pass


@dataclass(frozen=True)
class TraceQuery:
    """Filters of `GET /v1/traces`. `None` means "not filtered"."""

    scenario_id: str | None = None
    scenario_slug: str | None = None
    status: str | None = None
    source: str | None = None
    signature: str | None = None
    tier: str | None = None
    code_sha: str | None = None
    q: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    flaky: bool | None = None
    newly_failing: bool | None = None
    run_id: str | None = None  # a run's id or short id: only the traces linked to it
    limit: int = 50
    cursor: str | None = None
    row_cursors: bool = False  # also the cursor after each row (`TraceListResponse.row_cursors`)


# An event as its validated fields: a dict with exactly `Event`'s fields, each of its type (what a
# bundle's reader makes of a chunk of lines: a dict each is cheaper to validate into than a model each).
EventFields = dict[str, Any]


class EventChunk(list[Any]):
    """A chunk of `NewTrace.event_chunks` whose reader also gives each event's payload as the store writes
    it (`payload_texts`, in the events' order: the compact JSON text `pydantic_core.to_json` makes of the
    payload, `"{}"` for an empty one), so the store does not serialise the payloads again. A reader sets
    it only where it made exactly that text; None: the store serialises the payloads itself."""

    __slots__ = ("payload_texts",)

    def __init__(self, events: Iterable[Any] = (), payload_texts: list[str] | None = None) -> None:
        super().__init__(events)
        self.payload_texts = payload_texts


def event_ts(event: EventView | EventFields) -> int:
    """The `ts` of an event given as a model (or any `EventView`: a bundle's fast reader gives structs
    with the same attributes) or as its fields."""
    return int(event["ts"]) if isinstance(event, dict) else event.ts


@dataclass
class NewTrace:
    """A complete trace to store in one transaction (a bundle, or a finished run).

    Its events are `events`, or, when `event_chunks` is set, the chunks it yields (models, other
    `EventView`s with the same attributes, or `EventFields`, read once, while the
    store writes them: a streamed bundle is never held whole). A chunk source may raise (a bad line in
    a bundle): the store then stores nothing and lets the error through."""

    scenario_slug: str
    status: str
    scenario_title: str | None = None
    scenario_id: str | None = None
    source: str | None = None
    code_sha: str | None = None
    pr_number: int | None = None
    failure_signature: str | None = None
    created_at: datetime | None = None
    duration_ms: int | None = None
    parent_trace_id: str | None = None
    replay_from_step: int | None = None
    artifacts: list[ArtifactRef] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    event_chunks: Iterable[Sequence[EventView | EventFields]] | None = None
    # Set by the store once the trace is stored: how many events it holds (the chunks of a streamed trace
    # may have been read by another process, which counted them there).
    events_stored: int | None = None


class BlobSink(Protocol):
    def put(self, data: bytes) -> str:
        """Store `data`, return its lowercase hex sha256. Idempotent."""
        ...


class TraceStore(Protocol):
    """The store port. Every call is scoped to one org: no call can see another org's rows."""

    def add_trace(self, org_id: str, trace: NewTrace, blobs: dict[str, bytes]) -> tuple[str, str]:
        """Store a trace, its events and blobs atomically; return `(id, short_id)`."""
        ...

    def list_traces(self, org_id: str, query: TraceQuery) -> TraceListResponse: ...

    def get_trace(self, org_id: str, trace_ref: str) -> TraceDetail:
        """Find by UUID or short id; raise `TraceNotFound` when absent from this org."""
        ...

    def get_trace_with_failures(
        self, org_id: str, trace_ref: str, limit: int
    ) -> tuple[TraceDetail, EventsResponse | None]:
        """`get_trace` and, in the same read, `list_events(ok=False, limit=limit)`; None in its place when
        the trace's events are archived (tier "cold")."""
        ...

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
    ) -> EventsResponse: ...

    def stored_events(self, org_id: str, trace_ref: str, *, limit: int | None = None) -> StoredEvents:
        """The trace's events in seq order (its first `limit` when given) as `StoredEvent`s, for code that
        reads a whole trace (the detectors, diffs); raise `TraceNotFound` when absent from this org."""
        ...

    def get_event(self, org_id: str, trace_ref: str, seq: int) -> Event | None:
        """One event of a trace, whole, by its seq; None when the trace has no such event (raise
        `TraceNotFound` when the trace itself is absent from this org)."""
        ...

    def close(self) -> None: ...
