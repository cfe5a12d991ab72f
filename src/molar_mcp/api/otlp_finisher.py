"""The finish of big OTLP traces in worker processes, so another core takes it.

Finishing an OTel trace (api/otlp.py `finish_here`: lay its events out in span-tree order, run the
detectors, close it, store the analysis) is most of the CPU an OTLP span costs, and it ran in the serving
process, one trace after another, holding the GIL the exports' answers wait for. A trace of at least
`min_spans` spans (`MOLAR_OTLP_FINISH_WORKER_SPANS`, default 1,000) is now finished by the same code in the
worker process of api/analysis_worker.py (a fresh interpreter with its own connection to the store: SQLite
in WAL mode, or PostgreSQL by the same URL): the server hands it the trace's ids and goes on taking and
reading exports meanwhile; it only tells the trace's followers what the finish did. Smaller traces (a live
agent run's) are finished in the server: cheaper than the round trip.

Finishes are handed over in the order they come to the first free of `processes` workers
(`MOLAR_OTLP_FINISH_WORKERS`; default: the cores but one, at most 2), one thread waiting on each; the callers
wait on their futures, not on threads. The first export of a full SDK batch (512 spans) starts them, so
the first big trace does not wait for their start-up. A finish is one transaction: a worker that dies or
hangs (twice) leaves the trace unfinished, and the server then finishes it itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, TypeVar

from molar_mcp.api.analysis_worker import DEFAULT_IDLE_SECONDS, AnalysisFailed, AnalysisWorker, StoreAddress

log = logging.getLogger("molar_mcp.api")
T = TypeVar("T")

if TYPE_CHECKING:
    from molar_mcp.api.context import ApiContext
    from molar_mcp.store.otlp import OtlpTraces
    from molar_mcp.store.port import TraceStore

DEFAULT_MIN_SPANS: Final = 1_000
DEFAULT_TIMEOUT_SECONDS: Final = 600.0
# Finishes at once: one core is left to the serving process (on 2 cores, one finisher; at most 2: each
# finish is one transaction, so their writes still take turns).
DEFAULT_PROCESSES: Final = max(1, min(2, (os.cpu_count() or 2) - 1))
WARM_SPANS: Final = 512  # an export this big (the SDK's full batch) has the worker started ahead


def min_spans_from_env() -> int:
    raw = os.environ.get("MOLAR_OTLP_FINISH_WORKER_SPANS")
    return int(raw) if raw else DEFAULT_MIN_SPANS


def processes_from_env() -> int:
    raw = os.environ.get("MOLAR_OTLP_FINISH_WORKERS")
    return max(1, int(raw)) if raw else DEFAULT_PROCESSES


class OtlpFinisher:
    """Finishes OTel traces of at least `min_spans` spans in `processes` worker processes (see the
    module's docstring)."""

    def __init__(
        self,
        address: StoreAddress,
        *,
        min_spans: int = DEFAULT_MIN_SPANS,
        processes: int = DEFAULT_PROCESSES,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.min_spans = min_spans
        self.workers = [
            AnalysisWorker(address, idle_seconds=idle_seconds, timeout_seconds=timeout_seconds)
            for _ in range(max(1, processes))
        ]
        self._free: queue.SimpleQueue[AnalysisWorker] = queue.SimpleQueue()  # workers with no finish now
        for worker in self.workers:
            self._free.put(worker)
        self._handing = ThreadPoolExecutor(max_workers=len(self.workers), thread_name_prefix="otlp-finisher")
        self._warming = False
        self._handed: set[tuple[str, str]] = set()  # (org, OTel trace id) handed over, not answered yet
        self.finished = 0  # traces the workers finished

    def _on_a_free_worker(self, call: Callable[[AnalysisWorker], T]) -> T:
        worker = self._free.get()
        try:
            return call(worker)
        finally:
            self._free.put(worker)

    def warm(self) -> None:
        """Have the workers started and ready before the first big trace completes (not blocking): an
        export of a full SDK batch calls it. Nothing when they run already or are being started."""
        if self._warming or all(w.pid is not None for w in self.workers):
            return
        self._warming = True
        waiting = [self._handing.submit(self._on_a_free_worker, _warm) for _ in self.workers]
        waiting[-1].add_done_callback(lambda _: setattr(self, "_warming", False))

    def wanted(self, otlp: OtlpTraces, org_id: str, otel_trace_id: str) -> bool:
        """Whether this trace is finished in a worker (blocking: one indexed count)."""
        return otlp.span_count(org_id, otel_trace_id) >= self.min_spans

    async def finish(self, org_id: str, otel_trace_id: str, status: str | None) -> tuple[str, str, bool] | None:
        """`AnalysisWorker.finish_otel` on the first worker free, in the order they are handed over; None
        at once when this trace's finish is handed over already (the converter reads on meanwhile, and may
        find the trace complete again before it is finished). Raises `AnalysisFailed`."""
        key = (org_id, otel_trace_id)
        if key in self._handed:
            return None
        self._handed.add(key)

        def there(worker: AnalysisWorker) -> tuple[str, str, bool] | None:
            return worker.finish_otel(org_id, otel_trace_id, status)

        try:
            done = await asyncio.wrap_future(self._handing.submit(self._on_a_free_worker, there))
        finally:
            self._handed.discard(key)
        if done is not None:
            self.finished += 1
        return done

    def close(self) -> None:
        """Stop the workers; finishes not handed over yet are dropped (their traces stay open: the next
        server's sweeper finishes them)."""
        self._handing.shutdown(wait=False, cancel_futures=True)
        for worker in self.workers:
            worker.close()


def _warm(worker: AnalysisWorker) -> None:
    try:
        worker.warm()
    except AnalysisFailed as exc:  # the first finish starts it again (or the server finishes the trace)
        log.error("an OTLP finisher did not start: %s", exc)


class FinishHere:
    """In the worker process: the server's own finish (`api.otlp.finish_here`) over this process's
    connection to the store."""

    def __init__(self, store: TraceStore) -> None:
        from molar_mcp.api.context import ApiContext
        from molar_mcp.api.memory import settle_heap

        self.ctx: ApiContext = ApiContext.embedded(store)  # type: ignore[arg-type]
        settle_heap()  # as `serve` does: its start-up's objects out of the collector's sight (api/memory.py)

    def finish(self, org_id: str, otel_trace_id: str, status: str | None) -> tuple[str, str, bool] | None:
        from molar_mcp.api.otlp import finish_here

        done = finish_here(self.ctx, org_id, otel_trace_id, status)
        if done is None:
            return None
        trace_id, final, unseen = done
        return trace_id, final, bool(unseen)

    def close(self) -> None:
        if self.ctx.replays is not None:
            self.ctx.replays.close()
