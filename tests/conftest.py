"""Shared fixtures: a real embedded store in a temp data dir, and the anyio backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from molar_mcp.compose import Embedded, open_embedded


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    with open_embedded(tmp_path / "data") as emb:
        yield emb
