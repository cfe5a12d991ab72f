"""Shared fixtures: a real embedded store in a temp data dir, and the anyio backend."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from molar_mcp.compose import Embedded, open_embedded
from molar_mcp.store import SqliteTraceStore
from tests.servers import Served, start_server


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
