"""Process start-up: how long a fresh `molar-mcp` process takes to its first answers, wall and CPU.

    .venv/bin/python bench/bench_startup.py [--runs 5] [--src before=/tmp/before/src] [--only stdio,serve,demo]

Rows (each a new process; sides interleaved run by run, so both meet the same machine load):
- `stdio`: `molar-mcp stdio` on an existing data dir, exec → answered `initialize` (2025-11-25) → answered
  `tools/list`; the requests are written at once, the server reads them when it is ready.
- `serve`: `molar-mcp serve --no-auth` on an existing data dir, exec → `/healthz` 200.
- `serve --demo`: the same on a fresh data dir with `--demo` (the demo traces recorded and stored first).
CPU is the server process's own (user + system, from /proc, 10 ms ticks) when the answer arrived; for
`serve --demo` also with its children (the demo shop) once it has exited. Each `--src LABEL=DIR` is a
source tree (`git archive <commit> src | tar -x -C DIR` gives one) run on PYTHONPATH; `after` is this
checkout. Prints min / median / max of each figure and the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def env_for(src: Path | None, data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MOLAR_DATA_DIR"] = str(data)
    for name in ("MOLAR_API_URL", "MOLAR_API_KEY", "MOLAR_DATABASE_URL", "MOLAR_BLOB_URL"):
        env.pop(name, None)
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    else:
        env.pop("PYTHONPATH", None)
    return env


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise RuntimeError(f"no answer (exit {proc.poll()})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"stdout closed (exit {proc.wait()})")
            buf += chunk
    return buf


def rpc(msg_id: int | None, method: str, params: dict[str, object]) -> bytes:
    msg: dict[str, object] = {"jsonrpc": "2.0", "method": method, "params": params}
    if msg_id is not None:
        msg["id"] = msg_id
    return json.dumps(msg).encode() + b"\n"


INITIALIZE = rpc(
    1,
    "initialize",
    {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
)


def stdio_once(src: Path | None, data: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "molar_mcp", "--log-level", "WARNING", "stdio", "--data-dir", str(data)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env_for(src, data), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(INITIALIZE)
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        answer = json.loads(read_line(proc, deadline))
        if "result" not in answer:
            raise RuntimeError(f"initialize: {answer}")
        init_wall, init_cpu = time.perf_counter() - start, cpu_s(proc.pid)
        proc.stdin.write(rpc(None, "notifications/initialized", {}) + rpc(2, "tools/list", {}))
        proc.stdin.flush()
        listed = json.loads(read_line(proc, deadline))
        if not listed.get("result", {}).get("tools"):
            raise RuntimeError(f"tools/list: {listed}")
        list_wall, list_cpu = time.perf_counter() - start, cpu_s(proc.pid)
        proc.stdin.close()
        proc.wait(timeout=60)
        return {"initialize wall": init_wall, "initialize CPU": init_cpu, "tools/list wall": list_wall,
                "tools/list CPU": list_cpu}  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def serve_once(src: Path | None, data: Path, *extra: str) -> dict[str, float]:
    port = free_port()
    cmd = [sys.executable, "-m", "molar_mcp", "--log-level", "WARNING", "serve", "--no-auth", "--port", str(port)]
    cmd += ["--data-dir", str(data), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env_for(src, data), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd}: exit {proc.poll()} before /healthz answered")
            try:
                with opener.open(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.01)
        wall, cpu = time.perf_counter() - start, cpu_s(proc.pid)
        proc.terminate()
        proc.wait(timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {"/healthz wall": wall, "/healthz CPU": cpu, "CPU with children, to exit": total}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", action="append", default=[], help="LABEL=DIR: another source tree to measure")
    parser.add_argument("--only", default="stdio,serve,demo", help="rows: stdio, serve, demo (serve --demo)")
    parser.add_argument("--work", help="scratch directory (default: a new temp dir, removed after)")
    args = parser.parse_args(argv)
    sides: list[tuple[str, Path | None]] = []
    for item in args.src:
        label, _, path = item.partition("=")
        sides.append((label, Path(path)))
    sides.append(("after", None))
    rows = [r.strip() for r in args.only.split(",") if r.strip()]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], dict[str, list[float]]] = {}
    loads: list[float] = []
    try:
        for label, src in sides:  # each side's existing data dir, created (and migrated) by a first start
            serve_once(src, work / f"{label}-data")
        for run in range(args.runs):
            order = sides if run % 2 == 0 else sides[::-1]
            for label, src in order:
                loads.append(os.getloadavg()[0])
                for row in rows:
                    if row == "stdio":
                        figures = stdio_once(src, work / f"{label}-data")
                    elif row == "serve":
                        figures = serve_once(src, work / f"{label}-data")
                    elif row == "demo":
                        fresh = work / f"{label}-demo-{run}"
                        figures = serve_once(src, fresh, "--demo")
                        shutil.rmtree(fresh, ignore_errors=True)
                    else:
                        raise SystemExit(f"unknown row {row!r}")
                    for name, value in figures.items():
                        results.setdefault((row, label), {}).setdefault(name, []).append(value)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.runs} runs a side; 1-minute load average {min(loads):.2f} / {statistics.median(loads):.2f} / "
          f"{max(loads):.2f} (min / median / max at each run's start)")  # fmt: skip
    print("| row | side | figure | min / median / max (s) |")
    print("|---|---|---|---|")
    labels = [label for label, _ in sides]
    for row, label in sorted(results, key=lambda key: (rows.index(key[0]), labels.index(key[1]))):
        for name, values in results[(row, label)].items():
            spread = f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"
            print(f"| {'serve --demo' if row == 'demo' else row} | {label} | {name} | {spread} |")


if __name__ == "__main__":
    main()
