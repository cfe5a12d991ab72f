"""Tokens at the resource servers: audience, expiry, revocation, refresh rotation and reuse
detection, RFC 9728 metadata and challenges, per-call scopes, and the /v1 API's bearer guard."""

from __future__ import annotations

from typing import Any

import pytest

from molar_mcp.auth import ALL_SCOPES, LOCAL_ORG_ID, ApiKeyStore
from tests.auth.conftest import LiveServer, Tokens, mcp_post, modern_request, obtain_tokens

pytestmark = pytest.mark.anyio

TOOLS_LIST = modern_request("tools/list")


def call(tool: str) -> dict[str, Any]:
    return modern_request("tools/call", {"name": tool, "arguments": {}}, request_id=7)


async def refresh(server: LiveServer, tokens: Tokens, refresh_token: str, **extra: str) -> Any:
    async with server.http() as http:
        return await http.post(
            "/api/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": tokens.client_id,
                **extra,
            },
        )


async def test_protected_resource_metadata_is_served_at_both_well_known_paths(server: LiveServer) -> None:
    async with server.http() as http:
        by_path = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
        root = (await http.get("/.well-known/oauth-protected-resource")).json()
        api = (await http.get("/.well-known/oauth-protected-resource/v1")).json()
    assert by_path == root
    assert by_path["resource"] == server.mcp_url
    assert by_path["authorization_servers"] == [server.base]
    assert by_path["bearer_methods_supported"] == ["header"]
    assert api["resource"] == server.api_url


async def test_no_token_gets_401_pointing_at_the_metadata_with_the_base_scope(server: LiveServer) -> None:
    response = await mcp_post(server, None, TOOLS_LIST)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert 'scope="mcp:trace:read"' in challenge
    assert "error=" not in challenge  # RFC 6750 §3.1: no error code without credentials


