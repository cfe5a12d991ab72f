"""Building thousands of models at once without the cyclic garbage collector walking them, and reading
the next chunk of a stream on a second thread while the current one is stored.

Validating a chunk of 2,000 events allocates some 10,000 objects the collector tracks (each model,
its `__dict__`, its fields-set, its payload's dicts). Every 700 of them start a collection, and the
chunk, still alive while it is stored, is walked again and again as it is promoted through the
generations (and every object of the process with it, at each full collection): 40% of a bundle's
ingest CPU went to collections that never found anything to free (bench/README.md, issue 16). Events
hold no reference cycles, so refcounting frees them; `gc_paused` turns the cyclic collector off
while one chunk (or one append batch) is validated, numbered and written, and back on after it.

Pauses are counted across threads: the collector is off while at least one pause is in effect and
on again when the last one ends (if the first found it on). A pause lasts one chunk (tens of
milliseconds); cyclic garbage the process's other threads make meanwhile is collected once no pause is
in effect.

`ReadAhead` runs an iterator of chunks (a bundle's events: decompressed, split and validated) on a
thread of its own, one chunk ahead of its consumer: SQLite releases the GIL while it inserts a chunk,
so the next chunk is read on the other core meanwhile. Same chunks, same order, the same exception
(raised to the consumer where the chunk it broke would have come). No I/O here.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_pause_lock = threading.Lock()
_pauses = 0  # pauses in effect, every thread's
_resume = False  # whether the end of the last pause turns the collector on again


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside the block, back on after it (also on an error) once no
    other pause (of any thread) is in effect. A collector the first pause found off (turned off by
    someone else) is left off."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            if _resume:
                gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


_END, _ITEM, _ERROR = 0, 1, 2


class ReadAhead(Generic[T]):
    """`chunks` iterated on a thread of its own, one chunk ahead of the consumer (each chunk produced with
    the collector paused). Use as a context manager: leaving it (after the last chunk, or early on an
    error of the consumer) stops the thread, closes `chunks` if it can be closed, and waits for it.

        with ReadAhead(chunks) as ahead:
            for chunk in ahead:
                store(chunk)
    """

    def __init__(self, chunks: Iterable[T]) -> None:
        self._source = iter(chunks)
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="molar-read-ahead", daemon=True)

    def __enter__(self) -> ReadAhead[T]:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # a producer waiting to hand a chunk over sees the stop
                self._queue.get(timeout=0.05)
        self._thread.join()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value  # type: ignore[no-any-return]
        self._done = True
        if kind == _ERROR:
            raise value
        raise StopIteration

    def _produce(self) -> None:
        source = self._source
        try:
            while not self._stop.is_set():
                try:
                    with gc_paused():
                        item = next(source)
                except StopIteration:
                    self._hand_over((_END, None))
                    return
                self._hand_over((_ITEM, item))
                del item
        except BaseException as exc:  # raised to the consumer, in its thread
            self._hand_over((_ERROR, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's `finally` (a bundle's archive) runs on the thread that ran it

    def _hand_over(self, message: tuple[int, Any]) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.05)
                return
            except queue.Full:
                continue
