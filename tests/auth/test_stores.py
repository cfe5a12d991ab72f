"""The auth database, users, API keys and key files, without HTTP."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST

from molar_mcp.auth import ALL_SCOPES, LOCAL_ORG_ID, ApiKeyStore, AuthDB, AuthKeys, UserExistsError, UserStore
from molar_mcp.auth.db import MIGRATIONS
from molar_mcp.auth.users import InvalidPasswordError


@pytest.fixture
def db(tmp_path: Path) -> AuthDB:
    return AuthDB.open(tmp_path / "auth.sqlite3")


def test_the_database_is_migrated_once_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "auth.sqlite3"
    first = AuthDB.open(path)
    assert first.schema_version == len(MIGRATIONS)
    first.close()
    again = AuthDB.open(path)  # re-opening applies nothing twice
    assert again.schema_version == len(MIGRATIONS)
    row = again.fetch_one("PRAGMA journal_mode")
    assert row is not None
    assert row[0] == "wal"


def test_users_are_created_with_argon2id_and_checked_by_password(db: AuthDB) -> None:
    users = UserStore(db, PasswordHasher.from_parameters(CHEAPEST))
    user = users.create("Ada@Example.test", "a long password", now=1)
    stored = db.fetch_one("SELECT password_hash FROM users WHERE id = ?", (user.id,))
    assert stored is not None
    assert stored[0].startswith("$argon2id$")
    assert user.org_id == LOCAL_ORG_ID
    assert users.verify_password("ada@example.test", "a long password") == user  # emails ignore case
    assert users.verify_password("ada@example.test", "wrong password") is None
    assert users.verify_password("nobody@example.test", "a long password") is None
    with pytest.raises(UserExistsError):
        users.create("ada@example.test", "another password", now=2)
    with pytest.raises(InvalidPasswordError):
        users.create("bob@example.test", "short", now=2)


def test_api_keys_are_shown_once_stored_hashed_scoped_and_revocable(db: AuthDB) -> None:
    keys = ApiKeyStore(db, scopes_supported=ALL_SCOPES)
    created = keys.create(name="ci", org_id=LOCAL_ORG_ID, scopes=["mcp:trace:read", "mcp:run"], now=10)
    assert created.secret.startswith("molar_sk_")
    assert len(created.secret) > 40
    assert created.key.prefix == created.secret[: len(created.key.prefix)]
    assert db.fetch_one("SELECT 1 FROM api_keys WHERE key_hash = ?", (created.secret,)) is None  # never in clear
    verified = keys.verify(created.secret, now=11)
    assert verified is not None
    assert verified.scopes == {"mcp:trace:read", "mcp:run"}
    assert [k.id for k in keys.list_keys(LOCAL_ORG_ID)] == [created.key.id]
    assert keys.revoke(created.key.id, org_id="org_other", now=12) is False  # org-bound
    assert keys.revoke(created.key.id, org_id=LOCAL_ORG_ID, now=12) is True
    assert keys.verify(created.secret, now=13) is None
    assert keys.list_keys(LOCAL_ORG_ID) == []
    assert keys.verify("molar_sk_unknown", now=13) is None
    with pytest.raises(ValueError, match="unknown scopes"):
        keys.create(name="x", org_id=LOCAL_ORG_ID, scopes=["admin"], now=14)


def test_keys_are_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    first = AuthKeys.load_or_create(tmp_path)
    second = AuthKeys.load_or_create(tmp_path)
    assert first.kid == second.kid
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "d" not in first.jwks()["keys"][0]
