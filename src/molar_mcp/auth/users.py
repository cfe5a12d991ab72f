"""Local accounts: create a user, check a password. Passwords are hashed with argon2id.

argon2id (RFC 9106) is memory-hard; `argon2-cffi` picks RFC 9106 parameters by default and
`check_needs_rehash` lets us raise them later without a migration.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from molar_mcp.auth.config import LOCAL_ORG_ID
from molar_mcp.auth.db import AuthDB, new_id

MIN_PASSWORD_LENGTH = 8


class UserExistsError(Exception):
    """A user with this email already exists."""


class InvalidPasswordError(ValueError):
    """The password does not meet the minimum rules."""


@dataclass(frozen=True)
class User:
    id: str
    email: str
    org_id: str
    created_at: int

    def get_user_id(self) -> str:  # authlib's user protocol
        return self.id


def generate_password() -> str:
    """A random password for `users create` without `--password` (shown once, never stored)."""
    return secrets.token_urlsafe(18)


class UserStore:
    """Users of this install. All of them belong to `org_local`."""

    def __init__(self, db: AuthDB, hasher: PasswordHasher | None = None) -> None:
        self._db = db
        self._hasher = hasher or PasswordHasher()
        # A valid hash to verify against when the email is unknown, so a miss costs as much as a hit.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def create(self, email: str, password: str, *, org_id: str = LOCAL_ORG_ID, now: int) -> User:
        """Create a user. Raises `UserExistsError` or `InvalidPasswordError`."""
        email = email.strip()
        if "@" not in email or len(email) > 320:
            raise ValueError(f"not an email address: {email!r}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidPasswordError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
        user = User(id=new_id("usr"), email=email, org_id=org_id, created_at=now)
        try:
            self._db.execute(
                "INSERT INTO users (id, email, password_hash, org_id, created_at) VALUES (?, ?, ?, ?, ?)",
                (user.id, user.email, self._hasher.hash(password), user.org_id, user.created_at),
            )
        except sqlite3.IntegrityError as exc:
            raise UserExistsError(f"a user with email {email!r} already exists") from exc
        return user

    def get(self, user_id: str) -> User | None:
        row = self._db.fetch_one("SELECT id, email, org_id, created_at FROM users WHERE id = ?", (user_id,))
        return _user(row) if row else None

    def get_by_email(self, email: str) -> User | None:
        row = self._db.fetch_one("SELECT id, email, org_id, created_at FROM users WHERE email = ?", (email.strip(),))
        return _user(row) if row else None

    def all(self) -> list[User]:
        rows = self._db.fetch_all("SELECT id, email, org_id, created_at FROM users ORDER BY created_at, email")
        return [_user(row) for row in rows]

    def verify_password(self, email: str, password: str) -> User | None:
        """The user if `password` is theirs, else None. Slow on purpose (argon2); run it off the loop."""
        row = self._db.fetch_one(
            "SELECT id, email, org_id, created_at, password_hash FROM users WHERE email = ?",
            (email.strip(),),
        )
        stored = row["password_hash"] if row else self._dummy_hash
        try:
            self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self._hasher.check_needs_rehash(stored):
            self._db.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (self._hasher.hash(password), row["id"])
            )
        return _user(row)


def _user(row: sqlite3.Row) -> User:
    return User(id=row["id"], email=row["email"], org_id=row["org_id"], created_at=row["created_at"])
