"""Speed at scale: the store, REST and MCP at 10k / 100k / 1M traces, plus ingest, live append, memory
and many agents at once. Prints one table (min / median / max of the runs' p50s, load average beside).

    .venv/bin/python bench/bench_scale.py --work /tmp/molar-scale [--sizes 10000,100000,1000000]
        [--runs 3] [--iterations 100] [--sections store,server,ingest,live,memory,load] [--json out.json]
        [--before OTHER/src]

With `--before DIR` (another checkout's `src/`, e.g. `git archive` of main) the server section measures
that code first in each run, on the same data, and its figures are the rows marked `[before]`.

Data dirs are built once under --work by bench/make_store.py (kept, so a rerun skips the build) and
get one 10,000-event trace (a real long run of the demo shop, tests/long_run.py) and the shipped
recordings of the demo shop's scenario runs on top. The servers are real `molar-mcp
serve --no-auth` / `molar-mcp stdio` processes; the "SDK floor" is a bare MCP SDK server with one
tool returning a short text, over the same transports in the same run. See bench/README.md.
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
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.long_run
ORG = "org_local"
Q_COMMON = "webhook"
Q_TWO = "webhook 404"
Q_NONE = "zyzzyva"
Q_STATUS = ("billing", "failed")
RATE = ["--rate-limits", "read=100000000,write=100000000,ingest=100000000"]


# ---- helpers -------------------------------------------------------------------------------------


def load() -> float:
    return os.getloadavg()[0]


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def timed(fn: Callable[[], object], n: int, warm: int = 5) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def atimed(fn: Callable[[], Awaitable[object]], n: int, warm: int = 5) -> list[float]:
    for _ in range(warm):
        await fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def src_env(src: Path | None) -> dict[str, str]:
    """The environment of a server process: with `src`, that checkout's code is imported instead."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    return env


def molar(*args: str) -> list[str]:
    return [sys.executable, "-m", "molar_mcp", "--log-level", "WARNING", *args]


