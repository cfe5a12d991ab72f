"""`ReplayService`: validate, queue and run Layer 2 replays, a per-org concurrency limit with a
FIFO queue shared by every replica, and the trace diff and promote-fix beside them.

The queue is the store's `replays` table (store/replays.py): a request checks everything the caller can
get wrong, then inserts a `queued` row. Each replica runs one worker thread that claims rows (the oldest
first, at most `per_org_limit` of an org running at once across replicas), renews the lease of each
replay it runs, and starts the next as soon as one finishes or a request arrives. A replay is rebuilt
from its row on the replica that claims it (the same checks run again there), so any replica can run
any replay; replicas must therefore share the replay configuration (`--demo`, `--replay-root`). A
replica killed mid-replay stops renewing: once its lease runs out another replica runs the replay from
the start (at most `max_attempts` times in all), and the first holder's writes are refused meanwhile, so
one replay never runs on two replicas at once for longer than a lease.

Execution: each replay runs in its own worker thread, in its own event loop (`anyio.run`). That works
the same under uvicorn, in stdio mode and in in-process tests, needs no lifespan hook, and a slow app
start never blocks the API's loop. `close()` stops the worker, fails the replays this replica queued
that nobody claimed, cancels what runs here (its app is stopped, its copy removed) and joins the
threads; the composition root calls it on shutdown.

Everything the caller can get wrong is checked before a replay is queued (trace tier, a recorded
scenario, `from_step`, the state before it, every diff), so those are errors of the request (409/422),
not replays that fail later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from molar_mcp.ingest.bundle import BundleError
from molar_mcp.ingest.formats.agent_spans import run_status, trace_events
from molar_mcp.ingest.formats.otlp import (
    OtlpDecodeError,
    SpanRecord,
    TooManySpans,
    decode_json,
    decode_protobuf,
    decode_spans,
)
from molar_mcp.ingest.playwright import read_playwright_trace
from molar_mcp.ingest.results import TestResultInfo
from molar_mcp.models import ArtifactRef, Event, TraceDetail
from molar_mcp.models.diffs import DiffDimension, TraceDiff
from molar_mcp.models.replays import (
    FINAL_REPLAY_STATES,
    PromoteFixRequest,
    PromoteFixResult,
    ReplayErrorCode,
    ReplayList,
    ReplayOrigin,
    ReplayRequest,
    ReplayStatus,
)
from molar_mcp.models.rows import StoredEvent, StoredEvents
from molar_mcp.replay.apps import AppConfig, AppError, AppStartError, DiffDoesNotApply
from molar_mcp.replay.diff import diff_traces
from molar_mcp.replay.drivers import command as command_driver
from molar_mcp.replay.drivers import playwright as playwright_driver
from molar_mcp.replay.drivers.project import (
    ProjectRun,
    WorktreeError,
    check_edits,
    log_tail,
    run_in_tree,
    run_trace,
    with_edits,
)
from molar_mcp.replay.edits import check_source_diffs, edited_scenario
from molar_mcp.replay.execute import ReplayPlan, ReplayRun, run_replay
from molar_mcp.replay.inside import PHASE_PREFIX, InsidePlan, InsideResult
from molar_mcp.replay.projects import NotRegistered, Project, ReplayRoots, resolve_commit
from molar_mcp.replay.promote import promote_fix
from molar_mcp.replay.recording import AppLauncher, Blob, new_trace, scenario_blob, store_recorded
from molar_mcp.replay.runner import TraceStateError, variables_before
from molar_mcp.replay.sandbox import Bind, Sandbox, SandboxResult, SandboxUnavailable, runtime_paths
from molar_mcp.replay.scenario import Scenario, ScenarioError
from molar_mcp.store.port import NewTrace, StoreError, TraceNotFound, TraceStore, org_scope
from molar_mcp.store.replays import LeaseLost, ReplayNotFound, ReplayRecord, ReplayStore, now_ms, replica_name

log = logging.getLogger("molar_mcp.replay")

STORE_POLL_S = 0.5  # a long poll on a replay another replica runs reads the store this often
EVENTS_PAGE = 1000
MAX_EVENTS = 50_000
MAX_RESULT_BYTES = 64 * 1024 * 1024  # a sandboxed run's result file; larger is a failed replay
LOG_TAIL_CHARS = 4000


class ReplayRefused(Exception):
    """A replay request that cannot be queued; the API maps each subclass to one status."""


class TraceNotHot(ReplayRefused):
    """409: Layer 2 replay needs the source trace in the hot tier."""


class NotReplayable(ReplayRefused):
    """422: the trace was not recorded from a scenario this server can run."""


class InvalidReplay(ReplayRefused):
    """422: from_step, the scenario after its diff, or the state before from_step is not usable."""


class ReplaysUnavailable(ReplayRefused):
    """503: the sandbox replays need is missing or broken here (the message says what to install)."""


class QueueFull(ReplayRefused):
    """429: the org's replay queue is full."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ReplayNotDone(ReplayRefused):
    """409: promote-fix needs a replay that succeeded with source diffs."""


