"""A tiny app wired like `serve` will be: the OAuth routes, RFC 9728 metadata, an MCPServer with
three dummy tools behind McpScopeGuard at /mcp, and a /v1 endpoint behind BearerGuard. It runs in
uvicorn on a free 127.0.0.1 port; tests talk to it over real sockets, as a browser and as the SDK's
OAuth client would.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2
import pytest
import uvicorn
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from mcp.server import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molar_mcp.auth import (
    ALL_SCOPES,
    SCOPE_DEBUG,
    SCOPE_RUN,
    SCOPE_TRACE_READ,
    AnyVerifier,
    ApiKeyStore,
    ApiKeyVerifier,
    AuthConfig,
    AuthDB,
    BearerGuard,
    JwtVerifier,
    McpScopeGuard,
    ProtectedResource,
    ScopePolicy,
    UserStore,
    create_oauth_routes,
    create_protected_resource_routes,
    get_principal,
)
from molar_mcp.auth.throttle import Limit, ThrottleSettings

EMAIL = "ada@example.test"
PASSWORD = "correct horse battery staple"
REDIRECT_URI = "http://127.0.0.1:7777/callback"
TOOL_SCOPES = {"list_traces": [SCOPE_TRACE_READ], "debug_run": [SCOPE_DEBUG], "replay_trace": [SCOPE_RUN]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Shared by the server and the tests: time moves only when a test says so."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class MetadataDocuments:
    """Client ID Metadata Documents the server can "fetch" (an injected transport, no network)."""

    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetches: list[str] = field(default_factory=list)

    @staticmethod
    async def resolve(host: str, port: int) -> list[str]:
        """Every test host is "public": 192.0.2.0/24 is documentation space, so use a global one."""
        return ["93.184.215.14"]

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        # The fetch connects to the checked address and names the host in `Host` (and TLS SNI).
        url = str(request.url.copy_with(netloc=request.headers["host"].encode()))
        self.fetches.append(url)
        if url in self.documents:
            return httpx2.Response(200, json=self.documents[url])
        return httpx2.Response(404)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler))


def build_mcp() -> MCPServer:
    mcp = MCPServer("molar-auth-test")

    @mcp.tool()
    def list_traces() -> str:
        """List traces (needs mcp:trace:read)."""
        principal = get_principal()
        assert principal is not None
        return f"traces of {principal.org_id} for {principal.subject}"

    @mcp.tool()
    def debug_run() -> str:
        """Debug a run (needs mcp:debug)."""
        return "debugging"

    @mcp.tool()
    def replay_trace() -> str:
        """Replay a trace (needs mcp:run)."""
        return "replaying"

    @mcp.resource("molar://traces/{trace_id}")
    def trace(trace_id: str) -> str:
        return f"trace {trace_id}"

    return mcp


def build_app(config: AuthConfig, db: AuthDB) -> Starlette:
    mcp_url, api_url = config.resources
    mcp_resource = ProtectedResource(
        resource=mcp_url,
        authorization_servers=(config.issuer,),
        scopes_supported=ALL_SCOPES,
        challenge_scopes=(SCOPE_TRACE_READ,),
        resource_name="Molar MCP",
    )
    api_resource = ProtectedResource(
        resource=api_url,
        authorization_servers=(config.issuer,),
        scopes_supported=ALL_SCOPES,
        challenge_scopes=(SCOPE_TRACE_READ,),
    )
    mcp = build_mcp()
    mcp_app = mcp.streamable_http_app()
    guarded_mcp = McpScopeGuard(
        mcp_app,
        verifier=JwtVerifier.for_audience(config, db, mcp_url),
        resource=mcp_resource,
        policy=ScopePolicy.of(TOOL_SCOPES),
    )

    async def whoami(request: Request) -> Response:
        principal = request.state.principal
        return JSONResponse(
            {
                "subject": principal.subject,
                "org_id": principal.org_id,
                "kind": principal.kind,
                "scopes": sorted(principal.scopes),
            }
        )

    api_verifier = AnyVerifier(
        ApiKeyVerifier(ApiKeyStore(db, scopes_supported=ALL_SCOPES), clock=config.clock),
        JwtVerifier.for_audience(config, db, api_url),
    )
    api_app = BearerGuard(Starlette(routes=[Route("/v1/whoami", whoami)]), api_verifier, api_resource)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    routes = [
        *create_oauth_routes(config, db),
        *create_protected_resource_routes([mcp_resource, api_resource]),
        Route("/mcp", guarded_mcp),
        Route("/v1/{path:path}", api_app),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    base: str
    config: AuthConfig
    db: AuthDB
    clock: FakeClock
    documents: MetadataDocuments

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def api_url(self) -> str:
        return f"{self.base}/v1"

    def http(self, **kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.base, timeout=10.0, follow_redirects=False, **kwargs)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("auth-data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    clock = FakeClock()
    documents = MetadataDocuments()
    hasher = PasswordHasher.from_parameters(CHEAPEST)
    config = AuthConfig(
        issuer=base,
        resources=(f"{base}/mcp", f"{base}/v1"),
        data_dir=data_dir,
        http_client_factory=documents.client,
        cimd_resolve_host=documents.resolve,
        # Every test registers clients from 127.0.0.1: a registration limit sized for the whole suite.
        throttle=ThrottleSettings(registrations_per_address=Limit(10_000, 60), registrations_total=Limit(10_000, 60)),
        password_hasher=hasher,
        clock=clock,
    )
    db = AuthDB.open(data_dir / "auth.sqlite3")
    UserStore(db, hasher).create(EMAIL, PASSWORD, now=int(clock()))
    server = uvicorn.Server(
        uvicorn.Config(build_app(config, db), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    yield LiveServer(base=base, config=config, db=db, clock=clock, documents=documents)
    server.should_exit = True
    thread.join(timeout=10)
    db.close()


@pytest.fixture
def server(live_server: LiveServer) -> Iterator[LiveServer]:
    """The shared live server, with its clock back at real time after each test."""
    yield live_server
    live_server.clock.offset = 0.0


# -- a browser that signs in and consents ---------------------------------------------------------
_INPUT = re.compile(r"<input type=hidden name=\"([^\"]+)\" value=\"([^\"]*)\">")


def hidden_fields(page: str) -> dict[str, str]:
    return {html.unescape(name): html.unescape(value) for name, value in _INPUT.findall(page)}


@dataclass
class Redirect:
    """Where the authorization server sent the browser back to the client."""

    location: str

    @property
    def params(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(urlsplit(self.location).query).items()}


class Browser:
    """Follows an authorization URL like a person would: sign in (if needed), then approve or deny.
    Used as the SDK provider's redirect/callback handler pair, too."""

    def __init__(self, base: str, *, email: str = EMAIL, password: str = PASSWORD, approve: bool = True) -> None:
        self.http = httpx2.AsyncClient(base_url=base, timeout=10.0, follow_redirects=False)
        self.email = email
        self.password = password
        self.approve = approve
        self.consent_pages: list[str] = []
        self.logins = 0
        self.last: Redirect | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    async def visit(self, authorization_url: str) -> Redirect:
        response = await self.http.get(authorization_url)
        if "Sign in to Molar" in response.text:
            fields = hidden_fields(response.text)
            self.logins += 1
            response = await self.http.post(
                "/api/oauth/login", data={**fields, "email": self.email, "password": self.password}
            )
            assert response.status_code == 303, response.text
            response = await self.http.get(response.headers["location"])
        assert response.status_code == 200, response.text
        assert "Allow" in response.text, response.text
        self.consent_pages.append(response.text)
        fields = hidden_fields(response.text)
        decision = "approve" if self.approve else "deny"
        response = await self.http.post("/api/oauth/authorize", data={**fields, "decision": decision})
        assert response.status_code == 302, response.text
        self.last = Redirect(response.headers["location"])
        return self.last

    # OAuthClientProvider's handler pair
    async def redirect_handler(self, authorization_url: str) -> None:
        await self.visit(authorization_url)

    async def callback_handler(self) -> Any:
        from mcp.client.auth import AuthorizationCodeResult

        assert self.last is not None
        params = self.last.params
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


