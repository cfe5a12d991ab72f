from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from molar_mcp.compose import Embedded


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    """The in-process API (no auth: the loopback dev mode), as a real HTTP client reaches it."""
    async with embedded.client_factory()() as client:
        yield client._http
