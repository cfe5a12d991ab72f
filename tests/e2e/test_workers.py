"""`molar-mcp serve --workers 2` on the embedded store behaves as one server: 2025-11-25 sessions are reached
through either worker (relayed to the one holding them, SSE streams too), 2026-07-28 calls go anywhere, a
live follower on one worker sees what is appended through the other, and rate limits are the org's across
workers. Each worker is reached on its own Unix socket (in the run directory the supervisor made) to pick
which one answers; the rest goes through the one TCP port, as a client's requests do."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from bench.mcp_light import LEGACY, MODERN, CallFailed, LightClient, check_trace, list_rows

from molar_mcp.api.ratelimit_shared import SharedRateLimiter
from molar_mcp.api.telemetry import RateLimits
from tests.servers import Served, child_env, start_server, stop_server

pytestmark = pytest.mark.e2e

TS = 1_763_629_200_000


def _run_dir(served: Served) -> Path:
    """The workers' run directory, read from the command line of the supervisor's children."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != served.process.pid:
                continue
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--worker-run-dir" in argv:
            return Path(argv[argv.index(b"--worker-run-dir") + 1].decode())
    raise AssertionError("no worker process found")


def _worker_pids(served: Served) -> dict[int, int]:
    """The supervisor's worker processes by index."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == served.process.pid and b"--worker" in argv:
            children[int(argv[argv.index(b"--worker") + 1])] = int(stat.parent.name)
    return children


def _listening_sockets(pid: int, port: int) -> set[int]:
    """The inodes of the TCP sockets process `pid` listens on at `port` (/proc/net/tcp: state 0A)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A" and int(fields[9]) in held:
            found.add(int(fields[9]))
    return found


def _uds(run_dir: Path, index: int) -> httpx2.HTTPTransport:
    return httpx2.HTTPTransport(uds=str(run_dir / f"http-{index}.sock"))


def _wait_for_workers(run_dir: Path) -> None:
    for index in (0, 1):  # worker 1 starts once worker 0 answers
        with httpx2.Client(transport=_uds(run_dir, index), timeout=5) as http:
            for _ in range(600):
                try:
                    if http.get("http://worker/healthz").status_code == 200:
                        break
                except httpx2.TransportError:
                    threading.Event().wait(0.2)  # polling a starting process
            else:
                raise AssertionError(f"worker {index} did not start")


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    data = tmp_path_factory.mktemp("workers") / "data"
    data.mkdir()
    srv = start_server(data, "--workers", "2", timeout=180)
    try:
        run_dir = _run_dir(srv)
        _wait_for_workers(run_dir)
        yield srv, run_dir
    finally:
        stop_server(srv)
    assert not run_dir.exists()  # the supervisor removes its run directory when it stops


def _ev(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": TS + seq,
        "kind": "log",
        "step_id": f"s{seq // 100}",
        "message": f"line {seq} " + "x" * 90,
    }


