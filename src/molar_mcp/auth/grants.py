"""authlib's grant and endpoint classes, specialised to our rules and stores.

authlib (rfc6749 grants, rfc7636 PKCE, rfc7009 revocation, rfc7591 registration, rfc9207 issuer)
does the protocol work; these subclasses add what it leaves to the application: storage, S256-only
PKCE, RFC 8707 resource indicators, refresh token rotation with reuse detection, and the token
format. They are synchronous, like authlib; `server.py` runs them in a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import InvalidRequestError, InvalidScopeError, OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge

from molar_mcp.auth.clients import MolarClientMetadataClaims
from molar_mcp.auth.db import new_id
from molar_mcp.auth.tokens import AccessRecord, CodeRecord, RefreshRecord

if TYPE_CHECKING:
    from molar_mcp.auth.authserver import MolarAuthorizationServer

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]  # authlib is untyped
    """RFC 8707 §2: the requested resource is unknown, or not the one that was granted."""

    error = "invalid_target"


def canonical_resource(uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE (RFC 7636) as OAuth 2.1 and the MCP spec want it: required, and S256 only."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        # A missing method means "plain" (RFC 7636 §4.3), which we do not accept.
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: MolarAuthorizationServer

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        try:
            self.request.resource = self.server.resolve_resource(self.request.payload.datalist.get("resource", []))
        except InvalidTargetError as error:
            error.redirect_uri = redirect_uri
            raise
        if not self.request.scope:
            self.request.scope = " ".join(self.server.config.default_scopes)
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        config = self.server.config
        data = request.payload.data
        record = CodeRecord(
            code_hash="",
            client_id=request.client.client_id,
            user_id=request.user.id,
            redirect_uri=request.payload.redirect_uri or "",
            scope=request.scope,
            resource=request.resource,
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
            expires_at=config.now() + config.code_ttl,
            used_at=None,
            family_id=None,
        )
        self.server.grants.save_code(code, record, now=config.now())

    def query_authorization_code(self, code: str, client: Any) -> CodeRecord | None:
        grants, now = self.server.grants, self.server.config.now()
        record = grants.peek_code(code)
        if record is None:
            return None
        if record.used_at is not None:
            # RFC 6749 §4.1.2: a code used twice is a leak; revoke what it was exchanged for.
            if record.family_id:
                grants.revoke_family(record.family_id, reason="authorization_code_reuse", now=now)
            return None
        if record.client_id != client.client_id or record.expires_at <= now:
            return None
        # Spent here, before PKCE is checked: a failed exchange also burns the code (single use).
        return record if grants.spend_code(record.code_hash, now=now) else None

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        """Nothing to do: the code was spent in `query_authorization_code` and its row is kept
        (hashed) so a replay can be recognised and its family revoked."""

    def authenticate_user(self, authorization_code: CodeRecord) -> Any:
        return self.server.users.get(authorization_code.user_id)

    def validate_token_request(self) -> None:
        super().validate_token_request()
        code: CodeRecord = self.request.authorization_code
        self.server.check_token_resource(self.request, granted=code.resource)

    def generate_token(self, user: Any = None, scope: Any = None, grant_type: Any = None, **kwargs: Any) -> Any:
        code: CodeRecord = self.request.authorization_code
        self.request.family_id = new_id("fam")
        return self.server.issue_tokens(
            self.request,
            user=user,
            scope=code.scope,
            resource=code.resource,
            include_refresh_token=kwargs.get("include_refresh_token", True),
        )


class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    """Refresh with rotation: every use returns a new refresh token and spends the old one."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: MolarAuthorizationServer

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        grants, now = self.server.grants, self.server.config.now()
        record = grants.peek_refresh_token(refresh_token)
        if record is None or record.family_revoked:
            return None
        if record.used_at is not None:
            # OAuth 2.1 §4.3.1: a rotated refresh token came back; one of the two holders is an
            # attacker, and we cannot tell which, so the whole family goes.
            grants.revoke_family(record.family_id, reason="refresh_token_reuse", now=now)
            return None
        client = self.request.client
        if client is None or record.client_id != client.client_id or record.expires_at <= now:
            return None
        requested = self.request.payload.scope
        if requested and not set(requested.split()) <= set(record.scope.split()):
            raise InvalidScopeError("a refresh may only narrow the granted scope")
        self.server.check_token_resource(self.request, granted=record.resource)
        if not grants.spend_refresh_token(record.token_hash, now=now):
            grants.revoke_family(record.family_id, reason="refresh_token_reuse", now=now)
            return None
        return record

    def authenticate_user(self, refresh_token: RefreshRecord) -> Any:
        return self.server.users.get(refresh_token.user_id)

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        """Already spent in `authenticate_refresh_token`."""

    def generate_token(self, user: Any = None, scope: Any = None, grant_type: Any = None, **kwargs: Any) -> Any:
        record: RefreshRecord = self.request.refresh_token
        self.request.family_id = record.family_id
        return self.server.issue_tokens(
            self.request,
            user=user,
            scope=scope or record.scope,
            resource=record.resource,
            include_refresh_token=True,
        )


class RevokeEndpoint(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009. A refresh token revokes its family (and so its access tokens, §2.1); an access
    token is put on the deny list until it expires."""

    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: MolarAuthorizationServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> RefreshRecord | AccessRecord | None:
        if token_type_hint != "access_token":  # noqa: S105  # a hint name
            record = self.server.grants.peek_refresh_token(token_string)
            if record is not None:
                return record
        return self.server.read_access_token(token_string)

    def revoke_token(self, token: RefreshRecord | AccessRecord, request: Any) -> None:
        grants, now = self.server.grants, self.server.config.now()
        if isinstance(token, RefreshRecord):
            grants.revoke_family(token.family_id, reason="revoked", now=now)
        else:
            grants.revoke_access_token(token.jti, expires_at=token.expires_at, now=now)


class RegisterEndpoint(ClientRegistrationEndpoint):  # type: ignore[misc]
    """RFC 7591 open registration. Public clients (token_endpoint_auth_method=none) get no secret."""

    server: MolarAuthorizationServer

    def __init__(self) -> None:
        super().__init__(claims_classes=[MolarClientMetadataClaims])

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration (RFC 7591 §3): anyone may register, users still consent

    def get_server_metadata(self) -> dict[str, Any]:
        return self.server.metadata

    def generate_client_id(self, request: Any) -> str:
        return new_id("mcpc")

    def generate_client_info(self, request: Any) -> dict[str, Any]:
        info: dict[str, Any] = super().generate_client_info(request)
        if request.payload.data.get("token_endpoint_auth_method") == "none":
            info.pop("client_secret", None)
            info.pop("client_secret_expires_at", None)
        return info

    def save_client(self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any) -> Any:
        return self.server.clients.save(
            client_info["client_id"],
            client_info.get("client_secret"),
            client_metadata,
            now=self.server.config.now(),
        )
