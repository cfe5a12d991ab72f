"""The light MCP client of the load bench (bench/mcp_light.py) against a real `molar-mcp serve`: both
protocol eras over real HTTP, JSON and SSE answers parsed, every bad answer raised (so the bench counts it)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from bench.mcp_light import LEGACY, MODERN, CallFailed, LightClient, check_trace, list_rows

from tests.servers import Served, start_server, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    data = tmp_path_factory.mktemp("light") / "data"
    data.mkdir()
    srv = start_server(data)
    try:
        with httpx2.Client(base_url=srv.base_url, timeout=30) as http:
            trace = http.post("/v1/traces", json={"scenario_slug": "light-client", "source": "manual"}).json()
            events = [{"seq": 0, "ts": 1_763_629_200_000, "kind": "log", "step_id": "s0", "message": "boom"}]
            assert http.post(f"/v1/traces/{trace['id']}/events", json={"events": events}).status_code < 300
            assert http.post(f"/v1/traces/{trace['id']}/finish", json={"status": "failed"}).status_code == 200
        yield srv, trace["short_id"]
    finally:
        stop_server(srv)


@pytest.mark.parametrize(("era", "answered_as"), [(MODERN, "application/json"), (LEGACY, "text/event-stream")])
async def test_the_light_client_lists_and_reads_a_trace_on_each_era(
    served: tuple[Served, str], era: str, answered_as: str
) -> None:
    srv, short_id = served
    async with LightClient(srv.base_url + "/mcp", era) as client:
        rows = list_rows(await client.call_tool("list_traces", {"status": "failed"}))
        assert rows == [short_id]
        check_trace(await client.call_tool("get_trace", {"trace_id": short_id}), short_id)
        assert client.answered_as == {answered_as}
        session = client.session_id
    assert (session is not None) == (era == LEGACY)
    if session is not None:  # the session was ended (DELETE): the server no longer knows it
        headers = {"mcp-session-id": session, "mcp-protocol-version": LEGACY, "accept": "application/json"}
        body = {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}
        assert httpx2.post(srv.base_url + "/mcp", json=body, headers=headers).status_code == 404


@pytest.mark.parametrize("era", [MODERN, LEGACY])
async def test_a_bad_answer_is_raised_not_counted_as_a_call(served: tuple[Served, str], era: str) -> None:
    srv, short_id = served
    async with LightClient(srv.base_url + "/mcp", era) as client:
        with pytest.raises(CallFailed, match="isError"):
            await client.call_tool("get_trace", {"trace_id": "no-such-trace"})
        with pytest.raises(CallFailed, match="does not name the trace"):
            check_trace(await client.call_tool("get_trace", {"trace_id": short_id}), "AnotherId")
        with pytest.raises(CallFailed, match="no rows"):
            list_rows(await client.call_tool("list_traces", {"status": "queued"}))
        with pytest.raises(CallFailed, match="error"):
            await client.request("no/such/method", {})
