"""The login session of the authorization pages: a signed cookie, and CSRF tokens bound to it.

The cookie is a JWT (HS256, joserfc) signed with the session secret from the data dir. It is
HttpOnly (scripts cannot read it), SameSite=Lax (not sent on cross-site POSTs), Secure when the
issuer is https, and sent only to the paths that read it: /api/oauth (the sign-in pages) and /r
(the share viewer, for org-only shares), never to /v1 or the signed blob URLs. Every form carries
the session's CSRF token, which must match the one inside the signed cookie (the signed
double-submit pattern, OWASP CSRF cheat sheet):
a cross-site page can neither read nor forge it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE: Final = "molar_oauth_session"
_ALG: Final = "HS256"
# The one cookie is set once per path that reads it (a cookie has a single path).
COOKIE_PATHS: Final = ("/api/oauth", "/r")


@dataclass(frozen=True)
class Session:
    user_id: str | None
    csrf: str
    expires_at: int = 0  # when its cookie expires (0: not issued yet)

    @property
    def revocation_id(self) -> str:
        """The id under which signing out records this session as ended (its CSRF token is unique)."""
        return "session:" + hashlib.sha256(self.csrf.encode()).hexdigest()


def new_session(user_id: str | None = None) -> Session:
    """A fresh session (and CSRF token). Called at login too, so a session id never survives it."""
    return Session(user_id=user_id, csrf=secrets.token_urlsafe(24))


class SessionCookies:
    def __init__(
        self,
        key: OctKey,
        *,
        ttl: int,
        secure: bool,
        clock: Callable[[], float],
        revoked: Callable[[str], bool] | None = None,
    ) -> None:
        """`revoked(session.revocation_id)`: True for a session that was signed out (the cookie alone
        would stay good until it expires, even copied elsewhere)."""
        self._key = key
        self._ttl = ttl
        self._secure = secure
        self._clock = clock
        self._revoked = revoked

    def load(self, request: Request) -> Session | None:
        """The session in the request's cookie, if it is ours and not expired."""
        value = request.cookies.get(SESSION_COOKIE)
        if not value:
            return None
        try:
            token = jwt.decode(value, self._key, algorithms=[_ALG])
            jwt.JWTClaimsRegistry(
                now=lambda: int(self._clock()),
                exp={"essential": True},
                csrf={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError):
            return None
        user_id = token.claims.get("uid")
        session = Session(
            user_id=user_id if isinstance(user_id, str) else None,
            csrf=str(token.claims["csrf"]),
            expires_at=int(token.claims["exp"]),
        )
        if self._revoked is not None and self._revoked(session.revocation_id):
            return None
        return session

    def store(self, response: Response, session: Session) -> None:
        now = int(self._clock())
        claims = {"uid": session.user_id, "csrf": session.csrf, "iat": now, "exp": now + self._ttl}
        value = jwt.encode({"alg": _ALG}, claims, self._key, algorithms=[_ALG])
        for path in COOKIE_PATHS:
            response.set_cookie(
                SESSION_COOKIE, value, max_age=self._ttl, path=path, secure=self._secure, httponly=True, samesite="lax"
            )

    def clear(self, response: Response) -> None:
        """Sign out: the browser drops the cookie on every path it was set for."""
        for path in COOKIE_PATHS:
            response.delete_cookie(SESSION_COOKIE, path=path, secure=self._secure, httponly=True, samesite="lax")


def csrf_ok(session: Session | None, submitted: str | None) -> bool:
    if session is None or not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())
