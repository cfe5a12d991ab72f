"""`debug_run` without a model on a 10,000-event trace: p50/p95 in process and over streamable HTTP.

    /work/venv/bin/python bench/bench_debug_run.py [--events 10000] [--iterations 100] [--cold 10]
        [--json out.json]

Target (issue 5): p50 ≤ 100 ms. Two figures per transport, because `POST /v1/traces/{id}/analyze`
stores its analysis and hands it back while the trace's events are unchanged (the detectors are
deterministic). Rate limits are lifted (each call is one write):
- warm: the same trace again and again (the analysis is reused; the usual case for an agent asking
  twice, and for every follow-up);
- cold: the first debug_run of a trace (the detectors run over all 10,000 events and the analysis is
  stored), one call on each of `--cold` fresh copies of the trace.
Also: `analyze?rerun=true` in process (the detectors' own cost, through the API) and the tokens of
one answer. Everything happens in a fresh temp data dir, removed at the end; the HTTP figures come from
the real `molar-mcp serve --no-auth` on a free 127.0.0.1 port, driven by the SDK `Client` in both eras.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
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
TARGET_P50_MS = 100.0


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
        "n": len(samples),
    }


async def drive(client: Any, warm_id: str, cold_ids: list[str], iterations: int) -> dict[str, Any]:
    """warm and cold samples of debug_run through one connected SDK client."""

    async def call(trace_id: str) -> Any:
        result = await client.call_tool("debug_run", {"trace_id": trace_id})
        if result.is_error:
            raise RuntimeError(f"debug_run({trace_id}) failed: {result.content}")
        return result

    cold = [await timed(lambda t=t: call(t)) for t in cold_ids]  # type: ignore[misc]
    for _ in range(WARMUP):
        await call(warm_id)
    warm = [await timed(lambda: call(warm_id)) for _ in range(iterations)]
    sample = await call(warm_id)
    return {"warm": figures(warm), "cold": figures(cold), "tokens": result_tokens(sample)}


async def in_process(data_dir: Path, warm_id: str, cold_ids: list[str], iterations: int) -> dict[str, Any]:
    from mcp.client import Client

    out: dict[str, Any] = {}
    with open_embedded(data_dir, rate_limits=UNLIMITED) as embedded:
        server = create_mcp_server(embedded.client_factory())
        for mode, ids in (("auto", cold_ids[: len(cold_ids) // 2]), ("legacy", cold_ids[len(cold_ids) // 2 :])):
            async with Client(server, mode=mode) as client:
                out[mode] = await drive(client, warm_id, ids, iterations)
        # The detectors' own cost through the API: analyze with rerun=true (no MCP, no rendering).
        async with embedded.client_factory()() as trace_client:
            for _ in range(3):
                await trace_client.analyze(warm_id, rerun=True)
            reruns = [await timed(lambda: trace_client.analyze(warm_id, rerun=True)) for _ in range(20)]
        out["analyze_rerun"] = figures(reruns)
    return out


async def over_http(base: str, warm_id: str, cold_ids: list[str], iterations: int) -> dict[str, Any]:
    from mcp.client import Client

    out: dict[str, Any] = {}
    for mode, ids in (("auto", cold_ids[: len(cold_ids) // 2]), ("legacy", cold_ids[len(cold_ids) // 2 :])):
        async with Client(f"{base}/mcp", mode=mode) as client:
            out[mode] = await drive(client, warm_id, ids, iterations)
            out[mode]["protocol"] = client.protocol_version
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
            wait_healthy(base, proc)
            return run(base)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def print_table(results: dict[str, Any]) -> None:
    print(f"debug_run (no model), {results['events']:,}-event trace — target p50 ≤ {TARGET_P50_MS:g} ms")
    print(f"{'transport':<22}{'era':<8}{'case':<6}{'p50 ms':>9}{'p95 ms':>9}{'n':>5}  verdict")
    for transport in ("in_process", "http"):
        for mode in ("auto", "legacy"):
            for case in ("warm", "cold"):
                f = results[transport][mode][case]
                verdict = "PASS" if f["p50_ms"] <= TARGET_P50_MS else "MISS"
                print(f"{transport:<22}{mode:<8}{case:<6}{f['p50_ms']:>9.1f}{f['p95_ms']:>9.1f}{f['n']:>5}  {verdict}")
    rerun = results["in_process"]["analyze_rerun"]
    print(f"analyze?rerun=true (the detectors over all events, in process): p50 {rerun['p50_ms']} ms, ", end="")
    print(f"p95 {rerun['p95_ms']} ms")
    tokens = results["in_process"]["auto"]["tokens"]
    print(f"tokens of one answer (text + structured): {tokens['total']} (budget 2000)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events of the trace")
    parser.add_argument("--iterations", type=int, default=100, help="timed warm calls per era and transport")
    parser.add_argument("--cold", type=int, default=10, help="fresh trace copies per transport (split by era)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="molar-bench-debug-"))
    data_dir = work / "data"
    try:
        print(f"building a {args.events:,}-event bundle", file=sys.stderr, flush=True)
        bundle = record_long_run(args.events)
        ids = ingest_copies(data_dir, bundle, 2 + 2 * args.cold)
        warm_id, http_warm_id = ids[0], ids[1]
        local_cold, http_cold = ids[2 : 2 + args.cold], ids[2 + args.cold :]
        results: dict[str, Any] = {
            "version": __version__,
            "events": args.events,
            "python": platform.python_version(),
            "load_avg_before": os.getloadavg()[0],
        }
        print("in process (in-memory MCP client, embedded store)", file=sys.stderr, flush=True)
        results["in_process"] = asyncio.run(in_process(data_dir, warm_id, local_cold, args.iterations))
        print("over streamable HTTP (molar-mcp serve)", file=sys.stderr, flush=True)
        results["http"] = serve(
            data_dir, work, lambda base: asyncio.run(over_http(base, http_warm_id, http_cold, args.iterations))
        )
        results["load_avg_after"] = os.getloadavg()[0]
        print_table(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
