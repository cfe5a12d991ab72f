"""Two `molar-mcp serve` replicas on one PostgreSQL database and one S3 bucket behave as one server:
ingest through one, follow and read through the other; kill -9 one mid-ingest and nothing acknowledged
is lost, nothing is half-stored, and the other goes on; kill -9 one mid-replay and the other takes the
replay over once its lease runs out and runs it to the end."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from molar_mcp.demo import fix_diff
from molar_mcp.replay.apps import free_port
from molar_mcp.replay.drivers.playwright import report_result
from tests.bundles import artifact_for, make_bundle, summary
from tests.engines import PgCluster, S3Endpoint
from tests.replays.pw_project import FIX, make_project, run_test, trace_zip
from tests.servers import Served, start_server

pytestmark = pytest.mark.e2e

TS = 1_763_629_200_000
BATCH = 50


def ev(seq: int, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": TS + seq, "kind": "log", "step_id": f"s{seq // 100}", "message": f"line {seq}"} | fields


@contextmanager
def two_replicas(root: Path, url: str, s3_url: str) -> Iterator[tuple[Served, Served]]:
    """Two `serve` replicas on database `url` and bucket `s3_url`, started at once, stopped at the end."""
    engines = ("--database-url", url, "--blob-url", s3_url)
    # Both start at once on a new database: migrations run once (an advisory lock), secrets are shared.
    started: list[Served] = []
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            (root / name).mkdir()
            started.append(start_server(root / name / "data", *engines, timeout=120))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        a, b = sorted(started, key=lambda s: str(s.data_dir))
        yield a, b
    finally:
        for srv in started:
            if srv.process.poll() is None:
                srv.process.terminate()
                try:
                    srv.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    srv.process.kill()


@pytest.fixture
def replicas(tmp_path: Path, pg: PgCluster, s3_url: str) -> Iterator[tuple[Served, Served]]:
    """Two replicas of the test's own, on a new database (for a test that kills one)."""
    with two_replicas(tmp_path, pg.new_database("replicas"), s3_url) as pair:
        yield pair


