"""Authentication of `molar-mcp serve`, assembled from the auth package (docs/auth.md).

`/mcp` and `/v1` are OAuth 2.1 resource servers of our own authorization server (`/api/oauth/*`);
both also take API keys. The MCP server reaches the store with its own internal credential
(`x-internal-token` + the caller's org, subject and scopes), never with the client's token.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import httpx2
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from molar_mcp.api.auth import ApiAuth
from molar_mcp.api.reads import INLINE_READS_EXTENSION
from molar_mcp.api.telemetry import IN_PROCESS_EXTENSION
from molar_mcp.auth import (
    ALL_SCOPES,
    SCOPE_TRACE_READ,
    AnyVerifier,
    ApiKeyStore,
    ApiKeyVerifier,
    AuthConfig,
    AuthDB,
    BearerVerifier,
    JwtVerifier,
    ProtectedResource,
    get_principal,
)
from molar_mcp.auth.clients import ClientStore
from molar_mcp.auth.config import JWKS_PATH, REGISTER_PATH, REVOKE_PATH, TOKEN_PATH
from molar_mcp.auth.db import AUTH_DB_FILE
from molar_mcp.auth.keys import AuthKeys
from molar_mcp.auth.session import SessionCookies
from molar_mcp.auth.tokens import GrantStore
from molar_mcp.auth.users import UserStore
from molar_mcp.client import HeaderAuth, TraceClient
from molar_mcp.client.asgi_stream import StreamingASGITransport
from molar_mcp.mcp.state import ClientFactory

log = logging.getLogger("molar_mcp")

INTERNAL_TOKEN_FILE = "internal-token"  # noqa: S105 - a file name, not a secret


def internal_token(data_dir: Path) -> str:
    """`MOLAR_INTERNAL_TOKEN`, else a random token kept in the data dir (0600) and made on first use."""
    env = os.environ.get("MOLAR_INTERNAL_TOKEN")
    if env:
        return env
    path = data_dir / INTERNAL_TOKEN_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass(frozen=True)
class ServeAuth:
    config: AuthConfig
    db: AuthDB
    mcp_resource: ProtectedResource
    api_resource: ProtectedResource
    internal_token: str
    keys: AuthKeys

    def verifier(self, resource: ProtectedResource) -> BearerVerifier:
        """API keys, or OAuth access tokens issued for exactly this resource (RFC 8707 audience)."""
        keys = ApiKeyVerifier(ApiKeyStore(self.db, scopes_supported=ALL_SCOPES))
        return AnyVerifier(keys, JwtVerifier.for_audience(self.config, self.db, resource.resource))

    def api_auth(self) -> ApiAuth:
        return ApiAuth(self.verifier(self.api_resource), self.api_resource, self.internal_token, self.session_org)

    def session_org(self, request: Request) -> str | None:
        """The org of the user signed in to the authorization server in this browser, if any."""
        cookies = SessionCookies(
            self.keys.session_key,
            ttl=self.config.session_ttl,
            secure=self.config.secure_cookies,
            clock=self.config.clock,
            revoked=GrantStore(self.db).access_token_revoked,
        )
        session = cookies.load(request)
        if session is None or session.user_id is None:
            return None
        user = UserStore(self.db).get(session.user_id)
        return user.org_id if user is not None else None


async def run_client_expiry(auth: ServeAuth) -> None:
    """Delete registered clients never used, at start and then every tenth of their age (≤ 1 h)."""
    config = auth.config
    interval = max(0.05, min(3600.0, config.unused_client_seconds / 10))
    clients = ClientStore(auth.db)
    while True:
        now = int(config.clock())
        try:
            expire = functools.partial(clients.expire_unused, config.unused_client_seconds, now=now)
            gone = await anyio.to_thread.run_sync(expire)
        except Exception:  # the database restarting: try again at the next look
            log.warning("expiring unused OAuth clients failed; trying again in %.0f s", interval, exc_info=True)
        else:
            if gone:
                log.info("deleted %d OAuth clients registered and never used", gone)
        await anyio.sleep(interval)


def open_auth_db(data_dir: Path, *, database_url: str | None = None) -> AuthDB:
    """The auth database: `auth.sqlite3` in the data dir, or the PostgreSQL database (component `auth`)."""
    if database_url is None:
        return AuthDB.open(data_dir / AUTH_DB_FILE)
    from molar_mcp.store.postgres.authdb import PgAuthDB
    from molar_mcp.store.postgres.db import PgDatabase

    return PgAuthDB.open_url(PgDatabase(database_url, data_dir, min_size=1, max_size=4))


@contextmanager
def open_serve_auth(
    data_dir: Path,
    issuer: str,
    *,
    database_url: str | None = None,
    unused_client_seconds: float = AuthConfig.unused_client_seconds,
) -> Iterator[ServeAuth]:
    issuer = issuer.rstrip("/")  # a trailing slash breaks the SDK client's issuer comparison (MCP-NOTES)
    config = AuthConfig(
        issuer=issuer,
        resources=(f"{issuer}/mcp", f"{issuer}/v1"),
        data_dir=data_dir,
        unused_client_seconds=unused_client_seconds,
    )
    db = open_auth_db(data_dir, database_url=database_url)
    try:
        yield ServeAuth(
            config=config,
            db=db,
            mcp_resource=ProtectedResource(
                resource=f"{issuer}/mcp",
                authorization_servers=(issuer,),
                scopes_supported=ALL_SCOPES,
                challenge_scopes=(SCOPE_TRACE_READ,),
                resource_name="Molar MCP",
            ),
            api_resource=ProtectedResource(
                resource=f"{issuer}/v1",
                authorization_servers=(issuer,),
                scopes_supported=ALL_SCOPES,
                challenge_scopes=(SCOPE_TRACE_READ,),
                resource_name="Molar Trace API",
            ),
            internal_token=internal_token(data_dir),
            keys=AuthKeys.load_or_create(data_dir),
        )
    finally:
        db.close()


class ActingAs(HeaderAuth):
    """The MCP server's credential towards the store: the internal token, plus the org, subject and
    scopes of whoever called the tool (`get_principal()`, set by the /mcp guard)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def headers(self) -> dict[str, str]:
        headers = {"x-internal-token": self._token}
        principal = get_principal()
        if principal is not None:
            headers["x-molar-org"] = principal.org_id
            headers["x-molar-subject"] = principal.subject
            headers["x-molar-scopes"] = " ".join(sorted(principal.scopes))
        return headers


