"""Client ID Metadata Documents: which URLs may be a client_id, and how documents are fetched,
checked and cached (through an injected transport: no network)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

from molar_mcp.auth.cimd import ClientMetadataDocumentError, ClientMetadataResolver, client_id_url_problem
from tests.auth.conftest import MetadataDocuments

CLIENT_ID = "https://agent.example.test/oauth/client.json"


def document(**overrides: Any) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "client_name": "Agent",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **overrides,
    }


class Site:
    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self.requests: list[httpx2.Request] = []

    def client(self) -> httpx2.AsyncClient:
        def handler(request: httpx2.Request) -> httpx2.Response:
            self.requests.append(request)
            return self.response

        return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver(site: Site, clock: Clock | None = None, **kwargs: Any) -> ClientMetadataResolver:
    return ClientMetadataResolver(site.client, clock=clock or Clock(), resolve_host=MetadataDocuments.resolve, **kwargs)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:8000/client.json", "https"),
        ("http://agent.example.test/client.json", "https"),
        ("https://agent.example.test", "path"),
        ("https://agent.example.test/", "path"),
        ("https://agent.example.test/a/../client.json", "segments"),
        ("https://agent.example.test/client.json#x", "fragment"),
        ("https://agent.example.test/client.json?v=1", "query"),
        ("https://user:pw@agent.example.test/client.json", "user name"),
        ("https://127.0.0.1/client.json", "public host"),
        ("https://localhost/client.json", "public host"),
        ("https://[::1]/client.json", "public host"),
    ],
)
def test_a_client_id_url_must_be_a_public_https_url_with_a_path(url: str, problem: str) -> None:
    found = client_id_url_problem(url)
    assert found is not None
    assert problem in found


def test_a_good_client_id_url_is_accepted() -> None:
    assert client_id_url_problem(CLIENT_ID) is None
    assert client_id_url_problem("https://127.0.0.1/client.json", allow_private_hosts=True) is None


@pytest.mark.anyio
async def test_a_plain_http_client_id_is_refused_without_any_fetch() -> None:
    site = Site(httpx2.Response(200, json=document(client_id="http://127.0.0.1:9/client.json")))
    with pytest.raises(ClientMetadataDocumentError, match="https"):
        await resolver(site, allow_private_hosts=True).resolve("http://127.0.0.1:9/client.json")
    assert site.requests == []


@pytest.mark.anyio
async def test_a_valid_document_becomes_a_public_client_and_is_cached_for_a_bounded_time() -> None:
    clock = Clock()
    site = Site(httpx2.Response(200, json=document(), headers={"Cache-Control": "max-age=60"}))
    cimd = resolver(site, clock, cache_ttl=300)
    client = await cimd.resolve(CLIENT_ID)
    again = await cimd.resolve(CLIENT_ID)
    clock.now += 61
    await cimd.resolve(CLIENT_ID)
    assert client is again
    assert client.token_endpoint_auth_method == "none"
    assert client.secret_hash is None
    assert client.display_name == "Agent"
    assert client.source == "metadata_document"
    assert client.check_redirect_uri("http://127.0.0.1:5555/callback")  # loopback, any port
    assert len(site.requests) == 2
    assert site.requests[0].headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx2.Response(302, headers={"Location": "https://elsewhere.example/c.json"}), "HTTP 302"),
        (httpx2.Response(404), "HTTP 404"),
        (httpx2.Response(200, content=b"<html>"), "not JSON"),
        (httpx2.Response(200, json=[1]), "not a JSON object"),
        (httpx2.Response(200, json=document(client_id="https://other.example/c.json")), "client_id"),
        (httpx2.Response(200, json=document(client_secret="s")), "secret"),
        (httpx2.Response(200, json=document(token_endpoint_auth_method="client_secret_basic")), "'none'"),
        (httpx2.Response(200, json=document(redirect_uris=[])), "redirect_uris"),
        (httpx2.Response(200, json=document(redirect_uris=["http://evil.example/cb"])), "redirect_uris"),
        (httpx2.Response(200, json=document(grant_types=["client_credentials"])), "grant_types"),
        (httpx2.Response(200, content=json.dumps(document(padding="x" * 6000)).encode()), "too large"),
    ],
)
@pytest.mark.anyio
async def test_bad_documents_are_refused_and_not_cached(response: httpx2.Response, message: str) -> None:
    site = Site(response)
    cimd = resolver(site, max_bytes=5120)
    with pytest.raises(ClientMetadataDocumentError, match=message):
        await cimd.resolve(CLIENT_ID)
    assert cimd.cached(CLIENT_ID) is None
