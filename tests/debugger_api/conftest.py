"""Fixtures of the analysis and incident tests: a real store in a temp data dir, its /v1 app in process,
and an MCP server over it (embedded, as `molar-mcp serve` builds it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.store import SqliteTraceStore
from molar_mcp.store.analysis import SqliteAnalysisStore
from tests.conftest import ENGINES, engine_options


@pytest.fixture
def analyses(store: SqliteTraceStore) -> SqliteAnalysisStore:
    return SqliteAnalysisStore(store.db)


@pytest.fixture
async def api(store: SqliteTraceStore) -> AsyncIterator[httpx2.AsyncClient]:
    app = create_api_app(ApiContext.embedded(store))
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both protocol eras: 2026-07-28 (auto discovers it) and 2025-11-25 (initialize handshake)."""
    return str(request.param)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """These tests are part of the store contract: they run on the embedded store and on PostgreSQL + S3."""
    return engine_options(request)
