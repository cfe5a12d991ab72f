"""The authorization server over HTTP: metadata, registration, the authorization endpoint's rules
(PKCE S256 only, exact redirect URIs, RFC 8707 resources, RFC 9207 iss), login and CSRF."""

from __future__ import annotations

import pytest

from tests.auth.conftest import (
    REDIRECT_URI,
    Browser,
    LiveServer,
    Pkce,
    authorize_url,
    exchange_code,
    register_client,
)

pytestmark = pytest.mark.anyio


async def test_metadata_advertises_pkce_s256_iss_and_client_id_metadata_documents(server: LiveServer) -> None:
    async with server.http() as http:
        metadata = (await http.get("/.well-known/oauth-authorization-server")).json()
        jwks = (await http.get("/api/oauth/jwks")).json()
    assert metadata["issuer"] == server.base
    assert metadata["authorization_endpoint"] == f"{server.base}/api/oauth/authorize"
    assert metadata["token_endpoint"] == f"{server.base}/api/oauth/token"
    assert metadata["registration_endpoint"] == f"{server.base}/api/oauth/register"
    assert metadata["revocation_endpoint"] == f"{server.base}/api/oauth/revoke"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["client_id_metadata_document_supported"] is True
    assert metadata["scopes_supported"] == ["mcp:trace:read", "mcp:debug", "mcp:run", "mcp:trace:write"]
    [key] = jwks["keys"]
    assert key["kty"] == "EC"
    assert key["alg"] == "ES256"
    assert "d" not in key


async def test_registration_gives_public_clients_no_secret_and_rejects_unsafe_redirects(
    server: LiveServer,
) -> None:
    async with server.http() as http:
        public = await register_client(http)
        confidential = await register_client(http, token_endpoint_auth_method="client_secret_basic")
        remote_http = await http.post(
            "/api/oauth/register",
            json={"redirect_uris": ["http://evil.example/cb"], "token_endpoint_auth_method": "none"},
        )
        no_redirects = await http.post("/api/oauth/register", json={"client_name": "x"})
        not_json = await http.post("/api/oauth/register", content=b"nope")
    assert "client_secret" not in public
    assert public["token_endpoint_auth_method"] == "none"
    assert confidential["client_secret"]
    for response in (remote_http, no_redirects, not_json):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_client_metadata"


async def test_a_confidential_client_authenticates_with_its_secret(server: LiveServer) -> None:
    browser = Browser(server.base)
    async with server.http() as http:
        client = await register_client(http, token_endpoint_auth_method="client_secret_basic")
        pkce = Pkce.new()
        code = (await browser.visit(authorize_url(server, client["client_id"], pkce))).params["code"]
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": pkce.verifier,
        }
        wrong = await http.post("/api/oauth/token", data=data, auth=(client["client_id"], "not-the-secret"))
        code = (await browser.visit(authorize_url(server, client["client_id"], pkce))).params["code"]
        right = await http.post(
            "/api/oauth/token",
            data={**data, "code": code},
            auth=(client["client_id"], client["client_secret"]),
        )
    await browser.aclose()
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert right.status_code == 200, right.text


async def test_a_wrong_code_verifier_is_refused_and_burns_the_code(server: LiveServer) -> None:
    browser = Browser(server.base)
    async with server.http() as http:
        client = await register_client(http)
        pkce = Pkce.new()
        code = (await browser.visit(authorize_url(server, client["client_id"], pkce))).params["code"]
        wrong = await exchange_code(http, client["client_id"], code, Pkce.new().verifier)
        missing = await exchange_code(http, client["client_id"], code, None)
        right_but_late = await exchange_code(http, client["client_id"], code, pkce.verifier)
    await browser.aclose()
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert missing.status_code == 400
    assert right_but_late.status_code == 400
    assert right_but_late.json()["error"] == "invalid_grant"


async def test_an_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(server: LiveServer) -> None:
    async with server.http() as http:
        client = await register_client(http)
        url = authorize_url(server, client["client_id"], Pkce.new(), redirect_uri="https://evil.example/cb")
        response = await http.get(url)
        unknown_client = await http.get(authorize_url(server, "mcpc_nope", Pkce.new()))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "not valid" in response.text
    assert unknown_client.status_code == 400
    assert "location" not in unknown_client.headers


async def test_a_loopback_redirect_may_use_any_port_but_nothing_else_may_change(server: LiveServer) -> None:
    browser = Browser(server.base)
    async with server.http() as http:
        client = await register_client(http)
        pkce = Pkce.new()
        other_port = "http://127.0.0.1:50123/callback"
        redirect = await browser.visit(authorize_url(server, client["client_id"], pkce, redirect_uri=other_port))
        other_path = await http.get(
            authorize_url(server, client["client_id"], pkce, redirect_uri="http://127.0.0.1:7777/other")
        )
        # The token request must repeat the exact redirect_uri of the authorization request.
        mismatched = await exchange_code(http, client["client_id"], redirect.params["code"], pkce.verifier)
    await browser.aclose()
    assert redirect.location.startswith(other_port + "?")  # RFC 8252 §7.3
    assert other_path.status_code == 400
    assert mismatched.status_code == 400
    assert mismatched.json()["error"] == "invalid_grant"


async def test_an_unknown_resource_is_refused_with_invalid_target(server: LiveServer) -> None:
    async with server.http() as http:
        client = await register_client(http)
        url = authorize_url(server, client["client_id"], Pkce.new(), resource="https://elsewhere.example/mcp")
        response = await http.get(url)
    assert response.status_code == 302
    assert "error=invalid_target" in response.headers["location"]


async def test_denying_consent_sends_access_denied_with_state_and_iss(server: LiveServer) -> None:
    browser = Browser(server.base, approve=False)
    async with server.http() as http:
        client = await register_client(http)
        redirect = await browser.visit(authorize_url(server, client["client_id"], Pkce.new(), state="keep-me"))
    await browser.aclose()
    params = redirect.params
    assert (params["error"], params["state"], params["iss"]) == ("access_denied", "keep-me", server.base)
    assert "code" not in params
