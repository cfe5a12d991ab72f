"""Idempotent `POST /v1/traces/ingest`: a retry after a lost answer (same `Idempotency-Key`), or the same
upload sent again (same content), answers what the first upload answered and stores nothing twice.

The request's hash covers everything that decides what is stored: the file and its name, every
attachment, the `result` part and the form fields. Same key with another upload: 422. The first upload
still being ingested: the retry waits for its answer (up to `BUSY_WAIT_S`), then 409 with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from molar_mcp.api.context import ApiContext
from molar_mcp.api.errors import ApiError
from molar_mcp.store.ingest_keys import IngestKeys, KeyKind

T = TypeVar("T")

HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_LENGTH = 255
BUSY_WAIT_S = 30.0
BUSY_POLL_S = 0.2


class StillIngesting(Exception):
    """The first upload under this key or content is still being ingested after the wait."""


def idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not all(33 <= ord(c) < 127 for c in key):
        raise ApiError(
            400,
            "bad_request",
            f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} printable ASCII characters without spaces (a UUID, say)",
        )
    return key


def request_hash(fields: dict[str, str | None], parts: Sequence[tuple[str, str, bytes]]) -> str:
    """sha256 of the form fields and of each file part (field name, filename, bytes), length-prefixed."""
    digest = hashlib.sha256()
    header = json.dumps(sorted((k, v) for k, v in fields.items() if v is not None), separators=(",", ":"))
    digest.update(header.encode())
    for name, filename, data in parts:
        for piece in (name.encode(), filename.encode(), data):
            digest.update(len(piece).to_bytes(8, "big"))
            digest.update(piece)
    return digest.hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class IdempotentIngest:
    """One upload's claims: `begin` answers a replayed answer or claims the key and content; `done` records
    the answer under them; `failed` releases them."""

    def __init__(self, keys: IngestKeys, ctx: ApiContext, org: str, key: str | None, digest: str) -> None:
        self.keys = keys
        self.ctx = ctx
        self.org = org
        self.key = key
        self.digest = digest
        self.claimed: list[tuple[KeyKind, str]] = []

    def _claim(self, kind: KeyKind, ref: str) -> tuple[str, str | None]:
        claim = self.keys.claim(self.org, kind, ref, self.digest, _now_ms())
        return claim.state, claim.answer

    def _try(self) -> tuple[str, str | None]:
        if self.key is not None:
            state, answer = self._claim("key", self.key)
            if state == "conflict":
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    f"Idempotency-Key {self.key!r} was already used in this org for a different upload (another file, "
                    "attachment or field); send a new key for a new upload",
                )
            if state != "new":
                return state, answer
            self.claimed.append(("key", self.key))
        state, answer = self._claim("content", self.digest)
        if state == "new":
            self.claimed.append(("content", self.digest))
            return "new", None
        if state == "done" and answer is not None and self.key is not None:
            # The same upload sent before under another key (or none): this key answers it too.
            self.keys.settle(self.org, "key", self.key, self.digest, answer, _now_ms())
            self.claimed.clear()
            return "done", answer
        self.failed()  # busy: give back this key's claim while waiting
        return state, answer

    async def begin(self) -> str | None:
        """The first upload's answer (JSON text) to replay, or None: ingest it, then `done` or `failed`."""
        deadline = anyio.current_time() + BUSY_WAIT_S
        while True:
            state, answer = await anyio.to_thread.run_sync(self._try)
            if state == "new":
                return None
            if state == "done" and answer is not None:
                return answer
            if anyio.current_time() >= deadline:
                raise StillIngesting
            await anyio.sleep(BUSY_POLL_S)

    def done(self, answer: dict[str, Any]) -> None:
        text = json.dumps(answer, separators=(",", ":"))
        for kind, ref in self.claimed:
            self.keys.settle(self.org, kind, ref, self.digest, text, _now_ms())
        self.claimed.clear()

    def failed(self) -> None:
        for kind, ref in self.claimed:
            self.keys.release(self.org, kind, ref)
        self.claimed.clear()


async def run_idempotent(
    guard: IdempotentIngest, ingest: Callable[[], tuple[dict[str, Any], T]]
) -> tuple[dict[str, Any], T | None]:
    """`(answer, extra)`: this upload's answer and what `ingest` gave beside it, recorded for the next retry
    in the same worker thread as the ingest (a client that goes away mid-ingest cannot leave stored traces
    unrecorded); or the first upload's answer and None."""
    replayed = await guard.begin()
    if replayed is not None:
        body: dict[str, Any] = json.loads(replayed)
        return body, None

    def work() -> tuple[dict[str, Any], T]:
        try:
            answer, extra = ingest()
        except BaseException:
            guard.failed()
            raise
        guard.done(answer)
        return answer, extra

    return await anyio.to_thread.run_sync(work)