@dataclass(frozen=True)
class ReplaySettings:
    per_org_limit: int = 10  # replays of one org running at once, across replicas
    max_queued_per_org: int = 100
    timeout_s: float = 300.0
    close_timeout_s: float = 20.0
    replica_limit: int = 20  # replays running at once on this replica, all orgs
    lease_s: float = 30.0  # a running replay's lease; renewed every third of it
    poll_s: float = 1.0  # how often an idle worker looks for replays queued by other replicas
    max_attempts: int = 3  # runs of one replay whose replica died before it finished
    diff_max_events: int = MAX_EVENTS  # events of each trace a diff compares; past them it says `truncated`

    @classmethod
    def from_env(cls) -> ReplaySettings:
        """The defaults, with `MOLAR_REPLAY_LEASE_SECONDS` and `MOLAR_REPLAY_POLL_SECONDS` when set."""
        lease = float(os.environ.get("MOLAR_REPLAY_LEASE_SECONDS") or cls.lease_s)
        poll = float(os.environ.get("MOLAR_REPLAY_POLL_SECONDS") or cls.poll_s)
        if not (0 < lease <= 3600 and 0 < poll <= 60):
            raise ValueError("MOLAR_REPLAY_LEASE_SECONDS must be in (0, 3600] and MOLAR_REPLAY_POLL_SECONDS in (0, 60]")
        return cls(lease_s=lease, poll_s=poll)


@dataclass(frozen=True)
class _ProjectJob:
    project: Project
    origin: ReplayOrigin
    commit: str
    parent: TraceDetail


@dataclass
class _Job:
    id: str
    org_id: str
    plan: ReplayPlan
    app: AppConfig
    scenario_text: str
    source_diffs: list[tuple[str, str]]
    code_sha: str | None
    project: _ProjectJob | None = None
    label: str = ""  # the replay's `app`: the app's name, or "<kind>:<project>"
    loop: asyncio.AbstractEventLoop | None = None
    scope: anyio.CancelScope | None = None


@dataclass
class _Slot:
    """A replay this replica claimed: its job once rebuilt from the row, and whether the lease was lost."""

    id: str
    org_id: str
    job: _Job | None = None
    lost: bool = False
    thread: threading.Thread | None = None


