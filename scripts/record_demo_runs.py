"""Record the demo shop's scenario runs that `--demo` falls back to, from real runs.

Runs every scenario in src/molar_mcp/demo/scenarios/ against its own fresh demo shop process (the runner
`serve --demo` records with at start) and replaces src/molar_mcp/demo/scenario_runs/ with one Molar bundle
per scenario (`<slug>.tar.gz`: the run's events, its status and failure signature, the scenario file).
Re-run it whenever the shop or a scenario changes; tests/demo/test_recorded_runs.py fails until you do.

    .venv/bin/python scripts/record_demo_runs.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import anyio

from molar_mcp.demo.recorded import RUNS_DIR, record_scenario_runs
from molar_mcp.ingest import read_bundle


def main() -> int:
    runs = anyio.run(record_scenario_runs)
    with tempfile.TemporaryDirectory(prefix="molar-demo-runs-", dir=RUNS_DIR.parent) as tmp:
        staged = Path(tmp) / "scenario_runs"
        staged.mkdir()
        for name, bundle in runs:
            (staged / name).write_bytes(bundle)
        if RUNS_DIR.exists():
            shutil.rmtree(RUNS_DIR)
        staged.rename(RUNS_DIR)
    for name, bundle in runs:
        trace = read_bundle(bundle).trace
        outcome = f"{trace.status} at {trace.failure_signature}" if trace.failure_signature else trace.status
        print(f"{name}: {len(trace.events)} events, {outcome} ({len(bundle) // 1024 + 1} KiB)")
    print(f"recorded {len(runs)} scenario runs into {RUNS_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
