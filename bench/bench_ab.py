"""Interleaved before/after of MCP tool calls: two `molar-mcp serve` processes on one data dir (one
running another checkout's code), called in alternating blocks, so both meet the same machine load.

    .venv/bin/python bench/bench_ab.py --data /tmp/molar-scale/s10k --before /tmp/before/src [--blocks 6]
    .venv/bin/python bench/bench_ab.py ... --transport stdio     # two `molar-mcp stdio` children instead

The data dir must hold `bench-ids.json` (`bench_scale.py` writes it: a small trace and a 10,000-event one).
Per tool call: the server's CPU per call (read from /proc over all its blocks) and the p50 of the calls'
round trips, for each side. Blocks of `--calls` alternate before/after, the order flipping each block.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

RATE = ["--rate-limits", "read=100000000,write=100000000,ingest=100000000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data: Path, src: Path | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    cmd = [sys.executable, "-m", "molar_mcp", "--log-level", "WARNING", "serve", "--no-auth"]
    cmd += ["--port", str(port), "--data-dir", str(data), *RATE]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code < 500:
                return proc, f"http://127.0.0.1:{port}/mcp"
        except httpx2.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def children() -> set[int]:
    """This process's child processes (an MCP stdio client's server among them)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            found |= {int(pid) for pid in (task / "children").read_text().split()}
    return found


async def run(data: Path, before: Path, blocks: int, calls: int, transport: str) -> None:
    from mcp.client import Client

    from mcp import StdioServerParameters

    ids = json.loads((data / "bench-ids.json").read_text())
    tools: list[tuple[str, str, dict[str, Any]]] = [
        ("get_trace small", "get_trace", {"trace_id": ids["small"]}),
        ("get_trace 10k-event", "get_trace", {"trace_id": ids["big"]}),
        ("list_traces(status=failed)", "list_traces", {"status": "failed"}),
    ]
    servers: dict[str, tuple[Any, Any]] = {}
    if transport == "http":
        servers = {"before": start(data, before), "after": start(data, None)}
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, Any] = {}
            pids: dict[str, int] = {}
            for name, src in (("before", before), ("after", None)):
                if transport == "http":
                    proc, url = servers[name]
                    clients[name] = await stack.enter_async_context(Client(url, read_timeout_seconds=60))
                    pids[name] = proc.pid
                    continue
                env = dict(os.environ)
                if src is not None:
                    env["PYTHONPATH"] = str(src.resolve())
                args = ["-m", "molar_mcp", "--log-level", "WARNING", "stdio", "--data-dir", str(data)]
                known = children()
                params = StdioServerParameters(command=sys.executable, args=args, env=env)
                clients[name] = await stack.enter_async_context(Client(params, read_timeout_seconds=60))
                (pids[name],) = children() - known
            for label, tool, args in tools:
                cpu = dict.fromkeys(clients, 0.0)
                walls: dict[str, list[float]] = {name: [] for name in clients}
                for name in clients:  # warm up both
                    for _ in range(10):
                        await clients[name].call_tool(tool, args)
                for block in range(blocks):
                    for name in ("before", "after") if block % 2 == 0 else ("after", "before"):
                        pid = pids[name]
                        start_cpu = cpu_ms(pid)
                        for _ in range(calls):
                            t = time.perf_counter()
                            result = await clients[name].call_tool(tool, args)
                            walls[name].append((time.perf_counter() - t) * 1000)
                            if result.is_error:
                                raise RuntimeError(f"{name} {tool}({args}): {result.content}")
                        cpu[name] += cpu_ms(pid) - start_cpu
                for name in clients:
                    n = len(walls[name])
                    print(
                        f"{label:28s} {name:6s} {transport:5s} server CPU {cpu[name] / n:5.2f} ms per call"
                        f"  p50 {statistics.median(walls[name]):6.2f} ms  ({n} calls)",
                        flush=True,
                    )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, required=True, help="a data dir with bench-ids.json")
    parser.add_argument("--before", type=Path, required=True, help="another checkout's src/")
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--calls", type=int, default=100, help="calls per block")
    parser.add_argument("--transport", choices=["http", "stdio"], default="http")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    asyncio.run(run(args.data, args.before, args.blocks, args.calls, args.transport))
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
