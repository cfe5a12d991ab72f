"""`molar-mcp serve` as a real process: the SDK client over streamable HTTP, both protocol eras."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp.client import Client

from molar_mcp.compose import manifest_document
from tests.listing import rows_of
from tests.servers import Served, start_server, stop_server

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `molar-mcp serve --demo --no-auth` for the module: its tests only read the demo."""
    srv = start_server(tmp_path_factory.mktemp("http") / "data", "--demo")
    yield srv
    stop_server(srv)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_agent_lists_failed_demo_runs_and_reads_one_over_streamable_http(served: Served, mode: str) -> None:
    async with Client(served.base_url + "/mcp", mode=mode) as client:
        listed = await client.call_tool("list_traces", {"status": "failed"})
        rows: Any = listed.structured_content
        # The recorded demo (the shop app's real runs): the webhook scenario fails, its 404 at step 5.
        assert len(rows_of(rows)) >= 2
        webhook = next(r for r in rows_of(rows) if r["scenario"] == "billing-upgrade-webhook")
        detail = await client.call_tool("get_trace", {"trace_id": webhook["short_id"]})
        view: Any = detail.structured_content
        resource = await client.read_resource(f"molar://traces/{webhook['short_id']}/events?limit=5")
    assert not detail.is_error
    assert view["failure"]["step"] == 7
    assert any(e["kind"] == "network.response" and "404" in (e.get("detail") or "") for e in view["notable"])
    assert len(json.loads(resource.contents[0].text)["events"]) == 5  # type: ignore[union-attr]


async def test_the_served_capability_manifest_is_the_generated_one(served: Served) -> None:
    async with httpx2.AsyncClient(base_url=served.base_url) as http:
        response = await http.get("/.well-known/molar-capabilities.json")
    assert response.status_code == 200
    assert response.json() == await manifest_document(auth_required=False)  # served with --no-auth


async def test_the_rest_api_and_health_answer_beside_mcp(served: Served) -> None:
    async with httpx2.AsyncClient(base_url=served.base_url) as http:
        health = await http.get("/healthz")
        traces = await http.get("/v1/traces", params={"limit": 2})
        missing = await http.get("/v1/traces/nope")
    assert health.json()["status"] == "ok"
    assert len(traces.json()["items"]) == 2
    assert traces.json()["next_cursor"]
    assert missing.status_code == 404
    assert missing.json()["request_id"] == missing.headers["x-request-id"]


def test_no_auth_is_refused_on_a_non_loopback_address(tmp_path: Any) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "molar_mcp",
            "serve",
            "--no-auth",
            "--host",
            "0.0.0.0",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"loopback" in result.stderr
