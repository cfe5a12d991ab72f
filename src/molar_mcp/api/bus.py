"""In-process fan-out of appended events to live readers (SSE streams) of one trace.

Publishing never blocks the writer: a reader that falls `BUFFER` batches behind is marked lagged and
dropped, and its stream catches up from the store (events are durable before they are published).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from molar_mcp.models import Event

BUFFER = 256


@dataclass(frozen=True)
class Published:
    """A batch of stored events, or the trace's end (`finished` with its final status)."""

    events: Sequence[Event] = ()
    finished: str | None = None


@dataclass
class Subscription:
    stream: MemoryObjectReceiveStream[Published]
    lagged: bool = False


@dataclass
class LiveBus:
    _readers: dict[str, list[tuple[MemoryObjectSendStream[Published], Subscription]]] = field(default_factory=dict)

    @contextmanager
    def subscribe(self, trace_id: str) -> Iterator[Subscription]:
        send, receive = anyio.create_memory_object_stream[Published](max_buffer_size=BUFFER)
        sub = Subscription(receive)
        entry = (send, sub)
        self._readers.setdefault(trace_id, []).append(entry)
        try:
            yield sub
        finally:
            readers = self._readers.get(trace_id, [])
            if entry in readers:
                readers.remove(entry)
            if not readers:
                self._readers.pop(trace_id, None)
            send.close()
            receive.close()

    def publish(self, trace_id: str, message: Published) -> None:
        for send, sub in list(self._readers.get(trace_id, [])):
            try:
                send.send_nowait(message)
            except anyio.WouldBlock:
                sub.lagged = True
                send.close()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    def readers(self, trace_id: str) -> int:
        return len(self._readers.get(trace_id, []))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """What the bus runs while the server does (nothing in one process; see bus_pg.py)."""
        yield

    def close(self) -> None:
        pass
