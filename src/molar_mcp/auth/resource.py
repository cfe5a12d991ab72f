"""Resource-server side: RFC 9728 metadata, bearer challenges, and the /v1 bearer guard.

How a protected resource (the /mcp endpoint, the /v1 API) tells clients where to get a token,
reads the token (RFC 6750 §2.1 header only: a token in the URL is refused, §2.3 and OAuth 2.1
§5.2), and answers 401/403 with `WWW-Authenticate` (RFC 6750 §3, RFC 9728 §5.1).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from molar_mcp.auth.config import PRM_PATH
from molar_mcp.auth.verify import BearerVerifier, Principal

PRINCIPAL_STATE_KEY: Final = "principal"
_current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("molar_principal", default=None)


def get_principal() -> Principal | None:
    """The caller of the current request, set by `McpScopeGuard` / `BearerGuard`. The SDK carries
    context variables into tool handlers, so MCP tools can call this directly."""
    return _current_principal.get()


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current_principal.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    _current_principal.reset(token)


@dataclass(frozen=True)
class ProtectedResource:
    """One resource server: its identifier (the token audience) and what a 401 asks for."""

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...]
    # The scope= of a 401: what a client should ask for to use this resource at all.
    challenge_scopes: tuple[str, ...]
    resource_name: str | None = None

    @property
    def metadata_path(self) -> str:
        """RFC 9728 §3.1: the well-known suffix goes between the host and the resource's path."""
        return PRM_PATH + urlsplit(self.resource).path.rstrip("/")

    @property
    def metadata_url(self) -> str:
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}{self.metadata_path}"

    def metadata(self) -> dict[str, Any]:
        """The RFC 9728 §2 document."""
        document: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": list(self.authorization_servers),
            "scopes_supported": list(self.scopes_supported),
            "bearer_methods_supported": ["header"],
        }
        if self.resource_name:
            document["resource_name"] = self.resource_name
        return document


def create_protected_resource_routes(
    resources: Sequence[ProtectedResource], *, root: ProtectedResource | None = None
) -> list[Route]:
    """Metadata routes for each resource at /.well-known/oauth-protected-resource/<path>, and the
    bare /.well-known/oauth-protected-resource for `root` (default: the first resource), which
    clients that do not insert the path try last."""
    routes: list[Route] = []
    root = root or (resources[0] if resources else None)
    for resource in resources:
        paths = [resource.metadata_path]
        if resource is root and resource.metadata_path != PRM_PATH:
            paths.append(PRM_PATH)
        for path in paths:
            routes.append(Route(path, _metadata_endpoint(resource.metadata()), methods=["GET", "OPTIONS"]))
    return routes


def _metadata_endpoint(document: dict[str, Any]) -> ASGIApp:
    async def endpoint(request: Request) -> Response:
        return JSONResponse(document)

    return CORSMiddleware(
        request_response(endpoint),
        allow_origins=["*"],
        allow_methods=["GET", "OPTIONS"],
        allow_headers=["MCP-Protocol-Version"],
    )


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(
    resource: ProtectedResource,
    *,
    error: str | None = None,
    description: str | None = None,
    scopes: Iterable[str] | None = None,
) -> str:
    """A `WWW-Authenticate: Bearer …` value (RFC 6750 §3) naming the metadata (RFC 9728 §5.1)."""
    params = [f"resource_metadata={_quote(resource.metadata_url)}"]
    if error:
        params.append(f"error={_quote(error)}")
    if description:
        params.append(f"error_description={_quote(description)}")
    scope_list = list(scopes if scopes is not None else resource.challenge_scopes)
    if scope_list:
        params.append(f"scope={_quote(' '.join(scope_list))}")
    return "Bearer " + ", ".join(params)


def challenge_response(
    resource: ProtectedResource,
    status: int,
    *,
    error: str | None = None,
    description: str | None = None,
    scopes: Iterable[str] | None = None,
) -> Response:
    """401 (no or bad token), 400 (malformed request) or 403 (insufficient_scope) with a challenge."""
    text = description or "a bearer token is required"
    # `error_description` for OAuth clients (RFC 6750), `message` as every other error of the API says it.
    body = {"error": error or "unauthorized", "error_description": text, "message": text}
    header = bearer_challenge(resource, error=error, description=description, scopes=scopes)
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"WWW-Authenticate": header, "Cache-Control": "no-store"},
    )


def insufficient_scope(resource: ProtectedResource, required: Iterable[str]) -> Response:
    """403 naming every scope the operation needs (RFC 6750 §3.1; MCP step-up authorization)."""
    needed = sorted(set(required))
    return challenge_response(
        resource,
        403,
        error="insufficient_scope",
        description=f"this call needs the scopes: {' '.join(needed)}",
        scopes=needed,
    )


def bearer_token(scope: Scope) -> tuple[str | None, str | None]:
    """(token, problem): the Authorization header's bearer token, or why the request is refused."""
    query = scope.get("query_string", b"").decode("latin-1")
    if any(name == "access_token" for name, _ in parse_qsl(query, keep_blank_values=True)):
        return None, "send the token in the Authorization header, never in the URL"
    values = [value for name, value in scope.get("headers", []) if name.lower() == b"authorization"]
    if not values:
        return None, None
    if len(values) > 1:
        return None, "send exactly one Authorization header"
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, None
    return token.strip(), None


def authenticate(
    scope: Scope, verifier: BearerVerifier, resource: ProtectedResource
) -> tuple[Principal | None, str | None, Response | None]:
    """(principal, token, refusal): exactly one of principal or refusal is set."""
    token, problem = bearer_token(scope)
    if problem:
        return None, None, challenge_response(resource, 400, error="invalid_request", description=problem)
    if token is None:
        # RFC 6750 §3.1: no error code when the request carried no credentials.
        return None, None, challenge_response(resource, 401)
    principal = verifier.verify(token)
    if principal is None:
        return (
            None,
            token,
            challenge_response(
                resource,
                401,
                error="invalid_token",
                description="the token is expired, revoked, or not for this resource",
            ),
        )
    return principal, token, None


class BearerGuard:
    """ASGI middleware for the /v1 API: only authenticated requests pass, with the Principal in
    `request.state.principal` and `get_principal()`. Scope checks are per route: the API layer
    answers `insufficient_scope(resource, needed)` when `principal.has_scopes(needed)` is false."""

    def __init__(self, app: ASGIApp, verifier: BearerVerifier, resource: ProtectedResource) -> None:
        self._app = app
        self._verifier = verifier
        self._resource = resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self._app(scope, receive, send)
            return
        principal, _, refusal = authenticate(scope, self._verifier, self._resource)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        assert principal is not None
        scope = dict(scope)
        scope["state"] = {**scope.get("state", {}), PRINCIPAL_STATE_KEY: principal}
        token = set_principal(principal)
        try:
            await self._app(scope, receive, send)
        finally:
            reset_principal(token)
