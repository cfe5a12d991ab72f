"""The demo shop's scenario runs, recorded from real runs and shipped as Molar bundles (`scenario_runs/`).

`record_scenario_runs()` runs every shipped scenario against its own fresh shop process — the same runner
and launcher `serve --demo` records with at start (`molar_mcp.replay.recording.record_run`) — and packs
each trace as a bundle; `scripts/record_demo_runs.py` writes them to `scenario_runs/<slug>.tar.gz`.
`--demo` loads them (`load_shipped_runs`, replayable like a live recording) only when recording at start
fails; tests and benchmarks that need ready traces of the shop read them too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import anyio

from molar_mcp.demo import DEMO_DIR, scenario_paths
from molar_mcp.demo.config import DEMO_APP_NAME, demo_app_config
from molar_mcp.ingest.bundle import read_bundle, write_bundle
from molar_mcp.replay.apps import AppConfig
from molar_mcp.replay.recording import AppLauncher, record_run, scenario_files, store_recorded
from molar_mcp.store.port import TraceStore
from molar_mcp.store.replays import ReplayStore

RUNS_DIR = DEMO_DIR / "scenario_runs"
BUNDLE_SUFFIX = ".tar.gz"


async def record_scenario_runs(
    app: AppConfig | None = None, *, paths: Sequence[Path] | None = None, launcher: AppLauncher | None = None
) -> list[tuple[str, bytes]]:
    """Run each shipped scenario (or `paths`) against a fresh shop, all at once; `(file name, bundle)`
    per scenario, in the scenarios' order."""
    config = app or demo_app_config()
    items = scenario_files(scenario_paths() if paths is None else paths)
    results: list[tuple[str, bytes]] = [("", b"")] * len(items)

    async def one(index: int) -> None:
        scenario, text = items[index]
        _, trace, blobs = await record_run(config, scenario, text, launcher=launcher)
        results[index] = (scenario.slug + BUNDLE_SUFFIX, write_bundle(trace, blobs))

    async with anyio.create_task_group() as tg:
        for index in range(len(items)):
            tg.start_soon(one, index)
    return results


def shipped_runs(folder: Path = RUNS_DIR) -> list[tuple[str, bytes]]:
    """The recorded scenario runs shipped with the package, `(file name, bundle)` sorted by name."""
    return sorted((path.name, path.read_bytes()) for path in folder.glob("*" + BUNDLE_SUFFIX))


def load_shipped_runs(store: TraceStore, replays: ReplayStore, org_id: str) -> list[tuple[str, str]]:
    """Store the shipped runs as a live recording stores its runs: each trace with the scenario it was
    recorded from, so it can be replayed. Returns `(trace id, short id)` per run."""
    stored: list[tuple[str, str]] = []
    for name, data in shipped_runs():
        parsed = read_bundle(data)
        scenario = next((a for a in parsed.trace.artifacts if a.kind == "scenario"), None)
        if scenario is None:  # shipped data without its scenario is a packaging bug: say which
            raise ValueError(f"demo run {name} has no scenario artifact")
        text = parsed.blobs[scenario.sha256].decode("utf-8")
        store_one = functools.partial(store_recorded, app=DEMO_APP_NAME, scenario_text=text)
        stored.append(store_one(store, replays, org_id, parsed.trace, parsed.blobs))
    return stored
