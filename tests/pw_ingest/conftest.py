from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from starlette.applications import Starlette

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.store import SqliteTraceStore

ROOT = Path(__file__).resolve().parents[2]

SCENARIOS = ("wrong-text", "http-500", "js-exception", "overlay", "grouped", "login", "passing", "missing-selector")


@pytest.fixture(scope="session")
def pw_traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real trace.zip bytes of the ticket shop scenarios, recorded by the generator in a child process
    (the sync Playwright API cannot run in a thread where the async tests' event loop lives)."""
    out = tmp_path_factory.mktemp("pw-recorded")
    subprocess.run([sys.executable, "-m", "tests.apps.record", str(out), *SCENARIOS], check=True, cwd=ROOT)
    return {name: (out / f"{name}.zip").read_bytes() for name in SCENARIOS}


CHUNKED = ("passing", "wrong-text", "http-500")


@pytest.fixture(scope="session")
def pw_chunks(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The chunks of one chunked trace: one context traced once, `tracing.start_chunk`/`stop_chunk` around
    each of three scenarios, recorded by the generator in a child process."""
    out = tmp_path_factory.mktemp("pw-chunks")
    subprocess.run([sys.executable, "-m", "tests.apps.record", "--chunks", str(out), *CHUNKED], check=True, cwd=ROOT)
    return [(out / f"chunk-{i}-{name}.zip").read_bytes() for i, name in enumerate(CHUNKED)]


@pytest.fixture
def pw_app(store: SqliteTraceStore) -> Starlette:
    return create_api_app(ApiContext.embedded(store, max_bundle_bytes=5 * 1024 * 1024))


@pytest.fixture
async def pw_client(pw_app: Starlette) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=pw_app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


@pytest.fixture(scope="session")
def pw_report(ticketshop: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Playwright Test report folder: `npx playwright test --reporter=json,junit` of
    tests/playwright_project against the ticket shop (report.json, junit.xml, test-results/ with a
    trace.zip, failure screenshot and error-context.md per attempt; the flaky test fails, then passes)."""
    from tests.integrations.conftest import clean_env, run_playwright

    folder = tmp_path_factory.mktemp("pw-report")
    env = clean_env(
        APP_URL=ticketshop,
        FLAKY_KEY=f"report-{time.time_ns()}",
        PLAYWRIGHT_JSON_OUTPUT_NAME=str(folder / "report.json"),
        PLAYWRIGHT_JUNIT_OUTPUT_NAME=str(folder / "junit.xml"),
    )
    done = run_playwright(folder / "test-results", "--reporter=json,junit", env=env)
    assert (folder / "report.json").is_file(), done.output
    return folder