def acting_client_factory(api_app: ASGIApp, token: str, *, inline_reads: bool = False) -> ClientFactory:
    """The MCP server's clients of the guarded in-process /v1 app, acting as each tool's caller;
    `inline_reads`: the app reads the store on the event loop (api/reads.py)."""
    extensions: dict[str, Any] = {IN_PROCESS_EXTENSION: {}}
    if inline_reads:
        extensions[INLINE_READS_EXTENSION] = {}

    @asynccontextmanager
    async def factory() -> AsyncIterator[TraceClient]:
        transport = StreamingASGITransport(api_app, extensions=extensions)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://molar.embedded", auth=ActingAs(token)
        ) as http:
            yield TraceClient(http, in_process=transport)

    return factory


# What browser-based MCP clients must reach from their own origin (CORS, any origin, no cookies): the
# discovery documents and the authorization server's JSON endpoints. The sign-in pages, /mcp and /v1 are
# not among them: there the origin guard stays.
CROSS_ORIGIN_PATHS: Final = frozenset({TOKEN_PATH, REGISTER_PATH, REVOKE_PATH, JWKS_PATH})
CROSS_ORIGIN_PREFIXES: Final = ("/.well-known/",)


class OriginGuard:
    """403 for a browser request from a foreign origin (DNS rebinding, CSRF from other sites): a
    request that carries `Origin` must come from one of this server's own origins. Clients that are
    not browsers send no `Origin` and pass (MCP transport spec, "Security Warning"). The discovery
    and token endpoints (`CROSS_ORIGIN_PATHS`) answer every origin with CORS headers instead."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            open_to_all = path in CROSS_ORIGIN_PATHS or path.startswith(CROSS_ORIGIN_PREFIXES)
            origin = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"origin"), None)
            if origin is not None and not open_to_all and origin.rstrip("/").lower() not in self.allowed:
                response = JSONResponse(
                    {"error": "forbidden", "message": f"requests from origin {origin!r} are not allowed here"},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def own_origins(host: str, port: int, issuer: str | None, allowed_hosts: Iterable[str] = ()) -> list[str]:
    """The origins a browser may use to reach this server."""
    names = {host, *allowed_hosts}
    if host in ("127.0.0.1", "localhost", "::1"):
        names |= {"127.0.0.1", "localhost"}
    origins = [f"{scheme}://{name}:{port}" for name in names for scheme in ("http", "https")]
    origins += [f"https://{name}" for name in allowed_hosts]
    if issuer:
        origins.append(issuer)
    return origins
