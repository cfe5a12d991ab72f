from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from starlette.applications import Starlette

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.store import SqliteTraceStore
from tests.conftest import ENGINES, engine_options
from tests.ingest.archives import SMALL_LIMIT


@pytest.fixture
def app(store: SqliteTraceStore) -> Starlette:
    ctx = ApiContext.embedded(store, max_bundle_bytes=SMALL_LIMIT)
    return create_api_app(ctx)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """These tests are part of the store contract: they run on the embedded store and on PostgreSQL + S3."""
    return engine_options(request)
