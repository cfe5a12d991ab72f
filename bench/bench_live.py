"""Live-trace benchmark: append throughput in batches of 100 and 1,000, append → SSE follower latency,
and `q` full-text search over 100,000 traces.

    .venv/bin/python bench/bench_live.py [--events 20000] [--runs 3] [--batch-sizes 100,1000]
        [--latency-samples 200] [--postgres] [--writers N] [--before OTHER/src] [--append-only] [--traces 100000]
        [--client httpx2|raw] [--interleave N]

Runs real `molar-mcp serve --no-auth` processes on free 127.0.0.1 ports (rate limits lifted) in temp data
dirs, talks to them over HTTP, and removes everything when done. Appends: a fresh server per run, request
bodies encoded before the clock starts, min / median / max of `--runs`. `--postgres`: the same through two
replicas on a throwaway PostgreSQL cluster (two writers each; the SSE follower on the other replica).
`--writers N`: on SQLite, the appends once more with N writers at once, each to its own trace (several
agents appending: what real use looks like), besides the one writer's figure. `--client raw`: the appends
as the same bytes httpx2 sends, over asyncio streams (the load generator shares the cores: less of its CPU
is more for the server); the client's CPU a request is printed either way.
`--before DIR`: the server of another checkout's `src/` (say `git archive` of main) takes turns with this
one, so a change is measured before and after in one run. `--interleave N` (with `--before`): only the
appends, one server of each side started once and taking turns in N blocks (server CPU a request per
block: the fairest before/after on a shared machine). Targets (issue 16, item 6; issue 15): ≥ 60,000
events/s in batches of 100 and ≥ 100,000 in batches of 1,000 (SQLite); append → SSE p50 ≤ 5 ms;
≥ 20,000 events/s across two PostgreSQL replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2

from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, NewTrace, SqliteTraceStore, TraceQuery

TS = 1_763_629_200_000
WORDS = ["checkout", "coupon", "webhook", "billing", "login", "search", "cart", "refund", "upgrade", "profile"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start(data_dir: Path, *extra: str, src: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`molar-mcp serve --no-auth` on a free port (rate limits lifted); `src`: run another checkout's
    `src/` (the code before a change, for a before/after in one run)."""
    port = free_port()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "molar_mcp",
            "--log-level",
            "WARNING",
            "serve",
            "--no-auth",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--rate-limits",
            "read=1000000,write=1000000,ingest=1000000",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded machine starts serve slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"molar-mcp serve exited with {process.returncode}")
        try:
            if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx2.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def _batches(total: int, size: int) -> list[bytes]:
    """Request bodies of `size` events each, encoded before the clock starts (the server is measured)."""
    bodies = []
    for first in range(0, total, size):
        batch = [
            {
                "seq": s,
                "ts": TS + s,
                "kind": "network.response",
                "step_id": f"s{s // 1000}",
                "payload": {"method": "GET", "url": f"/api/items/{s}", "status": 200},
            }
            for s in range(first, first + size)
        ]
        bodies.append(json.dumps({"events": batch}).encode())
    return bodies


