"""The auth database: its own SQLite file (WAL), versioned migrations, one lock.

Kept apart from the trace store on purpose: credentials have another lifecycle, another backup
policy, and must never be reachable through the trace store port. Every secret that is looked up
(client secrets, codes, refresh tokens, API keys) is stored as its SHA-256, never in clear.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

# Each entry is one schema version; `PRAGMA user_version` records how many were applied.
# Append only: never edit a migration that has shipped.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        org_id        TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE clients (
        client_id   TEXT PRIMARY KEY,
        secret_hash TEXT,
        metadata    TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE token_families (
        id            TEXT PRIMARY KEY,
        client_id     TEXT NOT NULL,
        user_id       TEXT NOT NULL REFERENCES users(id),
        scope         TEXT NOT NULL,
        resource      TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        revoked_at    INTEGER,
        revoke_reason TEXT
    );
    CREATE TABLE auth_codes (
        code_hash             TEXT PRIMARY KEY,
        client_id             TEXT NOT NULL,
        user_id               TEXT NOT NULL REFERENCES users(id),
        redirect_uri          TEXT NOT NULL,
        scope                 TEXT NOT NULL,
        resource              TEXT NOT NULL,
        code_challenge        TEXT NOT NULL,
        code_challenge_method TEXT NOT NULL,
        created_at            INTEGER NOT NULL,
        expires_at            INTEGER NOT NULL,
        used_at               INTEGER,
        family_id             TEXT REFERENCES token_families(id)
    );
    CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        family_id  TEXT NOT NULL REFERENCES token_families(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
    CREATE TABLE revoked_access_tokens (
        jti        TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        prefix       TEXT NOT NULL,
        key_hash     TEXT NOT NULL UNIQUE,
        scopes       TEXT NOT NULL,
        org_id       TEXT NOT NULL,
        created_by   TEXT,
        created_at   INTEGER NOT NULL,
        revoked_at   INTEGER,
        last_used_at INTEGER
    );
    CREATE INDEX api_keys_org ON api_keys(org_id);
    """,
)

AUTH_DB_FILE: Final = "auth.sqlite3"  # in the data dir, for the embedded store


def sha256_hex(value: str) -> str:
    """The lookup hash of a high-entropy secret (codes, tokens, keys). Passwords use argon2 instead."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class AuthDB:
    """One SQLite connection shared by the auth package, serialised by a lock.

    Calls are short indexed lookups, so callers may make them from the event loop; the OAuth
    endpoints run them in a worker thread together with the rest of their (synchronous) work.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path | str) -> AuthDB:
        """Open (creating if needed) the database at `path` and apply pending migrations."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        db = cls(conn)
        db.migrate()
        return db

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def migrate(self) -> None:
        with self._lock:
            current = self.schema_version
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                # executescript commits first; the whole step plus the version bump is one transaction.
                try:
                    self._conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
                except sqlite3.Error:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE): all statements in the block commit or none do."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns the number of rows changed."""
        with self.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())
