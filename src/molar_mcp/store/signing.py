"""HMAC-signed, expiring URLs for artifacts.

Keys live in `<data_dir>/signing-keys.json` (0600), newest first. Signing uses the newest; checking
accepts any listed key, so `rotate()` keeps URLs already handed out valid until they expire, and
`rotate(keep=1)` revokes every older URL at once.

Replicas on one database share the ring (`source`: it reads the ring the database holds). A replica
reads it again when a URL names a key it does not know (a key rotated in on another replica is accepted
at once; such reads happen at most once a second, so a made-up key id costs little), and before signing
or checking once `refresh_seconds` have passed since the last read (a rotation, or a revocation by
`keep=1`, reaches every replica within it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

DEFAULT_TTL_SECONDS = 3600
DEFAULT_REFRESH_SECONDS = 30.0
UNKNOWN_KID_REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes


class UrlSigner:
    def __init__(
        self,
        path: Path,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        source: Callable[[], bytes | None] | None = None,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
    ) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        self._source = source
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._keys = self._load()
        self._read_at = time.monotonic()  # the last read of the shared ring
        self._missed_at = -UNKNOWN_KID_REFRESH_SECONDS  # the last read for a key id this ring did not hold

    def _load(self) -> list[SigningKey]:
        if not self.path.exists():
            self._write([self._new_key()])
        raw = json.loads(self.path.read_text(encoding="utf-8"))
        return [SigningKey(k["kid"], bytes.fromhex(k["secret"])) for k in raw["keys"]]

    @staticmethod
    def _new_key() -> SigningKey:
        return SigningKey(secrets.token_hex(4), secrets.token_bytes(32))

    def _write(self, keys: list[SigningKey]) -> None:
        doc = {"keys": [{"kid": k.kid, "secret": k.secret.hex()} for k in keys]}
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.path)

    def refresh(self, *, if_older_than: float = 0.0, missed: bool = False) -> bool:
        """Read the shared ring again (when there is one and the last read — of a key id it did not hold,
        when `missed` — is older than `if_older_than` seconds); True when it was read."""
        if self._source is None:
            return False
        with self._lock:
            last = self._missed_at if missed else self._read_at
            if time.monotonic() - last < if_older_than:
                return False
            self._read_at = time.monotonic()
            if missed:
                self._missed_at = self._read_at
            try:
                doc = self._source()
            except Exception:  # the database away for a moment: keep the ring held
                return False
            if doc is None:
                return False
            raw = json.loads(doc)
            keys = [SigningKey(k["kid"], bytes.fromhex(k["secret"])) for k in raw["keys"]]
            if keys and keys != self._keys:
                self._write(keys)
                self._keys = keys
            return True

    def _fresh(self) -> None:
        if self._source is not None and time.monotonic() - self._read_at >= self._refresh_seconds:
            self.refresh(if_older_than=self._refresh_seconds)

    def rotate(self, *, keep: int = 2) -> str:
        """Add a new newest key; keep `keep` keys in all (≥ 1). Return the new key id."""
        keys = [self._new_key(), *self._keys][: max(1, keep)]
        self._write(keys)
        self._keys = keys
        return keys[0].kid

    @staticmethod
    def _mac(key: SigningKey, path: str, org_id: str, exp: int) -> str:
        message = f"{path}\n{org_id}\n{exp}".encode()
        return hmac.new(key.secret, message, hashlib.sha256).hexdigest()

    def sign(self, path: str, org_id: str, *, now: float | None = None) -> str:
        """`path` plus the query that makes it valid for `ttl_seconds` in `org_id`."""
        self._fresh()
        exp = int((now if now is not None else time.time()) + self.ttl_seconds)
        key = self._keys[0]
        query = urlencode({"org": org_id, "exp": exp, "kid": key.kid, "sig": self._mac(key, path, org_id, exp)})
        return f"{path}?{query}"

    def check(self, path: str, org_id: str, exp: str, kid: str, sig: str, *, now: float | None = None) -> str | None:
        """`None` when the URL is valid, else why not ("expired" or "invalid")."""
        if not exp.isdigit():
            return "invalid"
        self._fresh()
        key = next((k for k in self._keys if k.kid == kid), None)
        # Rotated on another replica? Read the ring again (a made-up key id costs one read a second at most).
        if key is None and self.refresh(if_older_than=UNKNOWN_KID_REFRESH_SECONDS, missed=True):
            key = next((k for k in self._keys if k.kid == kid), None)
        if key is None or not hmac.compare_digest(self._mac(key, path, org_id, int(exp)), sig):
            return "invalid"
        if int(exp) < (now if now is not None else time.time()):
            return "expired"
        return None
