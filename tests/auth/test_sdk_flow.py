"""End to end with the SDK's own OAuth client (`OAuthClientProvider`) against uvicorn: discovery,
registration (DCR or a Client ID Metadata Document), PKCE, real login and consent pages, the
token, tool calls, step-up, and tools/list listing every tool whatever the token's scopes."""

from __future__ import annotations

from typing import Literal

import httpx2
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp_types import TextContent
from pydantic import AnyUrl

from mcp import Client
from tests.auth.conftest import EMAIL, REDIRECT_URI, Browser, LiveServer


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def provider(
    server: LiveServer, browser: Browser, storage: MemoryStorage, client_metadata_url: str | None = None
) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=server.mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="Agent Under Test",
            redirect_uris=[AnyUrl(REDIRECT_URI)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
        client_metadata_url=client_metadata_url,
    )


def text(result: object) -> str:
    content = result.content  # type: ignore[attr-defined]
    assert isinstance(content[0], TextContent)
    return content[0].text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_client_registers_signs_in_consents_and_calls_a_tool(
    server: LiveServer, mode: Literal["auto", "legacy"]
) -> None:
    browser, storage = Browser(server.base), MemoryStorage()
    async with (
        httpx2.AsyncClient(auth=provider(server, browser, storage), timeout=10.0) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), mode=mode, cache=None) as client,
    ):
        result = await client.call_tool("list_traces", {})
    await browser.aclose()

    assert browser.logins == 1
    assert "Agent Under Test" in browser.consent_pages[0]
    assert "Read your test-run traces" in browser.consent_pages[0]
    assert browser.last is not None
    assert browser.last.params["iss"] == server.base  # RFC 9207
    assert storage.client_info is not None
    assert storage.client_info.client_id.startswith("mcpc_")
    assert storage.tokens is not None
    assert storage.tokens.scope == "mcp:trace:read"
    # The tool sees who called it, through the guard.
    assert text(result).startswith("traces of org_local for usr_")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_tools_list_shows_every_tool_even_those_the_token_may_not_call_yet(
    server: LiveServer, mode: Literal["auto", "legacy"]
) -> None:
    browser, storage = Browser(server.base), MemoryStorage()
    async with (
        httpx2.AsyncClient(auth=provider(server, browser, storage), timeout=10.0) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), mode=mode, cache=None) as client,
    ):
        listed = await client.list_tools()
    await browser.aclose()
    assert sorted(tool.name for tool in listed.tools) == ["debug_run", "list_traces", "replay_trace"]
    assert storage.tokens is not None
    assert storage.tokens.scope == "mcp:trace:read"  # listing needs no step-up; calling debug_run does


@pytest.mark.anyio
async def test_a_call_without_the_scope_steps_up_through_consent_and_then_succeeds(
    server: LiveServer,
) -> None:
    browser, storage = Browser(server.base), MemoryStorage()
    async with (
        httpx2.AsyncClient(auth=provider(server, browser, storage), timeout=10.0) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), cache=None) as client,
    ):
        assert text(await client.call_tool("list_traces", {})).startswith("traces of")
        # 403 insufficient_scope scope="mcp:debug" → the provider re-authorizes with the union.
        assert text(await client.call_tool("debug_run", {})) == "debugging"
        listed = await client.list_tools()
    await browser.aclose()

    assert len(browser.consent_pages) == 2
    assert browser.logins == 1  # the session cookie carried the second authorization
    assert "Ask the trace debugger" in browser.consent_pages[1]
    assert "Read your test-run traces" in browser.consent_pages[1]
    assert storage.tokens is not None
    assert set((storage.tokens.scope or "").split()) == {"mcp:trace:read", "mcp:debug"}
    assert sorted(tool.name for tool in listed.tools) == ["debug_run", "list_traces", "replay_trace"]


@pytest.mark.anyio
async def test_a_client_id_metadata_document_replaces_registration(server: LiveServer) -> None:
    client_id = "https://agent.example.test/oauth/client.json"
    server.documents.documents[client_id] = {
        "client_id": client_id,
        "client_name": "Hosted Agent",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    browser, storage = Browser(server.base), MemoryStorage()
    async with (
        httpx2.AsyncClient(auth=provider(server, browser, storage, client_id), timeout=10.0) as http,
        Client(streamable_http_client(server.mcp_url, http_client=http), cache=None) as client,
    ):
        assert text(await client.call_tool("list_traces", {})).startswith("traces of")
    await browser.aclose()

    assert storage.client_info is not None
    assert storage.client_info.client_id == client_id
    assert "Hosted Agent" in browser.consent_pages[0]
    assert client_id in browser.consent_pages[0]
    assert server.documents.fetches.count(client_id) == 1  # fetched once, then cached
    assert EMAIL in browser.consent_pages[0]
