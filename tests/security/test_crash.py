"""Crashes: `kill -9` of a real `molar-mcp serve` while bundles are uploaded and live traces appended,
again and again on one data dir: nothing acknowledged is lost, nothing is half-stored (a bundle trace
has all its events or does not exist; a live trace holds whole batches), and the server restarts clean
every time (healthy, the database intact). Live traces a crashed producer left `running` are marked
`interrupted` by the reaper after the quiet period.

The servers are forked from one process that imported molar_mcp once (`Zygote`): each run is the real
`serve` command, started in under a second instead of re-importing everything for each of the 20 runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.bundles import BASE_TS, checkout_events, make_bundle, summary
from tests.servers import child_env, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

KILLS = 20
BUNDLE_EVENTS = 30 + 1500  # the checkout plus log lines: an insert long enough to be cut by the kill
BATCH = 25  # events per live append

_ZYGOTE = r"""
import json, os, sys
import molar_mcp.cli, molar_mcp.compose  # the heavy imports, once; each server is a fork
for line in sys.stdin:
    request = json.loads(line)
    while True:  # reap the servers killed earlier
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    pid = os.fork()
    if pid == 0:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.environ.clear()
        os.environ.update(request["env"])
        code = 1
        try:
            code = molar_mcp.cli.main(request["argv"])
        finally:
            os._exit(code or 0)
    print(pid, flush=True)
