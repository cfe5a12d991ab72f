from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from molar_mcp.compose import Embedded
from tests.conftest import ENGINES, engine_options


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """The receiver's storage (traces, spans, kept bodies, layout at finish) is part of the store
    contract: these tests run on the embedded store and on PostgreSQL + S3."""
    return engine_options(request)


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    """The in-process API (no auth: the loopback dev mode), as a real HTTP client reaches it."""
    async with embedded.client_factory()() as client:
        yield client._http
