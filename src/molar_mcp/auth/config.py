"""Configuration and vocabulary of the auth package: scopes, paths, lifetimes, the local org.

Everything here is a plain value. The composition root builds one `AuthConfig` and passes it to
`create_oauth_routes`, the verifiers and the guards; nothing in this package reads globals.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx2
from argon2 import PasswordHasher

from molar_mcp.auth.throttle import ThrottleSettings

# The single organisation of a self-hosted install. Every local user and API key belongs to it.
LOCAL_ORG_ID: Final = "org_local"

SCOPE_TRACE_READ: Final = "mcp:trace:read"
SCOPE_DEBUG: Final = "mcp:debug"
SCOPE_RUN: Final = "mcp:run"
# Writing traces (ingest, live events, pin, share, restore): what CI and recorders need, not agents.
SCOPE_TRACE_WRITE: Final = "mcp:trace:write"
ALL_SCOPES: Final = (SCOPE_TRACE_READ, SCOPE_DEBUG, SCOPE_RUN, SCOPE_TRACE_WRITE)

# What the consent page and `molar-mcp` tell a person each scope lets a client do.
SCOPE_DESCRIPTIONS: Final[dict[str, str]] = {
    SCOPE_TRACE_READ: "Read your test-run traces: list them, open one, and read its steps, events and files.",
    SCOPE_DEBUG: "Ask the trace debugger questions about a failed run (this spends your debugger budget).",
    SCOPE_RUN: "Start replays of a trace from a chosen step, with edits, on your runners.",
    SCOPE_TRACE_WRITE: "Record test-run traces: upload bundles, append live events, pin, share and restore them.",
}

# Paths of the authorization server: the OAuth routes live under /api/oauth/*.
OAUTH_PREFIX: Final = "/api/oauth"
AUTHORIZE_PATH: Final = f"{OAUTH_PREFIX}/authorize"
LOGIN_PATH: Final = f"{OAUTH_PREFIX}/login"
LOGOUT_PATH: Final = f"{OAUTH_PREFIX}/logout"
TOKEN_PATH: Final = f"{OAUTH_PREFIX}/token"
REGISTER_PATH: Final = f"{OAUTH_PREFIX}/register"
REVOKE_PATH: Final = f"{OAUTH_PREFIX}/revoke"
JWKS_PATH: Final = f"{OAUTH_PREFIX}/jwks"
AS_METADATA_PATH: Final = "/.well-known/oauth-authorization-server"
PRM_PATH: Final = "/.well-known/oauth-protected-resource"


def default_http_client() -> httpx2.AsyncClient:
    """The HTTP client used to fetch Client ID Metadata Documents: short timeout, no redirects."""
    return httpx2.AsyncClient(timeout=5.0, follow_redirects=False)


@dataclass(frozen=True)
class AuthConfig:
    """Settings of the authorization server and the resource servers it issues tokens for.

    `issuer` and `resources` are plain strings without a trailing slash (the SDK's OAuth client
    compares the issuer as a string, RFC 8414 §3.3). `resources` lists every audience a token may be
    bound to (RFC 8707); the first one is used when a client names none.
    """

    issuer: str
    resources: tuple[str, ...]
    data_dir: Path
    scopes_supported: tuple[str, ...] = ALL_SCOPES
    # Granted when a client asks for no scope (RFC 6749 §3.3 lets the server pick a default).
    default_scopes: tuple[str, ...] = (SCOPE_TRACE_READ,)
    access_token_ttl: int = 600  # RFC 9068 tokens are not revocable at the edge: keep them short.
    refresh_token_ttl: int = 30 * 24 * 3600
    code_ttl: int = 120  # RFC 6749 §4.1.2: codes expire shortly, at most 10 minutes.
    session_ttl: int = 12 * 3600
    consent_ttl: int = 300  # a consent page's approval is good for one use within 5 minutes
    # A registered client never used (no authorization code, no token) is deleted after this long.
    unused_client_seconds: float = 24 * 3600
    http_client_factory: Callable[[], httpx2.AsyncClient] = default_http_client
    cimd_max_bytes: int = 5120  # CIMD draft: the server should cap the document size (5 KB).
    cimd_timeout: float = 5.0
    cimd_cache_ttl: int = 300
    cimd_cache_max_entries: int = 1000
    # Refuse CIMD URLs naming loopback/private IP literals or localhost (SSRF, CIMD draft).
    cimd_allow_private_hosts: bool = False
    # How CIMD hosts are resolved before their addresses are checked; None: the system resolver.
    cimd_resolve_host: Callable[[str, int], Awaitable[list[str]]] | None = None
    password_hasher: PasswordHasher = field(default_factory=PasswordHasher)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        issuer = urlsplit(self.issuer)
        if issuer.scheme not in ("http", "https") or not issuer.netloc or issuer.path or issuer.query:
            # Our routes sit at fixed paths on the issuer's origin (RFC 8414 §3: no path, no slash).
            raise ValueError(f"issuer must be an origin like https://host[:port], got {self.issuer!r}")
        if not self.resources:
            raise ValueError("at least one resource (token audience) is required")
        for resource in self.resources:
            if resource.endswith("/") or "#" in resource:
                raise ValueError(f"resource {resource!r} must have no trailing slash and no fragment")
        unknown = set(self.default_scopes) - set(self.scopes_supported)
        if unknown:
            raise ValueError(f"default scopes not supported: {sorted(unknown)}")

    @property
    def default_resource(self) -> str:
        return self.resources[0]

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")

    def now(self) -> int:
        return int(self.clock())

    def url(self, path: str) -> str:
        return f"{self.issuer}{path}"
