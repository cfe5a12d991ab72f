"""Replay fixtures: the demo shop in process (fast, deterministic) or as a real process (e2e), traces
recorded from the shipped scenarios, and a replay service over a temp store."""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx2
import pytest

from molar_mcp.demo import scenario_paths
from molar_mcp.demo.config import DEMO_APP_NAME, demo_app_config
from molar_mcp.demo.shop.app import create_app
from molar_mcp.replay.apps import AppConfig
from molar_mcp.replay.recording import AppLauncher, RecordedRun, record_scenarios, scenario_files
from molar_mcp.replay.service import ReplayService, ReplaySettings
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.replays import ReplayStore


@asynccontextmanager
async def in_process_shop(config: AppConfig, diffs: Sequence[tuple[str, str]]) -> AsyncIterator[httpx2.AsyncClient]:
    """A fresh demo shop in process (source diffs are not applied: use a real process for those)."""
    transport = httpx2.ASGITransport(app=create_app())
    async with httpx2.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        yield client


class Gate:
    """A launcher that holds every replay at app start until released: replays stay "running"."""

    def __init__(self) -> None:
        self.arrived = threading.Semaphore(0)
        self.opened = threading.Event()

    def launcher(self) -> AppLauncher:
        @asynccontextmanager
        async def launch(config: AppConfig, diffs: Sequence[tuple[str, str]]) -> AsyncIterator[httpx2.AsyncClient]:
            self.arrived.release()
            await anyio.to_thread.run_sync(self.opened.wait, abandon_on_cancel=True)
            async with in_process_shop(config, diffs) as client:
                yield client

        return launch

    def wait_arrivals(self, count: int) -> None:
        for _ in range(count):
            assert self.arrived.acquire(timeout=10), "a replay never reached its app start"


def record(
    store: SqliteTraceStore, org_id: str = LOCAL_ORG_ID, launcher: AppLauncher = in_process_shop
) -> dict[str, RecordedRun]:
    """Record the shipped scenarios into `store` (as `molar-mcp demo` does), by slug."""
    items = scenario_files(scenario_paths())
    run = functools.partial(
        record_scenarios, store, ReplayStore(store.db), org_id, demo_app_config(), items, launcher=launcher
    )
    return {r.slug: r for r in anyio.run(run)}


@dataclass
class World:
    store: SqliteTraceStore
    service: ReplayService
    runs: dict[str, RecordedRun]

    def close(self) -> None:
        self.service.close()
        self.store.close()


def make_world(
    data_dir: Path,
    *,
    launcher: AppLauncher = in_process_shop,
    settings: ReplaySettings | None = None,
    apps: dict[str, AppConfig] | None = None,
) -> World:
    store = SqliteTraceStore(data_dir)
    runs = record(store)
    service = ReplayService(
        store,
        ReplayStore(store.db),
        apps if apps is not None else {DEMO_APP_NAME: demo_app_config()},
        launcher=launcher,
        settings=settings,
    )
    return World(store, service, runs)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path / "data")
    yield w
    w.close()