"""


class Zygote:
    """A process that imported molar_mcp and forks a `serve` on request."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def serve(self, data_dir: Path, port: int, *extra: str) -> int:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        argv = ["serve", "--no-auth", "--port", str(port), "--data-dir", str(data_dir), *extra]
        log = str(data_dir.parent / "serve.log")
        self.process.stdin.write(json.dumps({"argv": argv, "env": child_env(data_dir), "log": log}) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


def wait_healthy(base: str, pid: int, timeout: float = 90) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not running(pid):
            raise RuntimeError("serve exited during start")
        try:
            if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx2.TransportError:
            time.sleep(0.05)
    raise RuntimeError("serve did not become healthy")


def bundle(name: str) -> bytes:
    events = checkout_events()
    events += [
        {"seq": len(events) + n, "ts": BASE_TS + 10_000 + n, "kind": "log", "message": f"{name} line {n}"}
        for n in range(BUNDLE_EVENTS - len(events))
    ]
    return make_bundle(summary(scenario_slug=name), events)


@dataclass
class Ledger:
    """What the server acknowledged, and everything that was attempted."""

    bundles: dict[str, str] = field(default_factory=dict)  # scenario slug → trace id (acknowledged)
    attempted_bundles: set[str] = field(default_factory=set)
    live: dict[str, int] = field(default_factory=dict)  # live trace id → batches acknowledged
    acks: int = 0


async def load(base: str, run: int, ledger: Ledger, stop_after: float, pid: int) -> None:
    """Upload bundles and append live batches at once, until the server is killed `stop_after` s after
    its first acknowledgement of the run."""

    async def bundles(http: httpx2.AsyncClient) -> None:
        for n in range(10_000):
            name = f"crash-{run}-{n}"
            ledger.attempted_bundles.add(name)
            files = {"bundle": ("b.tar.gz", bundle(name), "application/gzip")}
            answer = await http.post("/v1/traces/ingest", data={"scenario_slug": name}, files=files)
            assert answer.status_code == 201, answer.text
            ledger.bundles[name] = answer.json()["trace_id"]
            ledger.acks += 1

    async def live(http: httpx2.AsyncClient, lane: int) -> None:
        created = await http.post("/v1/traces", json={"scenario_slug": f"crash-live-{run}-{lane}"})
        assert created.status_code == 201, created.text
        trace = created.json()["id"]
        ledger.live[trace] = 0
        for b in range(10_000):
            events = [
                {"seq": s, "ts": BASE_TS + s, "kind": "log", "message": f"batch {b} event {s}"}
                for s in range(b * BATCH, (b + 1) * BATCH)
            ]
            answer = await http.post(f"/v1/traces/{trace}/events", json={"events": events})
            assert answer.status_code in (200, 202), answer.text
            assert answer.json()["accepted"] == BATCH
            ledger.live[trace] = b + 1
            ledger.acks += 1

    async def killer(tg: anyio.abc.TaskGroup) -> None:
        # Once the server has acknowledged something in this run (however slow the machine), a random
        # moment later: the kill lands while bundles and batches are in flight.
        before = ledger.acks
        with anyio.fail_after(120):
            while ledger.acks == before:  # noqa: ASYNC110 - polling another task's progress
                await anyio.sleep(0.02)
        await anyio.sleep(stop_after)
        os.kill(pid, signal.SIGKILL)

    async def until_cut(work: Any, *args: Any) -> None:
        try:
            await work(*args)
        except (httpx2.TransportError, httpx2.RemoteProtocolError):
            return  # the server died under the request: its outcome is unknown, and checked later

    async with httpx2.AsyncClient(base_url=base, timeout=60.0) as http, anyio.create_task_group() as tg:
        tg.start_soon(killer, tg)
        tg.start_soon(until_cut, bundles, http)
        tg.start_soon(until_cut, live, http, 0)
        tg.start_soon(until_cut, live, http, 1)


async def check(base: str, ledger: Ledger) -> None:
    """Every acknowledged write is there, whole; whatever was in flight is there whole or not at all."""
    async with httpx2.AsyncClient(base_url=base, timeout=60.0) as http:
        for name, trace in ledger.bundles.items():
            detail = await http.get(f"/v1/traces/{trace}")
            assert detail.status_code == 200, (name, detail.text)
            assert detail.json()["event_count"] == BUNDLE_EVENTS, name
        for trace, batches in ledger.live.items():
            seqs: list[int] = []
            while True:  # every page: a fast machine gets well over one page acknowledged before the kill
                page = await http.get(f"/v1/traces/{trace}/events", params={"limit": 1000, "offset": len(seqs)})
                assert page.status_code == 200, page.text
                got = [e["seq"] for e in page.json()["events"]]
                seqs.extend(got)
                if len(got) < 1000:
                    break
            assert len(seqs) % BATCH == 0  # whole batches only
            assert seqs == list(range(len(seqs)))
            assert len(seqs) >= batches * BATCH  # every acknowledged batch


def check_database(data_dir: Path, ledger: Ledger) -> dict[str, int]:
    """The SQLite file after the last (clean) stop: intact, counts that match the rows, bundles whole."""
    conn = sqlite3.connect(f"file:{data_dir / 'molar.sqlite3'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(
            "SELECT t.scenario_slug, t.event_count, (SELECT count(*) FROM events e WHERE e.trace_pk = t.pk)"
            " FROM traces t WHERE t.scenario_slug LIKE 'crash-%'"
        ).fetchall()
    finally:
        conn.close()
    for slug, counted, stored in rows:
        assert counted == stored, slug  # the trace row agrees with its events
        if not slug.startswith("crash-live-"):
            assert slug in ledger.attempted_bundles
            assert stored == BUNDLE_EVENTS, slug  # never half a bundle
    slugs = {r[0] for r in rows}
    assert set(ledger.bundles) <= slugs
    return {"traces": len(rows), "bundles": sum(1 for s in slugs if not s.startswith("crash-live-"))}


def running(pid: int) -> bool:
    """True while the process runs (a zombie, exited but not yet reaped by the zygote, has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def ended(pid: int) -> None:
    for _ in range(600):
        if not running(pid):
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"serve {pid} did not stop")


async def test_kill_9_during_ingest_loses_nothing_acknowledged_and_stores_nothing_half(
    tmp_path: Path, zygote: Zygote
) -> None:
    data = tmp_path / "data"
    rng = random.Random(13)
    ledger = Ledger()
    starts: list[float] = []
    for run in range(KILLS + 1):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        pid = zygote.serve(data, port)
        starts.append(wait_healthy(base, pid))
        await check(base, ledger)  # the restart is clean and has everything acknowledged before
        if run == KILLS:
            os.kill(pid, signal.SIGTERM)
            break
        acks_before = ledger.acks
        await load(base, run, ledger, rng.uniform(0.0, 0.8), pid)
        assert ledger.acks > acks_before, f"run {run}: nothing was acknowledged before the kill"
    await ended(pid)
    found = check_database(data, ledger)
    in_flight = ledger.attempted_bundles - set(ledger.bundles)
    print(
        f"{KILLS} kills; {ledger.acks} writes acknowledged; {len(in_flight)} bundles in flight at a kill; "
        f"{found}; restarts healthy in {min(starts):.2f}-{max(starts):.2f} s"
    )
    assert found["bundles"] >= len(ledger.bundles)


# -- The reaper: live traces left running by a crashed producer --------------------------------------


@pytest.fixture(scope="module")
def quick_reaper(tmp_path_factory: pytest.TempPathFactory, zygote: Zygote) -> Iterator[str]:
    data = tmp_path_factory.mktemp("reaper") / "data"
    port = free_port()
    pid = zygote.serve(data, port, "--live-quiet-seconds", "1.5")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, pid)
        yield base
    finally:
        os.kill(pid, signal.SIGTERM)


async def test_a_live_trace_whose_producer_went_quiet_is_marked_interrupted(quick_reaper: str) -> None:
    def events(first: int, count: int) -> dict[str, Any]:
        return {
            "events": [
                {"seq": n, "ts": BASE_TS + n, "kind": "log", "message": f"e{n}"} for n in range(first, first + count)
            ]
        }

    async with httpx2.AsyncClient(base_url=quick_reaper, timeout=30.0) as http:
        crashed = (await http.post("/v1/traces", json={"scenario_slug": "crashed-producer"})).json()["id"]
        alive = (await http.post("/v1/traces", json={"scenario_slug": "alive-producer"})).json()["id"]
        assert (await http.post(f"/v1/traces/{crashed}/events", json=events(0, 3))).status_code in (200, 202)
        heard_end: list[dict[str, Any]] = []

        async def follow() -> None:
            async with http.stream("GET", f"/v1/traces/{crashed}/stream") as stream:
                event = None
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "end":
                        heard_end.append(json.loads(line.split(":", 1)[1]))
                        return

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                for n in range(12):  # the other producer keeps appending every 0.5 s: never quiet
                    await anyio.sleep(0.5)
                    answer = await http.post(f"/v1/traces/{alive}/events", json=events(n, 1))
                    assert answer.status_code in (200, 202), answer.text
        reaped = (await http.get(f"/v1/traces/{crashed}")).json()
        still = (await http.get(f"/v1/traces/{alive}")).json()
        late = await http.post(f"/v1/traces/{crashed}/events", json=events(3, 1))
        listed = (await http.get("/v1/traces", params={"status": "interrupted"})).json()
    assert heard_end == [{"status": "interrupted"}]  # its followers hear the end
    assert reaped["status"] == "interrupted"
    assert reaped["event_count"] == 3  # what it held is kept
    assert still["status"] == "running"
    assert late.status_code == 409
    assert crashed in {row["id"] for row in listed["items"]}
