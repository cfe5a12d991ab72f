"""The live bus across replicas: appends and finishes made through any replica reach the SSE followers
(and through them the MCP resource watchers) of every replica, by PostgreSQL `LISTEN/NOTIFY`.

A notification says which trace and which seqs, one per appended batch; a small batch (what a live run
sends event by event) carries its events too, as stored, so the other replicas publish them without a
read. A bigger batch does not fit a `NOTIFY` payload (8,000 bytes): a replica with followers of that
trace reads those events from the database (they are durable before anything is published) and
publishes them locally. Notifications are sent in order from one connection; a follower that misses one
(a dropped listener connection) catches up from the store when it reconnects with Last-Event-ID, as
after any lag."""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pydantic_core

from molar_mcp.api.bus import LiveBus, Published
from molar_mcp.models import Event
from molar_mcp.models.rows import trusted_event
from molar_mcp.store.db import store_text
from molar_mcp.store.postgres.db import PgDatabase
from molar_mcp.store.sqlite import EVENT_SELECT, event_from_row

log = logging.getLogger("molar_mcp.bus")

CHANNEL = "molar_live"


# A batch of at most this many events travels in its notification when the payload stays within
# INLINE_BYTES (PostgreSQL refuses payloads of 8,000 bytes or more).
INLINE_EVENTS = 50
INLINE_BYTES = 7_500


def event_row(ev: Event) -> list[Any]:
    """An appended event as its notification carries it: its fields, text as the store keeps it."""
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
    """The events a notification carries (sent by a replica, as `_row` made them), else None."""
    if not isinstance(rows, list):
        return None
    try:
        return [trusted_event(*row) for row in rows]
    except TypeError:  # not rows of eight fields: read the events from the database instead
        return None


class PgLiveBus(LiveBus):
    def __init__(self, db: PgDatabase) -> None:
        super().__init__()
        self.db = db
        self.replica = secrets.token_hex(8)
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._sender = threading.Thread(target=self._send_loop, name="molar-notify", daemon=True)
        self._sender.start()

    def publish(self, trace_id: str, message: Published) -> None:
        super().publish(trace_id, message)
        payload: dict[str, Any] = {"r": self.replica, "t": trace_id}
        if message.events:
            payload["a"], payload["b"] = message.events[0].seq, message.events[-1].seq
            if len(message.events) <= INLINE_EVENTS:
                payload["e"] = [event_row(ev) for ev in message.events]
        if message.finished is not None:
            payload["f"] = message.finished
        if not message.events and message.finished is None:
            payload["u"] = 1  # a change with no events (a run's new result): its followers read it again
        text = pydantic_core.to_json(payload).decode()
        if len(text) > INLINE_BYTES and "e" in payload:  # too big to carry: the followers read the events
            del payload["e"]
            text = pydantic_core.to_json(payload).decode()
        self._outbox.put(text)

    def close(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=5)

    def _send_loop(self) -> None:
        while True:
            payload = self._outbox.get()
            if payload is None:
                return
            try:
                with self.db.pool.connection() as conn:
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except Exception:  # the followers elsewhere catch up when they reconnect
                log.warning("could not notify the other replicas of %s", payload, exc_info=True)

    def _events(self, trace_id: str, first: int, last: int) -> list[Event]:
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_SELECT} FROM events WHERE trace_pk = (SELECT pk FROM traces WHERE id = ?)"
                " AND seq >= ? AND seq <= ? ORDER BY seq",
                (trace_id, first, last),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    async def _deliver(self, raw: str) -> None:
        try:
            note = json.loads(raw)
            trace_id = str(note["t"])
        except (ValueError, KeyError, TypeError):
            return
        if note.get("r") == self.replica or not self.readers(trace_id):
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

    async def _listen(self, ready: anyio.Event) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.db.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    ready.set()
                    delay = 0.5
                    async for note in conn.notifies():
                        await self._deliver(note.payload)
            except psycopg.Error:
                log.warning("live bus: the listener connection dropped; reconnecting", exc_info=True)
                ready.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, 10)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Listen for the other replicas' notifications while the server runs."""
        async with anyio.create_task_group() as tg:
            ready = anyio.Event()
            tg.start_soon(self._listen, ready)
            with anyio.move_on_after(10):
                await ready.wait()
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
