"""The live bus across the worker processes of one `serve --workers N` on the embedded store: appends and
finishes made through any worker reach the SSE followers (and through them the MCP resource watchers) of
every worker, by Unix datagrams between the workers.

Each worker binds `bus-<index>.sock` in the workers' run directory and sends every note to the others'
sockets. A note is what the PostgreSQL bus sends (bus_pg.py): which trace and which seqs, the events
themselves when they fit a datagram (`INLINE_BYTES`), else the other workers read them from the store
(durable before anything is published). Notes are sent in order from one thread per worker; a worker
that is not listening (starting, or gone) misses notes, and its followers catch up from the store when
they reconnect with Last-Event-ID, as after any lag."""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pydantic_core

from molar_mcp.api.bus import LiveBus, Published
from molar_mcp.api.bus_pg import carried_events, event_row
from molar_mcp.models import Event
from molar_mcp.store.db import Database
from molar_mcp.store.sqlite import EVENT_SELECT, event_from_row

log = logging.getLogger("molar_mcp.bus")

# A note stays one datagram well under the default socket buffer (net.core.wmem_default, ~208 KiB).
INLINE_BYTES = 60_000
INLINE_EVENTS = 500


def bus_socket(run_dir: Path, index: int) -> Path:
    return run_dir / f"bus-{index}.sock"


class PeerLiveBus(LiveBus):
    """Worker `index` of `workers`, all with their sockets in `run_dir`, reading events from `db`."""

    def __init__(self, db: Database, run_dir: Path, index: int, workers: int) -> None:
        super().__init__()
        self.db = db
        self.index = index
        self._peers = [bus_socket(run_dir, i) for i in range(workers) if i != index]
        self._path = bus_socket(run_dir, index)
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._sender = threading.Thread(target=self._send_loop, name="molar-peers", daemon=True)
        self._sender.start()

    def publish(self, trace_id: str, message: Published) -> None:
        super().publish(trace_id, message)
        if not self._peers:
            return
        payload: dict[str, Any] = {"t": trace_id}
        if message.events:
            payload["a"], payload["b"] = message.events[0].seq, message.events[-1].seq
            if len(message.events) <= INLINE_EVENTS:
                payload["e"] = [event_row(ev) for ev in message.events]
        if message.finished is not None:
            payload["f"] = message.finished
        if not message.events and message.finished is None:
            payload["u"] = 1  # a change with no events (a run's new result): its followers read it again
        data = pydantic_core.to_json(payload)
        if len(data) > INLINE_BYTES and "e" in payload:  # too big to carry: the followers read the events
            del payload["e"]
            data = pydantic_core.to_json(payload)
        self._outbox.put(data)

    def close(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=5)

    def _send_loop(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            while True:
                data = self._outbox.get()
                if data is None:
                    return
                for peer in self._peers:
                    try:
                        sock.sendto(data, str(peer))
                    except (FileNotFoundError, ConnectionRefusedError):  # not listening yet, or gone
                        log.debug("worker bus %s is not listening", peer)
                    except OSError:
                        log.warning("could not tell worker bus %s of an append", peer, exc_info=True)

    def _events(self, trace_id: str, first: int, last: int) -> list[Event]:
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_SELECT} FROM events WHERE trace_pk = (SELECT pk FROM traces WHERE id = ?)"
                " AND seq >= ? AND seq <= ? ORDER BY seq",
                (trace_id, first, last),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    async def _deliver(self, raw: bytes) -> None:
        try:
            note = json.loads(raw)
            trace_id = str(note["t"])
        except (ValueError, KeyError, TypeError):
            return
        if not self.readers(trace_id):
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

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Receive the other workers' notes while the server runs."""
        self._path.unlink(missing_ok=True)
        sock = await anyio.create_unix_datagram_socket(local_path=self._path)

        async def listen() -> None:
            async for raw, _ in sock:
                await self._deliver(raw)

        async with sock, anyio.create_task_group() as tg:
            tg.start_soon(listen)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
