"""The live bus across replicas on PostgreSQL: every replica's notes (bus_notes.py) go to the others by
`LISTEN/NOTIFY`, sent in order from one connection. A notification's payload must stay under 8,000
bytes, so only small batches travel with their events; a follower that misses one (a dropped listener
connection) catches up from the store when it reconnects with Last-Event-ID."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg

from molar_mcp.api.bus_notes import NotingLiveBus
from molar_mcp.store.postgres.db import PgDatabase

log = logging.getLogger("molar_mcp.bus")

CHANNEL = "molar_live"


class PgLiveBus(NotingLiveBus):
    # PostgreSQL refuses payloads of 8,000 bytes or more.
    inline_events = 50
    inline_bytes = 7_500
    thread_name = "molar-notify"

    def __init__(self, db: PgDatabase) -> None:
        self.pg = db
        self.replica = secrets.token_hex(8)
        super().__init__(db)

    def _note(self, trace_id: str) -> dict[str, Any]:
        return {"r": self.replica, "t": trace_id}

    def _is_own(self, note: dict[str, Any]) -> bool:
        return bool(note.get("r") == self.replica)

    def _transmit(self, data: bytes) -> None:
        try:
            with self.pg.pool.connection() as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, data.decode()))
        except Exception:  # the followers elsewhere catch up when they reconnect
            log.warning("could not notify the other replicas of %s", data, exc_info=True)

    async def _listen(self, ready: anyio.Event) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.pg.url, autocommit=True) as conn:
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
