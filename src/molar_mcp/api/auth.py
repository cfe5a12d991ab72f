"""Who may call the /v1 API, as which org, with which scopes.

Credentials, in order:
- `x-internal-token` (the MCP server and other trusted services): the caller names the org
  (`x-molar-org`), the acting subject (`x-molar-subject`) and the scopes (`x-molar-scopes`) it acts
  with. The MCP server never forwards its client's token; it sends this instead (MCP-NOTES.md).
- `Authorization: Bearer molar_sk_…` (API keys) or an OAuth access token for the /v1 audience.

Then every route needs a scope (`required_scopes`): 403 `insufficient_scope` naming it when the
principal lacks it, and 403 when `x-molar-org` names an org other than the principal's.
Public: health, the OpenAPI document, signed URLs (the signature is the credential) and the share
viewer (it checks the share itself). `/metrics` needs a credential with trace:read, like any read.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from molar_mcp.api.errors import error_response
from molar_mcp.auth import (
    SCOPE_DEBUG,
    SCOPE_RUN,
    SCOPE_TRACE_READ,
    SCOPE_TRACE_WRITE,
    BearerVerifier,
    Principal,
    ProtectedResource,
    insufficient_scope,
)
from molar_mcp.auth.resource import PRINCIPAL_STATE_KEY, authenticate, reset_principal, set_principal

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
PUBLIC_PREFIXES = ("/r/", "/v1/signed/")
INTERNAL_SUBJECT = "internal"
SESSION_ORG_STATE_KEY = "session_org"


@dataclass(frozen=True)
class ApiAuth:
    verifier: BearerVerifier
    resource: ProtectedResource
    internal_token: str
    # The org of the browser session (the authorization server's login cookie), for the share viewer.
    session_org: Callable[[Request], str | None] | None = None


def required_scopes(method: str, path: str) -> tuple[str, ...]:
    """The scope a /v1 call needs: reads need trace:read; the debugger debug; replays run; writes write."""
    if path.endswith(("/replay", "/promote-fix")) or (method != "GET" and path.startswith("/v1/replays")):
        return (SCOPE_RUN,)
    if path.endswith("/analyze") or "/chats" in path or (method != "GET" and path.startswith("/v1/incidents")):
        return (SCOPE_DEBUG,)
    if method in ("GET", "HEAD"):
        return (SCOPE_TRACE_READ,)
    return (SCOPE_TRACE_WRITE,)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def internal_principal(scope: Scope) -> Principal:
    org = _header(scope, b"x-molar-org") or "org_local"
    scopes = frozenset((_header(scope, b"x-molar-scopes") or "").split())
    return Principal(
        subject=_header(scope, b"x-molar-subject") or INTERNAL_SUBJECT,
        org_id=org,
        scopes=scopes,
        client_id=None,
        kind="internal",
        credential_id="internal",
        expires_at=None,
    )


class ApiAuthMiddleware:
    def __init__(self, app: ASGIApp, auth: ApiAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.auth.session_org is not None:
            scope = dict(scope)
            scope["state"] = {**scope.get("state", {}), SESSION_ORG_STATE_KEY: self.auth.session_org}
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        internal = _header(scope, b"x-internal-token")
        if internal is not None:
            if not hmac.compare_digest(internal.encode(), self.auth.internal_token.encode()):
                await _forbidden("the internal token is not valid")(scope, receive, send)
                return
            principal = internal_principal(scope)
        else:
            found, _, challenge = authenticate(scope, self.auth.verifier, self.auth.resource)
            if challenge is not None:
                await challenge(scope, receive, send)
                return
            assert found is not None
            principal = found
        needed = required_scopes(scope["method"], path)
        if not principal.has_scopes(needed):
            await insufficient_scope(self.auth.resource, needed)(scope, receive, send)
            return
        asked_org = _header(scope, b"x-molar-org")
        if principal.kind != "internal" and asked_org and asked_org != principal.org_id:
            await _forbidden(f"this credential belongs to another org than {asked_org!r}")(scope, receive, send)
            return
        scope = dict(scope)
        scope["state"] = {**scope.get("state", {}), PRINCIPAL_STATE_KEY: principal}
        token = set_principal(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_principal(token)


def _forbidden(message: str) -> ASGIApp:
    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(Request(scope), 403, "forbidden", message)(scope, receive, send)

    return respond
