"""The authlib AuthorizationServer for Starlette: request/response adapters and our stores.

authlib ships no Starlette server integration, so this module is the thin adapter: Starlette's
request is read (async) into a `PreparedRequest`, authlib works on it synchronously (in a worker
thread), and answers with an `OAuthResult` that `server.py` turns into a Starlette response.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
from authlib.oauth2.rfc6749 import AuthorizationServer, JsonRequest, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9207 import AuthorizationServerMetadata as IssMetadata
from authlib.oauth2.rfc9207 import IssuerParameter
from joserfc import jwt
from joserfc.errors import JoseError

from molar_mcp.auth import config as paths
from molar_mcp.auth.cimd import (
    ClientMetadataDocumentError,
    ClientMetadataResolver,
    looks_like_metadata_document_id,
)
from molar_mcp.auth.clients import AUTH_METHODS, GRANT_TYPES, ClientStore, OAuthClient
from molar_mcp.auth.config import AuthConfig
from molar_mcp.auth.db import AuthDB
from molar_mcp.auth.grants import (
    CodeGrant,
    InvalidTargetError,
    RefreshGrant,
    RegisterEndpoint,
    RevokeEndpoint,
    S256CodeChallenge,
    canonical_resource,
)
from molar_mcp.auth.keys import SIGNING_ALG, AuthKeys
from molar_mcp.auth.tokens import FAMILY_CLAIM, AccessRecord, GrantStore, TokenIssuer
from molar_mcp.auth.users import User, UserStore


@dataclass
class OAuthResult:
    """authlib's (status, body, headers) answer; `location` is what RFC 9207's hook rewrites."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((value for name, value in self.headers if name.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(n, v) for n, v in self.headers if n.lower() != "location"] + [("Location", value)]


