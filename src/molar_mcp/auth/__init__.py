"""Auth: an OAuth 2.1 authorization server, and the resource-server pieces for /mcp and /v1.

See docs/auth.md for how the parts fit together and which RFC each rule comes from.

Names load on first use (PEP 562): `molar-mcp keys create` needs the key store, not the resource-server
pieces, which import the MCP SDK (~2 s of CPU here).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "ALL_SCOPES": "molar_mcp.auth.config",
    "AnyVerifier": "molar_mcp.auth.verify",
    "ApiKey": "molar_mcp.auth.apikeys",
    "ApiKeyStore": "molar_mcp.auth.apikeys",
    "ApiKeyVerifier": "molar_mcp.auth.verify",
    "AuthConfig": "molar_mcp.auth.config",
    "AuthDB": "molar_mcp.auth.db",
    "AuthKeys": "molar_mcp.auth.keys",
    "BearerGuard": "molar_mcp.auth.resource",
    "BearerVerifier": "molar_mcp.auth.verify",
    "CreatedApiKey": "molar_mcp.auth.apikeys",
    "JwtVerifier": "molar_mcp.auth.verify",
    "LOCAL_ORG_ID": "molar_mcp.auth.config",
    "McpScopeGuard": "molar_mcp.auth.guard",
    "Principal": "molar_mcp.auth.verify",
    "ProtectedResource": "molar_mcp.auth.resource",
    "SCOPE_DEBUG": "molar_mcp.auth.config",
    "SCOPE_DESCRIPTIONS": "molar_mcp.auth.config",
    "SCOPE_RUN": "molar_mcp.auth.config",
    "SCOPE_TRACE_READ": "molar_mcp.auth.config",
    "SCOPE_TRACE_WRITE": "molar_mcp.auth.config",
    "ScopePolicy": "molar_mcp.auth.guard",
    "User": "molar_mcp.auth.users",
    "UserExistsError": "molar_mcp.auth.users",
    "UserStore": "molar_mcp.auth.users",
    "create_oauth_routes": "molar_mcp.auth.server",
    "create_protected_resource_routes": "molar_mcp.auth.resource",
    "generate_password": "molar_mcp.auth.users",
    "get_principal": "molar_mcp.auth.resource",
    "insufficient_scope": "molar_mcp.auth.resource",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


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