class ReplayService:
    def __init__(
        self,
        store: TraceStore,
        replays: ReplayStore,
        apps: Mapping[str, AppConfig],
        *,
        settings: ReplaySettings | None = None,
        launcher: AppLauncher | None = None,
        workdir: Path | None = None,
        sandbox: Sandbox | None = None,
        hide: Sequence[Path] = (),
        roots: ReplayRoots | None = None,
    ) -> None:
        self.store = store
        self.replays = replays
        self.apps = dict(apps)
        self.settings = settings or ReplaySettings()
        # `launcher` runs the app in this process, unsandboxed: only tests of the replay logic hand one in.
        # Every other replay runs in the bubblewrap sandbox (`sandbox`, found on first use).
        self._launch = launcher
        self._workdir = workdir
        self._sandbox = sandbox
        self._hide = list(hide)
        self.roots = roots or ReplayRoots()
        self.replica = replica_name()
        self._lock = threading.Lock()
        self._claim_lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._phases: dict[str, str] = {}
        self._wake = threading.Event()
        self._worker: threading.Thread | None = None
        self._closing = False

    def sandbox(self) -> Sandbox:
        """The sandbox replays run in; raises ReplaysUnavailable (with what to install) when there is none."""
        if self._sandbox is None:
            try:
                found = Sandbox.find(hide=self._hide)
            except SandboxUnavailable as exc:
                raise ReplaysUnavailable(str(exc)) from None
            with self._lock:
                self._sandbox = self._sandbox or found
        return self._sandbox

    # ---- requests -----------------------------------------------------------------------------

    def enqueue(self, org_id: str, trace_ref: str, request: ReplayRequest) -> ReplayStatus:
        """Check the request and queue the replay. Raises TraceNotFound, ReplayRefused subclasses, or
        DiffDoesNotApply (naming the diff, the file and the hunk)."""
        detail = self.store.get_trace(org_id, trace_ref)
        job = self._prepare(org_id, detail, request)
        self._check_queue(org_id)
        record = self.replays.create(
            org_id,
            trace_id=detail.id,
            from_step=request.from_step,
            triggered_via=request.triggered_via,
            app=job.label,
            scenario_diff=request.edits.scenario_diff,
            source_diffs=job.source_diffs,
            message="queued",
            owner=self.replica,
        )
        self.start()
        self._fill_slots()  # start it now when a slot is free: no wait for the worker's next round
        return self.status(org_id, record.id)

    def _prepare(self, org_id: str, detail: TraceDetail, request: ReplayRequest) -> _Job:
        """The replay `request` of trace `detail`, checked and planned (its id is set once queued)."""
        if detail.tier != "hot":
            raise TraceNotHot(
                f"trace {detail.short_id} is in the {detail.tier} tier; Layer 2 replay needs a hot trace: "
                f"restore it first (POST /v1/traces/{detail.short_id}/restore)"
            )
        recorded = self.replays.scenario_of(org_id, detail.id)
        if recorded is None and (origin := self.replays.origin_of(org_id, detail.id)) is not None:
            return self._prepare_project(org_id, detail, origin, request)
        if recorded is None:
            raise NotReplayable(
                f"trace {detail.short_id} was not recorded from a scenario this server can run, and names no "
                "repository and commit (an ingested bundle holds events only); replay works on traces of a "
                "registered project (a Playwright test, a command) and on traces recorded by `molar-mcp demo`"
            )
        app = self.apps.get(recorded.app or "")
        if app is None:
            known = ", ".join(sorted(self.apps)) or "none"
            hint = (
                "; the demo shop is replayable when the server runs with --demo" if recorded.app == "demo-shop" else ""
            )
            raise NotReplayable(
                f"trace {detail.short_id} runs app {recorded.app!r}, which is not configured (known: {known}){hint}"
            )
        try:
            scenario, text = edited_scenario(recorded.scenario_text, request.edits.scenario_diff)
        except ScenarioError as exc:
            raise InvalidReplay(f"the scenario after scenario_diff is not valid: {exc}") from exc
        if request.from_step > len(scenario.steps):
            raise InvalidReplay(
                f"from_step {request.from_step} is past the last step of {scenario.slug} ({len(scenario.steps)})"
            )
        events, _ = self._events(org_id, detail.id)
        try:
            recorded_variables = variables_before(events, request.from_step)
        except TraceStateError as exc:
            raise InvalidReplay(str(exc)) from exc
        diffs = [(d.path, d.diff) for d in request.edits.source_diffs]
        check_source_diffs(app.source_dir, diffs)
        if self._launch is None:
            self.sandbox()
        plan = ReplayPlan(
            parent_id=detail.id,
            parent_short_id=detail.short_id,
            from_step=request.from_step,
            scenario=scenario,
            recorded_variables=recorded_variables,
            source_diff_paths=[path for path, _ in diffs],
            scenario_edited=bool(request.edits.scenario_diff),
        )
        code_sha = detail.code_sha if not diffs else None
        return _Job("", org_id, plan, app, text, diffs, code_sha, label=app.name)

    def _prepare_project(self, org_id: str, detail: TraceDetail, origin: ReplayOrigin, request: ReplayRequest) -> _Job:
        """A trace of a registered project: everything is checked against the recorded commit first."""
        if request.edits.scenario_diff:
            raise InvalidReplay(
                "scenario_diff edits a recorded scenario; this trace is a project's run: edit its files "
                "(the test file included) with source_diffs"
            )
        try:
            project = self.roots.find(path=origin.repo_path, remote=origin.repo_remote)
            if project.replay.kind != origin.kind:
                raise NotRegistered(
                    f"{project.root} is registered as kind {project.replay.kind!r}; trace {detail.short_id} "
                    f"is a {origin.kind} trace"
                )
            if origin.dirty:
                raise NotRegistered(
                    f"trace {detail.short_id} was recorded from uncommitted changes of commit {origin.commit}: "
                    "that commit alone is not what ran; commit the changes and record the run again"
                )
            commit = resolve_commit(project.root, origin.commit)
            if origin.kind == "playwright":
                playwright_driver.check_origin(origin)
        except NotRegistered as exc:
            raise NotReplayable(f"trace {detail.short_id}: {exc}") from None
        if detail.steps and request.from_step > len(detail.steps):
            raise InvalidReplay(f"from_step {request.from_step} is past the last step ({len(detail.steps)})")
        diffs = [(d.path, d.diff) for d in request.edits.source_diffs]
        check_edits(project, commit, diffs)
        self.sandbox()
        plan = ReplayPlan(
            parent_id=detail.id,
            parent_short_id=detail.short_id,
            from_step=request.from_step,
            scenario=_NO_SCENARIO,
            source_diff_paths=[path for path, _ in diffs],
        )
        return _Job(
            "",
            org_id,
            plan,
            _PROJECT_APP,
            "",
            diffs,
            None,
            project=_ProjectJob(project, origin, commit, detail),
            label=f"{origin.kind}:{project.root.name}",
        )

    def _check_queue(self, org_id: str) -> None:
        with self._lock:
            if self._closing:
                raise QueueFull("the server is shutting down; replay later", retry_after_s=30)
        if self.replays.queued_count(org_id) >= self.settings.max_queued_per_org:
            raise QueueFull(
                f"{self.settings.max_queued_per_org} replays are already queued for this org; "
                "retry when some have finished",
                retry_after_s=30,
            )

    def _job_of(self, record: ReplayRecord) -> _Job:
        """A claimed replay rebuilt from its row: the request it was queued with, checked and planned again
        here (the replica that claimed it may not be the one that took the request)."""
        request = ReplayRequest.model_validate(
            {
                "from_step": record.from_step,
                "triggered_via": record.triggered_via,
                "edits": {
                    "scenario_diff": record.scenario_diff,
                    "source_diffs": [{"path": p, "diff": d} for p, d in record.source_diffs],
                },
            }
        )
        detail = self.store.get_trace(record.org_id, record.trace_id)
        return dataclasses.replace(self._prepare(record.org_id, detail, request), id=record.id)

    def status(self, org_id: str, replay_id: str) -> ReplayStatus:
        record = self.replays.get(org_id, replay_id)
        return record.to_status(queue_position=self._queue_position(record))

    def list_for_trace(self, org_id: str, trace_ref: str) -> ReplayList:
        detail = self.store.get_trace(org_id, trace_ref)
        records = self.replays.list_for_trace(org_id, detail.id)
        return ReplayList(items=[r.to_status(queue_position=self._queue_position(r)) for r in records])

    async def wait_for_change(
        self, org_id: str, replay_id: str, *, phase: str | None, timeout_s: float
    ) -> ReplayStatus:
        """The replay's status once its phase differs from `phase` (or it finished), or after `timeout_s`."""
        status = await anyio.to_thread.run_sync(self.status, org_id, replay_id)
        known = phase if phase is not None else status.phase
        deadline = anyio.current_time() + timeout_s
        next_read = anyio.current_time() + STORE_POLL_S
        while status.status not in FINAL_REPLAY_STATES and status.phase == known:
            if anyio.current_time() >= deadline:
                break
            # A long poll: the phase of a replay running here is checked in memory, the store read on a
            # change, and every STORE_POLL_S for a replay another replica runs.
            await anyio.sleep(0.05)
            with self._lock:
                live = self._phases.get(replay_id)
            if (live is not None and live != known) or anyio.current_time() >= next_read:
                status = await anyio.to_thread.run_sync(self.status, org_id, replay_id)
                next_read = anyio.current_time() + STORE_POLL_S
        return status

    def wait(self, org_id: str, replay_id: str, timeout_s: float = 120.0) -> ReplayStatus:
        """Block until the replay finishes (or `timeout_s`), on whichever replica it runs; for the CLI,
        benchmarks and tests."""
        deadline = time.monotonic() + timeout_s
        status = self.status(org_id, replay_id)
        while status.status not in FINAL_REPLAY_STATES and time.monotonic() < deadline:
            time.sleep(0.05)
            status = self.status(org_id, replay_id)
        return status

    def diff(self, org_id: str, a_ref: str, b_ref: str, dimension: DiffDimension, *, offset: int = 0) -> TraceDiff:
        """Compare trace b with trace a. Either may be given as a replay id (its child trace). `offset`:
        the first row of the dimension's list to show (`TraceDiff.next_offset` pages on)."""
        a, a_events, a_cut = self._trace_for_diff(org_id, a_ref)
        b, b_events, b_cut = self._trace_for_diff(org_id, b_ref)
        return diff_traces(a, a_events, b, b_events, dimension, truncated=a_cut or b_cut, offset=offset)

    def promote(self, org_id: str, trace_ref: str, request: PromoteFixRequest) -> PromoteFixResult:
        detail = self.store.get_trace(org_id, trace_ref)
        record = self.replays.get(org_id, request.replay_id)
        if record.trace_id != detail.id:
            raise ReplayNotFound(request.replay_id)
        if record.promotion is not None:
            return PromoteFixResult.model_validate(record.promotion)
        if record.status != "succeeded":
            raise ReplayNotDone(f"replay {record.id} is {record.status}; only a replay that succeeded can be promoted")
        if not record.source_diffs:
            raise ReplayNotDone(f"replay {record.id} changed only the scenario; there is no source fix to promote")
        app = self.apps.get(record.app or "")
        if app is None:
            raise NotReplayable(f"app {record.app!r} is not configured on this server")
        result = promote_fix(
            app, record.source_diffs, summary=request.summary, replay_id=record.id, trace_short_id=detail.short_id
        )
        self.replays.set_promotion(org_id, record.id, result)
        return result

    def close(self) -> None:
        """Stop the worker, fail the replays queued here that no replica claimed, cancel the ones running
        here (their apps stop, their copies go) and join the threads."""
        with self._lock:
            self._closing = True
            worker = self._worker
        self._wake.set()
        if worker is not None:
            worker.join(self.settings.close_timeout_s)
        with self._claim_lock, self._lock:  # no claim in flight: every replay this replica holds is here
            slots = list(self._slots.values())
        self.replays.fail_queued_by(self.replica, message="interrupted: the server stopped before it started")
        for slot in slots:
            job = slot.job
            if job is not None and job.loop is not None and job.scope is not None:
                with contextlib.suppress(RuntimeError):  # its loop already finished
                    job.loop.call_soon_threadsafe(job.scope.cancel)
        for slot in slots:
            if slot.thread is not None:
                slot.thread.join(self.settings.close_timeout_s)
        for slot in slots:  # one still rebuilding its job when the server stopped
            self.replays.fail_active(
                slot.org_id,
                slot.id,
                error="interrupted",
                message="interrupted: the server stopped while it ran",
                owner=self.replica,
            )

    # ---- the queue worker ---------------------------------------------------------------------

    def start(self) -> None:
        """Start this replica's queue worker (serve does when it starts; a request does on first use)."""
        with self._lock:
            if self._worker is not None or self._closing:
                return
            self._worker = threading.Thread(target=self._worker_main, name="molar-replay-worker", daemon=True)
        self._worker.start()

    def _worker_main(self) -> None:
        renew_at = 0.0
        idle_rounds = 0  # rounds in a row that found nothing to claim and held nothing
        while True:
            with self._lock:
                if self._closing:
                    return
            claimed = 0
            try:
                if time.monotonic() >= renew_at:
                    self._renew()
                    renew_at = time.monotonic() + self.settings.lease_s / 3
                claimed = self._fill_slots()
            except Exception:  # the database away for a moment: try again next round
                log.exception("the replay queue worker failed a round; it goes on")
            with self._lock:
                holding = bool(self._slots)
            idle_rounds = 0 if claimed or holding else idle_rounds + 1
            if self._wake.wait(self.idle_wait(idle_rounds)):
                idle_rounds = 0  # a replay of this replica ended, or the replica stops
            self._wake.clear()

    def idle_wait(self, idle_rounds: int) -> float:
        """How long the worker waits before it looks for replays queued through other replicas again:
        `poll_s` (at most a third of the lease) while it runs replays or just claimed one, then twice as
        long after each round that found nothing, up to 8 × `poll_s` (still at most a third of the lease).
        A replay queued through this replica does not wait: its request claims it."""
        base = min(self.settings.poll_s, self.settings.lease_s / 3)
        most = max(base, min(8 * self.settings.poll_s, self.settings.lease_s / 3))
        return min(most, base * 2.0 ** min(max(0, idle_rounds - 1), 16))

    def _renew(self) -> None:
        with self._lock:
            held = [slot.id for slot in self._slots.values() if not slot.lost]
        lost = self.replays.renew(self.replica, held, lease_ms=self._lease_ms())
        for replay_id in lost:
            log.warning("replay %s: this replica's lease ran out and another took it over; stopping here", replay_id)
            with self._lock:
                slot = self._slots.get(replay_id)
                if slot is not None:
                    slot.lost = True
            job = slot.job if slot is not None else None
            if job is not None and job.loop is not None and job.scope is not None:
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(job.scope.cancel)

    def _lease_ms(self) -> int:
        return max(1, int(self.settings.lease_s * 1000))

    def _fill_slots(self) -> int:
        """Claim and start replays while this replica has room; how many it claimed."""
        claimed = 0
        with self._claim_lock:
            while True:
                with self._lock:
                    if self._closing or len(self._slots) >= self.settings.replica_limit:
                        return claimed
                record = self.replays.claim(
                    self.replica,
                    lease_ms=self._lease_ms(),
                    per_org_limit=self.settings.per_org_limit,
                    max_attempts=self.settings.max_attempts,
                )
                if record is None:
                    return claimed
                claimed += 1
                slot = _Slot(record.id, record.org_id)
                # Daemon: `close()` cancels running replays and stops their apps; a thread (or an AnyIO
                # worker thread its event loop started, which inherits this flag) must never keep the
                # process alive.
                slot.thread = threading.Thread(
                    target=self._thread_main, args=(slot, record), name=f"molar-replay-{record.id[:8]}", daemon=True
                )
                with self._lock:
                    self._slots[record.id] = slot
                    self._phases[record.id] = "queued"
                slot.thread.start()

    def _thread_main(self, slot: _Slot, record: ReplayRecord) -> None:
        try:
            with org_scope(record.org_id):  # row-level security keys on it (PostgreSQL)
                try:
                    job = self._job_of(record)
                except (ReplayRefused, DiffDoesNotApply, StoreError) as exc:
                    # It was checked when queued; what changed since (the trace deleted, the app not
                    # configured on this replica, the sandbox gone) fails it here.
                    code: ReplayErrorCode = "sandbox_error" if isinstance(exc, ReplaysUnavailable) else "run_failed"
                    if isinstance(exc, DiffDoesNotApply):
                        code = "diff_does_not_apply"
                    self.replays.fail_active(
                        record.org_id, record.id, error=code, message=f"cannot run here: {exc}", owner=self.replica
                    )
                    return
                with self._lock:
                    slot.job = job
                    cancel = self._closing or slot.lost
                if not cancel:
                    anyio.run(self._run_job, job, backend="asyncio")
        except LeaseLost:
            log.warning("replay %s: another replica holds it now; this replica's run is dropped", record.id)
        except BaseException:  # a bug here must not take the slot with it
            log.exception("replay %s crashed", record.id)
            with contextlib.suppress(Exception):
                self.replays.fail_active(
                    record.org_id,
                    record.id,
                    error="internal_error",
                    message="internal error; see the logs",
                    owner=self.replica,
                )
        finally:
            with self._lock:
                self._slots.pop(record.id, None)
                self._phases.pop(record.id, None)
            self._wake.set()  # a slot is free: the worker claims the next replay

    def _queue_position(self, record: ReplayRecord) -> int | None:
        if record.status != "queued":
            return None
        return self.replays.queue_position(record.org_id, record.id)

    # ---- one replay ---------------------------------------------------------------------------

    def _set(self, job: _Job, **fields: Any) -> None:
        """Record progress; LeaseLost when another replica took the replay over (this run then stops)."""
        self.replays.update(job.org_id, job.id, owner=self.replica, **fields)
        if "phase" in fields:
            with self._lock:
                self._phases[job.id] = str(fields["phase"])

    def _done(self, job: _Job, started: int, status: str, **fields: Any) -> None:
        """Record the end of a replay (`phase` done, its finish time and duration) with `fields`."""
        finished = now_ms()
        self._set(
            job, status=status, phase="done", finished_ms=finished, duration_ms=max(0, finished - started), **fields
        )

    def _fail(self, job: _Job, started: int, error: str, message: str, log_tail: str | None = None) -> None:
        self._done(job, started, "failed", error=error, message=message, log_tail=log_tail)

    def _succeed(
        self, job: _Job, started: int, stored: tuple[str, str], status: str, signature: str | None, **fields: Any
    ) -> None:
        """A replay that ran to the end (whatever the replayed run's own status): the trace it stored."""
        trace_id, short_id = stored
        self._done(
            job,
            started,
            "succeeded",
            replay_trace_id=trace_id,
            replay_short_id=short_id,
            trace_status=status,
            failure_signature=signature,
            **fields,
        )

    async def _run_job(self, job: _Job) -> None:
        started = now_ms()
        with anyio.CancelScope() as scope:
            job.loop, job.scope = asyncio.get_running_loop(), scope
            with self._lock:
                if self._closing:
                    scope.cancel()
            # A project's own `timeout_s` stops its command (with the log tail); this bound, a minute
            # later, covers the checkout and the recording around it.
            limit = self.settings.timeout_s if job.project is None else job.project.project.replay.timeout_s + 60
            try:
                with anyio.fail_after(limit):
                    await self._replay(job, started)
            except TimeoutError:
                self._fail(job, started, "timeout", f"the replay did not finish within {limit:g} s")
            except DiffDoesNotApply as exc:
                self._fail(job, started, "diff_does_not_apply", str(exc))
            except AppStartError as exc:
                message = str(exc).split("\n--- app log", 1)[0]
                self._fail(job, started, "app_start_failed", message, log_tail=exc.log_tail or None)
            except AppError as exc:
                self._fail(job, started, "app_start_failed", str(exc))
            except SandboxRunFailed as exc:
                self._fail(job, started, exc.code, str(exc), log_tail=exc.log_tail or None)
            except ReplaysUnavailable as exc:
                self._fail(job, started, "sandbox_error", str(exc))
            except LeaseLost:
                raise
            except Exception as exc:
                log.exception("replay %s failed", job.id)
                self._fail(job, started, "internal_error", f"internal error: {type(exc).__name__}: {exc}")
        if scope.cancelled_caught:
            self.replays.fail_active(
                job.org_id,
                job.id,
                error="interrupted",
                message="interrupted: the server stopped while it ran",
                owner=self.replica,
            )

    async def _replay(self, job: _Job, started: int) -> None:
        if job.project is not None:
            await self._replay_project(job, job.project, started)
            return
        diffs = f" with {len(job.source_diffs)} source diff(s)" if job.source_diffs else ""
        self._set(
            job, status="running", phase="starting_app", started_ms=started, message=f"starting {job.app.name}{diffs}"
        )

        async def on_phase(phase: str, message: str) -> None:
            self._set(job, phase=phase, message=message)

        if self._launch is not None:
            async with self._launch(job.app, job.source_diffs) as client:
                run = await run_replay(job.plan, client, on_phase=on_phase)
        else:
            run = await self._replay_sandboxed(job, on_phase)
        self._set(job, phase="recording", message="recording the child trace")
        blobs = [scenario_blob(job.scenario_text)]
        if job.source_diffs:
            patch = "".join(d if d.endswith("\n") else d + "\n" for _, d in job.source_diffs)
            blobs.append(Blob("patch", "source.diff", "text/x-diff; charset=utf-8", patch.encode()))
        trace, data = new_trace(
            job.plan.scenario,
            status=run.status,
            events=run.events,
            failure_signature=run.failure_signature,
            duration_ms=run.duration_ms,
            blobs=blobs,
            code_sha=job.code_sha,
            parent_trace_id=job.plan.parent_id,
            replay_from_step=job.plan.from_step,
        )
        trace_id, short_id = await anyio.to_thread.run_sync(
            functools.partial(
                store_recorded,
                self.store,
                self.replays,
                job.org_id,
                trace,
                data,
                app=job.app.name,
                scenario_text=job.scenario_text,
            )
        )
        self._succeed(job, started, (trace_id, short_id), run.status, run.failure_signature, message=run.message)

    async def _replay_sandboxed(self, job: _Job, on_phase: Callable[[str, str], Awaitable[None]]) -> ReplayRun:
        """Run the scenario replay (app and runner both) inside the sandbox; its outcome as a ReplayRun.

        Raises DiffDoesNotApply, AppStartError, or SandboxRunFailed (timeout, output flood, a crash)."""
        sandbox = self.sandbox()
        plan = InsidePlan(
            app=job.app,
            source_diffs=job.source_diffs,
            scenario_text=job.scenario_text,
            parent_id=job.plan.parent_id,
            parent_short_id=job.plan.parent_short_id,
            from_step=job.plan.from_step,
            recorded_variables=dict(job.plan.recorded_variables),
            scenario_edited=job.plan.scenario_edited,
        )

        async def on_line(line: str) -> None:
            if line.startswith(PHASE_PREFIX):
                phase, _, message = line[len(PHASE_PREFIX) :].partition(" ")
                if phase in ("restoring", "running"):
                    await on_phase(phase, message[:300])

        async with sandbox.workspace(parent=self._workdir) as ws:
            plan_file, result_file = ws.path / "plan.json", ws.path / "result.json"
            plan_file.write_text(plan.model_dump_json(), encoding="utf-8")
            binds = [Bind(p) for p in runtime_paths()]
            if not any(p == job.app.source_dir or p in job.app.source_dir.parents for p in runtime_paths()):
                binds.append(Bind(job.app.source_dir))
            command = [sys.executable, "-m", "molar_mcp.replay.inside", str(plan_file), str(result_file)]
            env = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
            outcome = await sandbox.run(
                ws, command, binds=binds, env=env, wall_s=self.settings.timeout_s - 5, on_line=on_line
            )
            result = _read_result(result_file, outcome)
        if result.error == "diff_does_not_apply":
            raise SandboxRunFailed("diff_does_not_apply", result.message or "a source diff does not apply", log_tail="")
        if result.error == "app_start_failed":
            raise AppStartError(result.message or f"{job.app.name} did not start", log_tail=result.log_tail or "")
        assert result.status is not None
        return ReplayRun(
            status=result.status,
            events=result.events,
            failure_signature=result.failure_signature,
            failed_step=result.failed_step,
            duration_ms=result.duration_ms,
            message=result.message,
        )

    async def _replay_project(self, job: _Job, pj: _ProjectJob, started: int) -> None:
        sandbox = self.sandbox()
        project, origin = pj.project, pj.origin
        from_step = job.plan.from_step
        edits = f" with edits to {', '.join(p for p, _ in job.source_diffs)}" if job.source_diffs else ""
        self._set(
            job,
            status="running",
            phase="starting_app",
            started_ms=started,
            message=f"checking out {pj.commit[:12]} of {project.root.name}{edits}",
        )

        async def on_line(line: str) -> None:
            return None

        async with sandbox.workspace(parent=self._workdir) as ws:
            extra: list[Bind] = []
            if origin.kind == "playwright":
                command = playwright_driver.playwright_argv(project, origin)
                env = playwright_driver.playwright_env()
                collect = playwright_driver.collect
                extra = [Bind(Path(playwright_driver.STEPS_REPORTER).parent)]
                what = "the whole test re-ran (Playwright cannot start mid-test)"
            else:
                otlp_dir = ws.path / "otlp"
                otlp_dir.mkdir()
                edits_file = ws.path / "edits.json"
                edits_file.write_text(command_driver.edits_document(from_step, job.source_diffs), encoding="utf-8")
                await anyio.to_thread.run_sync(sandbox.give, ws, otlp_dir)
                command = command_driver.command_argv(project, otlp_dir)
                env = command_driver.command_env(
                    replay_id=job.id, parent_trace_id=pj.parent.id, from_step=from_step, edits_file=edits_file
                )
                extra = [Bind(p) for p in runtime_paths()]

                def collect(tree: Path) -> dict[str, bytes]:
                    return _otlp_bodies(otlp_dir)

                what = "the registered command re-ran"
            self._set(job, phase="running", message=f"running {' '.join(project.replay.command)}{edits}")
            try:
                run = await run_in_tree(
                    sandbox,
                    ws,
                    project,
                    origin,
                    pj.commit,
                    job.source_diffs,
                    command,
                    env,
                    collect=collect,
                    on_line=on_line,
                    extra_binds=extra,
                )
            except WorktreeError as exc:
                raise SandboxRunFailed("run_failed", str(exc), log_tail="") from None
        tail = log_tail(run.result)
        if run.result.timed_out or run.result.output_exceeded:
            code: ReplayErrorCode = "timeout" if run.result.timed_out else "output_limit"
            raise SandboxRunFailed(code, f"{' '.join(command)} was stopped: {run.result.reason}", log_tail=tail)
        self._set(job, phase="recording", message="recording the child trace")
        status: str | None = None
        failure: str | None = None
        steps: list[Event] = []
        result: dict[str, Any] | None = None
        if origin.kind == "playwright":
            result = playwright_driver.report_result(run.outputs["report"]) if "report" in run.outputs else None
            if result is None:
                raise SandboxRunFailed(
                    "run_failed",
                    f"{' '.join(command)} ran no test (exit code {run.result.exit_code}): is the test still "
                    "there at this commit, under this title?",
                    log_tail=tail,
                )
            status = "passed" if result["status"] == "passed" else "failed"
            failure = playwright_driver.failure_line(result)
            steps = playwright_driver.report_events(result, ts=now_ms())
        spans = _replay_spans(run.outputs, job.id) if origin.kind == "command" else []
        if spans:
            steps = trace_events(spans)
            status = run_status(spans) if run.result.exit_code == 0 else "failed"
        trace, blobs = run_trace(
            pj.parent, origin, run, from_step=from_step, what=what, status=status, failure=failure, steps=steps
        )
        if "trace" in run.outputs and result is not None:
            trace, blobs = _from_playwright_trace(trace, blobs, run.outputs["trace"], result, origin, pj.commit)
        with_edits(trace, blobs, job.source_diffs)
        trace_id, short_id = await anyio.to_thread.run_sync(self.store.add_trace, job.org_id, trace, blobs)
        ran = _what_ran(run, from_step, origin.kind)
        message = ran + f"; the replay {trace.status}"
        stored = (trace_id, short_id)
        self._succeed(
            job, started, stored, trace.status, trace.failure_signature, message=message, log_tail=tail or None
        )

    # ---- reads --------------------------------------------------------------------------------

    def _events(self, org_id: str, trace_ref: str) -> tuple[list[Event], bool]:
        events: list[Event] = []
        while True:
            page = self.store.list_events(org_id, trace_ref, limit=EVENTS_PAGE, offset=len(events))
            events.extend(page.events)
            if not page.events or len(events) >= page.total:
                return events, False
            if len(events) >= MAX_EVENTS:
                return events, True

    def _trace_for_diff(self, org_id: str, ref: str) -> tuple[TraceDetail, Sequence[StoredEvent], bool]:
        try:
            detail = self.store.get_trace(org_id, ref)
        except TraceNotFound:
            try:
                record: ReplayRecord = self.replays.get(org_id, ref)
            except ReplayNotFound:
                raise TraceNotFound(ref) from None
            if record.replay_trace_id is None:
                raise InvalidReplay(
                    f"replay {ref} has no trace yet (it is {record.status}); diff it when it succeeded"
                ) from None
            detail = self.store.get_trace(org_id, record.replay_trace_id)
        # Light rows, not models: a diff reads every event of both traces (bench/bench_debug_run.py).
        cap = self.settings.diff_max_events
        events = self.store.stored_events(org_id, detail.id, limit=cap + 1)
        if len(events) <= cap:
            return detail, events, False
        return detail, StoredEvents(events.rows[:cap]), True  # (the rows: no event is built to cut them)


