"""Replay of the demo checkout from its failing step, with the coupon fix: wall time, median of 5.

    /work/venv/bin/python bench/bench_replay.py [--runs 5] [--json out.json]

In a fresh temp data dir (removed at the end): `record_demo` records the shipped scenarios against the
demo shop (one real process each, in parallel), then the failing `checkout-coupon` trace is replayed
from step 6 with `fixes/coupon-multiplier.diff`, `--runs` times each way:
- `ReplayService`: from `enqueue` to the recorded child trace (copy + patch + start the shop + health,
  re-run steps 1–5, run 6–7, stop the shop, store the trace) — the issue's figure;
- `app start + stop`: `running_app` alone with the same patch (the part a replay cannot avoid);
- `replay_trace` (MCP, in process, 2026-07-28 era): the tool call an agent makes, which adds the REST
  round trips, the long poll and the diff against the source trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp.client import Client

from molar_mcp import __version__
from molar_mcp.compose import open_embedded, record_demo
from molar_mcp.demo import fix_diff
from molar_mcp.demo.config import demo_app_config
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.models.replays import ReplayRequest
from molar_mcp.replay.apps import running_app
from molar_mcp.store import LOCAL_ORG_ID

FROM_STEP = 6


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1000, 1),
        "min_ms": round(min(samples) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


async def app_start_stop(diffs: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    async with running_app(demo_app_config(), diffs):
        pass
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per request drowns the figures
    fix = [("app.py", fix_diff("coupon-multiplier"))]
    request = ReplayRequest.model_validate(
        {"from_step": FROM_STEP, "edits": {"source_diffs": [{"path": p, "diff": d} for p, d in fix]}}
    )
    tmp = Path(tempfile.mkdtemp(prefix="molar-bench-replay-"))
    figures: dict[str, Any] = {}
    try:
        with open_embedded(tmp / "data") as embedded:
            started = time.perf_counter()
            runs = record_demo(embedded.store)
            figures["record_demo_ms"] = round((time.perf_counter() - started) * 1000, 1)
            trace = next(r for r in runs if r.slug == "checkout-coupon")
            service = embedded.context.replays
            assert service is not None
            print(
                f"recorded {len(runs)} demo traces; replaying {trace.short_id} from step {FROM_STEP}", file=sys.stderr
            )

            walls: list[float] = []
            for i in range(args.runs):
                started = time.perf_counter()
                queued = service.enqueue(LOCAL_ORG_ID, trace.short_id, request)
                status = service.wait(LOCAL_ORG_ID, queued.id, timeout_s=120)
                walls.append(time.perf_counter() - started)
                assert (status.status, status.trace_status) == ("succeeded", "passed"), status
                print(f"  service replay {i + 1}: {walls[-1] * 1000:.0f} ms", file=sys.stderr)
            figures["service_replay"] = summary(walls)

            starts = [anyio.run(app_start_stop, fix) for _ in range(args.runs)]
            figures["app_start_stop"] = summary(starts)

            async def via_mcp() -> list[float]:
                samples: list[float] = []
                async with Client(create_mcp_server(embedded.client_factory()), mode="auto") as client:
                    for _ in range(args.runs):
                        began = time.perf_counter()
                        result = await client.call_tool(
                            "replay_trace",
                            {
                                "trace_id": trace.short_id,
                                "from_step": FROM_STEP,
                                "source_diffs": [{"path": p, "diff": d} for p, d in fix],
                            },
                        )
                        samples.append(time.perf_counter() - began)
                        view: Any = result.structured_content
                        assert view["replay"]["trace_status"] == "passed", result.content
                return samples

            figures["mcp_replay_trace"] = summary(anyio.run(via_mcp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    figures["machine"] = f"{platform.python_version()} on {platform.system()} {platform.machine()}"
    figures["version"] = __version__
    rows = [
        ("record_demo (4 scenarios, 4 shop processes in parallel)", f"{figures['record_demo_ms']:.0f} ms"),
        ("replay from step 6 with the fix (ReplayService, enqueue → child trace)", _fmt(figures["service_replay"])),
        ("  of which: shop start + stop (copy, patch, health, kill)", _fmt(figures["app_start_stop"])),
        ("replay_trace MCP tool (in process, incl. long poll and diff)", _fmt(figures["mcp_replay_trace"])),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"bench_replay — molar-mcp {__version__}, {figures['machine']}, {args.runs} runs each")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def _fmt(s: dict[str, float]) -> str:
    return f"median {s['median_ms']:.0f} ms (min {s['min_ms']:.0f}, max {s['max_ms']:.0f})"


if __name__ == "__main__":
    sys.exit(main())