class Server:
    """A `molar-mcp serve --no-auth` subprocess on a free port (or the bare SDK floor server)."""

    def __init__(self, cmd: list[str], port: int, src: Path | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            cmd, env=src_env(src), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {self.proc.returncode}")
            try:
                if httpx2.get(self.base + "/healthz", timeout=1, trust_env=False).status_code < 500:
                    return
            except httpx2.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{cmd} did not start")

    @classmethod
    def molar(cls, data_dir: Path, *extra: str, src: Path | None = None) -> Server:
        port = free_port()
        cmd = molar("serve", "--no-auth", "--port", str(port), "--data-dir", str(data_dir), *RATE, *extra)
        return cls(cmd, port, src)

    @classmethod
    def floor(cls) -> Server:
        port = free_port()
        return cls([sys.executable, __file__, "--floor-server", "http", "--port", str(port)], port)

    def cpu_ms(self) -> float:
        """The server process's CPU time so far (user + system), in ms (10 ms ticks)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


def floor_server(transport: str, port: int) -> None:
    """A bare MCP SDK server: one tool that returns a short text. The cost of the protocol alone."""
    import uvicorn
    from mcp.server.mcpserver import MCPServer
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    server = MCPServer("floor")

    @server.tool()
    def echo(text: str = "hi") -> str:
        """Echo a short text."""
        return text

    if transport == "stdio":
        server.run("stdio")
        return
    app = server.streamable_http_app()
    app.router.routes.append(Route("/healthz", lambda _: PlainTextResponse("ok")))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- the table -----------------------------------------------------------------------------------


class Table:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, list[float]]] = {}
        self.notes: dict[str, str] = {}
        self.loads: list[float] = []

    def add(self, figure: str, column: str, value: float) -> None:
        self.rows.setdefault(figure, {}).setdefault(column, []).append(value)
        self.loads.append(load())

    def cell(self, figure: str, column: str) -> str:
        values = self.rows.get(figure, {}).get(column)
        if not values:
            return ""
        fmt = (lambda v: f"{v:,.0f}") if max(values) >= 100 else (lambda v: f"{v:.2f}")
        if len(values) == 1:
            return fmt(values[0])
        return f"{fmt(min(values))} / {fmt(statistics.median(values))} / {fmt(max(values))}"

    def print(self, sizes: list[int]) -> None:
        cols = [_label(s) for s in sizes]
        print(
            f"\nload average (1 min) during the run: min {min(self.loads, default=0):.2f}, "
            f"max {max(self.loads, default=0):.2f}; cells are min / median / max over runs of each run's p50 "
            "(or rate); the ratio is the median's growth per 10× traces"
        )
        print("| figure | " + " | ".join(cols) + " | ratio per 10× |")
        print("|---|" + "---|" * (len(cols) + 1))
        for figure, by_col in self.rows.items():
            if any(c in by_col for c in cols):
                cells = [self.cell(figure, c) for c in cols]
                meds = [statistics.median(by_col[c]) for c in cols if c in by_col]
                print(f"| {figure} | " + " | ".join(cells) + f" | {_ratio(meds)} |")
            else:  # measured once, on an empty store: the store's size does not apply
                only = next(iter(by_col))
                print(f"| {figure} | {self.cell(figure, only)} " + "| " * (len(cols) - 1) + "| (any size) |")
        for figure, note in self.notes.items():
            print(f"| {figure} | " + " | ".join([note] + [""] * (len(cols) - 1)) + " | |")

    def dump(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "notes": self.notes,
            "load_min": min(self.loads, default=0),
            "load_max": max(self.loads, default=0),
        }


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


def _ratio(meds: list[float]) -> str:
    if len(meds) < 2 or min(meds) <= 0:
        return ""
    steps = len(meds) - 1
    return f"{(meds[-1] / meds[0]) ** (1 / steps):.2f}×"


# ---- data dirs -----------------------------------------------------------------------------------


def prepare(work: Path, size: int) -> tuple[Path, dict[str, str]]:
    """The data dir of `size` traces with one 10k-event trace and the shipped demo runs; their short ids."""
    data = work / f"s{_label(size)}"
    ids_file = data / "bench-ids.json"
    if ids_file.exists():
        return data, json.loads(ids_file.read_text())
    if not (data / "molar.sqlite3").exists():
        print(f"building {size:,} traces in {data}", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "bench/make_store.py"), str(data), "--traces", str(size), "--events", "12"],
            check=True,
        )
    from tests.long_run import record_long_run

    from molar_mcp.demo.recorded import shipped_runs
    from molar_mcp.ingest import ingest_bundle
    from molar_mcp.store import SqliteTraceStore

    store = SqliteTraceStore(data)
    try:
        _, big = ingest_bundle(store, ORG, record_long_run(10_000))
        small = ""
        for name, raw in shipped_runs():
            _, sid = ingest_bundle(store, ORG, raw)
            if "webhook" in name:
                small = sid
    finally:
        store.close()
    ids = {"big": big, "small": small}
    ids_file.write_text(json.dumps(ids))
    return data, ids


# ---- sections ------------------------------------------------------------------------------------


def bench_store(table: Table, data: Path, col: str, iterations: int) -> None:
    from molar_mcp.store import SqliteTraceStore, TraceQuery

    store = SqliteTraceStore(data)
    try:
        queries = {
            "store list_traces(status=failed) p50 ms": TraceQuery(status="failed"),
            f"store q={Q_COMMON!r} (common) p50 ms": TraceQuery(q=Q_COMMON),
            f"store q={Q_TWO!r} p50 ms": TraceQuery(q=Q_TWO),
            f"store q={Q_NONE!r} (no match) p50 ms": TraceQuery(q=Q_NONE),
            f"store q={Q_STATUS[0]!r} status={Q_STATUS[1]} p50 ms": TraceQuery(q=Q_STATUS[0], status=Q_STATUS[1]),
            "store q='passed' status=queued (rare pair) p50 ms": TraceQuery(q="passed", status="queued"),
        }
        for label, query in queries.items():
            cpu: list[float] = []

            def call(q: TraceQuery = query, cpu: list[float] = cpu) -> None:
                t = time.thread_time()
                store.list_traces(ORG, q)
                cpu.append((time.thread_time() - t) * 1000)

            table.add(label, col, p50(timed(call, iterations)))
            # This thread's CPU time: what the machine's other work takes from the wall clock is not in it.
            table.add(label.replace(" p50 ms", " CPU p50 ms"), col, p50(cpu[-iterations:]))
    finally:
        store.close()


async def bench_server(
    table: Table, data: Path, ids: dict[str, str], col: str, iterations: int, src: Path | None = None
) -> None:
    """The REST and MCP figures of one server; with `src`, of that checkout (rows marked `[before]`)."""
    from mcp.client import Client

    from mcp import StdioServerParameters

    tag = " [before]" if src is not None else ""
    server = Server.molar(data, src=src)
    floor = Server.floor()
    try:
        async with httpx2.AsyncClient(base_url=server.base, timeout=30, trust_env=False) as http:

            async def rest(q: str, **filters: str) -> None:
                (await http.get("/v1/traces", params={"q": q, "limit": 50, **filters})).raise_for_status()

            for label, q, filters in (
                (f"REST GET /v1/traces?q={Q_COMMON}", Q_COMMON, {}),
                (f"REST GET /v1/traces?q={Q_NONE}", Q_NONE, {}),
                (f"REST GET /v1/traces?q={Q_STATUS[0]}&status={Q_STATUS[1]}", Q_STATUS[0], {"status": Q_STATUS[1]}),
                ("REST GET /v1/traces?q=passed&status=queued (rare pair)", "passed", {"status": "queued"}),
            ):
                before = server.cpu_ms()
                walls = await atimed(lambda q=q, filters=filters: rest(q, **filters), iterations)
                table.add(f"{label}{tag} p50 ms", col, p50(walls))
                table.add(f"{label}{tag} server CPU ms per call", col, (server.cpu_ms() - before) / (iterations + 5))
        targets: list[tuple[str, Any, Any]] = [
            ("HTTP", f"{server.base}/mcp", f"{floor.base}/mcp"),
            (
                "stdio",
                StdioServerParameters(
                    command=sys.executable, args=molar("stdio", "--data-dir", str(data))[1:], env=src_env(src)
                ),
                StdioServerParameters(command=sys.executable, args=[__file__, "--floor-server", "stdio"]),
            ),
        ]
        for transport, target, floor_target in targets:
            floor_cpu = floor.cpu_ms()
            async with Client(floor_target) as fc:
                floor_ms = p50(await atimed(lambda fc=fc: fc.call_tool("echo", {"text": "hi"}), iterations))
            table.add(f"MCP SDK floor ({transport}) p50 ms", col, floor_ms)
            if transport == "HTTP":
                per_call = (floor.cpu_ms() - floor_cpu) / (iterations + 5)
                table.add("MCP SDK floor (HTTP) server CPU ms per call", col, per_call)
            async with Client(target, read_timeout_seconds=60) as client:

                async def call(name: str, args: dict[str, Any], client: Any = client) -> Any:
                    result = await client.call_tool(name, args)
                    if result.is_error:
                        raise RuntimeError(f"{name}({args}): {result.content}")
                    return result

                async def figure(label: str, name: str, args: dict[str, Any], transport: str = transport) -> float:
                    """p50 of the tool's calls; over HTTP also the server's CPU per call (stdio: in the client's
                    child, not measured)."""
                    cpu = server.cpu_ms()
                    ms = p50(await atimed(lambda: call(name, args), iterations))
                    table.add(f"MCP {label} ({transport}){tag} p50 ms", col, ms)
                    if transport == "HTTP":
                        per_call = (server.cpu_ms() - cpu) / (iterations + 5)
                        table.add(f"MCP {label} (HTTP){tag} server CPU ms per call", col, per_call)
                    return ms

                small = await figure("get_trace small", "get_trace", {"trace_id": ids["small"]})
                table.add(f"MCP get_trace small ({transport}){tag} ÷ floor", col, small / floor_ms)
                await figure("get_trace 10k-event", "get_trace", {"trace_id": ids["big"]})
                await figure("list_traces(status=failed)", "list_traces", {"status": "failed"})
                result = await call("list_traces", {"status": "failed"})
                listed = result.structured_content or {}
                rows = len(listed.get("rows", listed.get("items", [])))  # `items` before rows became arrays
                table.add(f"MCP list_traces rows per default answer{tag}", col, rows)
                if transport == "HTTP":
                    tools = await client.list_tools(cache_mode="bypass")
                    from molar_mcp.mcp.tokens import estimate_tokens

                    text = json.dumps(
                        [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.tools]
                    )
                    table.add(f"tools/list tokens{tag}", col, estimate_tokens(text))
    finally:
        server.stop()
        floor.stop()


def bench_ingest(table: Table, work: Path, runs: int) -> None:
    """Bundle ingest of a 100,000-event bundle in process, and three back to back over HTTP."""
    from tests.long_run import record_long_run

    from molar_mcp.ingest import ingest_bundle
    from molar_mcp.store import SqliteTraceStore

    bundle = record_long_run(100_000)
    for i in range(runs):
        d = Path(tempfile.mkdtemp(dir=work, prefix="ingest-"))
        store = SqliteTraceStore(d)
        try:
            t = time.perf_counter()
            ingest_bundle(store, ORG, bundle, max_bytes=200 * 1024 * 1024)
            table.add("bundle ingest in process (100k events) events/s", "once", 100_000 / (time.perf_counter() - t))
        finally:
            store.close()
            shutil.rmtree(d, ignore_errors=True)
        print(f"ingest run {i + 1}", file=sys.stderr, flush=True)
    d = Path(tempfile.mkdtemp(dir=work, prefix="ingest-http-"))
    server = Server.molar(d, "--max-bundle-mb", "200")
    # The same bytes sent twice are one trace (the second answer stores nothing): send distinct bundles.
    bundles = [[_variant(bundle, f"bench-big-{run}-{i}") for i in range(3)] for run in range(runs)]
    try:
        with httpx2.Client(base_url=server.base, timeout=300, trust_env=False) as http:
            for run in range(runs):
                t = time.perf_counter()
                for i in range(3):
                    r = http.post("/v1/traces/ingest", files={"bundle": ("b.tar.gz", bundles[run][i])})
                    r.raise_for_status()
                table.add(
                    "bundle ingest over HTTP, 3 back to back, events/s", "once", 300_000 / (time.perf_counter() - t)
                )
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def _variant(bundle: bytes, slug: str) -> bytes:
    """`bundle` (tar.gz) with another scenario slug in its summary: the same events, other bytes."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name.endswith("summary.json") and data is not None:
                summary = json.loads(data)
                summary["scenario_slug"] = slug
                data = json.dumps(summary).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def bench_memory(table: Table, work: Path, runs: int) -> None:
    from tests.long_run import record_long_run

    bundle = record_long_run(100_000)
    for _ in range(runs):
        d = Path(tempfile.mkdtemp(dir=work, prefix="mem-"))
        server = Server.molar(d, "--max-bundle-mb", "200")
        try:
            with httpx2.Client(base_url=server.base, timeout=300, trust_env=False) as http:
                http.get("/v1/traces").raise_for_status()
                time.sleep(1)
                idle = server.rss_mb()
                peak = idle
                stop = threading.Event()

                def sample(stop: threading.Event = stop, server: Server = server) -> None:
                    nonlocal peak
                    while not stop.is_set():
                        peak = max(peak, server.rss_mb())
                        time.sleep(0.02)

                th = threading.Thread(target=sample)
                th.start()
                http.post(
                    "/v1/traces/ingest", files={"bundle": ("b.tar.gz", bundle)}, data={"scenario_slug": "bench-big"}
                ).raise_for_status()
                time.sleep(3)  # the background analysis
                stop.set()
                th.join()
                after = server.rss_mb()
            table.add("server RSS idle MB", "once", idle)
            table.add("server RSS peak during a 100k bundle MB", "once", peak)
            table.add("server RSS after MB", "once", after)
        finally:
            server.stop()
            shutil.rmtree(d, ignore_errors=True)


async def bench_live(table: Table, work: Path, runs: int) -> None:
    d = Path(tempfile.mkdtemp(dir=work, prefix="live-"))
    server = Server.molar(d)
    ts = 1_780_000_000_000
    try:
        async with httpx2.AsyncClient(base_url=server.base, timeout=60, trust_env=False) as http:
            for _ in range(runs):
                for size, total in ((100, 20_000), (1000, 50_000)):
                    trace = (await http.post("/v1/traces", json={"scenario_slug": "bench-append"})).json()["id"]
                    t = time.perf_counter()
                    for first in range(0, total, size):
                        batch = [
                            {
                                "seq": s,
                                "ts": ts + s,
                                "kind": "network.response",
                                "step_id": f"s{s // 1000}",
                                "payload": {"method": "GET", "url": f"/api/items/{s}", "status": 200},
                            }
                            for s in range(first, first + size)
                        ]
                        r = await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
                        assert r.json()["accepted"] == size, r.text
                    table.add(f"live append, batches of {size:,}, events/s", "once", total / (time.perf_counter() - t))
                table.add("append → SSE follower p50 ms", "once", await _sse_latency(server.base, 200))
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


async def _sse_latency(base: str, samples: int) -> float:
    import anyio

    ts = 1_780_000_000_000
    async with (
        httpx2.AsyncClient(base_url=base, timeout=30, trust_env=False) as writer,
        httpx2.AsyncClient(base_url=base, timeout=httpx2.Timeout(30, read=None), trust_env=False) as reader,
    ):
        trace = (await writer.post("/v1/traces", json={"scenario_slug": "bench-sse"})).json()["id"]
        sent: dict[int, float] = {}
        lat: list[float] = []
        done = anyio.Event()

        async def read() -> None:
            async with reader.stream("GET", f"/v1/traces/{trace}/stream") as response:
                async for sse in httpx2.EventSource(response):
                    if sse.event == "message":
                        lat.append((time.perf_counter() - sent[int(sse.id)]) * 1000)
                        if len(lat) == samples:
                            done.set()
                            return

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.3)
            for seq in range(samples):
                sent[seq] = time.perf_counter()
                await writer.post(f"/v1/traces/{trace}/events", json={"seq": seq, "ts": ts + seq, "kind": "log"})
                await anyio.sleep(0.005)
            with anyio.fail_after(30):
                await done.wait()
    return p50(lat)


