"""The analysis of big traces in a worker process, off the serving process's GIL and memory.

Running the detectors over a million events holds the GIL for seconds (most of it reading the rows) and
the rows for as long: every unrelated request waits behind it, and the server's memory grows by the
trace. `AnalysisWorker` runs the same detectors (`debugger.detectors.analyze`) over the same rows
(`TraceStore.stored_events`) in another process, which opens its own connection to the store (SQLite in
WAL mode lets a reader in another process see every committed trace; PostgreSQL is reached by the same
URL) and hands back only the findings; the server stores them exactly as it stores its own.

- One long-lived process (a fresh interpreter, `python -m molar_mcp.api.analysis_worker`: fork + exec is
  safe beside the server's threads, and nothing of the server is imported into it for an analysis;
  api/otlp_finisher.py runs a second one that finishes OTLP traces), started on the first trace of at
  least `min_events` events (smaller traces are analysed in the server: cheaper than the round trip) and
  stopped after `idle_seconds` without work, so its memory goes back to the system too. Traces are
  analysed one at a time, in the order they come.
- A worker that dies mid-analysis (killed, out of memory) is replaced and the analysis run again, up to
  `retries` times; then, or when an analysis outlives `timeout_seconds` (the worker is killed), or when
  the detectors raise, `analyse` raises `AnalysisFailed` naming what happened: never a hang, never lost
  without a word.
- `close` stops the process (asked, then killed); a worker whose server went away stops by itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Final

from molar_mcp.debugger.findings import Finding
from molar_mcp.store.port import TraceNotFound, TraceStore, org_scope

log = logging.getLogger("molar_mcp.api")

# Traces of at least this many events are analysed in the worker (`MOLAR_ANALYSIS_WORKER_EVENTS`).
DEFAULT_MIN_EVENTS: Final = 20_000
DEFAULT_IDLE_SECONDS: Final = 30.0
DEFAULT_TIMEOUT_SECONDS: Final = 600.0
_STOP_WAIT_SECONDS: Final = 5.0


class AnalysisFailed(Exception):
    """The analysis of a trace did not finish; the message says why and what to do."""


@dataclass(frozen=True)
class StoreAddress:
    """Where the worker finds the store: the data dir of the embedded store, or a PostgreSQL URL."""

    data_dir: Path
    database_url: str | None = None

    def open(self) -> TraceStore:
        if self.database_url:
            from molar_mcp.store.postgres import PostgresTraceStore

            return PostgresTraceStore(self.database_url, self.data_dir, pool_min=1, pool_max=1)
        from molar_mcp.store import SqliteTraceStore

        return SqliteTraceStore(self.data_dir)


def min_events_from_env() -> int:
    raw = os.environ.get("MOLAR_ANALYSIS_WORKER_EVENTS")
    return int(raw) if raw else DEFAULT_MIN_EVENTS


class AnalysisWorker:
    """Analyses traces of at least `min_events` events in a worker process (see the module's docstring)."""

    def __init__(
        self,
        address: StoreAddress,
        *,
        min_events: int = DEFAULT_MIN_EVENTS,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        retries: int = 1,
    ) -> None:
        self.address = address
        self.min_events = min_events
        self.idle_seconds = idle_seconds
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        # One analysis at a time (`turn`); held while the worker is started or stopped.
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._idle_timer: threading.Timer | None = None
        self._closed = False
        self.started = 0  # worker processes started so far
        self.busy_pid: int | None = None  # the worker's pid while it holds a task not yet answered
        self.answered = 0  # analyses the worker answered

    def wanted(self, event_count: int) -> bool:
        """Whether a trace of `event_count` events is analysed in the worker."""
        return event_count >= self.min_events

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for the worker's turn (the analyses before this one done) and keep it: a caller can then
        look whether its analysis is still needed (another request may have just stored it) before
        `analyse`, which runs within the turn."""
        with self._lock:
            yield

    def analyse(self, org_id: str, trace_id: str, status: str | None) -> list[Finding]:
        """The findings of `analyze(store.stored_events(org_id, trace_id), status)`, made in the worker.
        Blocking (call it from a worker thread). Raises `TraceNotFound` or `AnalysisFailed`."""
        findings: list[Finding] = self._call((org_id, trace_id, status), f"the analysis of trace {trace_id!r}")
        return findings

    def finish_otel(self, org_id: str, otel_trace_id: str, status: str | None) -> tuple[str, str, bool] | None:
        """`api.otlp.finish_here` on the OTel trace, run in the worker (api/otlp_finisher.py): the trace's
        id, its status, and whether no follower saw its events live; None when another caller finished it
        first. Blocking. Raises `AnalysisFailed` when the worker died or hung (the trace is then unfinished:
        each finish is one transaction)."""
        done: tuple[str, str, bool] | None = self._call(
            ("finish", (org_id, otel_trace_id, status)), f"the finish of OTLP trace {otel_trace_id!r}"
        )
        return done

    def warm(self) -> None:
        """Start the worker (when it is not running) and have it ready the OTLP finish (its imports, its
        context), so the first finish does not wait for them. Blocking. Raises `AnalysisFailed`."""
        self._call(("warm",), "starting the worker")

    def _call(self, task: tuple[Any, ...], what: str) -> Any:
        with self._lock:
            if self._closed:
                raise AnalysisFailed(f"the server is shutting down; {what} was not run")
            self._cancel_idle_timer()
            try:
                return self._run(task, what)
            finally:
                if not self._closed:
                    self._idle_timer = threading.Timer(self.idle_seconds, self._retire_if_idle)
                    self._idle_timer.daemon = True
                    self._idle_timer.start()

    def _run(self, task: tuple[Any, ...], what: str) -> Any:
        deaths: list[str] = []
        while True:
            conn, process = self._ready()
            reply: Any = None
            try:
                conn.send(task)
                self.busy_pid = process.pid
                if wait([conn], timeout=self.timeout_seconds):
                    reply = conn.recv()
                else:  # no answer in time: stuck or too slow
                    self._forget()
                    raise AnalysisFailed(
                        f"{what} took longer than {self.timeout_seconds:g} s; its worker process was stopped. "
                        + _again(task)
                    )
            except (EOFError, OSError):
                pass  # the worker is gone (the pipe closed): a death, seen below
            finally:
                self.busy_pid = None
            if reply is not None:
                outcome, value = reply
                self.answered += 1
                if outcome == "ok":
                    return value
                if outcome == "missing":
                    raise TraceNotFound(value)
                if task[0] == "finish":
                    raise AnalysisFailed(f"{what} failed: {value}")
                raise AnalysisFailed(f"the detectors failed on trace {task[1]!r}: {value}")
            try:
                code: int | None = process.wait(_STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:  # the pipe broke but the process lives on: end it
                code = None
            deaths.append(_exit_text(code))
            self._forget()
            log.error("the analysis worker died (%s) during %s", deaths[-1], what)
            if self._closed:
                raise AnalysisFailed(f"the server is shutting down; {what} was not finished")
            if len(deaths) > self.retries:
                raise AnalysisFailed(
                    f"{what} did not finish: its worker process died ({', then '.join(deaths)}). " + _again(task)
                )

    def _ready(self) -> tuple[Connection, subprocess.Popen[bytes]]:
        if self._process is not None and self._conn is not None and self._process.poll() is None:
            return self._conn, self._process
        self._forget()
        parent, child = multiprocessing.Pipe()
        try:
            # A fresh interpreter (fork + exec: safe beside the server's threads) running this module.
            process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [sys.executable, "-m", "molar_mcp.api.analysis_worker", str(child.fileno())],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            child.close()
        with contextlib.suppress(OSError):  # it died at once: seen as a death when its task is sent
            parent.send((str(self.address.data_dir), self.address.database_url))
        self._process, self._conn = process, parent
        self.started += 1
        return parent, process

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process, self._conn = None, None

    def _stop(self) -> None:
        process, conn = self._process, self._conn
        if process is None:
            return
        if conn is not None:
            try:
                conn.send(None)  # finish and exit
                process.wait(_STOP_WAIT_SECONDS)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self._forget()  # killed, if it has not exited

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _retire_if_idle(self) -> None:
        """The idle timer's end: stop the worker unless an analysis is running (then it starts a new timer)."""
        if self._lock.acquire(blocking=False):
            try:
                self._stop()
            finally:
                self._lock.release()

    def stop(self) -> None:
        """Stop the worker process now (the next analysis starts another): at the end of a server's
        lifespan, which can be the process's last act (uvicorn re-raises SIGTERM once it has shut down)."""
        self._cancel_idle_timer()
        if not self._lock.acquire(timeout=_STOP_WAIT_SECONDS):
            process = self._process
            if process is not None:
                process.kill()  # an analysis is running: it sees the death (and gives up once closed)
            self._lock.acquire()
        try:
            self._stop()
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the worker and start no other; an analysis still running ends with `AnalysisFailed`."""
        self._closed = True
        self.stop()


def _again(task: tuple[Any, ...]) -> str:
    """What happens to a task that did not finish."""
    if task[0] == "finish":
        return "the server finishes the trace itself"
    return "POST /v1/traces/{id}/analyze runs it again"


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit status {code}"


# ---- in the worker process --------------------------------------------------------------------------


def serve_analyses(conn: Connection) -> None:
    """The worker's loop. First in: `(data_dir, database_url)`, the store to open; then a task
    `(org_id, trace_id, status)` (or an OTLP finish, `("finish", (org_id, otel_trace_id, status))`) in,
    `("ok", findings or what the finish did)`, `("missing", id)` or `("error", text)` out; `None`
    or a closed pipe ends it. It also ends when its parent is gone."""
    from molar_mcp.api.memory import release_memory
    from molar_mcp.debugger.detectors import analyze

    parent = os.getppid()
    threading.Thread(target=_exit_without_parent, args=(parent,), daemon=True).start()
    data_dir, database_url = conn.recv()
    store = StoreAddress(Path(data_dir), database_url).open()
    finisher: Any = None  # made on the first OTLP finish
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            reply: tuple[str, Any]
            try:
                if task[0] in ("finish", "warm"):  # an OTLP trace's finish (api/otlp_finisher.py)
                    if finisher is None:
                        from molar_mcp.api.otlp_finisher import FinishHere

                        finisher = FinishHere(store)
                    reply = ("ok", finisher.finish(*task[1]) if task[0] == "finish" else None)
                else:
                    org_id, trace_id, status = task
                    with org_scope(org_id):
                        reply = ("ok", analyze(store.stored_events(org_id, trace_id), status))
            except TraceNotFound as exc:
                reply = ("missing", exc.trace_ref)
            except Exception as exc:  # the parent says so to its caller (the detectors are deterministic)
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except (BrokenPipeError, OSError):
                return
            del reply
            release_memory()  # the rows are freed: hand the heap back while waiting for the next trace
    finally:
        if finisher is not None:
            finisher.close()
        store.close()


def _exit_without_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


if __name__ == "__main__":
    serve_analyses(Connection(int(sys.argv[1])))
