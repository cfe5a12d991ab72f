from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from molar_mcp.store import SqliteTraceStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteTraceStore]:
    s = SqliteTraceStore(tmp_path / "data")
    yield s
    s.close()
