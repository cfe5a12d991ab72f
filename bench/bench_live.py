"""Live-trace benchmark (issue 3): append throughput with batches of 100, append → SSE client latency,
and `q` full-text search over 100,000 traces.

    /work/venv/bin/python bench/bench_live.py [--events 20000] [--latency-samples 200] [--traces 100000]

Runs a real `molar-mcp serve --no-auth` on a free 127.0.0.1 port (rate limits lifted) in a temp data
dir, talks to it over HTTP, and removes everything when done. Targets: append ≥ 20,000 events/s;
append → SSE p50 ≤ 20 ms; search p50 ≤ 20 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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


def start(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


async def bench_append(base: str, total: int) -> dict[str, float]:
    async with httpx2.AsyncClient(base_url=base, timeout=30) as http:
        trace = (await http.post("/v1/traces", json={"scenario_slug": "bench-append"})).json()["id"]
        started = time.perf_counter()
        for first in range(0, total, 100):
            batch = [
                {
                    "seq": s,
                    "ts": TS + s,
                    "kind": "network.response",
                    "step_id": f"s{s // 1000}",
                    "payload": {"method": "GET", "url": f"/api/items/{s}", "status": 200},
                }
                for s in range(first, first + 100)
            ]
            response = await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
            assert response.json()["accepted"] == 100
        elapsed = time.perf_counter() - started
    return {"events": total, "seconds": elapsed, "events_per_s": total / elapsed}


async def bench_sse_latency(base: str, samples: int) -> dict[str, float]:
    """Append one event at a time; measure until the SSE reader has it (same process, same clock)."""
    async with (
        httpx2.AsyncClient(base_url=base, timeout=30) as writer,
        httpx2.AsyncClient(base_url=base, timeout=httpx2.Timeout(30, read=None)) as reader,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--search-iterations", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="molar-bench-live-"))
    results: dict[str, Any] = {}
    try:
        live_dir = root / "live"
        process, base = start(live_dir)
        try:
            results["append"] = anyio.run(bench_append, base, args.events)
            results["sse_latency"] = anyio.run(bench_sse_latency, base, args.latency_samples)
        finally:
            process.terminate()
            process.wait(timeout=10)
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
    a, s, q, qs = results["append"], results["sse_latency"], results["search_http"], results["search_store"]
    rows = [
        (
            "append, batches of 100 (HTTP)",
            f"{a['events_per_s']:,.0f} events/s",
            "≥ 20,000",
            a["events_per_s"] >= 20_000,
        ),
        ("append → SSE client p50 / p95", f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f} ms", "p50 ≤ 20", s["p50_ms"] <= 20),
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
