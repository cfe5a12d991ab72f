"""Fixtures of the debugger-chat tests: a real store with a failed and a passed trace, its /v1 app built
with a chosen model and budget (tools: our MCP server, as `serve` wires them), and a streaming client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.chat_tools import ChatTools
from molar_mcp.client.asgi_stream import StreamingASGITransport
from molar_mcp.debugger.chat import ModelProvider
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from tests.bundles import checkout_events, make_bundle, summary
from tests.conftest import ENGINES, engine_options


@dataclass(frozen=True)
class Traces:
    failed_id: str
    failed_short: str
    passed_short: str


@pytest.fixture
def traces(store: SqliteTraceStore) -> Traces:
    failed_id, failed_short = ingest_bundle(store, LOCAL_ORG_ID, make_bundle())
    _, passed_short = ingest_bundle(
        store,
        LOCAL_ORG_ID,
        make_bundle(
            summary(status="passed", failure_signature=None, scenario_slug="cart-basic"), checkout_events(fail=False)
        ),
    )
    return Traces(failed_id, failed_short, passed_short)


AppFactory = Callable[..., Starlette]


@pytest.fixture
def make_app(store: SqliteTraceStore) -> AppFactory:
    """The /v1 app with `model` (None: no model) and a monthly budget; the trace tools are our MCP server."""

    def build(model: ModelProvider | None = None, *, budget_cents: int = 500, **kwargs: Any) -> Starlette:
        tools = ChatTools()
        ctx = ApiContext.embedded(store, model=model, tools=tools, debugger_budget_cents=budget_cents, **kwargs)
        app = create_api_app(ctx)
        tools.bind(app)
        return app

    return build


@asynccontextmanager
async def http_for(app: Starlette, org: str | None = None) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of the in-process app that streams responses (SSE arrives as it is sent)."""
    headers = {"x-molar-org": org} if org else None
    async with httpx2.AsyncClient(transport=StreamingASGITransport(app), base_url="http://t", headers=headers) as http:
        yield http


@dataclass(frozen=True)
class Frame:
    event: str
    id: str
    data: Any


async def post_sse(http: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> tuple[httpx2.Response, list[Frame]]:
    """POST and read the whole SSE stream with httpx2.EventSource (an error answer is returned unread)."""
    import json

    frames: list[Frame] = []
    async with http.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return response, frames
        async for sse in httpx2.EventSource(response):
            frames.append(Frame(sse.event, sse.id, json.loads(sse.data)))
    return response, frames


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """These tests are part of the store contract: they run on the embedded store and on PostgreSQL + S3."""
    return engine_options(request)
