"""The trace viewers' cost: `GET /v1/traces/{id}/view`, the share page `/r/{id}`, and `get_trace` for a
client that renders MCP Apps (the viewer's facts ride in the result `_meta`) against one that does not.

    /work/venv/bin/python bench/bench_viewer.py [--iterations 20] [--events 10000] [--json out.json]

Runs the real `molar-mcp serve --demo --no-auth` on a free 127.0.0.1 port in a fresh temp data dir
(removed at the end), adds one long real failed run of `--events` events (tests/long_run.py), and reports min / median /
max milliseconds per call on the demo's billing webhook failure and on the big trace, plus the size of
the viewer `_meta` each answer carries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
from bench_foundation import MCP_BIN, free_port, wait_healthy  # same folder
from mcp.client import Client
from mcp.client.extension import advertise
from tests.long_run import record_long_run  # bench_foundation put the repository on the path

APPS = advertise("io.modelcontextprotocol/ui", {"mimeTypes": ["text/html;profile=mcp-app"]})


def figures(samples: list[float]) -> dict[str, float]:
    return {
        "min": round(min(samples), 1),
        "median": round(statistics.median(samples), 1),
        "max": round(max(samples), 1),
    }


async def timed(n: int, call: Callable[[], Awaitable[Any]]) -> tuple[dict[str, float], Any]:
    await call()  # warm-up (imports, caches, the first analysis)
    samples, last = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        last = await call()
        samples.append((time.perf_counter() - t0) * 1000)
    return figures(samples), last


async def measure(base: str, n: int, traces: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with httpx2.AsyncClient(base_url=base, timeout=120) as http:
        for name, ref in traces.items():
            shared = (await http.post(f"/v1/traces/{ref}/share", json={"visibility": "public-read"})).json()
            view, resp = await timed(n, lambda ref=ref: http.get(f"/v1/traces/{ref}/view"))
            page, _ = await timed(n, lambda s=shared: http.get(f"/r/{s['short_id']}"))
            out[name] = {"view_ms": view, "view_bytes": len(resp.content), "share_page_ms": page}
    async with Client(base + "/mcp", extensions=[APPS]) as apps, Client(base + "/mcp") as plain:
        for name, ref in traces.items():
            with_app, result = await timed(n, lambda ref=ref: apps.call_tool("get_trace", {"trace_id": ref}))
            without, _ = await timed(n, lambda ref=ref: plain.call_tool("get_trace", {"trace_id": ref}))
            meta = json.dumps((result.meta or {}).get("molar/viewer"))
            out[name] |= {"get_trace_apps_ms": with_app, "get_trace_plain_ms": without, "viewer_meta_bytes": len(meta)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="molar-bench-viewer-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [str(MCP_BIN), "serve", "--demo", "--no-auth", "--port", str(port), "--data-dir", str(tmp / "data")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(base, proc, timeout=120)
        with httpx2.Client(base_url=base, timeout=120) as http:
            failed = http.get("/v1/traces", params={"status": "failed", "limit": 50}).json()["items"]
            billing = next(t["short_id"] for t in failed if t["scenario_slug"] == "billing-upgrade-webhook")
            big = http.post(
                "/v1/traces/ingest",
                files={"file": ("big.tar.gz", record_long_run(args.events), "application/gzip")},
            )
            big.raise_for_status()
        traces = {
            "demo billing webhook (46 events)": billing,
            f"long run ({args.events} events)": big.json()["short_id"],
        }
        result = asyncio.run(measure(base, args.iterations, traces))
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
