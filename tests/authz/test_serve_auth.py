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
from tests.listing import rows_of
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
        debug = await client.call_tool("debug_run", {"trace_id": rows_of(rows)[0]["short_id"]})
    await browser.aclose()
    assert not listed.is_error
    assert len(rows_of(rows)) >= 2  # the failed demo runs of org_local, read through the internal credential
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
