"""Grants and tokens at rest, and the JWT access tokens we mint.

One *family* per authorization: the code, every refresh token rotated from it, and every access
token minted from those (their `fid` claim) belong to it. Reusing a spent code (RFC 6749 §4.1.2)
or a rotated refresh token (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2) revokes the whole family, which
also stops its access tokens at our resource servers.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from typing import Final

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, TokenMixin
from joserfc import jwt

from molar_mcp.auth.config import AuthConfig
from molar_mcp.auth.db import AuthDB, new_id, sha256_hex
from molar_mcp.auth.keys import SIGNING_ALG, AuthKeys
from molar_mcp.auth.users import User

FAMILY_CLAIM: Final = "fid"
ORG_CLAIM: Final = "org_id"
CODE_RETENTION: Final = 24 * 3600


@dataclass(frozen=True)
class CodeRecord(AuthorizationCodeMixin):  # type: ignore[misc]  # authlib is untyped
    code_hash: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str
    resource: str
    code_challenge: str
    code_challenge_method: str
    expires_at: int
    used_at: int | None
    family_id: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class RefreshRecord(TokenMixin):  # type: ignore[misc]
    token_hash: str
    family_id: str
    client_id: str
    user_id: str
    scope: str
    resource: str
    expires_at: int
    used_at: int | None
    family_revoked: bool

    def check_client(self, client: object) -> bool:
        return getattr(client, "client_id", None) == self.client_id

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class AccessRecord(TokenMixin):  # type: ignore[misc]
    """A verified access token presented for revocation (RFC 7009)."""

    jti: str
    client_id: str
    expires_at: int
    family_id: str | None

    def check_client(self, client: object) -> bool:
        return getattr(client, "client_id", None) == self.client_id


class GrantStore:
    """Codes, families and refresh tokens. Secrets are stored as SHA-256 only."""

    def __init__(self, db: AuthDB) -> None:
        self._db = db

    # -- authorization codes ---------------------------------------------------------------
    def save_code(self, code: str, record: CodeRecord, *, now: int) -> None:
        # Spent and expired codes are kept a day so a late replay is still recognised, then dropped.
        self._db.execute("DELETE FROM auth_codes WHERE expires_at < ?", (now - CODE_RETENTION,))
        self._db.execute(
            "INSERT INTO auth_codes (code_hash, client_id, user_id, redirect_uri, scope, resource,"
            " code_challenge, code_challenge_method, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                sha256_hex(code),
                record.client_id,
                record.user_id,
                record.redirect_uri,
                record.scope,
                record.resource,
                record.code_challenge,
                record.code_challenge_method,
                now,
                record.expires_at,
            ),
        )

    def peek_code(self, code: str) -> CodeRecord | None:
        row = self._db.fetch_one("SELECT * FROM auth_codes WHERE code_hash = ?", (sha256_hex(code),))
        return _code(row) if row else None

    def spend_code(self, code_hash: str, *, now: int) -> bool:
        """Mark a code used. False if someone spent it first (a concurrent replay)."""
        return (
            self._db.execute(
                "UPDATE auth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL", (now, code_hash)
            )
            == 1
        )

    # -- families -------------------------------------------------------------------------------
    def create_family(
        self,
        family_id: str,
        *,
        client_id: str,
        user_id: str,
        scope: str,
        resource: str,
        code_hash: str | None,
        now: int,
    ) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO token_families (id, client_id, user_id, scope, resource, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (family_id, client_id, user_id, scope, resource, now),
            )
            if code_hash is not None:
                conn.execute("UPDATE auth_codes SET family_id = ? WHERE code_hash = ?", (family_id, code_hash))

    def revoke_family(self, family_id: str, *, reason: str, now: int) -> None:
        self._db.execute(
            "UPDATE token_families SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL",
            (now, reason, family_id),
        )

    def family_revoked(self, family_id: str) -> bool:
        row = self._db.fetch_one("SELECT revoked_at FROM token_families WHERE id = ?", (family_id,))
        return row is None or row["revoked_at"] is not None

    # -- refresh tokens ---------------------------------------------------------------------------
    def add_refresh_token(self, token: str, *, family_id: str, now: int, ttl: int) -> None:
        self._db.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (sha256_hex(token), family_id, now, now + ttl),
        )

    def peek_refresh_token(self, token: str) -> RefreshRecord | None:
        row = self._db.fetch_one(
            "SELECT r.token_hash, r.family_id, r.expires_at, r.used_at, f.client_id, f.user_id, f.scope,"
            " f.resource, f.revoked_at FROM refresh_tokens r JOIN token_families f ON f.id = r.family_id"
            " WHERE r.token_hash = ?",
            (sha256_hex(token),),
        )
        if row is None:
            return None
        return RefreshRecord(
            token_hash=row["token_hash"],
            family_id=row["family_id"],
            client_id=row["client_id"],
            user_id=row["user_id"],
            scope=row["scope"],
            resource=row["resource"],
            expires_at=row["expires_at"],
            used_at=row["used_at"],
            family_revoked=row["revoked_at"] is not None,
        )

    def spend_refresh_token(self, token_hash: str, *, now: int) -> bool:
        """Mark a refresh token rotated. False if it was already spent (a replay)."""
        return (
            self._db.execute(
                "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
                (now, token_hash),
            )
            == 1
        )

    # -- access tokens ----------------------------------------------------------------------------
    def revoke_access_token(self, jti: str, *, expires_at: int, now: int) -> None:
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM revoked_access_tokens WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT OR IGNORE INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?)",
                (jti, expires_at),
            )

    def access_token_revoked(self, jti: str) -> bool:
        return self._db.fetch_one("SELECT 1 FROM revoked_access_tokens WHERE jti = ?", (jti,)) is not None


def _code(row: sqlite3.Row) -> CodeRecord:
    return CodeRecord(
        code_hash=row["code_hash"],
        client_id=row["client_id"],
        user_id=row["user_id"],
        redirect_uri=row["redirect_uri"],
        scope=row["scope"],
        resource=row["resource"],
        code_challenge=row["code_challenge"],
        code_challenge_method=row["code_challenge_method"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        family_id=row["family_id"],
    )


class TokenIssuer:
    """Mints RFC 9068 JWT access tokens (typ at+jwt, ES256) and opaque refresh tokens."""

    def __init__(self, config: AuthConfig, keys: AuthKeys) -> None:
        self._config = config
        self._keys = keys

    def access_token(self, *, client_id: str, user: User, scope: str, resource: str, family_id: str) -> str:
        now = self._config.now()
        claims = {
            "iss": self._config.issuer,
            "sub": user.id,
            # RFC 8707 §2 / RFC 9068 §3: the audience is the resource the client asked for.
            "aud": resource,
            "client_id": client_id,
            "iat": now,
            "exp": now + self._config.access_token_ttl,
            "jti": new_id("at"),
            "scope": scope,
            ORG_CLAIM: user.org_id,
            FAMILY_CLAIM: family_id,
        }
        header = {"alg": SIGNING_ALG, "typ": "at+jwt", "kid": self._keys.kid}
        return jwt.encode(header, claims, self._keys.signing_key, algorithms=[SIGNING_ALG])

    @staticmethod
    def refresh_token() -> str:
        return secrets.token_urlsafe(32)