async def _raw_appends(base: str, trace: str, bodies: list[bytes], size: int) -> None:
    """The appends of one writer over one kept-alive HTTP/1.1 connection, each request the bytes httpx2
    sends (its request line, headers and body), written and read with asyncio streams: ~6× less client
    CPU a request than httpx2, whose CPU on these two shared cores is not the server's to pay."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for body in bodies:
            writer.write(
                f"POST /v1/traces/{trace}/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n"
                "Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: python-httpx2/2.17.0\r\n"
                f"content-type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = int(head[9:12]), None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            assert length is not None, head
            answer = await reader.readexactly(length)
            assert status == 200, answer
            assert json.loads(answer)["accepted"] == size, answer
    finally:
        writer.close()


async def bench_append(
    bases: list[str], total: int, size: int = 100, writers: int = 1, raw: bool = False
) -> tuple[float, float]:
    """Events/s appended in batches of `size`: `writers` writers per server, each to its own trace,
    `total` events in all; `raw`: through `_raw_appends` (the same bytes), not httpx2. Also the client's
    (this process's) CPU seconds while appending."""
    per_writer = total // (writers * len(bases))
    bodies = _batches(per_writer, size)
    headers = {"content-type": "application/json"}

    async def writer(http: httpx2.AsyncClient, trace: str) -> None:
        if raw:
            await _raw_appends(str(http.base_url).rstrip("/"), trace, bodies, size)
            return
        for body in bodies:
            response = await http.post(f"/v1/traces/{trace}/events", content=body, headers=headers)
            assert response.json()["accepted"] == size, response.text

    clients = [httpx2.AsyncClient(base_url=base, timeout=60) for base in bases for _ in range(writers)]
    try:
        traces = [
            (await http.post("/v1/traces", json={"scenario_slug": "bench-append"})).json()["id"] for http in clients
        ]
        started, client_cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for http, trace in zip(clients, traces, strict=True):
                tg.start_soon(writer, http, trace)
        elapsed, client_cpu = time.perf_counter() - started, time.process_time() - client_cpu
    finally:
        for http in clients:
            await http.aclose()
    return per_writer * len(clients) / elapsed, client_cpu


async def bench_sse_latency(base: str, samples: int, follow: str | None = None) -> dict[str, float]:
    """Append one event at a time; measure until the SSE reader has it (same process, same clock).
    `follow`: the server the reader follows through (another replica), else `base`."""
    async with (
        httpx2.AsyncClient(base_url=base, timeout=30) as writer,
        httpx2.AsyncClient(base_url=follow or base, timeout=httpx2.Timeout(30, read=None)) as reader,
    ):
        trace = (await writer.post("/v1/traces", json={"scenario_slug": "bench-sse"})).json()["id"]
        sent: dict[int, float] = {}
        latencies: list[float] = []
        done = anyio.Event()

        async def read() -> None:
            async with reader.stream("GET", f"/v1/traces/{trace}/stream") as response:
                async for sse in httpx2.EventSource(response):
                    if sse.event == "message":
                        seq = int(sse.id)
                        latencies.append((time.perf_counter() - sent[seq]) * 1000)
                        if len(latencies) == samples:
                            done.set()
                            return

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.3)  # let the reader connect before the first append
            for seq in range(samples):
                sent[seq] = time.perf_counter()
                await writer.post(f"/v1/traces/{trace}/events", json={"seq": seq, "ts": TS + seq, "kind": "log"})
                await anyio.sleep(0.005)  # a live run's pace, not a flood: one event every ~5 ms
            with anyio.fail_after(30):
                await done.wait()
    return {"p50_ms": statistics.median(latencies), "p95_ms": pct(latencies, 0.95), "n": len(latencies)}