class FormPayload(OAuth2Payload):  # type: ignore[misc]  # authlib is untyped
    """Parameters of a query string or urlencoded form; the first value of a repeated name wins,
    and `datalist` keeps them all so authlib can reject repeats (RFC 6749 §3.1)."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in items:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class PreparedRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth2Request whose body was already read. `uri` is built from our issuer, so authlib's
    transport check sees the public URL even behind a TLS-terminating proxy."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], items: Sequence[tuple[str, str]]) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self.payload = FormPayload(items)
        self.resource: str | None = None
        self.family_id: str | None = None

    @property
    def form(self) -> dict[str, str]:
        data: dict[str, str] = self.payload.data
        return data

    @property
    def args(self) -> dict[str, str]:
        return self.form


class _JsonPayload:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class PreparedJsonRequest(JsonRequest):  # type: ignore[misc]
    def __init__(self, uri: str, headers: Mapping[str, str], data: dict[str, Any]) -> None:
        super().__init__("POST", uri, headers)
        self.payload = _JsonPayload(data)


def authorization_server_metadata(config: AuthConfig) -> dict[str, Any]:
    """RFC 8414 §2 metadata, with RFC 9207 and CIMD flags. Validated by authlib on creation."""
    metadata: dict[str, Any] = {
        "issuer": config.issuer,
        "authorization_endpoint": config.url(paths.AUTHORIZE_PATH),
        "token_endpoint": config.url(paths.TOKEN_PATH),
        "registration_endpoint": config.url(paths.REGISTER_PATH),
        "revocation_endpoint": config.url(paths.REVOKE_PATH),
        "jwks_uri": config.url(paths.JWKS_PATH),
        "scopes_supported": list(config.scopes_supported),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
    }
    AuthorizationServerMetadata(metadata).validate(metadata_classes=[IssMetadata])
    return metadata


class _Issuer(IssuerParameter):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


class MolarAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's server with our grants, endpoints and stores. Synchronous: call from a worker thread."""

    def __init__(self, config: AuthConfig, db: AuthDB, keys: AuthKeys, resolver: ClientMetadataResolver) -> None:
        super().__init__(scopes_supported=list(config.scopes_supported))
        self.config = config
        self.keys = keys
        self.users = UserStore(db, config.password_hasher)
        self.clients = ClientStore(db)
        self.grants = GrantStore(db)
        self.tokens = TokenIssuer(config, keys)
        self.resolver = resolver
        self.metadata = authorization_server_metadata(config)
        self.issuer_parameter = _Issuer(config.issuer)
        self.register_grant(CodeGrant, [S256CodeChallenge()])
        self.register_grant(RefreshGrant)
        self.register_endpoint(RevokeEndpoint)
        self.register_endpoint(RegisterEndpoint())
        # RFC 9207 §2: `iss` in every authorization response, errors included.
        self.register_extension(self.issuer_parameter)

    # -- authlib hooks ------------------------------------------------------------------------------
    def query_client(self, client_id: str) -> OAuthClient | None:
        if looks_like_metadata_document_id(client_id):
            cached = self.resolver.cached(client_id)
            if cached is not None:
                return cached
            try:
                client: OAuthClient = anyio.from_thread.run(self.resolver.resolve, client_id)
            except ClientMetadataDocumentError:
                return None
            return client
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: PreparedRequest) -> None:
        now = self.config.now()
        assert request.family_id is not None
        if request.payload.grant_type == "authorization_code":
            code = request.authorization_code
            self.grants.create_family(
                request.family_id,
                client_id=request.client.client_id,
                user_id=request.user.id,
                scope=code.scope,
                resource=code.resource,
                code_hash=code.code_hash,
                now=now,
            )
        if "refresh_token" in token:
            self.grants.add_refresh_token(
                token["refresh_token"],
                family_id=request.family_id,
                now=now,
                ttl=self.config.refresh_token_ttl,
            )

    def create_oauth2_request(self, request: PreparedRequest) -> PreparedRequest:
        return request

    def create_json_request(self, request: PreparedJsonRequest) -> PreparedJsonRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Sequence[tuple[str, str]]) -> OAuthResult:
        return OAuthResult(status=status, body=body, headers=list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal system here."""

    # -- our rules ----------------------------------------------------------------------------------
    def resolve_resource(self, values: Sequence[str]) -> str:
        """RFC 8707 §2: the resource the token will be for; our default when none is named."""
        if not values:
            return self.config.default_resource
        if len(values) > 1:
            raise InvalidTargetError("ask for one resource per authorization")
        wanted = canonical_resource(values[0])
        for resource in self.config.resources:
            if canonical_resource(resource) == wanted:
                return resource
        raise InvalidTargetError("the requested resource is not served by this authorization server")

    def check_token_resource(self, request: PreparedRequest, *, granted: str) -> None:
        """RFC 8707 §2.2: a token request may name a resource, but only one that was granted."""
        values = request.payload.datalist.get("resource", [])
        if values and self.resolve_resource(values) != granted:
            raise InvalidTargetError("the requested resource was not part of the grant")

    def issue_tokens(
        self, request: PreparedRequest, *, user: User, scope: str, resource: str, include_refresh_token: bool
    ) -> dict[str, Any]:
        assert request.family_id is not None
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": self.tokens.access_token(
                client_id=request.client.client_id,
                user=user,
                scope=scope,
                resource=resource,
                family_id=request.family_id,
            ),
            "expires_in": self.config.access_token_ttl,
            "scope": scope,
        }
        if include_refresh_token:
            token["refresh_token"] = self.tokens.refresh_token()
        return token

    def read_access_token(self, token: str) -> AccessRecord | None:
        """One of our access tokens (any audience, even expired), for revocation."""
        try:
            decoded = jwt.decode(token, self.keys.public_key_set(), algorithms=[SIGNING_ALG])
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        if claims.get("iss") != self.config.issuer or not isinstance(claims.get("jti"), str):
            return None
        family = claims.get(FAMILY_CLAIM)
        return AccessRecord(
            jti=claims["jti"],
            client_id=str(claims.get("client_id")),
            expires_at=int(claims.get("exp", 0)),
            family_id=family if isinstance(family, str) else None,
        )
