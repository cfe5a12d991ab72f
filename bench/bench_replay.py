"""Replay of the demo checkout from its failing step, with the coupon fix: wall time, median of 5.

    /work/venv/bin/python bench/bench_replay.py [--runs 5] [--json out.json]

In a fresh temp data dir (removed at the end): `record_demo` records the shipped scenarios against the
demo shop (one real process each, in parallel), then the failing `checkout-coupon` trace is replayed
from step 6 with `fixes/coupon-multiplier.diff`, `--runs` times each way:
- `ReplayService`: from `enqueue` to the recorded child trace (copy + patch + start the shop + health,
  re-run steps 1–5, run 6–7, stop the shop, store the trace) — the issue's figure;
- `app start + stop`: `running_app` alone with the same patch (the part a replay cannot avoid);
- `replay_trace` (MCP, in process, 2026-07-28 era): the tool call an agent makes, which adds the REST
  round trips, the long poll and the diff against the source trace;
- the sandbox's own cost: `/usr/bin/true` and `python -c pass` run directly and in the bubblewrap sandbox
  (workspace, namespaces, mounts, uid drop, limits, cleanup included);
- a Playwright test replay (`--pw-runs`, needs `npm ci --prefix tests/playwright_project`): the cart project
  of tests/replays/pw_project.py, its failing test replayed with the fix: request → child trace recorded.
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
from molar_mcp.models.replays import ReplayOrigin, ReplayRequest
from molar_mcp.replay.apps import free_port, running_app
from molar_mcp.replay.drivers.playwright import report_events, report_result
from molar_mcp.replay.projects import ReplayRoots
from molar_mcp.replay.sandbox import Bind, Sandbox, runtime_paths
from molar_mcp.replay.service import ReplayService
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.port import NewTrace
from molar_mcp.store.replays import ReplayStore

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


def sandbox_overhead(runs: int) -> dict[str, Any]:
    """Median wall time of a tiny command run directly and in the sandbox."""
    import subprocess

    sandbox = Sandbox.find()
    binds = [Bind(p) for p in runtime_paths()]
    figures: dict[str, Any] = {}
    for name, argv in (("true", ["/usr/bin/true"]), ("python", [sys.executable, "-c", "pass"])):
        direct: list[float] = []
        boxed: list[float] = []
        for _ in range(runs):
            began = time.perf_counter()
            subprocess.run(argv, check=True)
            direct.append(time.perf_counter() - began)

            async def one(argv: list[str]) -> float:
                began = time.perf_counter()
                async with sandbox.workspace() as ws:
                    result = await sandbox.run(ws, argv, binds=binds)
                    assert result.exit_code == 0, result.output_tail
                return time.perf_counter() - began

            boxed.append(anyio.run(one, argv))
        figures[name] = {"direct": summary(direct), "sandboxed": summary(boxed)}
        figures[name]["overhead_ms"] = round((statistics.median(boxed) - statistics.median(direct)) * 1000, 1)
    return figures


def playwright_replay(runs: int, tmp: Path) -> dict[str, Any]:
    """The cart project's failing test recorded for real, then replayed with the fix `runs` times."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.replays.pw_project import FIX, make_project, run_test

    root = tmp / "roots"
    repo = root / "cart"
    commit = make_project(repo)
    direct: list[float] = []
    for _ in range(runs):  # the same test run directly on this machine, for comparison
        began = time.perf_counter()
        report = run_test(repo, free_port())
        direct.append(time.perf_counter() - began)
    result = report_result(json.dumps(report).encode())
    assert result is not None
    store = SqliteTraceStore(tmp / "pw-data")
    service = ReplayService(store, ReplayStore(store.db), {}, roots=ReplayRoots([root]))
    try:
        trace_id, _ = store.add_trace(
            LOCAL_ORG_ID,
            NewTrace(scenario_slug="cart", status="failed", events=report_events(result, ts=1)),
            {},
        )
        origin = ReplayOrigin(
            kind="playwright",
            repo_path=str(repo),
            commit=commit,
            project=result["project"],
            file=result["file"],
            title_path=result["title_path"],
        )
        ReplayStore(store.db).record_origin(LOCAL_ORG_ID, trace_id, origin)
        request = ReplayRequest.model_validate(
            {"from_step": 1, "edits": {"source_diffs": [{"path": FIX[0], "diff": FIX[1]}]}}
        )
        walls: list[float] = []
        for i in range(runs):
            began = time.perf_counter()
            status = service.wait(LOCAL_ORG_ID, service.enqueue(LOCAL_ORG_ID, trace_id, request).id, timeout_s=300)
            walls.append(time.perf_counter() - began)
            assert (status.status, status.trace_status) == ("succeeded", "passed"), (status.message, status.log_tail)
            print(f"  playwright replay {i + 1}: {walls[-1] * 1000:.0f} ms", file=sys.stderr)
        return {"replay": summary(walls), "direct": summary(direct)}
    finally:
        service.close()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pw-runs", type=int, default=3, help="Playwright test replays (0: skip)")
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
            figures["scenarios"] = len(runs)
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
        figures["sandbox"] = sandbox_overhead(max(args.runs, 10))
        if args.pw_runs:
            figures["playwright_replay"] = playwright_replay(args.pw_runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    figures["machine"] = f"{platform.python_version()} on {platform.system()} {platform.machine()}"
    figures["version"] = __version__
    rows = [
        (
            f"record_demo ({figures['scenarios']} scenarios, one shop process each, in parallel)",
            f"{figures['record_demo_ms']:.0f} ms",
        ),
        ("replay from step 6 with the fix (ReplayService, enqueue → child trace)", _fmt(figures["service_replay"])),
        ("  of which: shop start + stop (copy, patch, health, kill)", _fmt(figures["app_start_stop"])),
        ("replay_trace MCP tool (in process, incl. long poll and diff)", _fmt(figures["mcp_replay_trace"])),
    ]
    for name in ("true", "python"):
        box = figures["sandbox"][name]
        rows.append((f"`{name}` directly", _fmt(box["direct"])))
        rows.append((f"`{name}` in the sandbox (overhead {box['overhead_ms']:.0f} ms)", _fmt(box["sandboxed"])))
    if "playwright_replay" in figures:
        pw = figures["playwright_replay"]
        rows.append(("the Playwright test run directly (npx playwright test, no replay)", _fmt(pw["direct"])))
        rows.append(("Playwright test replay with the fix (request → child trace)", _fmt(pw["replay"])))
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