@dataclass
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).decode().rstrip("="))


async def register_client(http: httpx2.AsyncClient, **metadata: Any) -> dict[str, Any]:
    body = {
        "client_name": "Test Agent",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **metadata,
    }
    response = await http.post("/api/oauth/register", json=body)
    assert response.status_code == 201, response.text
    client: dict[str, Any] = response.json()
    return client


def authorize_url(server: LiveServer, client_id: str, pkce: Pkce | None, **params: str) -> str:
    query: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "state": "st-" + secrets.token_hex(4),
        "scope": SCOPE_TRACE_READ,
        "resource": server.mcp_url,
    }
    if pkce is not None:
        query.update(code_challenge=pkce.challenge, code_challenge_method="S256")
    query.update(params)
    return urljoin(server.base, "/api/oauth/authorize?" + urlencode({k: v for k, v in query.items() if v != ""}))


async def exchange_code(
    http: httpx2.AsyncClient, client_id: str, code: str, verifier: str | None, **extra: str
) -> httpx2.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": client_id,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    data.update(extra)
    return await http.post("/api/oauth/token", data=data)


@dataclass
class Tokens:
    client_id: str
    access_token: str
    refresh_token: str
    scope: str


async def obtain_tokens(server: LiveServer, *, scope: str = SCOPE_TRACE_READ, resource: str | None = None) -> Tokens:
    """Register a public client and run the whole code + PKCE flow through the browser."""
    browser = Browser(server.base)
    try:
        async with server.http() as http:
            client = await register_client(http)
            pkce = Pkce.new()
            url = authorize_url(server, client["client_id"], pkce, scope=scope, resource=resource or server.mcp_url)
            redirect = await browser.visit(url)
            response = await exchange_code(http, client["client_id"], redirect.params["code"], pkce.verifier)
            assert response.status_code == 200, response.text
            body = response.json()
    finally:
        await browser.aclose()
    return Tokens(client["client_id"], body["access_token"], body["refresh_token"], body["scope"])


MODERN = "2026-07-28"


def modern_request(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    """A JSON-RPC request in the 2026-07-28 per-request envelope (no session needed)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": meta}}


async def mcp_post(server: LiveServer, token: str | None, payload: Any, **headers: str) -> httpx2.Response:
    """One raw JSON-RPC POST to /mcp with the modern routing headers."""
    all_headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
    }
    if isinstance(payload, dict):
        all_headers["Mcp-Method"] = payload["method"]
        name = payload["params"].get("name") or payload["params"].get("uri")
        if name:
            all_headers["Mcp-Name"] = name
    all_headers.update(headers)
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with server.http() as http:
        return await http.post("/mcp", json=payload, headers=all_headers)
