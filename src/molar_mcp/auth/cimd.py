"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document).

A client may use an https URL as its `client_id`; the document at that URL is its registration.
We fetch it (no redirects, 200 only, size and time capped), check it, and cache the result for a
bounded time. Errors are never cached. Clients known this way are always public: no secret.

SSRF: the URL's host is resolved once, every address it resolves to must be public (not loopback,
private, link-local, multicast, reserved or unspecified, IPv4-mapped IPv6 included), and the fetch
connects to that checked address (TLS still verifies the host name). A transport failure has one
message, so the answer never tells an open port from a closed one.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import httpx2
from joserfc.errors import JoseError

from molar_mcp.auth.clients import (
    GRANT_TYPES,
    MolarClientMetadataClaims,
    OAuthClient,
    client_from_metadata,
    is_private_host,
)


class ClientMetadataDocumentError(Exception):
    """The client_id URL or the document it names is not acceptable. The message says why."""


NOT_PUBLIC: Final = "a URL client_id must name a public host"
FETCH_FAILED: Final = "could not fetch the client metadata document"

ResolveHost = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver, off the event loop)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(text: str) -> bool:
    """True for a globally routable unicast address; IPv4-mapped IPv6 is judged as its IPv4 address."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def looks_like_metadata_document_id(client_id: str) -> bool:
    """URL-shaped client ids are CIMD candidates (and get rejected unless https)."""
    return client_id.startswith(("https://", "http://"))


def client_id_url_problem(url: str, *, allow_private_hosts: bool = False) -> str | None:
    """Why `url` cannot be a CIMD client_id, or None. CIMD draft §3: https, a host, a path other
    than "/", no dot segments, no fragment, no user info; we also refuse a query (SHOULD NOT)."""
    try:
        parts = httpx2.URL(url)
    except (httpx2.InvalidURL, ValueError):
        return "the client_id is not a URL"
    if parts.scheme != "https":
        return "a URL client_id must use https"
    if not parts.host:
        return "a URL client_id needs a host"
    if parts.userinfo:
        return "a URL client_id must not contain a user name or password"
    if parts.fragment or "#" in url:
        return "a URL client_id must not contain a fragment"
    if parts.query:
        return "a URL client_id must not contain a query"
    raw_path = re.sub(r"^https://[^/]*", "", url, flags=re.IGNORECASE)
    if raw_path in ("", "/"):
        return "a URL client_id needs a path"
    if any(segment in (".", "..") for segment in raw_path.split("/")):
        return "a URL client_id must not contain . or .. path segments"
    if not allow_private_hosts and is_private_host(parts.host):
        return NOT_PUBLIC
    return None


def parse_metadata_document(client_id: str, body: bytes) -> OAuthClient:
    """Check a fetched document against its URL and the RFC 7591 metadata rules (CIMD draft §4)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ClientMetadataDocumentError("the client metadata document is not JSON") from exc
    if not isinstance(document, dict):
        raise ClientMetadataDocumentError("the client metadata document is not a JSON object")
    if document.get("client_id") != client_id:
        raise ClientMetadataDocumentError("the document's client_id is not the URL it was fetched from")
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise ClientMetadataDocumentError("a client metadata document must not contain a client secret")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        # Shared secrets are forbidden (CIMD draft); we do not support private_key_jwt.
        raise ClientMetadataDocumentError("token_endpoint_auth_method must be 'none'")
    metadata: dict[str, Any] = {key: value for key, value in document.items() if key != "client_id"}
    metadata["token_endpoint_auth_method"] = "none"  # noqa: S105  # a method name
    claims = MolarClientMetadataClaims(
        metadata,
        {},
        MolarClientMetadataClaims.get_claims_options(
            {
                "grant_types_supported": list(GRANT_TYPES),
                "response_types_supported": ["code"],
                "token_endpoint_auth_methods_supported": ["none"],
            }
        ),
    )
    try:
        claims.validate()
    except JoseError as exc:
        raise ClientMetadataDocumentError(f"invalid client metadata: {exc.description}") from exc
    return client_from_metadata(client_id, claims.get_registered_claims(), source="metadata_document")