class SandboxRunFailed(Exception):
    """A sandboxed run ended without a usable result: `code` is the replay error, `log_tail` its output's end."""

    def __init__(self, code: ReplayErrorCode, message: str, *, log_tail: str) -> None:
        super().__init__(message)
        self.code, self.log_tail = code, log_tail


def _read_result(path: Path, outcome: SandboxResult) -> InsideResult:
    """The sandboxed program's result file, validated; SandboxRunFailed when it was stopped or wrote none."""
    tail = outcome.output_tail[-LOG_TAIL_CHARS:]
    if outcome.timed_out:
        raise SandboxRunFailed("timeout", f"the replay was stopped: {outcome.reason}", log_tail=tail)
    if outcome.output_exceeded:
        raise SandboxRunFailed("output_limit", f"the replay was stopped: {outcome.reason}", log_tail=tail)
    try:
        if path.is_symlink() or path.stat().st_size > MAX_RESULT_BYTES:
            raise SandboxRunFailed(
                "run_failed", "the replay's result file is not a plain file within the size limit", log_tail=tail
            )
        data = path.read_bytes()
    except OSError:
        raise SandboxRunFailed(
            "run_failed", f"the replay ended (exit code {outcome.exit_code}) without a result", log_tail=tail
        ) from None
    try:
        return InsideResult.model_validate_json(data)
    except ValueError:
        raise SandboxRunFailed("run_failed", "the replay's result is not valid", log_tail=tail) from None


