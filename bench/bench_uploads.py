"""What uploading costs a test run: the pytest plugin's uploader (the reporter makes the same calls)
against a real `molar-mcp serve`, and the bound when Molar is down.

    .venv/bin/python bench/bench_uploads.py                # ~1 min on 2 cores
    .venv/bin/python bench/bench_uploads.py --uploads 20   # quicker

1. **upload latency**: `POST /v1/traces/ingest` of a real Playwright Test trace.zip with its result and
   failure screenshot (the demo's recorded SAVE10 failure, src/molar_mcp/demo/playwright_run/), one at a
   time, each a new test identity: min / median / max ms per upload (parse, mask, store, link to a run).
2. **throughput**: the same uploads submitted at once to the uploader's two background threads: uploads/s.
3. **Molar down**: `--uploads` results submitted to a closed port, then `flush`: the time until the session
   could end (the uploader stops after three unanswered requests in a row), min / median / max over 5 runs.

A fresh temp data dir, 127.0.0.1 only; the server is stopped and the dir removed on the way out.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

from molar_mcp.integrations.uploader import Limits, Uploader

ROOT = Path(__file__).resolve().parents[1]
ATTEMPT = ROOT / "src" / "molar_mcp" / "demo" / "playwright_run" / "003"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def figures(values: list[float]) -> str:
    return f"min {min(values):.1f}  median {statistics.median(values):.1f}  max {max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=50)
    args = parser.parse_args()
    recorded = json.loads((ATTEMPT / "result.json").read_text(encoding="utf-8"))
    trace = (ATTEMPT / "trace.zip").read_bytes()
    shots = [(a["name"], (ATTEMPT / a["name"]).read_bytes(), a["content_type"]) for a in recorded["attachments"]]

    def form(i: int, run_id: str) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
        result = {**recorded["result"], "title_path": [*recorded["result"]["title_path"][:-1], f"bench {i}"]}
        data = {"format": "playwright-trace", "run_id": run_id, "result": json.dumps(result)}
        return data, [("file", ("trace.zip", trace, "application/zip")), *(("attachment", s) for s in shots)]

    with tempfile.TemporaryDirectory(prefix="molar-bench-uploads-") as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "molar_mcp", "serve", "--no-auth", "--port", str(port), "--data-dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 180  # a loaded machine starts it slowly
            while True:
                try:
                    if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx2.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("molar-mcp serve did not start") from None
                    time.sleep(0.1)
            up = Uploader(base, None, Limits())
            run_id = up.post_json("/v1/runs", {"kind": "playwright", "name": "bench"}).body["id"]
            print(
                f"trace.zip {len(trace) // 1024} KiB + {len(shots)} attachments, {args.uploads} uploads",
                file=sys.stderr,
            )
            latencies = []
            for i in range(args.uploads):
                data, files = form(i, run_id)
                started = time.perf_counter()
                answer = up.post_form("/v1/traces/ingest", data, files)
                latencies.append((time.perf_counter() - started) * 1000)
                assert answer.ok, answer.error
            print(f"1. upload latency (ms):         {figures(latencies)}")
            started = time.perf_counter()
            for i in range(args.uploads):
                data, files = form(args.uploads + i, run_id)
                up.submit(lambda data=data, files=files: up.post_form("/v1/traces/ingest", data, files) and None)
            left = up.flush(300)
            took = time.perf_counter() - started
            print(f"2. throughput (2 threads):      {args.uploads / took:.1f} uploads/s ({left} left)")
            up.close()
        finally:
            server.terminate()
            server.wait(timeout=10)

    closed = free_port()
    bounds = []
    for _ in range(5):
        down = Uploader(f"http://127.0.0.1:{closed}", None, Limits())
        started = time.perf_counter()
        for i in range(args.uploads):
            data, files = form(i, "none")
            down.submit(lambda d=down, data=data, files=files: d.post_form("/v1/traces/ingest", data, files) and None)
        down.flush(30)
        bounds.append((time.perf_counter() - started) * 1000)
        down.close()
    print(f"3. Molar down, until flush (ms): {figures(bounds)}")


if __name__ == "__main__":
    main()
