"""Real runs of the two test projects: `npx playwright test` in tests/playwright_project (with
molar-playwright-reporter) and pytest in tests/pytest_project (pytest-playwright with the molar
plugin), both driving Debian's Chromium against the ticket shop, uploading to a real Molar server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import Served, start_auth_server, stop_server

TESTS = Path(__file__).resolve().parents[1]
PLAYWRIGHT_PROJECT = TESTS / "playwright_project"
PYTEST_PROJECT = TESTS / "pytest_project"
# Variables a CI sets that the reporter and the plugin read: cleared, so a test states its own.
_CI_PREFIXES = ("MOLAR_", "GITHUB_", "CI_", "BUILDKITE", "CIRCLE_", "BUILD_", "SYSTEM_", "CHANGE_", "GIT_")


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CI_PREFIXES) and k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(extra)
    return env


def run_playwright(out: Path, *args: str, env: dict[str, str], timeout: float = 300) -> Finished:
    """`npx playwright test ARGS` in tests/playwright_project, its output folder in `out`."""
    cli = PLAYWRIGHT_PROJECT / "node_modules" / "@playwright" / "test" / "cli.js"
    assert cli.is_file(), "tests/playwright_project has no node_modules: `bash scripts/test` runs npm ci there"
    started = time.monotonic()
    done = subprocess.run(
        ["npx", "--no-install", "playwright", "test", *args],
        cwd=PLAYWRIGHT_PROJECT,
        env={**env, "PW_OUTPUT_DIR": str(out), "FORCE_COLOR": "0"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Finished(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def run_pytest(out: Path, base_url: str, *args: str, env: dict[str, str], timeout: float = 300) -> Finished:
    """A child pytest in tests/pytest_project (its own rootdir) with pytest-playwright on the ticket shop."""
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "checks_ticketshop.py",
            "--base-url",
            base_url,
            "--tracing",
            "retain-on-failure",
            "--screenshot",
            "only-on-failure",
            "--output",
            str(out),
            *args,
        ],
        cwd=PYTEST_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Finished(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@dataclass
class Molar:
    served: Served
    key: str  # mcp:trace:read mcp:trace:write

    @property
    def url(self) -> str:
        return self.served.base_url


@pytest.fixture(scope="session")
def molar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Molar]:
    """`molar-mcp serve` with authentication, and an API key that may write and read traces. One for the
    session: each test uploads a run of its own and reads only that run (or is refused before anything)."""
    started = start_auth_server(
        tmp_path_factory.mktemp("molar") / "data", keys={"key": "mcp:trace:read mcp:trace:write"}
    )
    try:
        yield Molar(started.served, started.keys["key"])
    finally:
        stop_server(started.served)


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A 127.0.0.1 port that accepts connections and never answers a byte (a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]
