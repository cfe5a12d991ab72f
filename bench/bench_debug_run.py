"""`debug_run` without a model on 10,000- and 100,000-event traces, and a diff of the two: p50s and
min / median / max, in process and over streamable HTTP.

    /work/venv/bin/python bench/bench_debug_run.py [--events 10000,100000] [--iterations 30] [--cold 6]
        [--diff-iterations 5] [--no-http] [--json out.json]

Targets (issue #16 item 4; #11 asks ≤ 100 ms at 10k): cold `debug_run` p50 ≤ 60 ms at 10,000 events and
≤ 600 ms at 100,000; `diff_traces` of the 10k trace against the 100k one ≤ 400 ms. Two figures per size
and transport, because `POST /v1/traces/{id}/analyze` stores its analysis and hands it back while the
trace's events are unchanged (the detectors are deterministic). Rate limits are lifted (each call is one
write):
- warm: the same trace again and again (the analysis is reused; the usual case for an agent asking
  twice, and for every follow-up);
- cold: the first debug_run of a trace (the detectors run over all its events and the analysis is
  stored), one call on each of `--cold` fresh copies of the trace (split between the two protocol eras);
  the very first of them is also the server's first call.
Also: `analyze?rerun=true` in process (the detectors' own cost, through the API), `diff_traces(a=<10k>,
b=<100k>)` (diffs are never stored: every call reads both traces) and the tokens of one answer.
Everything happens in a fresh temp data dir, removed at the end; the HTTP figures come from the real
`molar-mcp serve --no-auth` on a free 127.0.0.1 port, driven by the SDK `Client` in both eras.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_foundation import MCP_BIN, percentile, result_tokens, wait_healthy  # same folder
from bench_foundation import free_port as _free_port
from tests.long_run import record_long_run  # bench_foundation put the repository on the path

from molar_mcp import __version__
from molar_mcp.api.telemetry import RateLimits
from molar_mcp.compose import open_embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore

WARMUP = 5
# Each debug_run is one write (POST …/analyze) and 2–3 reads: the default 120 writes a minute per org
# would refuse most of a benchmark's calls with 429, so the limits are lifted for it.
UNLIMITED = RateLimits(read=10**7, write=10**7, ingest=10**7)
COLD_TARGETS_MS = {10_000: 60.0, 100_000: 600.0}  # issue #16 item 4 (#11: ≤ 100 ms at 10k)
DIFF_TARGET_MS = 400.0


def ingest_copies(data_dir: Path, bundle: bytes, n: int) -> list[str]:
    store = SqliteTraceStore(data_dir)
    try:
        return [ingest_bundle(store, LOCAL_ORG_ID, bundle)[1] for _ in range(n)]
    finally:
        store.close()


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000


def figures(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 50), 1),
        "p95_ms": round(percentile(samples, 95), 1),
        "min_ms": round(min(samples), 1),
        "median_ms": round(statistics.median(samples), 1),
        "max_ms": round(max(samples), 1),
        "n": len(samples),
    }


async def call_tool(client: Any, name: str, arguments: dict[str, Any]) -> Any:
    result = await client.call_tool(name, arguments)
    if result.is_error:
        raise RuntimeError(f"{name}({arguments}) failed: {result.content}")
    return result


async def drive(client: Any, warm_id: str, cold_ids: list[str], iterations: int) -> dict[str, Any]:
    """warm and cold samples of debug_run through one connected SDK client."""

    async def call(trace_id: str) -> Any:
        return await call_tool(client, "debug_run", {"trace_id": trace_id})

    cold = [await timed(lambda t=t: call(t)) for t in cold_ids]  # type: ignore[misc]
    for _ in range(WARMUP):
        await call(warm_id)
    warm = [await timed(lambda: call(warm_id)) for _ in range(iterations)]
    sample = await call(warm_id)
    return {"warm": figures(warm), "cold": figures(cold), "tokens": result_tokens(sample)}


async def drive_diff(client: Any, a: str, b: str, iterations: int) -> dict[str, Any]:
    """diff_traces(a, b): nothing is stored, so every call reads and compares both traces."""
    samples = [await timed(lambda: call_tool(client, "diff_traces", {"a": a, "b": b})) for _ in range(iterations)]
    return figures(samples)


def era_split(ids: list[str]) -> tuple[tuple[str, list[str]], ...]:
    return (("auto", ids[: len(ids) // 2]), ("legacy", ids[len(ids) // 2 :]))


async def in_process(data_dir: Path, sizes: dict[int, Any], args: argparse.Namespace) -> dict[str, Any]:
    from mcp.client import Client

    out: dict[str, Any] = {}
    with open_embedded(data_dir, rate_limits=UNLIMITED) as embedded:
        server = create_mcp_server(embedded.client_factory())
        for n, ids in sizes.items():
            print(f"in process: {n:,} events", file=sys.stderr, flush=True)
            per: dict[str, Any] = {}
            for mode, cold in era_split(ids["local_cold"]):
                async with Client(server, mode=mode) as client:
                    per[mode] = await drive(client, ids["local_warm"], cold, args.iterations)
            # The detectors' own cost through the API: analyze with rerun=true (no MCP, no rendering).
            async with embedded.client_factory()() as trace_client:
                for _ in range(2):
                    await trace_client.analyze(ids["local_warm"], rerun=True)
                reruns = [
                    await timed(lambda i=ids: trace_client.analyze(i["local_warm"], rerun=True))  # type: ignore[misc]
                    for _ in range(max(3, args.iterations // 3))
                ]
            per["analyze_rerun"] = figures(reruns)
            out[str(n)] = per
        if len(sizes) > 1:
            small, big = min(sizes), max(sizes)
            print(f"in process: diff {small:,} vs {big:,}", file=sys.stderr, flush=True)
            async with Client(server) as client:
                out["diff"] = await drive_diff(
                    client, sizes[small]["local_warm"], sizes[big]["local_warm"], args.diff_iterations
                )
    return out


async def over_http(base: str, sizes: dict[int, Any], args: argparse.Namespace) -> dict[str, Any]:
    from mcp.client import Client

    out: dict[str, Any] = {}
    for n, ids in sizes.items():
        print(f"over HTTP: {n:,} events", file=sys.stderr, flush=True)
        per: dict[str, Any] = {}
        for mode, cold in era_split(ids["http_cold"]):
            async with Client(f"{base}/mcp", mode=mode) as client:
                per[mode] = await drive(client, ids["http_warm"], cold, args.iterations)
                per[mode]["protocol"] = client.protocol_version
        out[str(n)] = per
    if len(sizes) > 1:
        small, big = min(sizes), max(sizes)
        async with Client(f"{base}/mcp") as client:
            out["diff"] = await drive_diff(
                client, sizes[small]["http_warm"], sizes[big]["http_warm"], args.diff_iterations
            )
    return out


def serve(data_dir: Path, work: Path, run: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    entry = [str(MCP_BIN)] if MCP_BIN.exists() else [sys.executable, "-m", "molar_mcp.cli"]
    cmd = [*entry, "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    cmd += ["--rate-limits", f"read={UNLIMITED.read},write={UNLIMITED.write},ingest={UNLIMITED.ingest}"]
    print(f"server: {' '.join(cmd)}", file=sys.stderr, flush=True)
    with (work / "server.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(base, proc, timeout=120)
            return run(base)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _row(label: str, f: dict[str, Any], target: float | None) -> str:
    verdict = "" if target is None else "PASS" if f["p50_ms"] <= target else "MISS"
    spread = f"{f['min_ms']:.1f} / {f['median_ms']:.1f} / {f['max_ms']:.1f}"
    return f"{label:<36}{f['p50_ms']:>10.1f}{spread:>34}{f['n']:>5}  {verdict}"


def print_table(results: dict[str, Any]) -> None:
    print(f"debug_run (no model) and diff_traces · load avg {results['load_avg_before']:.2f} → ", end="")
    print(f"{results['load_avg_after']:.2f}")
    print(f"{'figure':<36}{'p50 ms':>10}{'min / median / max ms':>34}{'n':>5}  verdict (p50)")
    transports = [t for t in ("in_process", "http") if t in results]
    for n in results["events"]:
        target = COLD_TARGETS_MS.get(n)
        for transport in transports:
            per = results[transport][str(n)]
            for mode in ("auto", "legacy"):
                for case in ("cold", "warm"):
                    label = f"{n // 1000}k {transport} {mode} {case}"
                    print(_row(label, per[mode][case], target if case == "cold" else None))
        rerun = results["in_process"][str(n)]["analyze_rerun"]
        print(_row(f"{n // 1000}k analyze?rerun (detectors)", rerun, None))
        tokens = results["in_process"][str(n)]["auto"]["tokens"]
        print(f"{n // 1000}k tokens of one answer (text + structured): {tokens['total']} (budget 2000)")
    for transport in transports:
        if "diff" in results[transport]:
            small, big = min(results["events"]), max(results["events"])
            label = f"diff {small // 1000}k vs {big // 1000}k {transport}"
            print(_row(label, results[transport]["diff"], DIFF_TARGET_MS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="10000,100000", help="events of each trace, comma-separated")
    parser.add_argument("--iterations", type=int, default=30, help="timed warm calls per era, transport and size")
    parser.add_argument("--cold", type=int, default=6, help="fresh trace copies per transport and size (split by era)")
    parser.add_argument("--diff-iterations", type=int, default=5, help="timed diff_traces calls per transport")
    parser.add_argument("--no-http", action="store_true", help="in process only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    events = sorted({int(n) for n in args.events.split(",") if n.strip()})

    work = Path(tempfile.mkdtemp(prefix="molar-bench-debug-"))
    data_dir = work / "data"
    try:
        sizes: dict[int, dict[str, Any]] = {}
        for n in events:
            print(f"building a {n:,}-event bundle and storing copies", file=sys.stderr, flush=True)
            copies = 1 + args.cold + (0 if args.no_http else 1 + args.cold)
            ids = ingest_copies(data_dir, record_long_run(n), copies)
            sizes[n] = {"local_warm": ids[0], "local_cold": ids[1 : 1 + args.cold]}
            if not args.no_http:
                sizes[n] |= {"http_warm": ids[1 + args.cold], "http_cold": ids[2 + args.cold :]}
        results: dict[str, Any] = {
            "version": __version__,
            "events": events,
            "python": platform.python_version(),
            "load_avg_before": os.getloadavg()[0],
        }
        results["in_process"] = asyncio.run(in_process(data_dir, sizes, args))
        if not args.no_http:
            results["http"] = serve(data_dir, work, lambda base: asyncio.run(over_http(base, sizes, args)))
        results["load_avg_after"] = os.getloadavg()[0]
        print_table(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
