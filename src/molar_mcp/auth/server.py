"""The OAuth 2.1 authorization server as Starlette routes.

    GET  /.well-known/oauth-authorization-server   RFC 8414 metadata
    GET  /api/oauth/authorize                       login page, then consent page (HTML)
    POST /api/oauth/login                           sign in (CSRF-checked), back to /authorize
    POST /api/oauth/authorize                       the consent decision → redirect with code, state, iss
    POST /api/oauth/token                           authorization_code (PKCE S256) and refresh_token
    POST /api/oauth/register                        RFC 7591 dynamic client registration
    POST /api/oauth/revoke                          RFC 7009
    GET  /api/oauth/jwks                            the token verification keys

Handlers read the request (async), then hand it to authlib in a worker thread: authlib, argon2
and SQLite are synchronous, and CIMD fetches hop back onto the loop from there.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import anyio.to_thread
from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp

from molar_mcp.auth import config as paths
from molar_mcp.auth.authserver import (
    MolarAuthorizationServer,
    OAuthResult,
    PreparedJsonRequest,
    PreparedRequest,
)
from molar_mcp.auth.cimd import (
    ClientMetadataDocumentError,
    ClientMetadataResolver,
    looks_like_metadata_document_id,
)
from molar_mcp.auth.config import AuthConfig
from molar_mcp.auth.consent import ConsentTickets
from molar_mcp.auth.db import AuthDB
from molar_mcp.auth.keys import AuthKeys
from molar_mcp.auth.pages import consent_page, error_page, login_page, signed_out_page
from molar_mcp.auth.session import Session, SessionCookies, csrf_ok, new_session
from molar_mcp.auth.throttle import AuthThrottle
from molar_mcp.auth.tokens import GrantStore
from molar_mcp.auth.users import User
from molar_mcp.models.limits import loads_bounded

MAX_BODY_BYTES: Final = 64 * 1024
MAX_REGISTRATION_BYTES: Final = 8 * 1024  # client metadata is a few hundred bytes; the database keeps it
FORM_TYPE: Final = "application/x-www-form-urlencoded"
JSON_HEADERS: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}

Items = list[tuple[str, str]]


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or None if it is larger than `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


async def _read_form(request: Request) -> Items | None:
    """An urlencoded body as (name, value) pairs; None if it is not one (RFC 6749 §3.2 wants this type)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        return None
    body = await _read_body(request)
    if body is None:
        return None
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=JSON_HEADERS)


def _to_response(result: OAuthResult) -> Response:
    headers = dict(result.headers)
    headers.setdefault("Cache-Control", "no-store")
    content = json.dumps(result.body) if isinstance(result.body, dict) else (result.body or "")
    return Response(content, status_code=result.status, headers=headers)


