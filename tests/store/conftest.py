from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.compose import open_store
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from tests.conftest import ENGINES, engine_options
from tests.store.factory import AddTrace, new_trace


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    return engine_options(request)


@pytest.fixture
def store(data_dir: Path, engine: dict[str, str]) -> Iterator[SqliteTraceStore]:
    s = open_store(data_dir, **engine)
    yield s
    s.close()


@pytest.fixture
def add(store: SqliteTraceStore) -> AddTrace:
    """Store a trace: `add(org_id=…, events=…, blobs=…, **NewTrace fields)` → `(id, short_id)`."""

    def add_trace(
        org_id: str = LOCAL_ORG_ID,
        events: list[dict[str, Any]] | None = None,
        blobs: dict[str, bytes] | None = None,
        **fields: Any,
    ) -> tuple[str, str]:
        return store.add_trace(org_id, new_trace(events, **fields), blobs or {})

    return add_trace
