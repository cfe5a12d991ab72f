"""Clients of a remote /v1 API: real HTTP to its URL, with an API key when given."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx2

from molar_mcp import __version__
from molar_mcp.client.trace_client import TraceClient


def remote_client_factory(api_url: str, api_key: str | None) -> Callable[[], AbstractAsyncContextManager[TraceClient]]:
    """Each call opens a `TraceClient` of `api_url` (its own connection pool), closed with the context."""
    headers = {"user-agent": f"molar-mcp/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"

    @asynccontextmanager
    async def factory() -> AsyncIterator[TraceClient]:
        async with httpx2.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=30.0) as http:
            yield TraceClient(http)

    return factory
