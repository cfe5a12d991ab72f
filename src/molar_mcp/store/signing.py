"""HMAC-signed, expiring URLs for artifacts.

Keys live in `<data_dir>/signing-keys.json` (0600), newest first. Signing uses the newest; checking
accepts any listed key, so `rotate()` keeps URLs already handed out valid until they expire, and
`rotate(keep=1)` revokes every older URL at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

DEFAULT_TTL_SECONDS = 3600


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes


class UrlSigner:
    def __init__(self, path: Path, *, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        self._keys = self._load()

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
        exp = int((now if now is not None else time.time()) + self.ttl_seconds)
        key = self._keys[0]
        query = urlencode({"org": org_id, "exp": exp, "kid": key.kid, "sig": self._mac(key, path, org_id, exp)})
        return f"{path}?{query}"

    def check(self, path: str, org_id: str, exp: str, kid: str, sig: str, *, now: float | None = None) -> str | None:
        """`None` when the URL is valid, else why not ("expired" or "invalid")."""
        if not exp.isdigit():
            return "invalid"
        key = next((k for k in self._keys if k.kid == kid), None)
        if key is None or not hmac.compare_digest(self._mac(key, path, org_id, int(exp)), sig):
            return "invalid"
        if int(exp) < (now if now is not None else time.time()):
            return "expired"
        return None
