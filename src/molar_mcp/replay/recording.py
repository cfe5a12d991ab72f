"""Record scenario runs as replayable traces: the trace itself (events, status, signature, the scenario as
an artifact) and, in the "replays" store component, the scenario text and app it came from.

`AppLauncher` is the seam between a replay and a running app: the default starts a real process with
`running_app`; tests may hand in an in-process app.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx2

from molar_mcp.models import ArtifactRef, Event
from molar_mcp.replay.apps import AppConfig, running_app
from molar_mcp.replay.edits import SCENARIO_FILE
from molar_mcp.replay.runner import RunResult, run_scenario
from molar_mcp.replay.scenario import Scenario, parse_scenario
from molar_mcp.store.port import NewTrace, TraceStore
from molar_mcp.store.replays import ReplayStore

REQUEST_TIMEOUT_S = 30.0

AppLauncher = Callable[[AppConfig, Sequence[tuple[str, str]]], AbstractAsyncContextManager[httpx2.AsyncClient]]


@asynccontextmanager
async def launch_app(
    config: AppConfig, source_diffs: Sequence[tuple[str, str]] = (), *, workdir: Path | None = None
) -> AsyncIterator[httpx2.AsyncClient]:
    """Start `config`'s app from a patched fresh copy (`running_app`), yield a client on its base URL."""
    async with (
        running_app(config, source_diffs, workdir=workdir) as base_url,
        httpx2.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client,
    ):
        yield client


def process_launcher(workdir: Path | None = None) -> AppLauncher:
    return functools.partial(launch_app, workdir=workdir)


@dataclass(frozen=True)
class Blob:
    kind: str
    name: str
    content_type: str
    data: bytes


def scenario_blob(text: str) -> Blob:
    return Blob("scenario", SCENARIO_FILE, "text/markdown; charset=utf-8", text.encode())


def new_trace(
    scenario: Scenario,
    *,
    status: str,
    events: list[Event],
    failure_signature: str | None,
    duration_ms: int,
    blobs: Sequence[Blob] = (),
    source: str | None = "manual",
    code_sha: str | None = None,
    parent_trace_id: str | None = None,
    replay_from_step: int | None = None,
) -> tuple[NewTrace, dict[str, bytes]]:
    """The `NewTrace` of a finished run and its blobs by sha256."""
    by_sha: dict[str, bytes] = {}
    artifacts: list[ArtifactRef] = []
    for blob in blobs:
        sha = hashlib.sha256(blob.data).hexdigest()
        by_sha[sha] = blob.data
        artifacts.append(
            ArtifactRef(kind=blob.kind, sha256=sha, name=blob.name, content_type=blob.content_type, size=len(blob.data))
        )
    trace = NewTrace(
        scenario_slug=scenario.slug,
        scenario_title=scenario.title,
        status=status,
        source=source,
        code_sha=code_sha,
        failure_signature=failure_signature,
        duration_ms=duration_ms,
        parent_trace_id=parent_trace_id,
        replay_from_step=replay_from_step,
        artifacts=artifacts,
        events=events,
    )
    return trace, by_sha


def store_recorded(
    store: TraceStore,
    scenarios: ReplayStore,
    org_id: str,
    trace: NewTrace,
    blobs: dict[str, bytes],
    *,
    app: str | None,
    scenario_text: str,
) -> tuple[str, str]:
    """Store the trace, then the scenario it can be replayed from; return `(id, short_id)`."""
    trace_id, short_id = store.add_trace(org_id, trace, blobs)
    scenarios.record_scenario(org_id, trace_id, app=app, slug=trace.scenario_slug, text=scenario_text)
    return trace_id, short_id


@dataclass(frozen=True)
class RecordedRun:
    slug: str
    trace_id: str
    short_id: str
    status: str
    failure_signature: str | None


async def record_run(
    app: AppConfig, scenario: Scenario, text: str, *, launcher: AppLauncher | None = None
) -> tuple[RunResult, NewTrace, dict[str, bytes]]:
    """Run `scenario` (its file's `text`) against a fresh copy of `app`; the run and the trace to store
    (the scenario file as its `scenario` artifact, so the trace can be replayed)."""
    async with (launcher or process_launcher())(app, ()) as client:
        run = await run_scenario(scenario, client)
    trace, blobs = new_trace(
        scenario,
        status=run.status,
        events=run.events,
        failure_signature=run.failure_signature,
        duration_ms=run.duration_ms,
        blobs=[scenario_blob(text)],
    )
    return run, trace, blobs


async def record_scenarios(
    store: TraceStore,
    scenarios: ReplayStore,
    org_id: str,
    app: AppConfig,
    items: Sequence[tuple[Scenario, str]],
    *,
    launcher: AppLauncher | None = None,
) -> list[RecordedRun]:
    """Run each `(scenario, its text)` against its own fresh copy of `app` (all at once) and store the
    traces as replayable. A fresh app per scenario makes the recorded ids the ones a replay restores."""
    launch = launcher or process_launcher()
    results: list[RecordedRun | None] = [None] * len(items)

    async def one(index: int, scenario: Scenario, text: str) -> None:
        run, trace, blobs = await record_run(app, scenario, text, launcher=launch)
        trace_id, short_id = await anyio.to_thread.run_sync(
            functools.partial(store_recorded, store, scenarios, org_id, trace, blobs, app=app.name, scenario_text=text)
        )
        results[index] = RecordedRun(scenario.slug, trace_id, short_id, run.status, run.failure_signature)

    async with anyio.create_task_group() as tg:
        for index, (scenario, text) in enumerate(items):
            tg.start_soon(one, index, scenario, text)
    return [r for r in results if r is not None]


def scenario_files(paths: Sequence[Path]) -> list[tuple[Scenario, str]]:
    """Parse scenario files, keeping each one's text (what a replay re-runs and edits)."""
    items: list[tuple[Scenario, str]] = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        items.append((parse_scenario(text, source=path.name), text))
    return items
