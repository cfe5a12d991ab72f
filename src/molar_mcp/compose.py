"""The composition root: the only module that knows whether the store is embedded or remote."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx2
import platformdirs
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from molar_mcp import __version__
from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.api.telemetry import RateLimits
from molar_mcp.client import TraceClient
from molar_mcp.client.asgi_stream import StreamingASGITransport
from molar_mcp.ingest import DEFAULT_MAX_BUNDLE_BYTES, BundleError, ingest_bundle
from molar_mcp.mcp.capabilities import build_manifest
from molar_mcp.mcp.server import TOOL_SPECS, create_mcp_server
from molar_mcp.mcp.state import AppState, ClientFactory
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore

log = logging.getLogger("molar_mcp")

EMBEDDED_BASE_URL = "http://molar.embedded"
DEMO_MARKER = "demo-loaded-v1"


def default_data_dir() -> Path:
    """`MOLAR_DATA_DIR`, else the per-user data directory."""
    env = os.environ.get("MOLAR_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir("molar-mcp", appauthor=False))


@dataclass
class Embedded:
    """The embedded store and the /v1 app serving it, opened together."""

    store: SqliteTraceStore
    api_app: Starlette
    context: ApiContext

    def client_factory(self) -> ClientFactory:
        """Clients reach the in-process API through an ASGI transport: the same HTTP requests as remote
        mode, streamed (so SSE works), without a socket."""
        api_app = self.api_app

        @asynccontextmanager
        async def factory() -> AsyncIterator[TraceClient]:
            transport = StreamingASGITransport(api_app)
            async with httpx2.AsyncClient(transport=transport, base_url=EMBEDDED_BASE_URL) as http:
                yield TraceClient(http)

        return factory


@contextmanager
def open_embedded(
    data_dir: Path, *, max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES, rate_limits: RateLimits | None = None
) -> Iterator[Embedded]:
    store = SqliteTraceStore(data_dir)
    try:
        ctx = ApiContext.embedded(store, max_bundle_bytes=max_bundle_bytes, rate_limits=rate_limits)
        yield Embedded(store=store, api_app=create_api_app(ctx), context=ctx)
    finally:
        store.close()


def remote_client_factory(api_url: str, api_key: str | None) -> ClientFactory:
    headers = {"user-agent": f"molar-mcp/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"

    @asynccontextmanager
    async def factory() -> AsyncIterator[TraceClient]:
        async with httpx2.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, timeout=30.0) as http:
            yield TraceClient(http)

    return factory


def demo_bundles() -> list[tuple[str, bytes]]:
    """The demo bundles shipped in the package, by name."""
    folder = resources.files("molar_mcp.demo_bundles")
    return sorted(
        (entry.name, entry.read_bytes()) for entry in folder.iterdir() if entry.name.endswith((".tar.gz", ".zip"))
    )


def load_demo(store: SqliteTraceStore, org_id: str = LOCAL_ORG_ID) -> int:
    """Load the demo bundles once per data dir; return how many were loaded now."""
    marker = store.data_dir / DEMO_MARKER
    if marker.exists():
        return 0
    count = 0
    for name, data in demo_bundles():
        try:
            ingest_bundle(store, org_id, data)
        except BundleError as exc:  # a shipped bundle that fails is a packaging bug: say which
            raise RuntimeError(f"demo bundle {name} is invalid: {exc.message}") from exc
        count += 1
    marker.write_text(f"{count}\n")
    return count


def create_serve_app(
    embedded: Embedded, *, host: str = "127.0.0.1", allowed_hosts: list[str] | None = None
) -> Starlette:
    """One ASGI app: `/mcp` (streamable HTTP, both protocol eras), `/v1`, well-knowns, `/healthz`."""
    mcp_server = create_mcp_server(embedded.client_factory())
    security = None
    if allowed_hosts:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=allowed_hosts,
            allowed_origins=[f"http://{h}" for h in allowed_hosts] + [f"https://{h}" for h in allowed_hosts],
        )
    mcp_app = mcp_server.streamable_http_app(host=host, transport_security=security)

    async def capabilities(request: Request) -> JSONResponse:
        return JSONResponse(await build_manifest(mcp_server, TOOL_SPECS))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan never runs: run the MCP session manager here (MCP-NOTES.md).
        async with mcp_server.session_manager.run():
            yield

    return Starlette(
        routes=[
            Route("/.well-known/molar-capabilities.json", capabilities, methods=["GET"]),
            Route("/mcp", endpoint=mcp_app),
            Mount("/", app=embedded.api_app),
        ],
        lifespan=lifespan,
    )


def create_stdio_server(factory: ClientFactory) -> MCPServer[AppState]:
    return create_mcp_server(factory)


async def manifest_document() -> dict[str, Any]:
    """The capability manifest, without a store: listing tools never opens the server's client."""
    server = create_mcp_server(remote_client_factory("http://127.0.0.1:9", None))
    return await build_manifest(server, TOOL_SPECS)