_NO_SCENARIO = Scenario.model_construct(slug="project", title="project", steps=[])
_PROJECT_APP = AppConfig.model_construct(name="project", source_dir=Path("."), start_command=["{port}"])


def _what_ran(run: ProjectRun, from_step: int, kind: str) -> str:
    edits = f" with edits applied to {', '.join(run.edits)}" if run.edits else " without edits"
    text = f"ran `{' '.join(run.command)}` at commit {run.commit[:12]}{edits}"
    if kind == "playwright":
        text += (
            f"; Playwright cannot start mid-test, so the whole test re-ran: from_step {from_step} is where "
            "the diff and the verdict focus"
        )
    return text


def _otlp_bodies(folder: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    if folder.is_dir() and not folder.is_symlink():
        for path in sorted(folder.iterdir())[:2000]:
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= 16 * 1024 * 1024:
                found[f"otlp/{path.name}"] = path.read_bytes()
    return found


def _from_playwright_trace(
    fallback: NewTrace,
    fallback_blobs: dict[str, bytes],
    data: bytes,
    result: dict[str, Any],
    origin: ReplayOrigin,
    commit: str,
) -> tuple[NewTrace, dict[str, bytes]]:
    """The child trace ingested from the run's trace.zip (as an upload of it would be, so its steps are
    numbered like the recorded run's), with the replay's own opening log line and links. When the zip
    cannot be read, the run trace (`fallback`, from the steps reporter) with the zip attached."""
    info = TestResultInfo.model_validate(
        {
            "project": origin.project,
            "file": origin.file,
            "title_path": origin.title_path,
            "status": result.get("status") or "failed",
            "duration_ms": result.get("duration_ms"),
            "errors": result.get("errors") or [],
            "commit": commit,
        }
    )
    try:
        parsed = read_playwright_trace(data, filename="trace.zip", result=info)
    except BundleError as exc:
        log.warning("the replay's trace.zip could not be read (%s); recording the run's steps", exc)
        sha = hashlib.sha256(data).hexdigest()
        fallback_blobs[sha] = data
        fallback.artifacts.append(
            ArtifactRef(
                kind="playwright_trace", sha256=sha, name="trace.zip", content_type="application/zip", size=len(data)
            )
        )
        return fallback, fallback_blobs
    trace = parsed.trace
    intro = [e for e in fallback.events if e.kind == "log" and e.step_id is None][:1]
    events = [*intro, *trace.events]
    trace.events = [e.model_copy(update={"seq": i}) for i, e in enumerate(events)]
    trace.scenario_slug = fallback.scenario_slug
    trace.scenario_title = fallback.scenario_title
    trace.source = "manual"
    trace.code_sha = fallback.code_sha
    trace.parent_trace_id = fallback.parent_trace_id
    trace.replay_from_step = fallback.replay_from_step
    blobs = dict(parsed.blobs)
    for ref in fallback.artifacts:  # output.log
        trace.artifacts.append(ref)
        blobs[ref.sha256] = fallback_blobs[ref.sha256]
    return trace, blobs


MAX_SPAN_BODY = 64 * 1024 * 1024


def _replay_spans(outputs: dict[str, bytes], replay_id: str) -> list[SpanRecord]:
    """The spans the command exported to the sandbox's OTLP sink whose resource says `molar.replay_id`
    is this replay (the child trace is found by the replay id); unreadable bodies are skipped."""
    spans: list[SpanRecord] = []
    for name, body in sorted(outputs.items()):
        if not name.startswith("otlp/"):
            continue
        try:
            if name.endswith(".gz"):
                body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, MAX_SPAN_BODY)
            request = decode_json(body) if ".json" in name else decode_protobuf(body)
            decoded = decode_spans(request)
        except (OtlpDecodeError, TooManySpans, zlib.error, ValueError):
            log.warning("replay %s: an OTLP export could not be read", replay_id)
            continue
        spans.extend(s for s in decoded.spans if s.resource.get("molar.replay_id") == replay_id)
    spans.sort(key=lambda s: (s.start_ns, s.span_id))
    return spans
