"""The one typed client of the /v1 API (an `httpx2.AsyncClient` is injected)."""

from molar_mcp.client.trace_client import (
    ApiClientError,
    BadRequestError,
    ForbiddenError,
    HeaderAuth,
    NotFoundError,
    TraceClient,
    TraceFilters,
    UnavailableError,
)

__all__ = [
    "ApiClientError",
    "BadRequestError",
    "ForbiddenError",
    "HeaderAuth",
    "NotFoundError",
    "TraceClient",
    "TraceFilters",
    "UnavailableError",
]
