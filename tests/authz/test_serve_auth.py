"""`molar-mcp serve` with authentication (the default): the real OAuth flow through the SDK's client,
API keys on /v1 and /mcp, per-route scopes, and no way to reach another org's traces."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.auth.conftest import EMAIL, PASSWORD, Browser
from tests.auth.test_sdk_flow import MemoryStorage, provider
from tests.bundles import make_bundle
from tests.servers import EVERY_SCOPE, Served, start_auth_server, stop_server

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@dataclass
class AuthServed:
    served: Served
    mcp_url: str
    base: str
    key_all: str  # org_local, every scope
    key_read: str  # org_local, read only
    key_other: str  # org_other, every scope


@pytest.fixture(scope="module")
def auth_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServed]:
    keys: dict[str, str | tuple[str, str]] = {
        "all": EVERY_SCOPE,
        "read": "mcp:trace:read",
        "other": (EVERY_SCOPE, "org_other"),
    }
    started = start_auth_server(tmp_path_factory.mktemp("auth") / "data", "--demo", keys=keys, user=(EMAIL, PASSWORD))
    served, made = started.served, started.keys
    try:
        yield AuthServed(served, served.base_url + "/mcp", served.base_url, made["all"], made["read"], made["other"])
    finally:
        stop_server(served)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_an_agent_signs_in_through_the_sdk_oauth_client_and_steps_up_for_the_debugger(
    auth_served: AuthServed,
) -> None:
    browser, storage = Browser(auth_served.base), MemoryStorage()
    oauth = provider(_Target(auth_served.mcp_url), browser, storage)  # type: ignore[arg-type]
    async with (
        httpx2.AsyncClient(auth=oauth, timeout=30.0) as http,
        Client(streamable_http_client(auth_served.mcp_url, http_client=http), cache=None) as client,
    ):
        listed = await client.call_tool("list_traces", {"status": "failed"})
        rows: Any = listed.structured_content
        tools_before = {t.name: t for t in (await client.list_tools()).tools}
        debug = await client.call_tool("debug_run", {"trace_id": rows["items"][0]["short_id"]})
    await browser.aclose()
    assert not listed.is_error
    assert len(rows["items"]) >= 2  # the failed demo runs of org_local, read through the internal credential
    # Every tool is listed, with the scope it needs, so the model calls debug_run and the client steps up.
    assert {"list_traces", "get_trace", "get_event", "debug_run", "replay_trace"} <= set(tools_before)
    assert tools_before["debug_run"].meta == {"scope": "mcp:debug", "ui": {"resourceUri": "ui://molar/viewer"}}
    assert "mcp:debug" in (tools_before["debug_run"].description or "")
    assert not debug.is_error
    assert len(browser.consent_pages) == 2  # the second consent is the step-up to mcp:debug
    assert storage.tokens is not None
    assert {"mcp:trace:read", "mcp:debug"} <= set((storage.tokens.scope or "").split())


@dataclass
class _Target:
    """What the auth test helpers read of a server: its MCP URL and base."""

    mcp_url: str

    @property
    def base(self) -> str:
        return self.mcp_url.removesuffix("/mcp")


async def test_v1_needs_a_credential_and_says_where_to_get_one(auth_served: AuthServed) -> None:
    async with httpx2.AsyncClient(base_url=auth_served.base) as http:
        anonymous = await http.get("/v1/traces")
        in_query = await http.get("/v1/traces", params={"access_token": auth_served.key_all})
        with_key = await http.get("/v1/traces", headers=bearer(auth_served.key_read))
        bad_key = await http.get("/v1/traces", headers=bearer("molar_sk_not-a-real-key-at-all"))
        health = await http.get("/healthz")
    assert anonymous.status_code == 401
    assert 'resource_metadata="' in anonymous.headers["www-authenticate"]
    assert in_query.status_code == 400
    assert with_key.status_code == 200
    assert len(with_key.json()["items"]) >= 4
    assert bad_key.status_code == 401
    assert health.status_code == 200


async def test_a_read_only_key_cannot_write_and_is_told_which_scope_it_lacks(auth_served: AuthServed) -> None:
    files = {"bundle": ("b.tar.gz", make_bundle(), "application/gzip")}
    async with httpx2.AsyncClient(base_url=auth_served.base) as http:
        refused = await http.post(
            "/v1/traces/ingest", data={"scenario_slug": "x"}, files=files, headers=bearer(auth_served.key_read)
        )
        allowed = await http.post(
            "/v1/traces/ingest", data={"scenario_slug": "x"}, files=files, headers=bearer(auth_served.key_all)
        )
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert 'scope="mcp:trace:write"' in refused.headers["www-authenticate"]
    assert allowed.status_code == 201


async def test_x_molar_org_cannot_switch_a_credential_into_another_org(auth_served: AuthServed) -> None:
    async with httpx2.AsyncClient(base_url=auth_served.base) as http:
        response = await http.get("/v1/traces", headers={**bearer(auth_served.key_other), "x-molar-org": "org_local"})
    assert response.status_code == 403


async def test_an_api_key_works_for_mcp_too_and_tools_list_names_each_tools_scope(auth_served: AuthServed) -> None:
    async with (
        httpx2.AsyncClient(headers=bearer(auth_served.key_read), timeout=30.0) as http,
        Client(streamable_http_client(auth_served.mcp_url, http_client=http), cache=None) as client,
    ):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        listed = await client.call_tool("list_traces", {})
    assert not listed.is_error
    assert {name: (t.meta or {}).get("scope") for name, t in tools.items()} == {
        "list_traces": "mcp:trace:read",
        "get_trace": "mcp:trace:read",
        "get_event": "mcp:trace:read",
        "debug_run": "mcp:debug",
        "replay_trace": "mcp:run",
        "get_replay": "mcp:trace:read",
        "diff_traces": "mcp:trace:read",
    }
    # A call the key's scopes do not cover is refused with the scope to step up to.
    async with httpx2.AsyncClient(headers=bearer(auth_served.key_read), timeout=30.0) as http:
        refused = await http.post(
            auth_served.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "debug_run", "arguments": {}}},
            headers={"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"},
        )
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert "mcp:debug" in challenge


async def _local_trace(auth_served: AuthServed) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=auth_served.base, headers=bearer(auth_served.key_all)) as http:
        items = (await http.get("/v1/traces", params={"status": "failed"})).json()["items"]
        detail: dict[str, Any] = (await http.get(f"/v1/traces/{items[0]['id']}")).json()
    return detail


async def test_every_v1_route_refuses_another_orgs_trace(auth_served: AuthServed) -> None:
    """Walks the API's own route table as a member of org_other: never 2xx, never org_local's data."""
    from starlette.routing import Route

    from molar_mcp.api.app import api_routes

    detail = await _local_trace(auth_served)
    secret_markers = [detail["scenario_slug"], detail["short_id"]]
    values = {
        "trace_id": detail["id"],
        "sha256": (detail["artifacts"][0]["sha256"] if detail["artifacts"] else "0" * 64),
        "name": "report.md",
    }
    bodies: dict[str, Any] = {
        "/share": {"visibility": "public-read", "expires_days": 1},
        "/events": {"events": [{"seq": 10_000, "ts": 1, "kind": "log"}]},
        "/finish": {"status": "passed"},
        "/replay": {"from_step": 1},
        "/chats": {"title": "x"},
        "/promote-fix": {"replay_id": "x", "summary": "x"},
    }
    checked = 0
    async with httpx2.AsyncClient(base_url=auth_served.base, headers=bearer(auth_served.key_other)) as http:
        for route in api_routes():
            if not isinstance(route, Route) or "{trace_id}" not in route.path or route.path.startswith("/v1/signed"):
                continue
            path = route.path
            for key, value in values.items():
                path = path.replace("{" + key + "}", value)
            if "{" in path:
                continue
            for method in sorted((route.methods or set()) - {"HEAD"}):
                body = next((b for suffix, b in bodies.items() if route.path.endswith(suffix)), None)
                response = await http.request(method, path, json=body if method != "GET" else None)
                checked += 1
                assert response.status_code in (403, 404), f"{method} {route.path}: {response.status_code}"
                assert not any(m in response.text for m in secret_markers[:1]), f"{method} {route.path} leaked"
        listed = (await http.get("/v1/traces")).json()["items"]
    assert detail["id"] not in {t["id"] for t in listed}
    assert checked >= 10


async def test_mcp_tools_and_resources_refuse_another_orgs_trace(auth_served: AuthServed) -> None:
    detail = await _local_trace(auth_served)
    async with (
        httpx2.AsyncClient(headers=bearer(auth_served.key_other), timeout=30.0) as http,
        Client(streamable_http_client(auth_served.mcp_url, http_client=http), cache=None) as client,
    ):
        listed: Any = (await client.call_tool("list_traces", {})).structured_content
        got = await client.call_tool("get_trace", {"trace_id": detail["short_id"]})
        debugged = await client.call_tool("debug_run", {"trace_id": detail["short_id"]})
        with pytest.raises(Exception, match=r"(?i)no such trace|not found"):
            await client.read_resource(f"molar://traces/{detail['short_id']}")
    assert detail["short_id"] not in {row["short_id"] for row in listed["items"]}
    assert got.is_error
    assert debugged.is_error


async def test_a_browser_request_from_a_foreign_origin_is_refused(auth_served: AuthServed) -> None:
    async with httpx2.AsyncClient(base_url=auth_served.base) as http:
        foreign = await http.post("/mcp", json={}, headers={"origin": "http://evil.example"})
        foreign_api = await http.get(
            "/v1/traces", headers={"origin": "http://evil.example", **bearer(auth_served.key_all)}
        )
        own = await http.get("/v1/traces", headers={"origin": auth_served.base, **bearer(auth_served.key_all)})
    assert foreign.status_code == 403
    assert foreign_api.status_code == 403
    assert own.status_code == 200


async def test_an_org_only_share_needs_a_signed_in_browser_of_that_org(auth_served: AuthServed) -> None:
    from tests.auth.conftest import Pkce, authorize_url, register_client

    detail = await _local_trace(auth_served)
    async with httpx2.AsyncClient(base_url=auth_served.base, headers=bearer(auth_served.key_all)) as http:
        shared = await http.post(f"/v1/traces/{detail['id']}/share", json={"visibility": "org-only", "expires_days": 1})
        client = await register_client(http)
    assert shared.status_code == 200
    viewer_path = f"/r/{detail['short_id']}"
    browser = Browser(auth_served.base)
    try:
        anonymous = await browser.http.get(viewer_path)
        # Sign in through the real login form (an authorization request starts the session).
        await browser.visit(authorize_url(_Target(auth_served.mcp_url), client["client_id"], Pkce.new()))  # type: ignore[arg-type]
        signed_in = await browser.http.get(viewer_path)
    finally:
        await browser.aclose()
    assert anonymous.status_code == 401
    assert signed_in.status_code == 200
    assert detail["short_id"] in signed_in.text


async def test_resources_list_shows_only_the_callers_orgs_recent_traces(auth_served: AuthServed) -> None:
    detail = await _local_trace(auth_served)
    uris: dict[str, set[str]] = {}
    for who, key in (("local", auth_served.key_read), ("other", auth_served.key_other)):
        async with (
            httpx2.AsyncClient(headers=bearer(key), timeout=30.0) as http,
            Client(streamable_http_client(auth_served.mcp_url, http_client=http), cache=None) as client,
        ):
            uris[who] = {str(r.uri) for r in (await client.list_resources()).resources}
    assert f"molar://traces/{detail['short_id']}" in uris["local"]
    assert not uris["other"] & uris["local"]
    assert uris["other"] == set()  # org_other has recorded nothing
