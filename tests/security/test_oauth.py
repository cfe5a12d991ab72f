"""OAuth attacks on the authorization server, over real HTTP on 127.0.0.1 and real authorization flows:
consent bound to the request shown, single use and short-lived; and the attacks that already held
(PKCE, code replay, redirect URI matching, CSRF) live beside them in tests/auth."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx2
import pytest

from molar_mcp.auth import ALL_SCOPES, SCOPE_TRACE_READ
from tests.auth.conftest import (
    EMAIL,
    PASSWORD,
    LiveServer,
    Pkce,
    authorize_url,
    exchange_code,
    hidden_fields,
    live_server,  # noqa: F401 - the shared uvicorn server (a fixture)
    register_client,
    server,  # noqa: F401 - the shared server with its clock reset (a fixture)
)

pytestmark = pytest.mark.anyio


async def _consent_page(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    """Sign in (if needed) and return the consent form's hidden fields."""
    page = await http.get(url)
    if "Sign in to Molar" in page.text:
        signed_in = await http.post(
            "/api/oauth/login", data={**hidden_fields(page.text), "email": EMAIL, "password": PASSWORD}
        )
        assert signed_in.status_code == 303
        page = await http.get(signed_in.headers["location"])
    assert page.status_code == 200, page.text
    assert "Allow" in page.text
    return hidden_fields(page.text)


async def test_consent_approves_only_the_request_that_was_shown(server: LiveServer) -> None:  # noqa: F811
    async with server.http() as http:
        shown_client = await register_client(http, client_name="Harmless Reader")
        evil_client = await register_client(http, client_name="Evil")
        fields = await _consent_page(http, authorize_url(server, shown_client["client_id"], Pkce.new()))
        attacker = Pkce.new()
        swaps = {
            "another client, every scope": {"client_id": evil_client["client_id"], "scope": " ".join(ALL_SCOPES)},
            "more scopes": {"scope": " ".join(ALL_SCOPES)},
            "another PKCE challenge": {"code_challenge": attacker.challenge},
            "another resource": {"resource": server.api_url},
            "another redirect port": {"redirect_uri": "http://127.0.0.1:9999/callback"},
        }
        for what, changes in swaps.items():
            shown = dict(item.split("=", 1) for item in fields["request"].split("&"))
            forged = {**fields, "request": urlencode({**shown, **changes}), "decision": "approve"}
            response = await http.post("/api/oauth/authorize", data=forged)
            assert response.status_code == 403, what
            assert "location" not in response.headers, what
            fields = await _consent_page(http, authorize_url(server, shown_client["client_id"], Pkce.new()))


async def test_a_consent_is_single_use_and_expires_within_minutes(server: LiveServer) -> None:  # noqa: F811
    async with server.http() as http:
        client = await register_client(http)
        pkce = Pkce.new()
        fields = await _consent_page(http, authorize_url(server, client["client_id"], pkce, scope=SCOPE_TRACE_READ))
        approved = await http.post("/api/oauth/authorize", data={**fields, "decision": "approve"})
        replayed = await http.post("/api/oauth/authorize", data={**fields, "decision": "approve"})
        code = approved.headers["location"].split("code=")[1].split("&")[0]
        token = await exchange_code(http, client["client_id"], code, pkce.verifier)
        stale = await _consent_page(http, authorize_url(server, client["client_id"], Pkce.new()))
        server.clock.advance(server.config.consent_ttl + 1)
        late = await http.post("/api/oauth/authorize", data={**stale, "decision": "approve"})
    assert approved.status_code == 302
    assert "code=" in approved.headers["location"]
    assert replayed.status_code == 403
    assert late.status_code == 403
    assert token.status_code == 200
    assert token.json()["scope"] == SCOPE_TRACE_READ
