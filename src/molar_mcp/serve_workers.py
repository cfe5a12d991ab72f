"""`molar-mcp serve --workers N`: the supervisor and the worker side (what the workers share and how
requests find the worker holding their session: api/workers.py).

The supervisor binds HOST:PORT N times (SO_REUSEPORT), makes a run directory for the workers' Unix sockets,
and starts `molar-mcp serve` again N times with the same arguments (and `--worker I`), handing worker I the
I-th socket, which it listens on once its app has started. The kernel spreads new connections over the
listening sockets by a hash of their addresses, so the workers get even shares of the clients. One socket
that every worker accepts on did not spread them: the first worker to wake took every connection already
waiting (uvloop accepts until the backlog is empty), so a burst of clients opening together landed on one
worker and stayed there for as long as their connections lived (bench/README.md, bench_load). Worker 0
starts alone (migrations, secrets, demo data), the others once it answers. When one
worker exits, the supervisor stops the others and exits with its status (a process manager restarts the
whole server); SIGTERM or SIGINT stop them all."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx2

from molar_mcp.api.workers import WorkerPlace

START_SECONDS = 180


def _answers(path: Path) -> bool:
    try:
        with httpx2.Client(transport=httpx2.HTTPTransport(uds=str(path)), timeout=2, trust_env=False) as http:
            return http.get("http://worker/healthz").status_code == 200
    except httpx2.TransportError:
        return False


def bind_group(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` TCP sockets bound to HOST:PORT together (SO_REUSEPORT; port 0: one free port for all), not
    listening yet: each worker listens on its own once its app has started, so the kernel hands no
    connection to a worker still starting. A port another server holds is refused first, as one process
    would be refused: SO_REUSEPORT alone would let this group join a group another server of the same user
    listens with, and take a share of its connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:  # bind without SO_REUSEPORT: fails if anyone holds it
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def supervise(host: str, port: int, workers: int, argv: list[str]) -> int:
    """Run `workers` worker processes of `molar-mcp <argv>` on HOST:PORT until they end; 1 when the port
    cannot be had (held by another server, say)."""
    try:
        sockets = bind_group(host, port, workers)
    except OSError as exc:
        print(f"molar-mcp: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    run_dir = Path(tempfile.mkdtemp(prefix="molar-workers-"))
    base = [sys.executable, "-m", "molar_mcp", *argv, "--worker-run-dir", str(run_dir)]
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    previous: dict[int, Any] = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for index in range(workers):
            fd = sockets[index].fileno()
            command = [*base, "--listen-fd", str(fd), "--worker", str(index)]
            procs.append(subprocess.Popen(command, pass_fds=[fd]))  # noqa: S603 - our own argv
            sockets[index].close()  # the worker's now: should it end, no connection waits on a socket nobody accepts on
            if index == 0:  # the others start once worker 0 has migrated and made the secrets
                deadline = time.monotonic() + START_SECONDS
                while not stopping and not _answers(WorkerPlace(run_dir, 0, workers).http_socket()):
                    if procs[0].poll() is not None or time.monotonic() > deadline:
                        stop(signal.SIGTERM, None)
                        break
                    time.sleep(0.2)  # polling a starting process
            if stopping:
                break
        while not stopping:
            ended = [p for p in procs if p.poll() is not None]
            if ended:  # one worker gone: the server is not whole; stop, and say so by the exit status
                status = ended[0].returncode or 1
                stop(signal.SIGTERM, None)
                break
            time.sleep(0.5)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not status:
            status = next((p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM)), 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return status


def serve_worker(app: Any, place: WorkerPlace, listen_fd: int, *, log_level: str, access_log: bool) -> None:
    """Serve `app` on the supervisor's listening socket and on this worker's own Unix socket."""
    import uvicorn

    shared = socket.socket(fileno=listen_fd)
    own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = place.http_socket()
    path.unlink(missing_ok=True)
    own.bind(str(path))
    os.chmod(path, 0o600)
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log)
    uvicorn.Server(config).run(sockets=[shared, own])
