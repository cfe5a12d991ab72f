"""Key material kept in the data dir: the token signing key (EC P-256) and the session secret.

Both are created on first use with mode 0600 and read back on every start, so tokens and login
sessions survive restarts. The signing key's `kid` is its RFC 7638 thumbprint, published in the
JWKS (RFC 7517) so any resource server can verify our tokens.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from joserfc.jwk import ECKey, KeySet, OctKey

SIGNING_KEY_FILE: Final = "oauth-signing-key.pem"
SESSION_SECRET_FILE: Final = "oauth-session-secret"  # noqa: S105  # a file name
SIGNING_ALG: Final = "ES256"


def _read_or_create(path: Path, create: Any) -> bytes:
    """Return the file's bytes, creating it atomically (O_EXCL, 0600) with `create()` if missing."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data: bytes = create()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data


@dataclass(frozen=True)
class AuthKeys:
    """The signing key (private, with `kid`) and the HMAC key of the session cookie."""

    signing_key: ECKey
    session_key: OctKey

    @classmethod
    def load_or_create(cls, data_dir: Path) -> AuthKeys:
        pem = _read_or_create(
            data_dir / SIGNING_KEY_FILE,
            lambda: ECKey.generate_key("P-256").as_pem(private=True),
        )
        signing_key = ECKey.import_key(pem)
        signing_key.ensure_kid()
        secret = _read_or_create(data_dir / SESSION_SECRET_FILE, lambda: secrets.token_bytes(32))
        return cls(signing_key=signing_key, session_key=OctKey.import_key(secret))

    @property
    def kid(self) -> str:
        kid = self.signing_key.kid
        assert kid is not None  # set by ensure_kid()
        return kid

    def public_key_set(self) -> KeySet:
        """The verification keys, as resource servers see them."""
        public = ECKey.import_key(self.signing_key.as_dict(private=False))
        return KeySet([public])

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set document served at /api/oauth/jwks (public parts only)."""
        key = dict(self.signing_key.as_dict(private=False))
        key.update({"use": "sig", "alg": SIGNING_ALG})
        return {"keys": [key]}
