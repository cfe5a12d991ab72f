"""OAuth attacks on the authorization server, over real HTTP on 127.0.0.1 and real authorization flows:
consent bound to the request shown, single use and short-lived; sign-out that ends the session; unused
clients expire; CORS only where browser clients need it; SSRF through Client ID Metadata Document
fetches, against a real listener on 127.0.0.1; and the attacks that already held (PKCE, CSRF, code
replay, audience), moved here from tests/auth."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from molar_mcp.auth import ALL_SCOPES, LOCAL_ORG_ID, SCOPE_TRACE_READ
from molar_mcp.auth.cimd import (
    FETCH_FAILED,
    NOT_PUBLIC,
    ClientMetadataDocumentError,
    ClientMetadataResolver,
    is_public_address,
)
from molar_mcp.auth.config import default_http_client
from molar_mcp.auth.tokens import ORG_CLAIM
from tests.auth.conftest import (
    EMAIL,
    PASSWORD,
    REDIRECT_URI,
    Browser,
    LiveServer,
    Pkce,
    authorize_url,
    exchange_code,
    hidden_fields,
    live_server,  # noqa: F401 - the shared uvicorn server (a fixture)
    mcp_post,
    modern_request,
    obtain_tokens,
    register_client,
    server,  # noqa: F401 - the shared server with its clock reset (a fixture)
)
from tests.security.conftest import Secured, start_secured
from tests.servers import stop_server as stop

pytestmark = pytest.mark.anyio

TOOLS_LIST = modern_request("tools/list")


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


# -- Sign out ends the login session on the server, not only in this browser --------------------------


async def test_signing_out_ends_the_session_even_for_a_copied_cookie(server: LiveServer) -> None:  # noqa: F811
    async with server.http() as http:
        client = await register_client(http)
        url = authorize_url(server, client["client_id"], Pkce.new())
        await _consent_page(http, url)  # signed in: the next visit shows the consent page
        stolen = http.cookies.get("molar_oauth_session", path="/api/oauth")
        assert stolen
        signed_out = await http.post("/api/oauth/logout")
        after = await http.get(url)
    async with server.http(cookies={"molar_oauth_session": stolen}) as thief:
        replayed = await thief.get(url)
    assert signed_out.status_code == 200
    assert "Signed out" in signed_out.text
    cleared = signed_out.headers.get_list("set-cookie")
    assert {c.split(";")[0] for c in cleared} == {'molar_oauth_session=""'}
    assert {p for c in cleared for p in c.split("; ") if p.startswith("Path=")} == {"Path=/api/oauth", "Path=/r"}
    assert "Sign in to Molar" in after.text
    assert "Sign in to Molar" in replayed.text  # the copied cookie no longer signs anyone in


# -- Registered clients never used expire ------------------------------------------------------------


async def test_registered_clients_never_used_expire_and_used_ones_stay(server: LiveServer) -> None:  # noqa: F811
    from molar_mcp.auth.clients import ClientStore

    async with server.http() as http:
        unused = await register_client(http, client_name="Abandoned")
        used = await register_client(http, client_name="Used")
        pkce = Pkce.new()
        fields = await _consent_page(http, authorize_url(server, used["client_id"], pkce))
        approved = await http.post("/api/oauth/authorize", data={**fields, "decision": "approve"})
        assert approved.status_code == 302
        young = await register_client(http, client_name="Just registered")
        server.clock.advance(server.config.unused_client_seconds + 1)
        fresh = await register_client(http, client_name="Registered after")
        gone = ClientStore(server.db).expire_unused(server.config.unused_client_seconds, now=int(server.clock()))
        abandoned_page = await http.get(authorize_url(server, unused["client_id"], Pkce.new()))
        used_page = await http.get(authorize_url(server, used["client_id"], Pkce.new()))
        fresh_page = await http.get(authorize_url(server, fresh["client_id"], Pkce.new()))
    remaining = {c.client_id for c in ClientStore(server.db).all()}
    assert gone >= 2  # the abandoned and the young one (now old); earlier tests' unused clients too
    assert unused["client_id"] not in remaining
    assert young["client_id"] not in remaining
    assert {used["client_id"], fresh["client_id"]} <= remaining
    assert abandoned_page.status_code == 400
    assert "not valid" in abandoned_page.text
    assert used_page.status_code == 200
    assert fresh_page.status_code == 200


async def test_serve_deletes_unused_clients_on_its_own(tmp_path: Path) -> None:
    import anyio

    from molar_mcp.auth.clients import ClientStore
    from molar_mcp.serve_auth import open_serve_auth, run_client_expiry

    with open_serve_auth(tmp_path, "http://127.0.0.1:9", unused_client_seconds=1.0) as auth:
        clients = ClientStore(auth.db)
        metadata = {"client_name": "x", "redirect_uris": ["http://127.0.0.1:7777/callback"]}
        clients.save("old-and-unused", None, metadata, now=int(time.time()) - 5)
        clients.save("new", None, metadata, now=int(time.time()) + 60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_client_expiry, auth)
            for _ in range(100):  # a look at start, then every 0.1 s
                if clients.get("old-and-unused") is None:
                    break
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        assert clients.get("old-and-unused") is None
        assert clients.get("new") is not None


# -- CORS for browser-based MCP clients: discovery and token endpoints; the origin guard elsewhere ----

FOREIGN = "https://agent.example"


@pytest.fixture(scope="module")
def served_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = start_secured(tmp_path_factory.mktemp("cors") / "data", demo=False)
    try:
        yield s
    finally:
        stop(s.served)


async def test_browser_clients_reach_discovery_and_token_endpoints_from_their_origin(served_auth: Secured) -> None:
    secured = served_auth
    async with httpx2.AsyncClient(base_url=secured.base, timeout=30.0, headers={"origin": FOREIGN}) as browser:
        preflight = await browser.options(
            "/api/oauth/token",
            headers={"access-control-request-method": "POST", "access-control-request-headers": "content-type"},
        )
        token = await browser.post("/api/oauth/token", data={"grant_type": "authorization_code", "code": "nope"})
        registered = await browser.post(
            "/api/oauth/register", json={"client_name": "web", "redirect_uris": [f"{FOREIGN}/callback"]}
        )
        discovery = {
            path: await browser.get(path)
            for path in (
                "/.well-known/oauth-authorization-server",
                "/.well-known/oauth-protected-resource/mcp",
                "/.well-known/oauth-protected-resource",
                "/.well-known/molar-capabilities.json",
                "/api/oauth/jwks",
            )
        }
        discovery_preflight = await browser.options(
            "/.well-known/oauth-protected-resource/mcp",
            headers={"access-control-request-method": "GET", "access-control-request-headers": "mcp-protocol-version"},
        )
        # Everything else still refuses a foreign origin.
        guarded = {
            "mcp": await browser.post("/mcp", json={}, headers={"authorization": f"Bearer {secured.key_all}"}),
            "v1": await browser.get("/v1/traces", headers={"authorization": f"Bearer {secured.key_all}"}),
            "login": await browser.post("/api/oauth/login", data={"email": "a", "password": "b"}),
            "logout": await browser.post("/api/oauth/logout"),
            "authorize": await browser.post("/api/oauth/authorize", data={}),
        }
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert token.status_code in (400, 401)  # the OAuth error itself (no client here), readable by the page
    assert token.json()["error"] in ("invalid_client", "invalid_request")
    assert token.headers["access-control-allow-origin"] == "*"
    assert registered.status_code == 201, registered.text
    assert registered.headers["access-control-allow-origin"] == "*"
    for path, answer in discovery.items():
        assert answer.status_code == 200, path
        assert answer.headers["access-control-allow-origin"] == "*", path
        assert "access-control-allow-credentials" not in answer.headers, path
    assert discovery_preflight.status_code == 200
    assert {name: answer.status_code for name, answer in guarded.items()} == dict.fromkeys(guarded, 403)


# -- Attacks that already held (moved here from tests/auth): PKCE, CSRF, code replay, audience ----------


@pytest.mark.parametrize(
    ("pkce_params", "description"),
    [
        ({}, "PKCE is required"),
        ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "S256"),
        ({"code_challenge": "x" * 43}, "S256"),  # no method means plain (RFC 7636 §4.3)
    ],
)
async def test_authorization_without_s256_pkce_is_refused(
    server: LiveServer,  # noqa: F811
    pkce_params: dict[str, str],
    description: str,
) -> None:
    async with server.http() as http:
        client = await register_client(http)
        url = authorize_url(server, client["client_id"], None, state="s1", **pkce_params)
        response = await http.get(url)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI)
    assert "error=invalid_request" in location
    assert "state=s1" in location
    assert f"iss={server.base}".replace(":", "%3A").replace("/", "%2F") in location
    assert description.replace(" ", "+") in location


async def test_login_and_consent_forms_need_the_session_csrf_token(server: LiveServer) -> None:  # noqa: F811
    async with server.http() as http:
        client = await register_client(http)
        url = authorize_url(server, client["client_id"], Pkce.new())
        login_page = await http.get(url)
        fields = hidden_fields(login_page.text)
        cookies = login_page.headers.get_list("set-cookie")
        cookie = cookies[0]
        forged = await http.post(
            "/api/oauth/login", data={**fields, "csrf_token": "guess", "email": "a", "password": "b"}
        )
        wrong_password = await http.post(
            "/api/oauth/login", data={**fields, "email": "ada@example.test", "password": "nope"}
        )
        signed_in = await http.post(
            "/api/oauth/login", data={**fields, "email": "ada@example.test", "password": PASSWORD}
        )
        consent = await http.get(signed_in.headers["location"])
        forged_consent = await http.post(
            "/api/oauth/authorize",
            data={**hidden_fields(consent.text), "csrf_token": fields["csrf_token"], "decision": "approve"},
        )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    # Only the sign-in pages and the share viewer (org-only shares) get the cookie: never /v1, /mcp or
    # the signed blob URLs where uploaded bytes are served.
    assert sorted(c.split("Path=")[1].split(";")[0] for c in cookies) == ["/api/oauth", "/r"]
    assert login_page.headers["x-frame-options"] == "DENY"
    assert forged.status_code == 403
    assert wrong_password.status_code == 401
    assert "do not match" in wrong_password.text
    assert signed_in.status_code == 303
    # Signing in replaced the session, so the pre-login CSRF token is worthless now.
    assert forged_consent.status_code == 403


async def test_a_code_can_be_used_once_and_a_replay_revokes_what_it_bought(server: LiveServer) -> None:  # noqa: F811
    browser = Browser(server.base)
    async with server.http() as http:
        client = await register_client(http)
        pkce = Pkce.new()
        code = (await browser.visit(authorize_url(server, client["client_id"], pkce))).params["code"]
        first = await exchange_code(http, client["client_id"], code, pkce.verifier)
        replay = await exchange_code(http, client["client_id"], code, pkce.verifier)
        refresh = await http.post(
            "/api/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": first.json()["refresh_token"],
                "client_id": client["client_id"],
            },
        )
    await browser.aclose()
    assert first.status_code == 200
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert refresh.status_code == 400  # the family of the replayed code is revoked


async def test_a_token_for_another_audience_is_refused(server: LiveServer) -> None:  # noqa: F811
    api_tokens = await obtain_tokens(server, resource=server.api_url)
    mcp_tokens = await obtain_tokens(server)
    at_mcp = await mcp_post(server, api_tokens.access_token, TOOLS_LIST)
    async with server.http() as http:
        at_api = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {mcp_tokens.access_token}"})
        own_api = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {api_tokens.access_token}"})
    assert at_mcp.status_code == 401
    assert 'error="invalid_token"' in at_mcp.headers["www-authenticate"]
    assert at_api.status_code == 401
    assert own_api.status_code == 200
    assert own_api.json()["kind"] == "oauth"
    assert own_api.json()["org_id"] == LOCAL_ORG_ID


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    import base64
    import json

    def decode(part: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return loaded

    header, payload, signature = token.split(".")
    return decode(header), decode(payload), signature


def _forgeries(genuine: str, jwks: dict[str, Any]) -> dict[str, str]:
    """Tokens an attacker can build from a genuine one and the public key set: none may be accepted."""
    import json

    from joserfc import jwt
    from joserfc.jwk import ECKey, OctKey

    header, claims, signature = _parts(genuine)
    widened = {**claims, "scope": " ".join(sorted(ALL_SCOPES)), ORG_CLAIM: "org_other"}

    def encode(part: dict[str, Any]) -> str:
        return _b64(json.dumps(part, separators=(",", ":")).encode())

    public = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    own_key = ECKey.generate_key("P-256")
    embedded = own_key.as_dict(private=False)
    confusion = OctKey.import_key(json.dumps(public, sort_keys=True).encode())
    return {
        # the genuine signature over claims widened to every scope and another org
        "tampered claims": f"{encode(header)}.{encode(widened)}.{signature}",
        # an unsigned token (alg none), with and without the dot of an empty signature
        "alg none": f"{encode({**header, 'alg': 'none'})}.{encode(widened)}.",
        "alg none, no signature part": f"{encode({**header, 'alg': 'none'})}.{encode(widened)}",
        # algorithm confusion: HS256 keyed with the published public key
        "HS256 with the public key": jwt.encode({**header, "alg": "HS256"}, widened, confusion, algorithms=["HS256"]),
        # our own P-256 key presented under the server's key id
        "foreign key, server's kid": jwt.encode({**header}, widened, own_key),
        # our own key embedded in the header (jwk) and pointed at (jku)
        "embedded jwk": jwt.encode({**header, "jwk": embedded}, widened, own_key),
        "jku to attacker": jwt.encode({**header, "jku": "https://evil.example/jwks"}, widened, own_key),
        # a key id no key set holds
        "unknown kid": jwt.encode({**header, "kid": "attacker"}, widened, own_key),
        # the genuine signature cut off
        "signature stripped": f"{encode(header)}.{encode(claims)}.",
    }


async def test_forged_access_tokens_are_refused_at_mcp_and_v1(server: LiveServer) -> None:  # noqa: F811
    """JWT forgery: tampered claims, alg none, HS256 keyed with the public key, a foreign key under our
    kid, an embedded or remote key: every one is a 401 invalid_token at both resource servers, while the
    genuine tokens they were built from work."""
    mcp_tokens = await obtain_tokens(server)
    api_tokens = await obtain_tokens(server, resource=server.api_url)
    async with server.http() as http:
        jwks = (await http.get("/api/oauth/jwks")).json()
        genuine_api = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {api_tokens.access_token}"})
        refused: dict[str, tuple[int, int]] = {}
        for name, token in _forgeries(api_tokens.access_token, jwks).items():
            at_api = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            refused[f"v1: {name}"] = (at_api.status_code, 401)
            assert "org_other" not in at_api.text
    genuine_mcp = await mcp_post(server, mcp_tokens.access_token, TOOLS_LIST)
    for name, token in _forgeries(mcp_tokens.access_token, jwks).items():
        at_mcp = await mcp_post(server, token, TOOLS_LIST)
        refused[f"mcp: {name}"] = (at_mcp.status_code, 401)
        assert 'error="invalid_token"' in at_mcp.headers.get("www-authenticate", ""), name
    assert genuine_api.status_code == 200
    assert genuine_mcp.status_code == 200
    assert {name: got for name, (got, _) in refused.items()} == {name: want for name, (_, want) in refused.items()}
    assert len(refused) == 18
