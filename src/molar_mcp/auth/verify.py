"""Bearer credential verification: our JWT access tokens and `molar_sk_` API keys → a Principal.

A resource server accepts a JWT only if the signature is ours, `typ` is at+jwt, it has not
expired, `iss` is our issuer and `aud` is exactly this resource (RFC 9068 §4, RFC 8707). The grant
store adds what a JWT alone cannot say: the token or its family was revoked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server.auth.provider import AccessToken

from molar_mcp.auth.apikeys import ApiKeyStore, looks_like_api_key
from molar_mcp.auth.config import AuthConfig
from molar_mcp.auth.db import AuthDB
from molar_mcp.auth.keys import SIGNING_ALG, AuthKeys
from molar_mcp.auth.tokens import FAMILY_CLAIM, ORG_CLAIM, GrantStore


@dataclass(frozen=True)
class Principal:
    """Who is calling, for which org, with which scopes. The MCP and /v1 layers only see this."""

    subject: str
    org_id: str
    scopes: frozenset[str]
    client_id: str | None
    kind: Literal["oauth", "api_key", "internal"]
    credential_id: str  # the JWT's jti, the API key's id, or "internal"
    expires_at: int | None
    issuer: str | None = None
    audience: str | None = None

    def missing_scopes(self, required: Iterable[str]) -> frozenset[str]:
        return frozenset(required) - self.scopes

    def has_scopes(self, required: Iterable[str]) -> bool:
        return not self.missing_scopes(required)

    def to_access_token(self, token: str) -> AccessToken:
        """The SDK's view of this principal (session ownership, request-state binding)."""
        claims: dict[str, object] = {"org_id": self.org_id, "kind": self.kind}
        if self.issuer:
            claims["iss"] = self.issuer
        return AccessToken(
            token=token,
            client_id=self.client_id or self.credential_id,
            scopes=sorted(self.scopes),
            expires_at=self.expires_at,
            resource=self.audience,
            subject=self.subject,
            claims=claims,
        )


class BearerVerifier(Protocol):
    """Turns a bearer credential into a Principal, or None if it is not valid here."""

    def verify(self, token: str) -> Principal | None: ...


class JwtVerifier:
    """Verifies our RFC 9068 access tokens for one audience."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySet,
        grants: GrantStore | None = None,
        clock: Callable[[], float] = time.time,
        leeway: int = 0,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._keys = keys
        self._grants = grants
        self._clock = clock
        self._leeway = leeway

    @classmethod
    def for_audience(cls, config: AuthConfig, db: AuthDB, audience: str) -> JwtVerifier:
        """A verifier for one of `config.resources`, checking revocation in `db`."""
        if audience not in config.resources:
            raise ValueError(f"{audience!r} is not one of the configured resources")
        return cls(
            issuer=config.issuer,
            audience=audience,
            keys=AuthKeys.load_or_create(config.data_dir).public_key_set(),
            grants=GrantStore(db),
            clock=config.clock,
        )

    def verify(self, token: str) -> Principal | None:
        if looks_like_api_key(token):
            return None
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[SIGNING_ALG])
        except (JoseError, ValueError):
            return None
        # RFC 9068 §4: the resource server MUST check typ is at+jwt (no ID tokens, no other JWTs).
        if str(decoded.header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
            return None
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
            client_id={"essential": True},
            org_id={"essential": True},
        )
        claims = decoded.claims
        try:
            registry.validate(claims)
        except JoseError:
            return None
        jti = str(claims["jti"])
        family = claims.get(FAMILY_CLAIM)
        if self._grants is not None and (
            self._grants.access_token_revoked(jti) or (isinstance(family, str) and self._grants.family_revoked(family))
        ):
            return None
        scope = claims.get("scope")
        return Principal(
            subject=str(claims["sub"]),
            org_id=str(claims[ORG_CLAIM]),
            scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            client_id=str(claims["client_id"]),
            kind="oauth",
            credential_id=jti,
            expires_at=int(claims["exp"]),
            issuer=self._issuer,
            audience=self._audience,
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        """The SDK's `TokenVerifier` protocol, for code that wants the SDK's own middleware."""
        principal = self.verify(token)
        return principal.to_access_token(token) if principal else None


class ApiKeyVerifier:
    """Verifies `molar_sk_…` API keys."""

    def __init__(self, store: ApiKeyStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def verify(self, token: str) -> Principal | None:
        key = self._store.verify(token, now=int(self._clock()))
        if key is None:
            return None
        return Principal(
            subject=key.created_by or key.id,
            org_id=key.org_id,
            scopes=key.scopes,
            client_id=None,
            kind="api_key",
            credential_id=key.id,
            expires_at=None,
        )


class AnyVerifier:
    """The first verifier that accepts the credential wins (e.g. API keys, then JWTs for /v1)."""

    def __init__(self, *verifiers: BearerVerifier) -> None:
        self._verifiers = verifiers

    def verify(self, token: str) -> Principal | None:
        for verifier in self._verifiers:
            principal = verifier.verify(token)
            if principal is not None:
                return principal
        return None
