"""Shared fixtures: a real embedded store in a temp data dir, and the anyio backend."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from molar_mcp.compose import Embedded, open_embedded
from molar_mcp.store import SqliteTraceStore
from tests.servers import Served, start_server

if TYPE_CHECKING:
    from tests.apps.record import RecordedTraces, Recorder


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    """A real embedded store in a temp data dir (the store alone, without the API around it)."""
    s = SqliteTraceStore(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    with open_embedded(tmp_path / "data") as emb:
        yield emb


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`molar-mcp serve --demo --no-auth` as a real process on a free 127.0.0.1 port."""
    srv = start_server(tmp_path / "data", "--demo")
    yield srv
    srv.process.terminate()
    try:
        srv.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.process.kill()


@pytest.fixture(scope="session")
def ticketshop() -> Iterator[str]:
    """The ticket shop test app (tests/apps/ticketshop.py) on a free port: its base URL."""
    from tests.apps.server import serve_ticketshop

    with serve_ticketshop() as base:
        yield base


@pytest.fixture(scope="session")
def pw_recorder() -> Iterator[Recorder]:
    """One headless Chromium driven by the Python `playwright` package, for recording traces."""
    from tests.apps.record import Recorder

    with Recorder() as rec:
        yield rec


@pytest.fixture(scope="session")
def recorded(ticketshop: str, pw_recorder: Recorder, tmp_path_factory: pytest.TempPathFactory) -> RecordedTraces:
    """Real trace.zip files of the ticket shop scenarios, each recorded once a session on first use."""
    from tests.apps.record import RecordedTraces

    return RecordedTraces(pw_recorder, ticketshop, tmp_path_factory.mktemp("pw-traces"))