async def bench_sse_latency_raw(base: str, samples: int, follow: str | None = None) -> dict[str, float]:
    """`bench_sse_latency` with the raw client on both ends: each append one event in the bytes httpx2
    sends, over one kept-alive connection; the follower reads the stream's bytes and takes each frame's
    `id:` line. What is left is the server's part (and the machine's scheduling): httpx2 spends ~1-2 ms of
    client CPU on each end of every sample, on the same two cores."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    follow_host, follow_port = (follow or base).removeprefix("http://").rsplit(":", 1)
    async with httpx2.AsyncClient(base_url=base, timeout=30) as http:
        trace = (await http.post("/v1/traces", json={"scenario_slug": "bench-sse"})).json()["id"]
    stream_reader, stream_writer = await asyncio.open_connection(follow_host, int(follow_port))
    reader, writer = await asyncio.open_connection(host, int(port))
    sent: dict[int, float] = {}
    latencies: list[float] = []
    try:
        stream_writer.write(
            f"GET /v1/traces/{trace}/stream HTTP/1.1\r\nHost: {follow_host}:{follow_port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await stream_reader.readuntil(b"\r\n\r\n")

        done = anyio.Event()

        async def read() -> None:
            while len(latencies) < samples:
                line = await stream_reader.readline()
                if line.startswith(b"id: "):
                    latencies.append((time.perf_counter() - sent[int(line[4:])]) * 1000)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            for seq in range(samples):
                body = json.dumps({"seq": seq, "ts": TS + seq, "kind": "log"}).encode()
                request = (
                    f"POST /v1/traces/{trace}/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n"
                    "Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: python-httpx2/2.17.0\r\n"
                    f"content-type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                sent[seq] = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(value)
                    for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                    if name.strip().lower() == b"content-length"
                )
                await reader.readexactly(length)
                await anyio.sleep(0.005)  # a live run's pace, as `bench_sse_latency`
            with anyio.fail_after(30):
                await done.wait()
    finally:
        writer.close()
        stream_writer.close()
    return {"p50_ms": statistics.median(latencies), "p95_ms": pct(latencies, 0.95), "n": len(latencies)}


def fill_traces(data_dir: Path, count: int) -> float:
    store = SqliteTraceStore(data_dir)
    started = time.perf_counter()
    for i in range(count):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
        events = [
            Event(seq=0, ts=TS + i, kind="step.start", step_id="s1", message=f"{a} page"),
            Event(
                seq=1,
                ts=TS + i + 1,
                kind="assertion",
                step_id="s1",
                ok=i % 3 != 0,
                message=f"expected {b} total {i % 97}; got {i % 89}",
            ),
        ]
        store.add_trace(
            LOCAL_ORG_ID,
            NewTrace(
                scenario_slug=f"{a}-{b}",
                status="failed" if i % 3 == 0 else "passed",
                scenario_title=f"{a.title()} then {b}",
                failure_signature=f"sig-{i % 50}",
                events=events,
                code_sha=uuid.uuid5(uuid.NAMESPACE_OID, str(i)).hex[:10],
            ),
            {},
        )
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


async def bench_search(base: str, iterations: int) -> dict[str, float]:
    queries = ["webhook", "coupon total", "checkout page", "expected billing", "refund got 12", "upgr"]
    samples: list[float] = []
    async with httpx2.AsyncClient(base_url=base, timeout=30) as http:
        for i in range(iterations):
            started = time.perf_counter()
            response = await http.get("/v1/traces", params={"q": queries[i % len(queries)], "limit": 50})
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
    return {"p50_ms": statistics.median(samples), "p95_ms": pct(samples, 0.95), "n": len(samples)}


def bench_search_store(data_dir: Path, iterations: int) -> dict[str, float]:
    store = SqliteTraceStore(data_dir)
    queries = ["webhook", "coupon total", "checkout page", "expected billing", "refund got 12", "upgr"]
    samples = []
    for i in range(iterations):
        started = time.perf_counter()
        store.list_traces(LOCAL_ORG_ID, TraceQuery(q=queries[i % len(queries)], limit=50))
        samples.append((time.perf_counter() - started) * 1000)
    store.close()
    return {"p50_ms": statistics.median(samples), "p95_ms": pct(samples, 0.95), "n": len(samples)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc): what a server spent, whatever else
    the machine runs (a shared machine stretches wall time, not this)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def bench_append_variants(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Appends in each batch size and append → SSE p50, `--runs` times, on a fresh server (or two
    PostgreSQL replicas) per run; with `--before`, the code before and after take turns in one run."""
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    variants: list[tuple[str, Path | None]] = [("after", None)]
    if args.before:
        variants.insert(0, ("before", Path(args.before).resolve()))
    engines = ["sqlite"] + (["postgres"] if args.postgres else [])

    def shapes(engine: str) -> list[tuple[int, int, str]]:
        """(batch size, writers per server, figure) to run: one writer on SQLite (two per replica on
        PostgreSQL), then, with `--writers N`, N writers on SQLite, each to its own trace."""
        planned = [(size, 1 if engine == "sqlite" else 2, f"append {size}") for size in sizes]
        if engine == "sqlite" and args.writers > 1:
            planned += [(size, args.writers, f"append {size} x{args.writers}") for size in sizes]
        return planned

    out: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with ExitStack() as stack:
        cluster = None
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.engines import pg_cluster

            cluster = stack.enter_context(pg_cluster())
        for run in range(args.runs):
            for engine in engines:
                for name, src in variants:
                    figures = out.setdefault(engine, {}).setdefault(name, {})
                    run_dir = root / f"{engine}-{name}-{run}"
                    extra: list[str] = []
                    replicas = 1
                    if engine == "postgres":
                        assert cluster is not None
                        extra, replicas = ["--database-url", cluster.new_database("live")], 2
                    servers = [start(run_dir / f"r{i}", *extra, src=src) for i in range(replicas)]
                    bases = [base for _, base in servers]
                    try:
                        for size, writers, key in shapes(engine):
                            cpu = sum(cpu_seconds(process.pid) for process, _ in servers)
                            rate, client_cpu = anyio.run(
                                bench_append, bases, args.events, size, writers, args.client == "raw"
                            )
                            cpu = sum(cpu_seconds(process.pid) for process, _ in servers) - cpu
                            per_cpu = args.events / cpu if cpu > 0 else float("inf")
                            figures.setdefault(key, []).append(rate)
                            figures.setdefault(f"{key} per server cpu", []).append(per_cpu)
                            figures.setdefault(f"{key} client cpu", []).append(client_cpu * 1e6 * size / args.events)
                            print(
                                f"{engine} {name} run {run + 1}: batches of {size}, {writers} writer(s) per server:"
                                f" {rate:,.0f} ev/s, {per_cpu:,.0f} ev per server CPU-second,"
                                f" client {client_cpu * 1e6 * size / args.events:,.0f} µs of CPU a request",
                                file=sys.stderr,
                            )
                        sse = anyio.run(bench_sse_latency, bases[0], args.latency_samples, bases[-1])
                        figures.setdefault("sse p50", []).append(sse["p50_ms"])
                        print(f"{engine} {name} run {run + 1}: SSE p50 {sse['p50_ms']:.1f} ms", file=sys.stderr)
                        if args.client == "raw":
                            sse = anyio.run(bench_sse_latency_raw, bases[0], args.latency_samples, bases[-1])
                            figures.setdefault("sse p50 raw", []).append(sse["p50_ms"])
                            print(
                                f"{engine} {name} run {run + 1}: SSE p50 (raw) {sse['p50_ms']:.1f} ms", file=sys.stderr
                            )
                    finally:
                        for process, _ in servers:
                            process.terminate()
                            process.wait(timeout=30)
                        shutil.rmtree(run_dir, ignore_errors=True)
    out["load_after"] = os.getloadavg()[0]
    print(f"load average (1 min) {out['load_before']:.1f} before, {out['load_after']:.1f} after; min / median / max")
    for engine in engines:
        where = "1 process" if engine == "sqlite" else "2 replicas, 2 writers each; SSE follower on the other"
        print(f"{engine} ({where}), {args.runs} runs:")
        for name, _ in variants:
            figures = out[engine][name]
            for size, writers, key in shapes(engine):
                label = f"batches of {size}" + (f", {writers} writers" if engine == "sqlite" and writers > 1 else "")
                spread = _spread(figures[key], ",.0f")
                print(f"  {name:<7} append, {label:<26} {spread:>28} events/s")
                spread = _spread(figures[f"{key} per server cpu"], ",.0f")
                print(f"  {name:<7}   per server CPU-second {'':<12} {spread:>30} events")
                spread = _spread(figures[f"{key} client cpu"], ",.0f")
                print(f"  {name:<7}   client CPU a request ({args.client}) {spread:>24} µs")
            print(f"  {name:<7} append → SSE p50 (httpx2) {_spread(figures['sse p50'], '.1f'):>28} ms")
            if "sse p50 raw" in figures:
                print(f"  {name:<7} append → SSE p50 (raw) {'':>3} {_spread(figures['sse p50 raw'], '.1f'):>28} ms")
    return out


