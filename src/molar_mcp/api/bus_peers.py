"""The live bus across the worker processes of one `serve --workers N` on the embedded store: appends and
finishes made through any worker reach the SSE followers (and through them the MCP resource watchers) of
every worker, by Unix datagrams between the workers.

Each worker binds `bus-<index>.sock` in the workers' run directory and sends every note to the others'
sockets. A note (bus_notes.py) says which trace and which seqs, with the events themselves when they
fit a datagram (`inline_bytes`), else the other workers read them from the store
(durable before anything is published). Notes are sent in order from one thread per worker; a worker
that is not listening (starting, or gone) misses notes, and its followers catch up from the store when
they reconnect with Last-Event-ID, as after any lag."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from molar_mcp.api.bus_notes import NotingLiveBus
from molar_mcp.store.db import Database

log = logging.getLogger("molar_mcp.bus")


def bus_socket(run_dir: Path, index: int) -> Path:
    return run_dir / f"bus-{index}.sock"


class PeerLiveBus(NotingLiveBus):
    """Worker `index` of `workers`, all with their sockets in `run_dir`, reading events from `db`."""

    # A note stays one datagram well under the default socket buffer (net.core.wmem_default, ~208 KiB).
    inline_events = 500
    inline_bytes = 60_000
    thread_name = "molar-peers"

    def __init__(self, db: Database, run_dir: Path, index: int, workers: int) -> None:
        self.index = index
        self._peers = [bus_socket(run_dir, i) for i in range(workers) if i != index]
        self._path = bus_socket(run_dir, index)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        super().__init__(db)

    def _has_others(self) -> bool:
        return bool(self._peers)

    def _transmit(self, data: bytes) -> None:
        for peer in self._peers:
            try:
                self._sock.sendto(data, str(peer))
            except (FileNotFoundError, ConnectionRefusedError):  # not listening yet, or gone
                log.debug("worker bus %s is not listening", peer)
            except OSError:
                log.warning("could not tell worker bus %s of an append", peer, exc_info=True)

    def _stop_sending(self) -> None:
        self._sock.close()

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
