"""Big traces analysed in a worker process (api/analysis_worker.py): the same findings as the server's own
run on real traces (both engines), the size threshold on both sides, a worker killed mid-analysis (retried,
or marked failed with a clear status), a stuck worker (timeout), idle and shutdown (no process left)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest

from molar_mcp.api.analysis import analyze_in_background, run_analysis
from molar_mcp.api.analysis_worker import AnalysisFailed, AnalysisWorker, StoreAddress
from molar_mcp.api.app import create_api_app
from molar_mcp.compose import Embedded, load_agent_demo, load_playwright_demo, load_shipped_demo
from molar_mcp.debugger.detectors import analyze
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID
from molar_mcp.store.port import TraceNotFound, TraceQuery, org_scope
from tests.bundles import make_bundle, summary
from tests.long_run import record_long_run
from tests.servers import start_server

# The worker's lifecycle is the same on either engine: these run on the embedded store alone.
lifecycle = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


def _address(embedded: Embedded, engine: dict[str, str]) -> StoreAddress:
    return StoreAddress(embedded.store.data_dir, engine.get("database_url"))


@pytest.fixture
def worker(embedded: Embedded, engine: dict[str, str]) -> Iterator[AnalysisWorker]:
    """A worker over the embedded store that takes every trace (no size threshold)."""
    w = AnalysisWorker(_address(embedded, engine), min_events=0)
    yield w
    w.close()


def _children() -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _dumped(findings: Any) -> str:
    return json.dumps([f.model_dump(mode="json") for f in findings])


def _bundle(events: int, *, slug: str = "threshold") -> bytes:
    """A failed run of `events` events: logs, then a console error the detectors name."""
    rows: list[dict[str, Any]] = [
        {"seq": n, "ts": 1_763_629_200_000 + n, "kind": "log", "message": f"line {n}"} for n in range(events - 1)
    ]
    rows.append(
        {
            "seq": events - 1,
            "ts": 1_763_629_300_000,
            "kind": "console",
            "message": "TypeError: cart is undefined",
            "payload": {"level": "error"},
        }
    )
    return make_bundle(summary(scenario_slug=slug, status="failed"), rows)


def _busy(worker: AnalysisWorker, timeout: float = 60) -> int:
    """The pid of the worker once a task has been handed to it."""
    deadline = time.monotonic() + timeout
    while worker.busy_pid is None:
        assert time.monotonic() < deadline, "the worker never got its task"
        time.sleep(0.01)
    return worker.busy_pid


def _stopped_worker(worker: AnalysisWorker, org: str, trace_id: str) -> int:
    """Start the worker (one analysis), then freeze it (SIGSTOP): the next task waits in its pipe."""
    worker.analyse(org, trace_id, "failed")
    pid = worker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return pid


def test_the_worker_finds_byte_for_byte_what_the_server_finds_on_real_traces(
    embedded: Embedded, worker: AnalysisWorker
) -> None:
    """Every shipped recording of a real run (the demo shop's scenario runs, a Playwright Test run, an
    agent run through OpenTelemetry): the worker's findings equal the server's own, and so does the
    stored analysis made through either path."""
    store = embedded.store
    load_shipped_demo(store)
    load_playwright_demo(store)
    load_agent_demo(embedded)
    traces = store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=100)).items
    assert len(traces) >= 10
    assert {t.status for t in traces} >= {"passed", "failed"}
    in_process = dataclasses.replace(embedded.context, analysis_worker=None)
    in_worker = dataclasses.replace(embedded.context, analysis_worker=worker)
    found = 0
    for t in traces:
        with org_scope(LOCAL_ORG_ID):
            here = analyze(store.stored_events(LOCAL_ORG_ID, t.id), t.status)
        there = worker.analyse(LOCAL_ORG_ID, t.id, t.status)
        assert _dumped(there) == _dumped(here), t.scenario_slug
        found += len(here)
        with org_scope(LOCAL_ORG_ID):
            a = run_analysis(in_process, LOCAL_ORG_ID, t.id, rerun=True).model_dump(mode="json", exclude={"created_at"})
            b = run_analysis(in_worker, LOCAL_ORG_ID, t.id, rerun=True).model_dump(mode="json", exclude={"created_at"})
        assert json.dumps(a) == json.dumps(b)
    assert found > 0  # the failed runs have findings: the comparison compared something
    assert worker.started == 1  # one process served every trace


def test_a_trace_under_the_threshold_is_analysed_in_the_server_and_one_at_it_in_the_worker(
    embedded: Embedded, engine: dict[str, str]
) -> None:
    worker = AnalysisWorker(_address(embedded, engine), min_events=300)
    ctx = dataclasses.replace(embedded.context, analysis_worker=worker)
    try:
        small = ingest_bundle(embedded.store, LOCAL_ORG_ID, _bundle(299, slug="small"))[0]
        big = ingest_bundle(embedded.store, LOCAL_ORG_ID, _bundle(300, slug="big"))[0]
        with org_scope(LOCAL_ORG_ID):
            analysis = run_analysis(ctx, LOCAL_ORG_ID, small)
            assert worker.started == 0
            assert worker.pid is None
            assert analysis.findings[0].critical_seq == 298
            analysis = run_analysis(ctx, LOCAL_ORG_ID, big)
        assert worker.started == 1
        assert worker.pid is not None
        assert analysis.findings[0].critical_seq == 299
        assert analysis.failure_signature == "console TypeError: cart is undefined"
    finally:
        worker.close()


@lifecycle
def test_a_worker_killed_mid_analysis_is_replaced_and_the_analysis_run_again(
    embedded: Embedded, worker: AnalysisWorker
) -> None:
    trace_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())[0]
    first = _stopped_worker(worker, LOCAL_ORG_ID, trace_id)
    with org_scope(LOCAL_ORG_ID):
        expected = _dumped(analyze(embedded.store.stored_events(LOCAL_ORG_ID, trace_id), "failed"))

    async def main() -> str:
        async with anyio.create_task_group() as tasks:
            result: list[str] = []

            async def run() -> None:
                findings = await anyio.to_thread.run_sync(worker.analyse, LOCAL_ORG_ID, trace_id, "failed")
                result.append(_dumped(findings))

            tasks.start_soon(run)
            assert await anyio.to_thread.run_sync(_busy, worker) == first
            os.kill(first, signal.SIGKILL)  # mid-analysis: its task was handed over and not answered
        return result[0]

    assert anyio.run(main) == expected
    assert worker.started == 2
    assert worker.pid not in (None, first)
    assert _gone(first)


@lifecycle
def test_a_worker_that_dies_on_every_try_marks_the_analysis_failed_and_get_says_so(
    embedded: Embedded, engine: dict[str, str]
) -> None:
    worker = AnalysisWorker(_address(embedded, engine), min_events=0, retries=0)
    ctx = dataclasses.replace(embedded.context, analysis_worker=worker)
    app = create_api_app(ctx)
    stored = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())[0]
    fresh = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary(scenario_slug="fresh")))[0]

    async def killed_while(work: Any) -> None:
        """Run `work` while the worker, frozen with a task in its pipe, is killed."""
        stopped = await anyio.to_thread.run_sync(_stopped_worker, worker, LOCAL_ORG_ID, stored)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(work)
            assert await anyio.to_thread.run_sync(_busy, worker) == stopped
            os.kill(stopped, signal.SIGKILL)
        assert _gone(stopped)

    async def main() -> None:
        transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as api:
            assert (await api.post(f"/v1/traces/{stored}/analyze")).status_code == 200
            answers: list[httpx2.Response] = []

            async def post() -> None:
                answers.append(await api.post(f"/v1/traces/{stored}/analyze", params={"rerun": "true"}))

            await killed_while(post)
            (answer,) = answers
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["error"] == "analysis_failed"
            assert body["request_id"]
            assert "its worker process died (killed by signal 9)" in body["message"]
            assert "POST /v1/traces/{id}/analyze runs it again" in body["message"]
            # Nothing stored before is lost: the analysis the first run stored is still the answer.
            assert (await api.get(f"/v1/traces/{stored}/analysis")).status_code == 200

            # After an ingest, in the background: GET says why there is no analysis, not "not yet".
            await killed_while(lambda: analyze_in_background(ctx, LOCAL_ORG_ID, fresh))
            got = await api.get(f"/v1/traces/{fresh}/analysis")
            assert got.status_code == 503, got.text
            assert got.json()["error"] == "analysis_failed"
            assert "killed by signal 9" in got.json()["message"]
            # Run again (a new worker): stored, and the failure forgotten.
            assert (await api.post(f"/v1/traces/{fresh}/analyze")).status_code == 200
            assert (await api.get(f"/v1/traces/{fresh}/analysis")).status_code == 200
            assert (LOCAL_ORG_ID, fresh) not in ctx.analysis_failures

    try:
        anyio.run(main)
    finally:
        worker.close()


@lifecycle
def test_an_analyze_request_behind_the_ingests_analysis_gets_that_analysis_not_a_second_run(
    embedded: Embedded, engine: dict[str, str]
) -> None:
    """`debug_run` right after an upload: its POST waits for the background analysis, then reads it."""
    worker = AnalysisWorker(_address(embedded, engine), min_events=0)
    ctx = dataclasses.replace(embedded.context, analysis_worker=worker)
    app = create_api_app(ctx)
    warm = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary(scenario_slug="warm")))[0]
    trace_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())[0]

    async def main() -> dict[str, Any]:
        transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as api:
            stopped = await anyio.to_thread.run_sync(_stopped_worker, worker, LOCAL_ORG_ID, warm)
            answers: list[httpx2.Response] = []

            async def post() -> None:
                answers.append(await api.post(f"/v1/traces/{trace_id}/analyze"))

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(analyze_in_background, ctx, LOCAL_ORG_ID, trace_id)
                await anyio.to_thread.run_sync(_busy, worker)  # the background analysis has the turn
                tasks.start_soon(post)
                await anyio.sleep(0.5)  # the request waits for its turn
                os.kill(stopped, signal.SIGCONT)
            (answer,) = answers
            assert answer.status_code == 200, answer.text
            stored = (await api.get(f"/v1/traces/{trace_id}/analysis")).json()
            assert answer.json() == stored
            return stored

    try:
        assert anyio.run(main)["failure_signature"] == "step-5: http 404 POST /api/webhooks/stripe"
        assert worker.answered == 2  # the warm-up and the background analysis: no second run
    finally:
        worker.close()


@lifecycle
def test_a_stuck_worker_is_stopped_after_the_timeout_and_the_analysis_marked_failed(
    embedded: Embedded, engine: dict[str, str]
) -> None:
    worker = AnalysisWorker(_address(embedded, engine), min_events=0)
    try:
        trace_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())[0]
        stopped = _stopped_worker(worker, LOCAL_ORG_ID, trace_id)
        worker.timeout_seconds = 1.0  # (after the start: a fresh interpreter can take longer on a loaded machine)
        started = time.monotonic()
        with pytest.raises(AnalysisFailed, match=r"took longer than 1 s; its worker process was stopped"):
            worker.analyse(LOCAL_ORG_ID, trace_id, "failed")
        assert time.monotonic() - started < 15
        assert _gone(stopped)
        assert worker.pid is None
        worker.timeout_seconds = 120.0
        assert worker.analyse(LOCAL_ORG_ID, trace_id, "failed")  # the next analysis gets a new worker
        assert worker.started == 2
    finally:
        worker.close()


def test_a_missing_trace_is_not_found_and_the_worker_goes_on(embedded: Embedded, worker: AnalysisWorker) -> None:
    with pytest.raises(TraceNotFound):
        worker.analyse(LOCAL_ORG_ID, "no-such-trace", "failed")
    trace_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())[0]
    with pytest.raises(TraceNotFound):  # another org's trace is not found from here either
        worker.analyse("org_other", trace_id, "failed")
    assert worker.analyse(LOCAL_ORG_ID, trace_id, "failed")[0].label == "http_error"
    assert worker.started == 1


@lifecycle
def test_an_idle_worker_exits_and_close_leaves_no_process(embedded: Embedded, engine: dict[str, str]) -> None:
    before = _children()
    worker = AnalysisWorker(_address(embedded, engine), min_events=0, idle_seconds=0.3)
    trace_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())[0]
    worker.analyse(LOCAL_ORG_ID, trace_id, "failed")
    pid = worker.pid
    assert pid is not None
    assert pid in _children()
    deadline = time.monotonic() + 20
    while not _gone(pid) or pid in _children():
        assert time.monotonic() < deadline, "the idle worker did not exit"
        time.sleep(0.05)
    worker.analyse(LOCAL_ORG_ID, trace_id, "failed")  # started again on demand
    assert worker.started == 2
    second = worker.pid
    assert second is not None
    worker.close()
    assert _gone(second)
    assert _children() == before
    with pytest.raises(AnalysisFailed, match="shutting down"):
        worker.analyse(LOCAL_ORG_ID, trace_id, "failed")


def test_the_served_store_analyses_a_big_bundle_in_its_worker_and_stops_it_at_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`molar-mcp serve` for real: a bundle at the threshold is analysed in a child process of the server,
    and the server's end (SIGTERM) stops it."""
    monkeypatch.setenv("MOLAR_ANALYSIS_WORKER_EVENTS", "500")
    served = start_server(tmp_path / "data")
    try:
        with httpx2.Client(base_url=served.base_url, timeout=60, trust_env=False) as http:
            answer = http.post("/v1/traces/ingest", files={"file": ("b.tar.gz", _bundle(500))})
            assert answer.status_code == 201, answer.text
            trace_id = answer.json()["trace_id"]
            deadline = time.monotonic() + 60
            while (got := http.get(f"/v1/traces/{trace_id}/analysis")).status_code != 200:
                assert time.monotonic() < deadline, got.text
                time.sleep(0.1)
            assert got.json()["failure_signature"] == "console TypeError: cart is undefined"
        (pid,) = _children_of(served.process.pid)  # the analysis ran in the server's worker process
        assert "molar_mcp.api.analysis_worker" in Path(f"/proc/{pid}/cmdline").read_text()
    finally:
        served.process.terminate()
        served.process.wait(timeout=30)
    assert _gone(pid)  # stopped by the server's shutdown, not left to notice its parent is gone


