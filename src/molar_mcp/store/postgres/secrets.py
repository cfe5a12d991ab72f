"""Secrets every replica must hold alike, kept in the database: the OAuth token-signing key and session
secret, the internal credential, the artifact URL signing keys and the MCP request-state key.

Each lives in the replica's data dir as a file (where the embedded store keeps it, and where the code that
reads it looks). On start, under an advisory lock: files are written from the database; what the
database lacks is created locally (by the usual code) and stored, so the first replica's secrets become
everyone's."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from molar_mcp.store.postgres.db import PgDatabase

_LOCK = 0x6D6F6C6173  # pg_advisory_xact_lock key of the secrets exchange

_TABLE = "CREATE TABLE IF NOT EXISTS shared_secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL, updated_ms BIGINT)"


def share_secrets(db: PgDatabase, data_dir: Path, names: Iterable[str], create: Callable[[], None]) -> None:
    names = list(names)
    data_dir.mkdir(parents=True, exist_ok=True)
    with db.pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(_TABLE)
        stored = dict(conn.execute("SELECT name, value FROM shared_secrets WHERE name = ANY(%s)", (names,)).fetchall())
        for name, value in stored.items():
            _write(data_dir / name, bytes(value))
        create()
        for name in names:
            path = data_dir / name
            if name not in stored and path.is_file():
                conn.execute(
                    "INSERT INTO shared_secrets (name, value, updated_ms) VALUES (%s, %s, 0)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, path.read_bytes()),
                )


def store_secret(db: PgDatabase, data_dir: Path, name: str) -> None:
    """After a rotation: the local file becomes every replica's (the artifact URL signers of running
    replicas read it again: `UrlSigner`'s `source`)."""
    with db.pool.connection() as conn, conn.transaction():
        conn.execute(_TABLE)
        conn.execute(
            "INSERT INTO shared_secrets (name, value, updated_ms)"
            " VALUES (%s, %s, (extract(epoch FROM now()) * 1000)::bigint)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms",
            (name, (data_dir / name).read_bytes()),
        )


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def secret_source(db: PgDatabase, name: str) -> Callable[[], bytes | None]:
    """A function that reads secret `name` as the database holds it now (None: not there)."""

    def read() -> bytes | None:
        with db.pool.connection() as conn:
            row = conn.execute("SELECT value FROM shared_secrets WHERE name = %s", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    return read


_MARKS = "CREATE TABLE IF NOT EXISTS store_marks (name TEXT PRIMARY KEY, value TEXT NOT NULL, created_ms BIGINT)"


def marked(db: PgDatabase, name: str) -> bool:
    """Whether something done once per database (the demo data, say) is done."""
    with db.pool.connection() as conn:
        conn.execute(_MARKS)
        return conn.execute("SELECT 1 FROM store_marks WHERE name = %s", (name,)).fetchone() is not None


def mark(db: PgDatabase, name: str, value: str) -> None:
    with db.pool.connection() as conn:
        conn.execute(_MARKS)
        conn.execute(
            "INSERT INTO store_marks (name, value, created_ms)"
            " VALUES (%s, %s, (extract(epoch FROM now()) * 1000)::bigint)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )


@contextmanager
def exclusive(db: PgDatabase, what: str) -> Iterator[None]:
    """One replica at a time does `what` (a session advisory lock on a connection of its own)."""
    key = int.from_bytes(hashlib.sha256(f"molar:{what}".encode()).digest()[:7], "big")
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
