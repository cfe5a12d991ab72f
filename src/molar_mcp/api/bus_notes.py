"""What one process of a server tells the others of every publish on its live bus, so that appends and
finishes made through any process reach the SSE followers (and through them the MCP resource watchers)
of all of them: replicas on PostgreSQL (`LISTEN/NOTIFY`, bus_pg.py) and the workers of one embedded
server (Unix datagrams, bus_peers.py) send the same notes.

A note says which trace and which seqs, one per published batch; a small batch (what a live run sends
event by event) carries its events too, as stored, so the others publish them without a read. A batch
too big for the carrier's message goes without them: a process with followers of that trace reads those
events from the store (they are durable before anything is published) and publishes them locally. Notes
are sent in order from one thread; a follower whose process misses one catches up from the store when it
reconnects with Last-Event-ID, as after any lag."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, ClassVar

import anyio.to_thread
import pydantic_core

from molar_mcp.api.bus import LiveBus, Published
from molar_mcp.models import Event
from molar_mcp.models.rows import trusted_event
from molar_mcp.store.db import Database, store_text
from molar_mcp.store.sqlite import EVENT_SELECT, event_from_row


def event_row(ev: Event) -> list[Any]:
    """An appended event as a note carries it: its fields, text as the store keeps it."""
    step_id, message = ev.step_id, ev.message
    return [
        ev.seq,
        ev.ts,
        store_text(ev.kind),
        None if step_id is None else store_text(step_id),
        ev.step,
        ev.ok,
        None if message is None else store_text(message),
        ev.payload,
    ]


def carried_events(rows: Any) -> list[Event] | None:
    """The events a note carries (as `event_row` made them), else None."""
    if not isinstance(rows, list):
        return None
    try:
        return [trusted_event(*row) for row in rows]
    except TypeError:  # not rows of eight fields: read the events from the store instead
        return None


class NotingLiveBus(LiveBus):
    """A live bus that sends a note of every publish to the server's other processes (`_transmit`, on one
    sender thread, in order) and publishes the notes they send (`_deliver`) to its own followers. A batch
    of at most `inline_events` events is carried while its note stays within `inline_bytes`."""

    inline_events: ClassVar[int]
    inline_bytes: ClassVar[int]
    thread_name: ClassVar[str]

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._sender = threading.Thread(target=self._send_loop, name=self.thread_name, daemon=True)
        self._sender.start()

    def _note(self, trace_id: str) -> dict[str, Any]:
        """A note's first fields (a subclass adds who sends it)."""
        return {"t": trace_id}

    def _is_own(self, note: dict[str, Any]) -> bool:
        """A note this process sent itself (a carrier that echoes them)."""
        return False

    def _has_others(self) -> bool:
        return True

    def _transmit(self, data: bytes) -> None:
        """Send one note to the other processes (on the sender thread)."""
        raise NotImplementedError

    def _stop_sending(self) -> None:
        """The sender thread is done: release what `_transmit` holds."""

    def publish(self, trace_id: str, message: Published) -> None:
        super().publish(trace_id, message)
        if not self._has_others():
            return
        payload = self._note(trace_id)
        if message.events:
            payload["a"], payload["b"] = message.events[0].seq, message.events[-1].seq
            if len(message.events) <= self.inline_events:
                payload["e"] = [event_row(ev) for ev in message.events]
        if message.finished is not None:
            payload["f"] = message.finished
        if not message.events and message.finished is None:
            payload["u"] = 1  # a change with no events (a run's new result): its followers read it again
        data = pydantic_core.to_json(payload)
        if len(data) > self.inline_bytes and "e" in payload:  # too big to carry: the followers read the events
            del payload["e"]
            data = pydantic_core.to_json(payload)
        self._outbox.put(data)

    def close(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=5)

    def _send_loop(self) -> None:
        try:
            while (data := self._outbox.get()) is not None:
                self._transmit(data)
        finally:
            self._stop_sending()

    def _events(self, trace_id: str, first: int, last: int) -> list[Event]:
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_SELECT} FROM events WHERE trace_pk = (SELECT pk FROM traces WHERE id = ?)"
                " AND seq >= ? AND seq <= ? ORDER BY seq",
                (trace_id, first, last),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    async def _deliver(self, raw: str | bytes) -> None:
        try:
            note = json.loads(raw)
            trace_id = str(note["t"])
        except (ValueError, KeyError, TypeError):
            return
        if self._is_own(note) or not self.readers(trace_id):
            return
        if "a" in note:
            events = carried_events(note.get("e"))
            if events is None:
                events = await anyio.to_thread.run_sync(self._events, trace_id, int(note["a"]), int(note["b"]))
            if events:
                super().publish(trace_id, Published(events=events))
        if "f" in note:
            super().publish(trace_id, Published(finished=str(note["f"])))
        if "u" in note:
            super().publish(trace_id, Published())