def _cache_ttl(response: httpx2.Response, ceiling: int) -> int:
    """Respect Cache-Control within our bounds (CIMD draft: caching per HTTP semantics)."""
    directives = response.headers.get("cache-control", "").lower()
    if "no-store" in directives:
        return 0
    match = re.search(r"max-age=(\d+)", directives)
    return min(int(match.group(1)), ceiling) if match else ceiling


class ClientMetadataResolver:
    """Fetches, validates and caches CIMD clients. The HTTP client factory is the test seam."""

    def __init__(
        self,
        http_client_factory: Callable[[], httpx2.AsyncClient],
        *,
        clock: Callable[[], float],
        max_bytes: int = 5120,
        timeout: float = 5.0,
        cache_ttl: int = 300,
        max_entries: int = 1000,
        allow_private_hosts: bool = False,
        resolve_host: ResolveHost = system_resolve,
    ) -> None:
        self._factory = http_client_factory
        self._resolve_host = resolve_host
        self._clock = clock
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._cache_ttl = cache_ttl
        self._max_entries = max_entries
        self._allow_private_hosts = allow_private_hosts
        self._cache: OrderedDict[str, tuple[float, OAuthClient]] = OrderedDict()

    def cached(self, client_id: str) -> OAuthClient | None:
        entry = self._cache.get(client_id)
        if entry is None:
            return None
        expires_at, client = entry
        if expires_at <= self._clock():
            del self._cache[client_id]
            return None
        self._cache.move_to_end(client_id)
        return client

    async def resolve(self, client_id: str) -> OAuthClient:
        """The client named by `client_id`. Raises `ClientMetadataDocumentError`."""
        problem = client_id_url_problem(client_id, allow_private_hosts=self._allow_private_hosts)
        if problem:
            raise ClientMetadataDocumentError(problem)
        client = self.cached(client_id)
        if client is not None:
            return client
        try:
            with anyio.fail_after(self._timeout):
                address = await self._checked_address(client_id)
                body, ttl = await self._fetch(client_id, address)
        except (TimeoutError, OSError, httpx2.HTTPError) as exc:
            # One message for refused, reset, TLS failure and timeout alike: no port scanning.
            raise ClientMetadataDocumentError(FETCH_FAILED) from exc
        client = parse_metadata_document(client_id, body)
        if ttl > 0:
            self._cache[client_id] = (self._clock() + ttl, client)
            self._cache.move_to_end(client_id)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return client

    async def _checked_address(self, client_id: str) -> str:
        """The address to connect to: the first the host resolves to, once all of them are checked."""
        url = httpx2.URL(client_id)
        addresses = await self._resolve_host(url.host, url.port or 443)
        if not addresses:
            raise ClientMetadataDocumentError(FETCH_FAILED)
        if not self._allow_private_hosts and not all(is_public_address(a) for a in addresses):
            raise ClientMetadataDocumentError(NOT_PUBLIC)
        return addresses[0]

    async def _fetch(self, client_id: str, address: str) -> tuple[bytes, int]:
        url = httpx2.URL(client_id)
        pinned = url.copy_with(host=address)
        headers = {"Accept": "application/json", "Host": url.netloc.decode("ascii")}
        # The connection goes to the checked address; TLS names (SNI) and verifies the real host.
        request_extensions = {"sni_hostname": url.host}
        async with (
            self._factory() as http,
            http.stream(
                "GET", pinned, headers=headers, follow_redirects=False, extensions=request_extensions
            ) as response,
        ):
            if response.status_code != 200:
                # CIMD draft: no redirects are followed; anything but 200 is an error.
                raise ClientMetadataDocumentError(f"the client metadata document answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise ClientMetadataDocumentError("the client metadata document is too large")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise ClientMetadataDocumentError("the client metadata document is too large")
                chunks.append(chunk)
            return b"".join(chunks), _cache_ttl(response, self._cache_ttl)