_ORPHANING = """
import sys, time
from pathlib import Path
from molar_mcp.api.analysis_worker import AnalysisWorker, StoreAddress
worker = AnalysisWorker(StoreAddress(Path(sys.argv[1])), min_events=0)
worker.analyse("org_local", sys.argv[2], "failed")
print(worker.pid, flush=True)
time.sleep(600)
"""


@lifecycle
def test_a_worker_whose_server_is_killed_exits_by_itself(embedded: Embedded) -> None:
    trace_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())[0]
    server = subprocess.Popen(
        [sys.executable, "-c", _ORPHANING, str(embedded.store.data_dir), trace_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        pid = int(server.stdout.readline())
        assert _children_of(server.pid) == [pid]
    finally:
        server.kill()  # no shutdown, no close(): the worker is orphaned
        server.wait()
    deadline = time.monotonic() + 15
    while not _gone(pid):
        assert time.monotonic() < deadline, "the worker outlived its killed server"
        time.sleep(0.1)


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@lifecycle
def test_the_worker_analyses_a_long_real_run_as_the_server_does(embedded: Embedded, worker: AnalysisWorker) -> None:
    trace_id = ingest_bundle(embedded.store, LOCAL_ORG_ID, record_long_run(3_000))[0]
    with org_scope(LOCAL_ORG_ID):
        here = analyze(embedded.store.stored_events(LOCAL_ORG_ID, trace_id), "failed")
    assert here
    assert here[0].label == "assertion_failed"
    assert _dumped(worker.analyse(LOCAL_ORG_ID, trace_id, "failed")) == _dumped(here)