# ---- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "molar-scale")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--sections", default="store,server,ingest,memory,live,load")
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--before", type=Path, help="another checkout's src/ to measure first (server section)")
    parser.add_argument("--floor-server", choices=["http", "stdio"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        floor_server(args.floor_server, args.port)
        return 0
    sections = set(args.sections.split(","))
    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    table = Table()
    started, start_load = time.time(), load()
    for size in sizes:
        data, ids = prepare(args.work, size) if sections & {"store", "server", "load"} else (Path(), {})
        col = _label(size)
        for run in range(args.runs):
            print(f"{col} run {run + 1}/{args.runs} (load {load():.2f})", file=sys.stderr, flush=True)
            if "store" in sections:
                bench_store(table, data, col, args.iterations)
            if "server" in sections:
                if args.before is not None:
                    asyncio.run(bench_server(table, data, ids, col, args.iterations, src=args.before))
                asyncio.run(bench_server(table, data, ids, col, args.iterations))
    if "ingest" in sections:
        bench_ingest(table, args.work, args.runs)
    if "memory" in sections:
        bench_memory(table, args.work, args.runs)
    if "live" in sections:
        asyncio.run(bench_live(table, args.work, args.runs))
    if "load" in sections:
        try:
            from bench_load import run_load  # type: ignore[import-not-found]
        except ImportError:
            table.notes["50 concurrent MCP clients: calls/s, p50 / p99"] = (
                "measured by bench/bench_load.py (not in this checkout); run it and copy its figures here"
            )
        else:
            data, ids = prepare(args.work, sizes[0])
            for _ in range(args.runs):
                result = run_load(data, ids, seconds=args.load_seconds)
                table.add("50 MCP clients + 5 writers: tool calls/s", "once", result["calls_per_s"])
                table.add("50 MCP clients: p50 ms", "once", result["p50_ms"])
                table.add("50 MCP clients: p99 ms", "once", result["p99_ms"])
                table.add("50 MCP clients: errors", "once", result["errors"])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(
        f"\nbench_scale · commit {commit.stdout.strip() or '?'} · Python {sys.version.split()[0]} · "
        f"{os.cpu_count()} CPUs · {args.runs} runs × {args.iterations} calls · {time.time() - started:.0f} s · "
        f"load avg {start_load:.1f} → {load():.1f}"
    )
    table.print(sizes)
    if args.json:
        args.json.write_text(json.dumps(table.dump(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
