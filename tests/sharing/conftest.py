"""A store with a failing checkout trace (a secret and an XSS payload in its events), and the /v1 app."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.sharing import SqliteSharingStore
from tests.bundles import BASE_TS, artifact_for, checkout_events, make_bundle, summary
from tests.conftest import ENGINES, engine_options
from tests.servers import Served, start_server

SECRET = "sk_live_abcdefghijklmnop"
XSS = "<script>alert('pwned')</script>"
PNG = b"\x89PNG\r\n\x1a\nnot-really-a-png"


def failing_events() -> list[dict[str, Any]]:
    """The checkout of `tests/bundles.py` (404 webhook at step 5, failed assertion at step 7), plus a
    console error that leaks a secret and carries a script tag."""
    events = checkout_events()
    events.append(
        {
            "seq": len(events),
            "ts": BASE_TS + 100 * len(events),
            "kind": "console",
            "step_id": "s5",
            "message": f"stripe said: invalid key {SECRET} {XSS}",
            "payload": {"level": "error", "text": f"stripe said: invalid key {SECRET} {XSS}"},
        }
    )
    return events


@dataclass
class Traces:
    failed_id: str
    failed_short: str
    passed_short: str


@pytest.fixture
def ctx(store: SqliteTraceStore) -> ApiContext:
    return ApiContext.embedded(store)


@pytest.fixture
def traces(store: SqliteTraceStore) -> Traces:
    failed_id, failed_short = ingest_bundle(
        store,
        LOCAL_ORG_ID,
        make_bundle(summary(artifacts=[artifact_for(PNG)]), failing_events(), blobs={"png": PNG}),
    )
    _, passed_short = ingest_bundle(
        store,
        LOCAL_ORG_ID,
        make_bundle(summary(status="passed", failure_signature=None), checkout_events(fail=False)),
    )
    return Traces(failed_id, failed_short, passed_short)


@pytest.fixture
def app(ctx: ApiContext) -> Starlette:
    return create_api_app(ctx)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://molar.test") as http:
        yield http


@pytest.fixture
def sharing(ctx: ApiContext) -> SqliteSharingStore:
    return ctx.sharing


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, str]:
    """These tests are part of the store contract: they run on the embedded store and on PostgreSQL + S3."""
    return engine_options(request)


@pytest.fixture(scope="package")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `molar-mcp serve --demo --no-auth` for the browser tests of this folder (starting one runs the
    demo's scenarios: half a minute on a loaded machine). Tests share traces from it; none changes one."""
    served = start_server(tmp_path_factory.mktemp("demo") / "data", "--demo")
    yield served
    served.process.terminate()
    try:
        served.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.process.kill()