def bench_interleaved(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """`--interleave N` with `--before`: one server of each checkout, started once, taking turns in `N`
    blocks per batch size (the order flipped each block), one writer each through the raw client; the
    server CPU of each block (`/proc`) over its requests. Two servers side by side see the same load from
    one minute to the next, where runs one after the other do not."""
    assert args.before, "--interleave needs --before"
    per_block = {100: 200, 1000: 20}
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    variants = {"before": Path(args.before).resolve(), "after": None}
    servers = {name: start(root / f"interleave-{name}", src=src) for name, src in variants.items()}
    out: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    try:
        for size in sizes:
            count = per_block.get(size, max(1, 20_000 // size))
            bodies = _batches((args.interleave * count + 10) * size, size)  # one seq run per server
            traces = {}
            for name, (_, base) in servers.items():
                traces[name] = httpx2.post(base + "/v1/traces", json={"scenario_slug": "bench-ab"}).json()["id"]
                anyio.run(_raw_appends, base, traces[name], bodies[:10], size)  # warm
            for block in range(args.interleave):
                chunk = bodies[10 + block * count : 10 + (block + 1) * count]
                for name in list(servers) if block % 2 == 0 else list(reversed(servers)):
                    process, base = servers[name]
                    cpu, wall = cpu_seconds(process.pid), time.perf_counter()
                    anyio.run(_raw_appends, base, traces[name], chunk, size)
                    wall, cpu = time.perf_counter() - wall, cpu_seconds(process.pid) - cpu
                    figures = out.setdefault(name, {}).setdefault(f"append {size}", {})
                    figures.setdefault("server cpu µs a request", []).append(cpu / count * 1e6)
                    figures.setdefault("wall µs a request", []).append(wall / count * 1e6)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    out["load_after"] = os.getloadavg()[0]
    print(
        f"load average (1 min) {out['load_before']:.1f} before, {out['load_after']:.1f} after;"
        f" {args.interleave} interleaved blocks a batch size; min / median / max"
    )
    for size in sizes:
        for name in servers:
            figures = out[name][f"append {size}"]
            cpu = figures["server cpu µs a request"]
            per_cpu = [size * 1e6 / c for c in cpu if c > 0]
            print(
                f"  {name:<7} batches of {size:<5} server CPU a request {_spread(cpu, ',.0f'):>24} µs;"
                f" per server CPU-second {_spread(per_cpu, ',.0f'):>26} events;"
                f" wall a request {_spread(figures['wall µs a request'], ',.0f')} µs"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--search-iterations", type=int, default=200)
    parser.add_argument("--json")
    parser.add_argument("--runs", type=int, default=3, help="append runs (min / median / max)")
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--before", help="another checkout's src/ dir: its server runs in turn with this one")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL, two replicas")
    parser.add_argument(
        "--writers",
        type=int,
        default=1,
        help="also append with N writers at once on SQLite, each to its own trace (the one-writer figure stays)",
    )
    parser.add_argument("--append-only", action="store_true", help="skip the search figures")
    parser.add_argument(
        "--client",
        choices=["httpx2", "raw"],
        default="httpx2",
        help="the appends' HTTP client: httpx2, or raw (the same bytes over asyncio streams, ~6× less client CPU)",
    )
    parser.add_argument(
        "--interleave",
        type=int,
        default=0,
        help="with --before: only the appends, one server of each side taking turns in N blocks (raw client)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="molar-bench-live-"))
    results: dict[str, Any] = {}
    try:
        if args.interleave:
            results["interleaved"] = bench_interleaved(args, root)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2))
            return 0
        results["append"] = bench_append_variants(args, root)
        if args.append_only:
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2))
            return 0
        search_dir = root / "search"
        results["fill_seconds"] = fill_traces(search_dir, args.traces)
        results["search_store"] = bench_search_store(search_dir, args.search_iterations)
        process, base = start(search_dir)
        try:
            results["search_http"] = anyio.run(bench_search, base, args.search_iterations)
        finally:
            process.terminate()
            process.wait(timeout=10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    q, qs = results["search_http"], results["search_store"]
    rows = [
        (
            f"q search over {args.traces:,} traces (HTTP) p50 / p95",
            f"{q['p50_ms']:.1f} / {q['p95_ms']:.1f} ms",
            "p50 ≤ 20",
            q["p50_ms"] <= 20,
        ),
        ("q search in the store p50 / p95", f"{qs['p50_ms']:.1f} / {qs['p95_ms']:.1f} ms", "", True),
    ]
    for name, figure, target, ok in rows:
        print(f"{name:<52} {figure:>22}  {target:<10} {'PASS' if ok or not target else 'MISS'}")
    print(f"(filled {args.traces:,} traces in {results['fill_seconds']:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
