"""Auth: an OAuth 2.1 authorization server, and the resource-server pieces for /mcp and /v1.

See docs/auth.md for how the parts fit together and which RFC each rule comes from.
"""

from molar_mcp.auth.apikeys import ApiKey, ApiKeyStore, CreatedApiKey
from molar_mcp.auth.config import (
    ALL_SCOPES,
    LOCAL_ORG_ID,
    SCOPE_DEBUG,
    SCOPE_DESCRIPTIONS,
    SCOPE_RUN,
    SCOPE_TRACE_READ,
    SCOPE_TRACE_WRITE,
    AuthConfig,
)
from molar_mcp.auth.db import AuthDB
from molar_mcp.auth.guard import McpScopeGuard, ScopePolicy
from molar_mcp.auth.keys import AuthKeys
from molar_mcp.auth.resource import (
    BearerGuard,
    ProtectedResource,
    create_protected_resource_routes,
    get_principal,
    insufficient_scope,
)
from molar_mcp.auth.server import create_oauth_routes
from molar_mcp.auth.users import User, UserExistsError, UserStore, generate_password
from molar_mcp.auth.verify import AnyVerifier, ApiKeyVerifier, BearerVerifier, JwtVerifier, Principal

__all__ = [
    "ALL_SCOPES",
    "LOCAL_ORG_ID",
    "SCOPE_DEBUG",
    "SCOPE_DESCRIPTIONS",
    "SCOPE_RUN",
    "SCOPE_TRACE_READ",
    "SCOPE_TRACE_WRITE",
    "AnyVerifier",
    "ApiKey",
    "ApiKeyStore",
    "ApiKeyVerifier",
    "AuthConfig",
    "AuthDB",
    "AuthKeys",
    "BearerGuard",
    "BearerVerifier",
    "CreatedApiKey",
    "JwtVerifier",
    "McpScopeGuard",
    "Principal",
    "ProtectedResource",
    "ScopePolicy",
    "User",
    "UserExistsError",
    "UserStore",
    "create_oauth_routes",
    "create_protected_resource_routes",
    "generate_password",
    "get_principal",
    "insufficient_scope",
]
