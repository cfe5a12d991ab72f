"""API keys for the /v1 REST API: `Authorization: Bearer molar_sk_…`.

A key is 32 random bytes (token_urlsafe), shown once at creation and stored as its SHA-256: a
plain hash is enough for a secret of that entropy (no KDF needed), and lets us look keys up by
hash. Each key is bound to one org and a set of scopes, and can be revoked.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from molar_mcp.auth.db import AuthDB, new_id, sha256_hex

API_KEY_PREFIX: Final = "molar_sk_"
# How much of the key is kept in clear so a person can tell keys apart in a list.
DISPLAY_PREFIX_LENGTH: Final = len(API_KEY_PREFIX) + 6


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    prefix: str
    scopes: frozenset[str]
    org_id: str
    created_by: str | None
    created_at: int
    revoked_at: int | None
    last_used_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class CreatedApiKey:
    """The result of `create`: the only time the plaintext `secret` exists outside the caller."""

    key: ApiKey
    secret: str


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


class ApiKeyStore:
    def __init__(self, db: AuthDB, *, scopes_supported: Iterable[str]) -> None:
        self._db = db
        self._scopes_supported = frozenset(scopes_supported)

    def create(
        self, *, name: str, org_id: str, scopes: Iterable[str], now: int, created_by: str | None = None
    ) -> CreatedApiKey:
        """Mint a key. Raises ValueError for an unknown scope or an empty scope set."""
        wanted = frozenset(scopes)
        unknown = wanted - self._scopes_supported
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
        if not wanted:
            raise ValueError("an API key needs at least one scope")
        secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id=new_id("key"),
            name=name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            scopes=wanted,
            org_id=org_id,
            created_by=created_by,
            created_at=now,
            revoked_at=None,
            last_used_at=None,
        )
        self._db.execute(
            "INSERT INTO api_keys (id, name, prefix, key_hash, scopes, org_id, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.name,
                key.prefix,
                sha256_hex(secret),
                json.dumps(sorted(wanted)),
                org_id,
                created_by,
                now,
            ),
        )
        return CreatedApiKey(key=key, secret=secret)

    def list_keys(self, org_id: str, *, include_revoked: bool = False) -> list[ApiKey]:
        sql = "SELECT * FROM api_keys WHERE org_id = ?"
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        return [_key(row) for row in self._db.fetch_all(sql + " ORDER BY created_at, id", (org_id,))]

    def revoke(self, key_id: str, *, org_id: str, now: int) -> bool:
        """Revoke a key of `org_id`. False if there is no such active key in that org."""
        changed = self._db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND org_id = ? AND revoked_at IS NULL",
            (now, key_id, org_id),
        )
        return changed == 1

    def verify(self, secret: str, *, now: int) -> ApiKey | None:
        """The active key whose plaintext is `secret`, or None (unknown, malformed or revoked)."""
        if not looks_like_api_key(secret):
            return None
        row = self._db.fetch_one("SELECT * FROM api_keys WHERE key_hash = ?", (sha256_hex(secret),))
        if row is None or row["revoked_at"] is not None:
            return None
        self._db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, row["id"]))
        return _key(row)


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=frozenset(json.loads(row["scopes"])),
        org_id=row["org_id"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