class OAuthEndpoints:
    """The handlers, sharing one authlib server, one CIMD resolver and the session cookie codec."""

    def __init__(self, config: AuthConfig, db: AuthDB) -> None:
        self.config = config
        keys = AuthKeys.load_or_create(config.data_dir)
        self.resolver = ClientMetadataResolver(
            config.http_client_factory,
            clock=config.clock,
            max_bytes=config.cimd_max_bytes,
            timeout=config.cimd_timeout,
            cache_ttl=config.cimd_cache_ttl,
            max_entries=config.cimd_cache_max_entries,
            allow_private_hosts=config.cimd_allow_private_hosts,
            **({"resolve_host": config.cimd_resolve_host} if config.cimd_resolve_host else {}),
        )
        self.server = MolarAuthorizationServer(config, db, keys, self.resolver)
        self.keys = keys
        self.grants = GrantStore(db)
        self.cookies = SessionCookies(
            keys.session_key,
            ttl=config.session_ttl,
            secure=config.secure_cookies,
            clock=config.clock,
            revoked=self.grants.access_token_revoked,
        )
        self.consents = ConsentTickets(ttl=config.consent_ttl, clock=config.clock)
        self.throttle = AuthThrottle(config.throttle, config.clock)
        # Password hashing has its own threads: a sign-in flood cannot take the API's worker pool.
        self.hashing = anyio.CapacityLimiter(config.throttle.hashing_threads)

    # -- discovery --------------------------------------------------------------------------------
    async def metadata(self, request: Request) -> Response:
        return JSONResponse(self.server.metadata)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(self.keys.jwks())

    # -- authorization endpoint (HTML) --------------------------------------------------------------
    async def authorize(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._decide(request)
        return await self._show(request, request.url.query, self.cookies.load(request))

    async def _show(self, request: Request, query: str, session: Session | None) -> Response:
        items = parse_qsl(query, keep_blank_values=True)
        problem = await self._client_problem(items)
        if problem:
            return error_page("This application cannot sign in", problem)
        user = self._session_user(session)
        outcome = await anyio.to_thread.run_sync(self._consent_grant, self._request(paths.AUTHORIZE_PATH, items), user)
        if isinstance(outcome, Response):
            return outcome
        if user is None or session is None:
            session = session or new_session()
            response = login_page(authorize_query=query, csrf=session.csrf)
            self.cookies.store(response, session)
            return response
        return consent_page(
            client=outcome.request.client,
            user_email=user.email,
            scopes=outcome.request.scope.split(),
            redirect_uri=outcome.redirect_uri,
            authorize_query=query,
            csrf=session.csrf,
            ticket=self.consents.issue(user.id, query, items),
        )

    async def _decide(self, request: Request) -> Response:
        form = await _read_form(request)
        if form is None:
            return error_page("Bad request", "The form could not be read.")
        fields = dict(form)
        session = self.cookies.load(request)
        if not csrf_ok(session, fields.get("csrf_token")):
            return error_page("This page has expired", "Go back to the application and start again.", 403)
        query = fields.get("request", "")
        user = self._session_user(session)
        if user is None:
            return await self._show(request, query, session)
        # Only the request the page showed, once, by the person who saw it, within minutes.
        shown = self.consents.take(fields.get("consent_ticket", ""), user.id, parse_qsl(query, keep_blank_values=True))
        if shown is None:
            return error_page(
                "This page has expired",
                "This approval does not match the request that was shown, or was already used. "
                "Go back to the application and start again.",
                403,
            )
        oauth_request = self._request(paths.AUTHORIZE_PATH, parse_qsl(shown, keep_blank_values=True))
        approved = fields.get("decision") == "approve"
        return await anyio.to_thread.run_sync(self._authorization_response, oauth_request, user, approved)

    async def login(self, request: Request) -> Response:
        form = await _read_form(request)
        if form is None:
            return error_page("Bad request", "The form could not be read.")
        fields = dict(form)
        session = self.cookies.load(request)
        if session is None or not csrf_ok(session, fields.get("csrf_token")):
            return error_page("This page has expired", "Go back to the application and start again.", 403)
        query = fields.get("request", "")
        email = fields.get("email", "")[:320]
        address = request.client.host if request.client else "unknown"
        wait = self.throttle.login_retry_after(email, address)
        if wait is None and self.hashing.statistics().tasks_waiting >= self.config.throttle.hashing_queue:
            wait = 1  # more sign-ins waiting for a hashing thread than we let queue up
        if wait is not None:
            page = error_page(
                "Too many sign-in attempts",
                f"Sign-in is paused for this account or network; try again in {wait} s.",
                429,
            )
            page.headers["Retry-After"] = str(wait)
            return page
        self.throttle.login_attempt(email, address)
        user = await anyio.to_thread.run_sync(
            self.server.users.verify_password, email, fields.get("password", "")[:1024], limiter=self.hashing
        )
        if user is None:
            error = "That email and password do not match an account."
            return login_page(authorize_query=query, csrf=session.csrf, email=email, error=error)
        self.throttle.login_succeeded(email, address)
        # Only ever back to our own authorization endpoint: `request` is re-encoded as its query.
        target = f"{paths.AUTHORIZE_PATH}?{urlencode(parse_qsl(query, keep_blank_values=True))}"
        response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
        self.cookies.store(response, new_session(user.id))  # a new session (and CSRF token) at login
        return response

    async def logout(self, request: Request) -> Response:
        """Sign out: the session ends on the server (its cookie is refused from now on, wherever it was
        copied) and the browser drops the cookie."""
        session = self.cookies.load(request)
        if session is not None:
            now = int(self.config.clock())
            await anyio.to_thread.run_sync(
                lambda: self.grants.revoke_access_token(session.revocation_id, expires_at=session.expires_at, now=now)
            )
        page = signed_out_page()
        self.cookies.clear(page)
        return page

    # -- token, registration, revocation (JSON) -----------------------------------------------------
    async def token(self, request: Request) -> Response:
        form = await _read_form(request)
        if form is None:
            return _oauth_error("invalid_request", f"send the parameters as {FORM_TYPE}")
        result = await anyio.to_thread.run_sync(
            self.server.create_token_response, self._request(paths.TOKEN_PATH, form, request, "POST")
        )
        return _to_response(result)

    async def revoke(self, request: Request) -> Response:
        form = await _read_form(request)
        if form is None:
            return _oauth_error("invalid_request", f"send the parameters as {FORM_TYPE}")
        result = await anyio.to_thread.run_sync(
            self.server.create_endpoint_response,
            "revocation",
            self._request(paths.REVOKE_PATH, form, request, "POST"),
        )
        return _to_response(result)

    async def register(self, request: Request) -> Response:
        wait = self.throttle.registration_retry_after(request.client.host if request.client else "unknown")
        if wait is not None:
            response = _oauth_error("too_many_requests", f"too many client registrations; retry in {wait} s", 429)
            response.headers["Retry-After"] = str(wait)
            return response
        body = await _read_body(request, MAX_REGISTRATION_BYTES)
        if body is None:
            return _oauth_error(
                "invalid_client_metadata", f"client metadata is limited to {MAX_REGISTRATION_BYTES} bytes"
            )
        try:
            data = loads_bounded(body) if body is not None else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return _oauth_error("invalid_client_metadata", "send the client metadata as a JSON object")
        json_request = PreparedJsonRequest(self.config.url(paths.REGISTER_PATH), request.headers, data)
        result = await anyio.to_thread.run_sync(
            self.server.create_endpoint_response, "client_registration", json_request
        )
        return _to_response(result)

    # -- helpers ----------------------------------------------------------------------------------
    def _request(self, path: str, items: Items, request: Request | None = None, method: str = "GET") -> PreparedRequest:
        uri = self.config.url(path)
        if method == "GET" and items:
            uri = f"{uri}?{urlencode(items)}"
        headers = request.headers if request is not None else {}
        return PreparedRequest(method, uri, headers, items)

    def _session_user(self, session: Session | None) -> User | None:
        if session is None or session.user_id is None:
            return None
        return self.server.users.get(session.user_id)

    async def _client_problem(self, items: Sequence[tuple[str, str]]) -> str | None:
        """Why a URL client_id cannot be used, said to the person (never redirected: the client
        is not trusted yet)."""
        client_id = dict(items).get("client_id", "")
        if not looks_like_metadata_document_id(client_id):
            return None
        try:
            await self.resolver.resolve(client_id)
        except ClientMetadataDocumentError as exc:
            return f"Its client_id {client_id} was refused: {exc}."
        return None

    def _consent_grant(self, oauth_request: PreparedRequest, user: User | None) -> Any:
        try:
            return self.server.get_consent_grant(request=oauth_request, end_user=user)
        except OAuth2Error as error:
            return self._authorization_error(error)

    def _authorization_response(self, oauth_request: PreparedRequest, user: User, approved: bool) -> Response:
        grant = self._consent_grant(oauth_request, user)
        if isinstance(grant, Response):
            return grant
        result = self.server.create_authorization_response(
            request=oauth_request, grant_user=user if approved else None, grant=grant
        )
        return _to_response(result)

    def _authorization_error(self, error: Any) -> Response:
        if error.redirect_uri:
            # The client and redirect URI were verified: report back to the client (RFC 6749
            # §4.1.2.1), with `iss` (RFC 9207 §2).
            result = OAuthResult(*error())
            self.server.issuer_parameter.add_issuer_parameter(self.server, result)
            return _to_response(result)
        # Unknown client or unregistered redirect URI: tell the person, never redirect.
        return error_page("This sign-in request is not valid", error.description or error.error)


def _cors(handler: Callable[[Request], Awaitable[Response]], methods: list[str]) -> ASGIApp:
    # Browser-based MCP clients call these cross-origin; none of them uses cookies.
    return CORSMiddleware(
        request_response(handler),
        allow_origins=["*"],
        allow_methods=methods,
        allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"],
    )


def create_oauth_routes(config: AuthConfig, db: AuthDB) -> list[Route]:
    """The authorization server's routes, to mount at the root of the app serving `config.issuer`."""
    endpoints = OAuthEndpoints(config, db)
    read, write = ["GET", "OPTIONS"], ["POST", "OPTIONS"]
    return [
        Route(paths.AS_METADATA_PATH, _cors(endpoints.metadata, read), methods=read),
        Route(paths.JWKS_PATH, _cors(endpoints.jwks, read), methods=read),
        Route(paths.AUTHORIZE_PATH, endpoints.authorize, methods=["GET", "POST"]),
        Route(paths.LOGIN_PATH, endpoints.login, methods=["POST"]),
        Route(paths.LOGOUT_PATH, endpoints.logout, methods=["POST"]),
        Route(paths.TOKEN_PATH, _cors(endpoints.token, write), methods=write),
        Route(paths.REGISTER_PATH, _cors(endpoints.register, write), methods=write),
        Route(paths.REVOKE_PATH, _cors(endpoints.revoke, write), methods=write),
    ]