async def test_a_token_in_the_query_string_is_refused(server: LiveServer) -> None:
    tokens = await obtain_tokens(server)
    async with server.http() as http:
        response = await http.post(
            f"/mcp?access_token={tokens.access_token}",
            json=TOOLS_LIST,
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


async def test_an_expired_access_token_is_refused(server: LiveServer) -> None:
    tokens = await obtain_tokens(server)
    assert (await mcp_post(server, tokens.access_token, TOOLS_LIST)).status_code == 200
    server.clock.advance(server.config.access_token_ttl + 1)
    response = await mcp_post(server, tokens.access_token, TOOLS_LIST)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_each_call_needs_its_scopes_and_a_403_names_all_of_them(server: LiveServer) -> None:
    tokens = await obtain_tokens(server)
    allowed = await mcp_post(server, tokens.access_token, call("list_traces"))
    debug = await mcp_post(server, tokens.access_token, call("debug_run"))
    replay = await mcp_post(server, tokens.access_token, call("replay_trace"))
    unknown = await mcp_post(server, tokens.access_token, call("no_such_tool"))
    batch = await mcp_post(server, tokens.access_token, [call("debug_run"), call("replay_trace")])
    assert allowed.status_code == 200
    assert debug.status_code == 403
    assert debug.headers["www-authenticate"].count("insufficient_scope") == 1
    assert 'scope="mcp:debug"' in debug.headers["www-authenticate"]
    assert 'scope="mcp:run"' in replay.headers["www-authenticate"]
    assert unknown.status_code == 200  # unknown tools need the base scope; the SDK answers isError
    assert 'scope="mcp:debug mcp:run"' in batch.headers["www-authenticate"]


async def test_resources_need_trace_read(server: LiveServer) -> None:
    debug_only = await obtain_tokens(server, scope="mcp:debug")
    read = modern_request("resources/read", {"uri": "molar://traces/t1"})
    response = await mcp_post(server, debug_only.access_token, read)
    assert response.status_code == 403
    assert 'scope="mcp:trace:read"' in response.headers["www-authenticate"]


async def test_refresh_rotates_and_reusing_an_old_refresh_token_revokes_the_family(
    server: LiveServer,
) -> None:
    tokens = await obtain_tokens(server)
    first = await refresh(server, tokens, tokens.refresh_token)
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refresh_token"] != tokens.refresh_token
    assert rotated["scope"] == "mcp:trace:read"
    assert (await mcp_post(server, rotated["access_token"], TOOLS_LIST)).status_code == 200

    replayed = await refresh(server, tokens, tokens.refresh_token)
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_grant"
    # The whole family is gone: the newest refresh token and every access token of it.
    assert (await refresh(server, tokens, rotated["refresh_token"])).status_code == 400
    assert (await mcp_post(server, rotated["access_token"], TOOLS_LIST)).status_code == 401
    assert (await mcp_post(server, tokens.access_token, TOOLS_LIST)).status_code == 401


async def test_a_refresh_may_narrow_but_not_widen_the_scope_or_change_the_resource(
    server: LiveServer,
) -> None:
    tokens = await obtain_tokens(server, scope="mcp:trace:read mcp:debug")
    wider = await refresh(server, tokens, tokens.refresh_token, scope="mcp:trace:read mcp:run")
    other = await refresh(server, tokens, tokens.refresh_token, resource=server.api_url)
    narrower = await refresh(server, tokens, tokens.refresh_token, scope="mcp:trace:read", resource=server.mcp_url)
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"
    assert other.status_code == 400
    assert other.json()["error"] == "invalid_target"
    assert narrower.status_code == 200
    assert narrower.json()["scope"] == "mcp:trace:read"


async def test_revoking_a_refresh_token_ends_the_grant(server: LiveServer) -> None:
    tokens = await obtain_tokens(server)
    async with server.http() as http:
        revoked = await http.post(
            "/api/oauth/revoke",
            data={
                "token": tokens.refresh_token,
                "token_type_hint": "refresh_token",
                "client_id": tokens.client_id,
            },
        )
        unknown = await http.post("/api/oauth/revoke", data={"token": "nope", "client_id": tokens.client_id})
    assert revoked.status_code == 200
    assert unknown.status_code == 200
    assert (await refresh(server, tokens, tokens.refresh_token)).status_code == 400
    assert (await mcp_post(server, tokens.access_token, TOOLS_LIST)).status_code == 401


async def test_revoking_an_access_token_stops_it_but_not_the_refresh_token(server: LiveServer) -> None:
    tokens = await obtain_tokens(server)
    async with server.http() as http:
        revoked = await http.post(
            "/api/oauth/revoke",
            data={
                "token": tokens.access_token,
                "token_type_hint": "access_token",
                "client_id": tokens.client_id,
            },
        )
    assert revoked.status_code == 200
    assert (await mcp_post(server, tokens.access_token, TOOLS_LIST)).status_code == 401
    assert (await refresh(server, tokens, tokens.refresh_token)).status_code == 200


async def test_api_keys_open_the_v1_api_until_revoked(server: LiveServer) -> None:
    store = ApiKeyStore(server.db, scopes_supported=ALL_SCOPES)
    created = store.create(name="ci", org_id=LOCAL_ORG_ID, scopes=["mcp:trace:read"], now=0)
    async with server.http() as http:
        ok = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {created.secret}"})
        store.revoke(created.key.id, org_id=LOCAL_ORG_ID, now=1)
        revoked = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {created.secret}"})
        in_query = await http.get(f"/v1/whoami?access_token={created.secret}")
        garbage = await http.get("/v1/whoami", headers={"Authorization": "Bearer molar_sk_nope"})
    assert ok.status_code == 200
    assert ok.json() == {
        "subject": created.key.id,
        "org_id": LOCAL_ORG_ID,
        "kind": "api_key",
        "scopes": ["mcp:trace:read"],
    }
    assert revoked.status_code == 401
    assert (
        f'resource_metadata="{server.base}/.well-known/oauth-protected-resource/v1"'
        in revoked.headers["www-authenticate"]
    )
    assert in_query.status_code == 400
    assert garbage.status_code == 401
