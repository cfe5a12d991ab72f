"""Idempotent uploads (component "ingest_keys"): what `POST /v1/traces/ingest` answered, per org, under the
request's `Idempotency-Key` and under the hash of what it uploaded, so a retried or re-sent upload gets the
first answer and stores nothing twice.

A row is claimed (answer empty) before the upload is ingested and settled with the answer after, or
released when the ingest failed; a claim left by a process that died is taken over after `STALE_MS`.
Rows are kept `KEEP_MS` (7 days).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from molar_mcp.store.db import Database

INGEST_KEYS_MIGRATIONS: tuple[str, ...] = (
    # 1: claimed and answered uploads, by Idempotency-Key ("key") and by request hash ("content").
    """
    CREATE TABLE ingest_keys (
        org_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        answer TEXT,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (org_id, kind, ref)
    );
    CREATE INDEX ingest_keys_created ON ingest_keys(org_id, created_ms);
    """,
)

KEEP_MS = 7 * 24 * 3600 * 1000
STALE_MS = 10 * 60 * 1000

KeyKind = Literal["key", "content"]


@dataclass(frozen=True)
class Claim:
    """`new`: ingest it (then `settle` or `release`); `done`: the first answer; `busy`: the first upload is
    still being ingested; `conflict`: the key was used for a different upload."""

    state: Literal["new", "done", "busy", "conflict"]
    answer: str | None = None


class IngestKeys:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("ingest_keys", INGEST_KEYS_MIGRATIONS)

    def claim(self, org_id: str, kind: KeyKind, key: str, request_hash: str, now_ms: int) -> Claim:
        for attempt in range(2):
            try:
                return self._claim(org_id, kind, key, request_hash, now_ms)
            except sqlite3.IntegrityError:  # a concurrent claim inserted the row first: read it
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _claim(self, org_id: str, kind: KeyKind, key: str, request_hash: str, now_ms: int) -> Claim:
        with self.db.tx() as conn:
            conn.execute("DELETE FROM ingest_keys WHERE org_id = ? AND created_ms < ?", (org_id, now_ms - KEEP_MS))
            row = conn.execute(
                "SELECT request_hash, answer, created_ms FROM ingest_keys WHERE org_id = ? AND kind = ? AND ref = ?",
                (org_id, kind, key),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO ingest_keys (org_id, kind, ref, request_hash, answer, created_ms)"
                    " VALUES (?, ?, ?, ?, NULL, ?)",
                    (org_id, kind, key, request_hash, now_ms),
                )
                return Claim("new")
            stored_hash, answer, created = str(row[0]), row[1], int(row[2])
            if answer is None and created < now_ms - STALE_MS:  # its process died mid-ingest: take it over
                conn.execute(
                    "UPDATE ingest_keys SET request_hash = ?, created_ms = ? WHERE org_id = ? AND kind = ? AND ref = ?",
                    (request_hash, now_ms, org_id, kind, key),
                )
                return Claim("new")
            if stored_hash != request_hash:
                return Claim("conflict")
            if answer is None:
                return Claim("busy")
            return Claim("done", str(answer))

    def settle(self, org_id: str, kind: KeyKind, key: str, request_hash: str, answer: str, now_ms: int) -> None:
        """Record the answer (inserting the row when a replayed answer is recorded under a new key)."""
        with self.db.tx() as conn:
            updated = conn.execute(
                "UPDATE ingest_keys SET answer = ? WHERE org_id = ? AND kind = ? AND ref = ?",
                (answer, org_id, kind, key),
            ).rowcount
            if not updated:
                conn.execute(
                    "INSERT INTO ingest_keys (org_id, kind, ref, request_hash, answer, created_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (org_id, kind, key, request_hash, answer, now_ms),
                )

    def release(self, org_id: str, kind: KeyKind, key: str) -> None:
        """Forget an unanswered claim (the ingest failed: a retry may try again)."""
        with self.db.tx() as conn:
            conn.execute(
                "DELETE FROM ingest_keys WHERE org_id = ? AND kind = ? AND ref = ? AND answer IS NULL",
                (org_id, kind, key),
            )