def _follow(run_dir: Path, trace_id: str, seen: list[int], ended: list[str], ready: threading.Event) -> None:
    with (
        httpx2.Client(transport=_uds(run_dir, 1), base_url="http://worker", timeout=60) as http,
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
            elif line == "":
                event = "message"


def test_appends_through_one_worker_reach_a_follower_of_the_other(workers: tuple[Served, Path]) -> None:
    # Batches of 10 (their note carries them) and of 600 (too big for a datagram: the other worker reads them).
    _, run_dir = workers
    with httpx2.Client(transport=_uds(run_dir, 0), base_url="http://worker", timeout=30) as http:
        trace_id = http.post("/v1/traces", json={"scenario_slug": "two-workers", "source": "manual"}).json()["id"]
        seen: list[int] = []
        ended: list[str] = []
        ready = threading.Event()
        follower = threading.Thread(target=_follow, args=(run_dir, trace_id, seen, ended, ready), daemon=True)
        follower.start()
        assert ready.wait(30)
        for start, size in [(0, 10), (10, 10), (20, 600), (620, 10)]:
            batch = {"events": [_ev(i) for i in range(start, start + size)]}
            assert http.post(f"/v1/traces/{trace_id}/events", json=batch).json()["accepted"] == size
        assert http.post(f"/v1/traces/{trace_id}/finish", json={"status": "failed"}).status_code == 200
    follower.join(60)
    assert seen == list(range(630))
    assert ended == ["failed"]


@pytest.mark.anyio
async def test_a_legacy_session_opened_on_one_worker_is_served_through_the_other(
    workers: tuple[Served, Path],
) -> None:
    srv, run_dir = workers
    url = srv.base_url + "/mcp"  # the Host the server expects; the socket picks the worker
    to = [httpx2.AsyncHTTPTransport(uds=str(run_dir / f"http-{i}.sock")) for i in (0, 1)]
    opened = LightClient(url, LEGACY, transport=to[0])
    async with opened:
        assert opened.session_id is not None
        assert opened.session_id.startswith("0.")
        other = LightClient(url, LEGACY, transport=to[1])
        other.session_id = opened.session_id  # the same session, through worker 1: relayed to worker 0
        try:
            await other.call_tool("list_traces", {})
            headers = {"mcp-session-id": opened.session_id, "mcp-protocol-version": LEGACY}
            # The session's GET stream, relayed as a stream: its headers arrive while it stays open.
            async with other._http.stream("GET", url, headers=headers) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                assert stream.headers["mcp-session-id"] == opened.session_id
            # Worker 1 counts what it relayed (its own registry): the tool call's POST and the GET stream.
            metrics = (await other._http.get(srv.base_url + "/metrics")).text
            assert 'molar_mcp_relayed_requests_total{method="POST"} 1.0' in metrics
            assert 'molar_mcp_relayed_requests_total{method="GET"} 1.0' in metrics
            # An id no worker handed out is unknown, as on one process.
            other.session_id = "1." + "0" * 32
            with pytest.raises(CallFailed, match="HTTP 404"):
                await other.call_tool("list_traces", {})
        finally:
            other.session_id = None
            await other.aclose()
    # Ended through worker 0 (DELETE): gone for worker 1 too.
    async with httpx2.AsyncClient(transport=to[1]) as http:
        headers = {"mcp-session-id": opened.session_id, "mcp-protocol-version": LEGACY, "accept": "application/json"}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        assert (await http.post(url, json=body, headers=headers)).status_code == 404


@pytest.mark.anyio
async def test_both_eras_over_the_one_port_make_no_errors(workers: tuple[Served, Path]) -> None:
    srv, _ = workers
    with httpx2.Client(base_url=srv.base_url, timeout=30) as http:
        trace = http.post("/v1/traces", json={"scenario_slug": "port", "source": "manual"}).json()
        assert http.post(f"/v1/traces/{trace['id']}/finish", json={"status": "failed"}).status_code == 200
    sessions: set[str] = set()

    async def client(era: str) -> None:
        async with LightClient(srv.base_url + "/mcp", era) as c:
            if c.session_id:
                sessions.add(c.session_id.split(".")[0])
            for _ in range(5):
                rows = list_rows(await c.call_tool("list_traces", {"status": "failed"}))
                check_trace(await c.call_tool("get_trace", {"trace_id": rows[0]}), rows[0])

    async with anyio.create_task_group() as tasks:
        for i in range(16):
            tasks.start_soon(client, MODERN if i % 2 else LEGACY)
    assert sessions <= {"0", "1"}


@pytest.mark.anyio
async def test_clients_connecting_together_are_spread_over_both_workers(workers: tuple[Served, Path]) -> None:
    # 100 clients open their connections at once, each a 2025-11-25 session (its id names the worker that
    # accepted the connection). On one socket both workers accepted from, the first worker to wake took every
    # connection waiting: most of a burst like this one went to one worker (34 of 40 here). Each worker
    # listening on a socket of its own (SO_REUSEPORT), the kernel spreads them by a hash of their addresses:
    # fewer than 30 of 100 on a worker is a chance of about 1 in 10^4.
    srv, _ = workers
    port = int(srv.base_url.rsplit(":", 1)[1])
    listening = {index: _listening_sockets(pid, port) for index, pid in _worker_pids(srv).items()}
    assert all(len(inodes) == 1 for inodes in listening.values()), listening
    assert listening[0] != listening[1]  # a socket each, not one shared
    clients = [LightClient(srv.base_url + "/mcp", LEGACY) for _ in range(100)]
    try:
        async with anyio.create_task_group() as tasks:
            for client in clients:
                tasks.start_soon(client.open)
        owners = [client.session_id.split(".")[0] for client in clients if client.session_id]
    finally:
        for client in clients:
            await client.aclose()
    assert len(owners) == 100
    assert min(owners.count("0"), owners.count("1")) >= 30, owners


def test_a_port_another_server_listens_on_is_refused(tmp_path: Path) -> None:
    # Another server holds the port with SO_REUSEPORT set (as `serve --workers` binds): the workers' sockets,
    # SO_REUSEPORT too, could join its group and take a share of its connections; the supervisor refuses the
    # port instead, as one process would.
    (tmp_path / "data").mkdir()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = [sys.executable, "-m", "molar_mcp", "serve", "--no-auth", "--workers", "2", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--data-dir", str(tmp_path / "data")],
            stderr=subprocess.PIPE,
            env=child_env(tmp_path),
            start_new_session=True,
        )
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the supervisor and its workers
            process.communicate()
            raise AssertionError("serve --workers 2 started on a port another server listens on") from None
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err.decode()


def test_rate_limits_are_the_orgs_across_workers(tmp_path: Path) -> None:
    # Two workers' limiters on one file: 120 a minute between them, not 120 each.
    # (The wall clock held still: no refill while they spend.)
    limiters = [
        SharedRateLimiter(limits=RateLimits(write=120), path=tmp_path / "limits.sqlite3", wall_clock=lambda: 1e9)
        for _ in (0, 1)
    ]
    try:
        allowed = sum(1 for i in range(400) if limiters[i % 2].take("org", "write") == 0)
        assert allowed == 120
        assert limiters[0].take("other-org", "write") == 0  # another org has its own bucket
    finally:
        for limiter in limiters:
            limiter.close()


def test_a_worker_that_dies_stops_the_server(tmp_path: Path) -> None:
    # A server missing a worker is not whole (its sessions are gone): the supervisor stops the other worker
    # and exits with a failure status, for a process manager to restart it.
    (tmp_path / "data").mkdir()
    srv = start_server(tmp_path / "data", "--workers", "2", timeout=180)
    try:
        run_dir = _run_dir(srv)
        _wait_for_workers(run_dir)
        children = _worker_pids(srv)
        assert set(children) == {0, 1}
        os.kill(children[1], signal.SIGKILL)
        assert srv.process.wait(timeout=60) != 0
        assert not Path(f"/proc/{children[0]}").exists()  # stopped, and reaped by the supervisor
        assert not run_dir.exists()
    finally:
        stop_server(srv)
