"""Many agents at once: 25 + 25 MCP clients (protocol 2026-07-28 and 2025-11-25) looping `list_traces` and
`get_trace` against one server for `--seconds`, while 5 REST writers append to live traces.

    .venv/bin/python bench/bench_load.py [--work /tmp/molar-scale] [--traces 10000] [--seconds 60]
        [--runs 3] [--clients 25] [--writers 5] [--before OTHER/src] [--json out.json]

The server is a real `molar-mcp serve --no-auth` (rate limits lifted) on the data dir bench_scale.py builds
(`--traces` small traces, one 10,000-event trace, the demo runs; built once under --work, then reused).
Each era's clients run in their own process (so the load generator is not one core's worth of Python):
every client opens its own session, then loops list_traces(status=failed) → get_trace(<a row of it>,
rotating through the rows) until the time is up. The writers each open a live trace and append batches of
20 events, 20 batches a second each (2,000 events/s in all). Figures: tool calls/s (both eras together),
p50 / p99 of a call as its client saw it, errors (a raised error or an `isError` answer), appends/s, and
the server's CPU a tool call: with the appends in it, and with their share taken out (the writers run alone
for 5 s before each run to price an appended event).
With `--before DIR` (another checkout's `src/`, e.g. `git archive` of main) each run measures that code
and then this one, back to back: compare within a run. Prints min / median / max over runs and the load
average. It measures, it does not gate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import RATE, free_port, molar, pct, prepare

TOOL_RATE = ["--rate-limits", RATE[1] + ",tool=100000000"]
BATCH = 20
BATCHES_PER_S = 20
WRITERS_ALONE_S = 5  # the writers alone, before each run: their server CPU per appended event


class Served:
    """`molar-mcp serve --no-auth` (rate limits lifted) on a free port; `src` runs another checkout's code."""

    def __init__(self, data: Path, src: Path | None, extra: list[str]) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src)
        cmd = molar("serve", "--no-auth", "--port", str(port), "--data-dir", str(data), *TOOL_RATE, *extra)
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {self.proc.returncode}")
            try:
                if httpx2.get(self.base + "/healthz", timeout=2, trust_env=False).status_code == 200:
                    self._settle(deadline)
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{cmd} did not start")

    def _settle(self, deadline: float) -> None:
        """Wait until the server is idle: with `--workers N` the first worker answers /healthz while the
        others are still importing (~1 s of CPU a second for 3–4 s here), which would be counted as the
        writers' or the clients' cost."""
        last = self.cpu_ms()
        while time.monotonic() < deadline:
            time.sleep(1)
            now = self.cpu_ms()
            if now - last < 100:
                return
            last = now

    def cpu_ms(self) -> float:
        """The server's CPU time so far (user + system), in ms: every process of its session (`serve
        --workers N` runs N worker processes; analysis workers count too) and the children it reaped."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # a process that ended meanwhile
                continue
            if int(fields[3]) == self.proc.pid:  # its session (started with start_new_session)
                ticks += int(fields[11]) + int(fields[12])
                if stat.parent.name == str(self.proc.pid):
                    ticks += int(fields[13]) + int(fields[14])
        return ticks * 1000 / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


# ---- one era's clients (a subprocess) ------------------------------------------------------------


async def _clients(urls: list[str], mode: str, count: int, seconds: float, kind: str = "sdk") -> dict[str, Any]:
    """`count` clients of one era (`mode`: the SDK's "auto" = 2026-07-28, or "legacy" = 2025-11-25) in this
    process, `kind` "sdk" (the `mcp` SDK's `Client`) or "light" (mcp_light.py: the same wire, little CPU)."""
    latencies: list[float] = []
    errors: list[str] = []
    ready = asyncio.Event()
    opened = 0
    start_at = 0.0

    async def loop(call: Any) -> None:
        """list_traces(status=failed) → get_trace(a row of it, rotating) until the time is up."""
        rows: list[str] = []
        turn = 0
        while time.monotonic() < start_at + seconds:
            if turn % 2 == 0 or not rows:
                name, args = "list_traces", {"status": "failed"}
            else:
                name, args = "get_trace", {"trace_id": rows[(turn // 2) % len(rows)]}
            turn += 1
            t = time.perf_counter()
            try:
                listed = await call(name, args)
            except Exception as exc:  # a refused, broken or wrong answer is an error, counted
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append((time.perf_counter() - t) * 1000)
            if listed is not None:
                rows = listed

    async def arrived() -> None:
        nonlocal opened
        opened += 1
        if opened == count:
            ready.set()
        await ready.wait()

    async def sdk(url: str) -> None:
        from mcp.client import Client

        async with Client(url, mode=mode, read_timeout_seconds=120) as client:

            async def call(name: str, args: dict[str, Any]) -> list[str] | None:
                result = await client.call_tool(name, args)
                if result.is_error:
                    raise RuntimeError(f"isError: {result.content}")
                if name != "list_traces":
                    return None
                listed = result.structured_content or {}
                if "rows" in listed:  # arrays under `columns`, short_id first
                    return [r[0] for r in listed["rows"]]
                return [r["short_id"] for r in listed.get("items", [])]  # a checkout from before (--before)

            await arrived()
            await loop(call)

    async def light(url: str) -> None:
        from mcp_light import LEGACY, MODERN, LightClient, check_trace, list_rows

        async with LightClient(url, LEGACY if mode == "legacy" else MODERN) as client:

            async def call(name: str, args: dict[str, Any]) -> list[str] | None:
                result = await client.call_tool(name, args)
                if name == "list_traces":
                    return list_rows(result)
                check_trace(result, args["trace_id"])
                return None

            await arrived()
            await loop(call)

    async def one(url: str) -> None:
        try:
            await (light(url) if kind == "light" else sdk(url))
        except Exception as exc:
            errors.append(f"session: {type(exc).__name__}: {exc}"[:300])
            ready.set()

    async def started() -> None:
        nonlocal start_at, cpu_at_start
        await ready.wait()
        start_at = time.monotonic()
        cpu_at_start = time.process_time()

    start_at = time.monotonic() + 3600
    cpu_at_start = 0.0
    # Client i stays on server i mod n (several replicas: what a proxy keeping sessions on one does).
    await asyncio.gather(started(), *(one(urls[i % len(urls)]) for i in range(count)))
    # This process's CPU while the clients loop (start-up, imports and opening sessions left out): what the
    # clients themselves cost the machine a call.
    return {"latencies": latencies, "errors": errors, "cpu_ms": (time.process_time() - cpu_at_start) * 1000}


# ---- writers -------------------------------------------------------------------------------------


async def _writers(bases: list[str], count: int, seconds: float) -> tuple[int, list[str], list[str]]:
    appended = 0
    errors: list[str] = []
    traces: list[str] = []
    ts = 1_780_000_000_000

    async def one(n: int, http: httpx2.AsyncClient) -> None:
        nonlocal appended
        trace = (await http.post("/v1/traces", json={"scenario_slug": f"bench-load-writer-{n}"})).json()["id"]
        traces.append(trace)
        seq = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tick = time.monotonic()
            batch = [
                {"seq": s, "ts": ts + s, "kind": "log", "step_id": f"s{s // 200}", "message": f"line {s}"}
                for s in range(seq, seq + BATCH)
            ]
            try:
                r = await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
                if r.status_code >= 400:
                    errors.append(f"append {r.status_code}: {r.text[:200]}")
                else:
                    appended += BATCH
                    seq += BATCH
            except httpx2.HTTPError as exc:
                errors.append(f"append: {type(exc).__name__}")
            await asyncio.sleep(max(0.0, 1 / BATCHES_PER_S - (time.monotonic() - tick)))

    https = [httpx2.AsyncClient(base_url=base, timeout=120, trust_env=False) for base in bases]
    try:
        await asyncio.gather(*(one(n, https[n % len(https)]) for n in range(count)))
    finally:
        for http in https:
            await http.aclose()
    return appended, errors, traces


def finish_writers(base: str, traces: list[str] | None = None) -> None:
    """Finish the writers' live traces (`traces`, else every one still running in the store). Left
    running, the server's reaper closes them `--live-quiet-seconds` (600) later and analyses each (tens of
    thousands of events): in a later run, during its measurement, as CPU no tool call asked for."""
    with httpx2.Client(base_url=base, timeout=600, trust_env=False) as http:
        if traces is None:
            traces = []
            for n in range(100):
                listed = http.get(
                    "/v1/traces", params={"scenario": f"bench-load-writer-{n}", "status": "running", "limit": 100}
                ).json()
                traces += [t["id"] for t in listed.get("items", [])]
        for trace in traces:
            http.post(f"/v1/traces/{trace}/finish", json={"status": "aborted"})


def settle(data: Path, src: Path | None) -> None:
    """Before the runs: finish what earlier runs of an older bench left running in `data`, and wait
    until their analyses are done (the server's CPU quiet), so no run pays for them."""
    server = Served(data, src, [])
    try:
        finish_writers(server.base)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            cpu = server.cpu_ms()
            time.sleep(2)
            if server.cpu_ms() - cpu < 100:  # under 5% of a core
                break
    finally:
        server.stop()


# ---- one run -------------------------------------------------------------------------------------


def run_load(
    data: Path,
    ids: dict[str, str] | None = None,
    *,
    seconds: float = 60,
    clients: int = 25,
    writers: int = 5,
    src: Path | None = None,
    extra: list[str] | None = None,
    kind: str = "sdk",
) -> dict[str, Any]:
    """One load run against a fresh server on `data`; its figures."""
    server = Served(data, src, extra or [])
    try:
        # What the writers alone cost the server an appended event, measured first (their own live traces,
        # finished before the clients start): the writers' appends run at whatever rate the loaded server
        # leaves them, so their share of the CPU a tool call moves with the clients (see bench/README.md).
        per_event = 0.0
        if writers:
            cpu = server.cpu_ms()
            appended, _, alone = asyncio.run(_writers([server.base], writers, WRITERS_ALONE_S))
            per_event = (server.cpu_ms() - cpu) / appended if appended else 0.0
            finish_writers(server.base, alone)
        cpu = server.cpu_ms()
        result = drive([server.base], seconds=seconds, clients=clients, writers=writers, kind=kind)
        # The server's CPU over the run per tool call (the writers' appends are in it too): it does not move
        # with the machine's load as the times do.
        calls = result["calls_per_s"] * seconds
        spent = server.cpu_ms() - cpu
        result["server_cpu_ms_per_call"] = spent / calls if calls else 0.0
        result["append_cpu_us_per_event"] = per_event * 1000
        appends_ms = per_event * result["appends_per_s"] * seconds
        result["server_cpu_ms_per_tool_call"] = (spent - appends_ms) / calls if calls else 0.0
        finish_writers(server.base, result.pop("writer_traces"))  # after the CPU is read
        return result
    finally:
        server.stop()


def drive(bases: list[str], *, seconds: float, clients: int, writers: int, kind: str = "sdk") -> dict[str, Any]:
    """The clients and writers against running servers (spread over them); the figures."""
    load_before = os.getloadavg()[0]
    urls = ",".join(base + "/mcp" for base in bases)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--era",
                mode,
                "--url",
                urls,
                "--clients",
                str(clients),
                "--seconds",
                str(seconds),
                "--client",
                kind,
            ],
            stdout=subprocess.PIPE,
        )
        for mode in ("auto", "legacy")
    ]
    # The writers start with the clients' loops (sessions take a moment to open under load).
    time.sleep(2)
    appended, write_errors, writer_traces = asyncio.run(_writers(bases, writers, seconds))
    outs = [json.loads(p.communicate(timeout=seconds + 600)[0]) for p in procs]
    latencies = [v for o in outs for v in o["latencies"]]
    errors = [e for o in outs for e in o["errors"]] + write_errors
    return {
        "calls_per_s": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) if latencies else 0.0,
        "p99_ms": pct(latencies, 0.99) if latencies else 0.0,
        "errors": len(errors),
        "error_samples": errors[:5],
        "appends_per_s": appended / seconds,
        "writer_traces": writer_traces,
        # The client processes' CPU per tool call: on one machine the load generator competes with the
        # server for the same cores, so calls/s cannot exceed cores / (server + client CPU per call).
        "client_cpu_ms_per_call": sum(o.get("cpu_ms", 0.0) for o in outs) / len(latencies) if latencies else 0.0,
        "load": [load_before, os.getloadavg()[0]],
        "by_era": {
            era: len(o["latencies"]) / seconds for era, o in zip(("2026-07-28", "2025-11-25"), outs, strict=True)
        },
    }


@contextmanager
def pg_replicas(count: int, traces: int, src: Path | None, extra: list[str]) -> Iterator[list[str]]:
    """A throwaway PostgreSQL cluster filled with `traces` traces (make_store.py, COPY), blobs in a shared
    directory, and `count` `serve` replicas on it; their base URLs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench_postgres import PG_SETTINGS
    from make_store import build_pg
    from tests.engines import pg_cluster

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="molar-load-pg-")))
        cluster = stack.enter_context(pg_cluster(PG_SETTINGS))
        url = cluster.new_database("load")
        print(f"filling {traces:,} traces into PostgreSQL", file=sys.stderr, flush=True)
        build_pg(tmp / "fill", url, cluster.admin_url(url.rsplit("/", 1)[1]), traces, 10, 7)
        (tmp / "blobs").mkdir()
        engine = ["--database-url", url, "--blob-url", f"file://{tmp / 'blobs'}"]
        servers: list[Served] = []
        try:
            for i in range(count):
                servers.append(Served(tmp / f"r{i}", src, [*engine, *extra]))
            yield [srv.base for srv in servers]
        finally:
            for srv in servers:
                srv.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/molar-scale"))
    parser.add_argument("--traces", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=25, help="per protocol era")
    parser.add_argument("--writers", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout's src/ to measure first in each run")
    parser.add_argument("--serve-args", default="", help="extra `serve` arguments")
    parser.add_argument(
        "--workers-compare", type=int, default=0, help="also measure `serve --workers N` in each run, in turn"
    )
    parser.add_argument(
        "--compare-args",
        default="",
        help="also measure this code with these extra `serve` arguments in each run, in turn "
        "(e.g. --compare-args=--no-inline-reads)",
    )
    parser.add_argument(
        "--replicas", type=int, default=0, help="N `serve` replicas on a throwaway PostgreSQL cluster instead"
    )
    parser.add_argument(
        "--client",
        choices=["sdk", "light", "both"],
        default="sdk",
        help="the load's MCP clients: the `mcp` SDK's, the light one (mcp_light.py), or both in turn each run",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--era", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.era:
        clients = _clients(args.url.split(","), args.era, args.clients, args.seconds, args.client)
        print(json.dumps(asyncio.run(clients)))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    data, ids = (Path(), {}) if args.replicas else prepare(args.work, args.traces)
    extra = args.serve_args.split()
    codes: list[tuple[str, Path | None, list[str]]] = [("before", args.before, extra)] if args.before else []
    codes.append(("this", None, extra))
    if args.workers_compare:  # the same code with `serve --workers N`, in turn with the rest
        codes.append((f"this/w{args.workers_compare}", None, [*extra, "--workers", str(args.workers_compare)]))
    if args.compare_args:  # the same code with more `serve` arguments, in turn with the rest
        codes.append((f"this {args.compare_args}", None, [*extra, *args.compare_args.split()]))
    kinds = ["sdk", "light"] if args.client == "both" else [args.client]
    variants = [
        (name if len(kinds) == 1 else f"{name}/{kind}", src, more, kind) for name, src, more in codes for kind in kinds
    ]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _, _ in variants}
    if not args.replicas:
        settle(data, None)
    for run in range(args.runs):
        for name, src, more, kind in variants:
            print(f"run {run + 1}/{args.runs}: {name} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
            if args.replicas:
                with pg_replicas(args.replicas, args.traces, src, more) as bases:
                    result = drive(bases, seconds=args.seconds, clients=args.clients, writers=args.writers, kind=kind)
                    finish_writers(bases[0], result.pop("writer_traces"))
            else:
                result = run_load(
                    data,
                    ids,
                    seconds=args.seconds,
                    clients=args.clients,
                    writers=args.writers,
                    src=src,
                    extra=more,
                    kind=kind,
                )
            print(
                f"  {json.dumps({k: v for k, v in result.items() if k != 'error_samples'})}",
                file=sys.stderr,
                flush=True,
            )
            for sample in result["error_samples"]:
                print(f"  error: {sample}", file=sys.stderr)
            results[name].append(result)
    loads = [v for rs in results.values() for r in rs for v in r["load"]]
    print(
        f"\n{args.clients} + {args.clients} MCP clients, {args.writers} writers, "
        f"{args.seconds:.0f} s × {args.runs} runs; "
        f"load average (1 min) {min(loads):.1f}–{max(loads):.1f} on {os.cpu_count()} CPUs; min / median / max"
    )
    for name, rs in results.items():
        for key, label in (
            ("calls_per_s", "tool calls/s"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("errors", "errors"),
            ("appends_per_s", "events appended/s"),
            ("server_cpu_ms_per_call", "server CPU ms per tool call (appends included)"),
            ("append_cpu_us_per_event", "server CPU µs per appended event (the writers alone)"),
            ("server_cpu_ms_per_tool_call", "server CPU ms per tool call (the appends' share taken out)"),
            ("client_cpu_ms_per_call", "client processes' CPU ms per tool call"),
        ):
            values = [r[key] for r in rs if key in r]
            if not values:
                continue
            print(f"{name:12s} {label:18s} {min(values):9.1f} / {statistics.median(values):9.1f} / {max(values):9.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