@pytest.fixture(scope="module")
def shared_replicas(
    tmp_path_factory: pytest.TempPathFactory, pg: PgCluster, s3: S3Endpoint
) -> Iterator[tuple[Served, Served]]:
    """Two replicas on a new database and bucket, shared by the module's tests that leave both running: each
    writes and reads traces and runs of its own. Starting a pair costs seconds of CPU."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3.env().items():
            env.setenv(name, value)
        bucket = f"replicas-{os.getpid()}"
        s3.create_bucket(bucket)
        url = pg.new_database("replicas")
        with two_replicas(tmp_path_factory.mktemp("replicas"), url, f"s3://{bucket}/molar") as pair:
            yield pair


def _follow(
    base: str, trace_id: str, seen: list[int], ended: list[str], ready: threading.Event, bodies: list[Any] | None = None
) -> None:
    with (
        httpx2.Client(base_url=base, timeout=60) as http,
        http.stream("GET", f"/v1/traces/{trace_id}/stream", headers={"accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        ready.set()
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "end":
                    ended.append(data["status"])
                    return
                seen.append(int(data["seq"]))
                if bodies is not None:
                    bodies.append(data)
            elif line == "":
                event = "message"


def test_appends_through_one_replica_reach_a_follower_of_the_other(shared_replicas: tuple[Served, Served]) -> None:
    # Single events (their notification carries them) and batches of 50 (too big to carry: the other
    # replica reads them): the follower gets every event once, in order, as the store keeps it (a NUL in
    # text is U+FFFD; the step numbered, `ok` derived from the status).
    a, b = shared_replicas
    with httpx2.Client(base_url=a.base_url, timeout=30) as http_a:
        created = http_a.post("/v1/traces", json={"scenario_slug": "agent-run", "source": "manual"})
        assert created.status_code == 201, created.text
        trace_id = created.json()["id"]
        seen: list[int] = []
        ended: list[str] = []
        bodies: list[Any] = []
        ready = threading.Event()
        follower = threading.Thread(
            target=_follow, args=(b.base_url, trace_id, seen, ended, ready, bodies), daemon=True
        )
        follower.start()
        assert ready.wait(30)
        odd = ev(0, message="caf\u00e9 \x00 done", kind="network.response", payload={"status": 503, "k": "\x00"})
        assert http_a.post(f"/v1/traces/{trace_id}/events", json=odd).json()["accepted"] == 1
        for seq in range(1, 10):
            assert http_a.post(f"/v1/traces/{trace_id}/events", json=ev(seq)).json()["accepted"] == 1
        for start in range(10, 510, BATCH):
            response = http_a.post(
                f"/v1/traces/{trace_id}/events", json={"events": [ev(i) for i in range(start, start + BATCH)]}
            )
            assert response.json()["accepted"] == BATCH
        assert http_a.post(f"/v1/traces/{trace_id}/finish", json={"status": "passed"}).status_code == 200
        stored = http_a.get(f"/v1/traces/{trace_id}/events", params={"limit": 1000}).json()["events"]
    follower.join(60)
    assert seen == list(range(510))
    assert ended == ["passed"]
    assert bodies == [{k: v for k, v in e.items() if v is not None} for e in stored]
    assert (bodies[0]["message"], bodies[0]["ok"], bodies[0]["step"]) == ("caf\u00e9 \ufffd done", False, 1)


def _follow_run(base: str, run_id: str, runs: list[dict[str, Any]], ready: threading.Event) -> None:
    with (
        httpx2.Client(base_url=base, timeout=60) as http,
        http.stream("GET", f"/v1/runs/{run_id}/stream", headers={"accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                if event == "end":
                    return
                runs.append(json.loads(line.split(":", 1)[1]))
                ready.set()
            elif line == "":
                event = "message"


def test_a_result_uploaded_through_one_replica_reaches_a_run_follower_of_the_other(
    shared_replicas: tuple[Served, Served],
) -> None:
    a, b = shared_replicas
    with httpx2.Client(base_url=a.base_url, timeout=30) as http_a:
        run = http_a.post("/v1/runs", json={"name": "CI on two replicas"}).json()
        runs: list[dict[str, Any]] = []
        ready = threading.Event()
        follower = threading.Thread(target=_follow_run, args=(b.base_url, run["id"], runs, ready), daemon=True)
        follower.start()
        assert ready.wait(30)  # the run as it is now
        stored = http_a.post(
            "/v1/traces/ingest",
            files={"file": ("b.tar.gz", make_bundle(summary(scenario_slug="two-replicas")))},
            data={"run_id": run["id"]},
        )
        assert stored.status_code == 201, stored.text
        deadline = time.monotonic() + 30
        while not any(r["counts"]["tests"] == 1 for r in runs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http_a.post(f"/v1/runs/{run['id']}/finish", json={}).status_code == 200
    follower.join(60)
    assert runs[0]["counts"]["tests"] == 0
    news = [r for r in runs if r["counts"]["tests"] == 1 and r["status"] == "running"]
    assert news, runs  # the upload through a, heard through b while the run was still running
    assert news[0]["failing"][0]["trace_id"] == stored.json()["trace_id"]
    assert runs[-1]["status"] == "failed"


def test_a_bundle_ingested_through_one_replica_is_read_through_the_other_with_its_artifact(
    shared_replicas: tuple[Served, Served],
) -> None:
    a, b = shared_replicas
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
    bundle = make_bundle(summary(artifacts=[artifact_for(png)]), blobs={"shot": png})
    files = {"bundle": ("bundle.tar.gz", bundle, "application/gzip")}
    ingested = httpx2.post(f"{a.base_url}/v1/traces/ingest", files=files, data={"scenario_slug": "checkout"})
    assert ingested.status_code == 201, ingested.text
    trace_id = ingested.json()["trace_id"]
    with httpx2.Client(base_url=b.base_url, timeout=30) as http_b:
        detail = http_b.get(f"/v1/traces/{trace_id}").json()
        assert detail["event_count"] > 0
        sha = hashlib.sha256(png).hexdigest()
        redirect = http_b.get(f"/v1/traces/{trace_id}/blob/{sha}")
        assert redirect.status_code == 302
        # A presigned URL of the bucket: the object store serves the bytes, not a replica.
        location = redirect.headers["location"]
        assert not location.startswith(b.base_url)
        assert httpx2.get(location).content == png
        found = http_b.get("/v1/traces", params={"q": "checkout"}).json()["items"]
        assert trace_id in [t["id"] for t in found]


def test_a_replica_killed_mid_ingest_loses_nothing_acknowledged_and_the_other_goes_on(
    replicas: tuple[Served, Served],
) -> None:
    a, b = replicas
    created = httpx2.post(f"{a.base_url}/v1/traces", json={"scenario_slug": "killed-mid-run"})
    trace_id = created.json()["id"]
    acknowledged: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        with httpx2.Client(base_url=a.base_url, timeout=10) as http:
            seq = 0
            while not stop.is_set():
                batch = [ev(i) for i in range(seq, seq + BATCH)]
                try:
                    response = http.post(f"/v1/traces/{trace_id}/events", json={"events": batch})
                except httpx2.TransportError:
                    return
                if response.status_code == 200 and response.json()["accepted"] == BATCH:
                    acknowledged.append(seq + BATCH - 1)
                seq += BATCH

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while len(acknowledged) < 10:
        assert thread.is_alive()
        threading.Event().wait(0.02)
    a.process.send_signal(signal.SIGKILL)
    a.process.wait(10)
    stop.set()
    thread.join(30)

    with httpx2.Client(base_url=b.base_url, timeout=30) as http_b:
        stored = http_b.get(f"/v1/traces/{trace_id}/events", params={"limit": 1000}).json()
        seqs = [e["seq"] for e in stored["events"]]
        # Every acknowledged batch is there, and batches are whole: all of one, or none of it.
        assert seqs == list(range(len(seqs)))
        assert len(seqs) % BATCH == 0
        assert len(seqs) - 1 >= acknowledged[-1]
        # The other replica goes on with the same trace.
        more = http_b.post(f"/v1/traces/{trace_id}/events", json={"events": [ev(len(seqs))]})
        assert more.json()["accepted"] == 1
        assert http_b.post(f"/v1/traces/{trace_id}/finish", json={"status": "failed"}).status_code == 200
        detail = http_b.get(f"/v1/traces/{trace_id}").json()
        assert (detail["status"], detail["event_count"]) == ("failed", len(seqs) + 1)


@pytest.fixture
def demo_replicas(
    tmp_path: Path, pg: PgCluster, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Served, Served]]:
    """Two `serve --demo` replicas (the demo shop replayable on both) with a 3 s replay lease."""
    monkeypatch.setenv("MOLAR_REPLAY_LEASE_SECONDS", "3")
    monkeypatch.setenv("MOLAR_REPLAY_POLL_SECONDS", "0.5")
    engines = ("--database-url", pg.new_database("replays"), "--blob-url", s3_url, "--demo")
    started: list[Served] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(start_server(tmp_path / name / "data", *engines, timeout=180))
        yield started[0], started[1]
    finally:
        for srv in started:
            if srv.process.poll() is None:
                srv.process.terminate()
                try:
                    srv.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    srv.process.kill()


def test_a_replica_killed_mid_replay_leaves_it_to_the_other_which_runs_it_to_the_end(
    demo_replicas: tuple[Served, Served],
) -> None:
    a, b = demo_replicas
    with (
        httpx2.Client(base_url=a.base_url, timeout=30) as http_a,
        httpx2.Client(base_url=b.base_url, timeout=60) as http_b,
    ):
        failed = http_a.get("/v1/traces", params={"status": "failed", "limit": 100}).json()["items"]
        coupon = next(t["id"] for t in failed if t["scenario_slug"] == "checkout-coupon")
        fix = {"path": "app.py", "diff": fix_diff("coupon-multiplier")}
        accepted = http_a.post(f"/v1/traces/{coupon}/replay", json={"from_step": 6, "edits": {"source_diffs": [fix]}})
        assert accepted.status_code == 202, accepted.text
        replay_id = accepted.json()["id"]
        status = accepted.json()
        assert (status["status"], status["attempts"]) == ("running", 1)  # A took it: a slot was free
        # B sees the replay A runs, through the same API.
        seen = http_b.get(f"/v1/replays/{replay_id}").json()
        assert (seen["status"], seen["attempts"]) == ("running", 1)
        # kill -9 A once its replay is under way (the sandbox goes with it: --die-with-parent)
        while status["phase"] == "queued":
            status = http_a.get(f"/v1/replays/{replay_id}", params={"wait": "5", "phase": "queued"}).json()
        assert status["status"] == "running"
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(10)

        # A's lease runs out (3 s); B's worker claims the replay and runs it again from the start.
        deadline = time.monotonic() + 120
        status = http_b.get(f"/v1/replays/{replay_id}").json()
        while status["status"] != "succeeded" and time.monotonic() < deadline:
            assert status["status"] in ("running", "queued"), status
            status = http_b.get(f"/v1/replays/{replay_id}", params={"wait": "10", "phase": status["phase"]}).json()
        assert status["status"] == "succeeded", status
        assert status["attempts"] == 2
        assert status["trace_status"] == "passed"  # the fix makes the failing step pass
        listed = http_b.get(f"/v1/traces/{coupon}/replays").json()["items"]
        assert [r["id"] for r in listed] == [replay_id]  # one replay, run to its end once
        children = http_b.get("/v1/traces", params={"q": "checkout-coupon", "limit": 100}).json()["items"]
        child = http_b.get(f"/v1/traces/{status['replay_trace_id']}").json()
        assert child["parent_trace_id"] == coupon
        assert [t["id"] for t in children if t["id"] == status["replay_trace_id"]]


def test_a_playwright_test_uploaded_through_one_replica_is_replayed_by_the_other(
    tmp_path: Path, pg: PgCluster, s3_url: str
) -> None:
    """A real @playwright/test project under a replay root both replicas share: its failing test's trace is
    uploaded through A, A goes away, and B replays the test from the stored trace (events in PostgreSQL, the
    trace's sources in the bucket) with the fixing diff, in the sandbox, to a passing run."""
    root = tmp_path / "roots"
    repo = root / "cart"
    commit = make_project(repo)
    result = report_result(json.dumps(run_test(repo, free_port())).encode())
    assert result is not None
    assert result["status"] == "failed", result
    engines = ("--database-url", pg.new_database("pw_replays"), "--blob-url", s3_url, "--replay-root", str(root))
    started: list[Served] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(start_server(tmp_path / name / "data", *engines, timeout=180))
        a, b = started
        with httpx2.Client(base_url=a.base_url, timeout=60) as http_a:
            upload = {**result, "commit": commit, "repo": {"path": str(repo)}}
            resp = http_a.post(
                "/v1/traces/ingest",
                files={"file": ("trace.zip", trace_zip(repo), "application/zip")},
                data={"result": json.dumps(upload)},
            )
            assert resp.status_code == 201, resp.text
        parent = resp.json()["trace_id"]
        a.process.terminate()
        a.process.wait(20)

        with httpx2.Client(base_url=b.base_url, timeout=60) as http_b:
            detail = http_b.get(f"/v1/traces/{parent}").json()
            assert detail["status"] == "failed"
            failing = next(s["step"] for s in detail["steps"] if s["ok"] is False and not s.get("depth"))
            fix = {"path": FIX[0], "diff": FIX[1]}
            accepted = http_b.post(
                f"/v1/traces/{parent}/replay", json={"from_step": failing, "edits": {"source_diffs": [fix]}}
            )
            assert accepted.status_code == 202, accepted.text
            status = accepted.json()
            deadline = time.monotonic() + 240
            while status["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
                status = http_b.get(f"/v1/replays/{status['id']}", params={"wait": "20"}).json()
            assert (status["status"], status["trace_status"]) == ("succeeded", "passed"), status
            assert f"--project=chromium {result['file']} --grep=cart" in status["message"]
            child = http_b.get(f"/v1/traces/{status['replay_trace_id']}").json()
            assert (child["parent_trace_id"], child["status"]) == (parent, "passed")
    finally:
        for srv in started:
            if srv.process.poll() is None:
                srv.process.terminate()
                try:
                    srv.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    srv.process.kill()
