"""OAuth clients: the client model authlib works with, redirect URI rules, registered clients.

A client comes from one of two places: Dynamic Client Registration (RFC 7591, stored here) or a
Client ID Metadata Document (an https `client_id`, fetched by `cimd.py`, never stored).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc7591 import ClientMetadataClaims
from joserfc.errors import InvalidClaimError

from molar_mcp.auth.db import AuthDB, sha256_hex

AuthMethod = Literal["none", "client_secret_basic", "client_secret_post"]
AUTH_METHODS: Final[tuple[AuthMethod, ...]] = ("none", "client_secret_basic", "client_secret_post")
GRANT_TYPES: Final = ("authorization_code", "refresh_token")
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback_http(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Exact string match (OAuth 2.1 §2.3.1), except that a loopback http redirect of a native
    app may use any port (RFC 8252 §7.3): native apps get an ephemeral port from the OS."""
    if hmac.compare_digest(registered.encode(), requested.encode()):
        return True
    if not (is_loopback_http(registered) and is_loopback_http(requested)):
        return False
    try:
        reg, req = urlsplit(registered), urlsplit(requested)
        _ = (reg.port, req.port)  # a malformed port raises here, not halfway through the comparison
    except ValueError:
        return False
    return (
        reg.hostname == req.hostname
        and reg.path == req.path
        and reg.query == req.query
        and not reg.fragment
        and not req.fragment
        and reg.username is None
        and req.username is None
    )


def redirect_uri_problem(uri: str) -> str | None:
    """Why `uri` is not acceptable as a redirect URI, or None if it is.

    https anywhere; http only on a loopback host (RFC 8252 §7.3, OAuth 2.1 §2.3.1); a private-use
    scheme only in reverse-domain form (RFC 8252 §7.1). Never a fragment (RFC 6749 §3.1.2).
    """
    if not isinstance(uri, str) or not uri:
        return "a redirect URI must be a non-empty string"
    if len(uri) > 2000:
        return "a redirect URI must be at most 2000 characters"
    if "\\" in uri or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        # Browsers read a backslash as "/", parsers do not: the two would disagree on the host.
        return f"{uri!r} must not contain backslashes, spaces or control characters"
    try:
        parts = urlsplit(uri)
        _ = (parts.hostname, parts.port)
    except ValueError:
        return f"{uri!r} is not a URI"
    if parts.fragment or "#" in uri:
        return f"{uri!r} has a fragment"
    if parts.scheme == "https":
        return None if parts.hostname else f"{uri!r} has no host"
    if parts.scheme == "http":
        return None if is_loopback_http(uri) else f"{uri!r}: plain http is only allowed on a loopback host"
    if "." in parts.scheme and parts.scheme not in {"javascript", "data", "file", "vbscript"}:
        return None
    return f"{uri!r}: use https, a loopback http URI, or a reverse-domain private-use scheme"


@dataclass(frozen=True)
class OAuthClient(ClientMixin):  # type: ignore[misc]  # authlib is untyped
    """A client as authlib sees it (`ClientMixin`). Immutable; built from the DB or a CIMD document."""

    client_id: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: AuthMethod
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    client_name: str | None
    client_uri: str | None
    source: Literal["registration", "metadata_document"]
    secret_hash: str | None = None

    @property
    def display_name(self) -> str:
        return self.client_name or self.client_id

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # OAuth 2.1 §4.1.1: redirect_uri may be omitted only when exactly one is registered.
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        # Scope values were already checked against scopes_supported by the server; the scopes
        # a client registered do not cap later requests, so a client can step up (MCP spec).
        return " ".join(dict.fromkeys((scope or "").split()))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(redirect_uri_matches(registered, redirect_uri) for registered in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(sha256_hex(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


class MolarClientMetadataClaims(ClientMetadataClaims):  # type: ignore[misc]
    """RFC 7591 §2 metadata checks from authlib, plus our redirect URI policy."""

    def validate_redirect_uris(self) -> None:
        uris = self.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            raise InvalidClaimError("redirect_uris")
        for uri in uris:
            if redirect_uri_problem(uri) is not None:
                raise InvalidClaimError("redirect_uris")

    def validate_token_endpoint_auth_method(self) -> None:
        super().validate_token_endpoint_auth_method()
        if self["token_endpoint_auth_method"] not in AUTH_METHODS:
            raise InvalidClaimError("token_endpoint_auth_method")


def client_from_metadata(
    client_id: str,
    metadata: Mapping[str, Any],
    *,
    source: Literal["registration", "metadata_document"],
    secret_hash: str | None = None,
) -> OAuthClient:
    """Build a client from validated RFC 7591 metadata (defaults per RFC 7591 §2)."""
    method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
    return OAuthClient(
        client_id=client_id,
        redirect_uris=tuple(metadata.get("redirect_uris", ())),
        token_endpoint_auth_method=method,
        grant_types=tuple(metadata.get("grant_types") or ("authorization_code",)),
        response_types=tuple(metadata.get("response_types") or ("code",)),
        client_name=_short_text(metadata.get("client_name")),
        client_uri=metadata.get("client_uri") if isinstance(metadata.get("client_uri"), str) else None,
        source=source,
        secret_hash=secret_hash,
    )


def _short_text(value: object, limit: int = 120) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:limit]


class ClientStore:
    """Clients registered through RFC 7591."""

    def __init__(self, db: AuthDB) -> None:
        self._db = db

    def save(self, client_id: str, secret: str | None, metadata: Mapping[str, Any], *, now: int) -> OAuthClient:
        secret_hash = sha256_hex(secret) if secret else None
        self._db.execute(
            "INSERT INTO clients (client_id, secret_hash, metadata, created_at) VALUES (?, ?, ?, ?)",
            (client_id, secret_hash, json.dumps(dict(metadata)), now),
        )
        return client_from_metadata(client_id, metadata, source="registration", secret_hash=secret_hash)

    def get(self, client_id: str) -> OAuthClient | None:
        row = self._db.fetch_one("SELECT * FROM clients WHERE client_id = ?", (client_id,))
        return _client(row) if row else None

    def all(self) -> list[OAuthClient]:
        return [_client(row) for row in self._db.fetch_all("SELECT * FROM clients ORDER BY created_at")]

    def expire_unused(self, max_age_seconds: float, *, now: int) -> int:
        """Delete the clients registered more than `max_age_seconds` ago that were never used: no
        authorization code was ever issued to them and they hold no tokens. Returns how many went. A client
        that comes back later gets `invalid_client` and registers again (MCP clients do)."""
        cutoff = now - int(max_age_seconds)
        return self._db.execute(
            "DELETE FROM clients WHERE created_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM auth_codes a WHERE a.client_id = clients.client_id)"
            " AND NOT EXISTS (SELECT 1 FROM token_families f WHERE f.client_id = clients.client_id)",
            (cutoff,),
        )


def _client(row: sqlite3.Row) -> OAuthClient:
    return client_from_metadata(
        row["client_id"], json.loads(row["metadata"]), source="registration", secret_hash=row["secret_hash"]
    )


def is_private_host(host: str) -> bool:
    """Loopback, private, link-local or otherwise non-public IP literal, or a localhost name."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global
