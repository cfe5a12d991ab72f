"""Playwright ingest speed: a 200-action trace.zip with DOM snapshots, and a 500-result report folder.

    .venv/bin/python bench/bench_playwright.py              # ~1 min on 2 cores (recording included)
    .venv/bin/python bench/bench_playwright.py --actions 200 --results 500 --iterations 10 --seats 10

1. Records a real trace.zip (Python playwright, Debian chromium, the ticket shop's event page with a seat
   map of `--seats` seats, re-marked by every quantity typed) of `--actions` actions with screenshots, DOM
   snapshots and sources, then times `ingest_upload` of it (parse, build, store)
   into an empty store, `--iterations` times. Target: ≤ 300 ms for 200 actions (~3 MB).
2. Records one small failing trace, makes a report folder of `--results` results (report.json +
   test-results/, each result with its own copy of the trace, one byte changed so no two are alike),
   zips it and times `ingest_upload` of the folder. Target: ≥ 50 traces/s.
Prints min / median / max. Measures only: exits 0 either way.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.apps.record import CHROMIUM  # noqa: E402
from tests.apps.server import serve_ticketshop  # noqa: E402

from molar_mcp.ingest.service import Upload, ingest_upload  # noqa: E402
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore  # noqa: E402


def record_big(base: str, out: Path, actions: int, seats: int) -> bytes:
    """A shop page with a seat map of `seats` seats; each quantity typed re-marks the chosen seats, so every
    action's DOM snapshots and screencast frames differ (the page is as big as real shop pages are)."""
    from playwright.sync_api import sync_playwright

    event = f"{base}/event/jazz-night?seats={seats}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 800, "height": 600})
        context.tracing.start(screenshots=True, snapshots=True, sources=True, title="big")
        page = context.new_page()
        page.goto(event)
        done = 1
        while done < actions:
            page.locator("#qty").fill(str(done % 9 + 1))
            done += 1
            if done % 25 == 0:
                page.goto(base + ("/checkout" if done % 50 else "/event/opera"))
                page.goto(event)
                done += 2
        context.tracing.stop(path=str(out))
        browser.close()
    return out.read_bytes()


def record_small(base: str, out: Path) -> bytes:
    from tests.apps.record import Recorder

    with Recorder() as rec:
        rec.record("wrong-text", base, out)
    return out.read_bytes()


def report_folder(trace: bytes, results: int) -> bytes:
    suites = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        specs = []
        for i in range(results):
            folder = f"test-results/spec-{i}-chromium"
            # One byte of the archive comment differs, so every trace (and its blob) is its own.
            copy = io.BytesIO()
            with zipfile.ZipFile(io.BytesIO(trace)) as src, zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED) as dst:
                for item in src.infolist():
                    dst.writestr(item, src.read(item))
                dst.comment = f"copy {i}".encode()
            zf.writestr(f"{folder}/trace.zip", copy.getvalue())
            specs.append(
                {
                    "title": f"test {i}",
                    "file": "bench.spec.ts",
                    "line": i + 1,
                    "tests": [
                        {
                            "projectName": "chromium",
                            "expectedStatus": "passed",
                            "status": "unexpected",
                            "results": [
                                {
                                    "retry": 0,
                                    "status": "failed",
                                    "duration": 1200,
                                    "errors": [{"message": 'Expected: "In stock"\nReceived: "Sold out"'}],
                                    "stdout": [],
                                    "stderr": [],
                                    "attachments": [
                                        {
                                            "name": "trace",
                                            "contentType": "application/zip",
                                            "path": f"/ci/{folder}/trace.zip",
                                        }
                                    ],
                                }
                            ],
                        }
                    ],
                }
            )
        suites.append({"title": "bench.spec.ts", "file": "bench.spec.ts", "specs": specs})
        zf.writestr("report.json", json.dumps({"config": {}, "suites": suites, "errors": [], "stats": {}}))
    return buf.getvalue()


def figures(label: str, values: list[float], unit: str) -> str:
    return (
        f"{label}: min {min(values):.1f} {unit}, median {statistics.median(values):.1f} {unit}, "
        f"max {max(values):.1f} {unit} (n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=200)
    parser.add_argument("--results", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seats", type=int, default=10, help="seats on the big trace's page (its size)")
    parser.add_argument("--skip-report", action="store_true", help="only the big trace.zip")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, serve_ticketshop() as base:
        tmpdir = Path(tmp)
        print(f"recording a {args.actions}-action trace…", file=sys.stderr)
        big = record_big(base, tmpdir / "big.zip", args.actions, args.seats)
        with zipfile.ZipFile(io.BytesIO(big)) as zf:
            snapshots = sum(
                line.startswith(b'{"type":"frame-snapshot"') for line in zf.read("trace.trace").splitlines()
            )
        print(f"trace.zip: {len(big) / 1e6:.2f} MB, {snapshots} DOM snapshots")
        times = []
        for i in range(args.iterations):
            store = SqliteTraceStore(tmpdir / f"s{i}")
            started = time.perf_counter()
            ingest_upload(store, LOCAL_ORG_ID, Upload(data=big, filename="big.zip", max_bytes=100 * 1024 * 1024))
            times.append((time.perf_counter() - started) * 1000)
            store.close()
        print(figures(f"ingest of the {args.actions}-action trace.zip (target ≤ 300 ms)", times, "ms"))
        if args.skip_report:
            return 0

        small = record_small(base, tmpdir / "small.zip")
        folder = report_folder(small, args.results)
        print(f"report folder: {args.results} results, {len(folder) / 1e6:.1f} MB zipped")
        rates = []
        for i in range(3):
            store = SqliteTraceStore(tmpdir / f"r{i}")
            started = time.perf_counter()
            outcome = ingest_upload(
                store, LOCAL_ORG_ID, Upload(data=folder, filename="report.zip", max_bytes=500 * 1024 * 1024)
            )
            elapsed = time.perf_counter() - started
            assert len(outcome.traces) == args.results, outcome.rejected[:3]
            rates.append(args.results / elapsed)
            store.close()
        print(figures("report folder ingest (target ≥ 50 traces/s)", rates, "traces/s"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
