"""OAuth attacks on the authorization server, over real HTTP on 127.0.0.1 and real authorization flows:
consent bound to the request shown, single use and short-lived; and the attacks that already held
(PKCE, code replay, redirect URI matching, CSRF) live beside them in tests/auth; SSRF through Client ID
Metadata Document fetches, against a real listener on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx2
import pytest

from molar_mcp.auth import ALL_SCOPES, SCOPE_TRACE_READ
from molar_mcp.auth.cimd import (
    FETCH_FAILED,
    NOT_PUBLIC,
    ClientMetadataDocumentError,
    ClientMetadataResolver,
    is_public_address,
)
from molar_mcp.auth.config import default_http_client
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


# -- SSRF through Client ID Metadata Document fetches ----------------------------------------------


class Listener:
    """A real TCP listener on 127.0.0.1 that counts the connections it accepts (and closes them)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


LOOPBACK_SPELLINGS = ("127.1", "2130706433", "0x7f.0.0.1", "0", "017700000001", "[::ffff:127.0.0.1]", "[::1]")


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_cimd_urls_that_resolve_to_loopback_are_refused_without_a_connection(
    host: str, listener: Listener
) -> None:
    cimd = ClientMetadataResolver(default_http_client, clock=time.time, timeout=5.0)
    with pytest.raises(ClientMetadataDocumentError) as refused:
        await cimd.resolve(f"https://{host}:{listener.port}/client.json")
    assert str(refused.value) in (NOT_PUBLIC, "the client_id is not a URL")
    assert listener.accepted == 0


async def test_a_cimd_fetch_says_the_same_for_an_open_and_a_closed_port(listener: Listener) -> None:
    # Private hosts allowed here so the fetch really connects: the answer must not tell the ports apart.
    cimd = ClientMetadataResolver(default_http_client, clock=time.time, timeout=5.0, allow_private_hosts=True)
    closed = Listener()
    closed.close()  # the port is free again: nothing listens there
    with pytest.raises(ClientMetadataDocumentError) as open_port:
        await cimd.resolve(f"https://127.0.0.1:{listener.port}/client.json")
    with pytest.raises(ClientMetadataDocumentError) as closed_port:
        await cimd.resolve(f"https://127.0.0.1:{closed.port}/client.json")
    assert listener.accepted >= 1
    assert str(open_port.value) == str(closed_port.value) == FETCH_FAILED


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("ff02::1", False),
    ],
)
def test_every_resolved_address_is_judged_with_ipaddress(address: str, public: bool) -> None:
    assert is_public_address(address) is public


async def test_a_host_with_one_private_address_among_public_ones_is_refused() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.7"]

    cimd = ClientMetadataResolver(default_http_client, clock=time.time, resolve_host=mixed)
    with pytest.raises(ClientMetadataDocumentError, match=NOT_PUBLIC):
        await cimd.resolve("https://agent.example.test/client.json")
