"""`GET /openapi.json`: the OpenAPI 3.1 document of the /v1 API, generated from the app's own route
table and the pydantic models the handlers serve, so it cannot drift from what runs.

A handler declares what it takes and returns with `@documented(...)`; a route without a declaration
still appears, with its docstring's first line and a generic answer, so nothing served is missing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from molar_mcp import __version__
from molar_mcp.api.errors import ApiError
from molar_mcp.models import ErrorBody

F = TypeVar("F", bound=Callable[..., Any])
_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")
_ERROR_TEXT = {
    400: "Invalid query parameter or body",
    401: "No credential, or not a valid one (WWW-Authenticate says where to get one)",
    403: "Wrong org or insufficient scope",
    404: "Not found in this org",
    409: "Conflict (e.g. the trace is cold, finished, or the seq is taken)",
    410: "Gone (the share expired)",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation error",
    429: "Rate limit or debugger budget exhausted (Retry-After)",
    501: "Not offered by this server's configuration (e.g. direct uploads without an object store)",
    503: "Not available now (e.g. an analysis that did not finish: the message says why and what to call)",
}


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    where: Literal["query", "header"] = "query"
    required: bool = False


@dataclass(frozen=True)
class Doc:
    summary: str
    response: type[BaseModel] | None = None
    status: int = 200
    body: type[BaseModel] | None = None
    multipart: dict[str, dict[str, Any]] | None = None
    media_type: str = "application/json"
    query: Sequence[Param] = ()
    errors: Sequence[int] = (400, 404)
    tags: Sequence[str] = ("trace",)
    extra: dict[str, Any] = field(default_factory=dict)


def documented(**kwargs: Any) -> Callable[[F], F]:
    """Attach the OpenAPI description of a handler (see `Doc`). A handler that declares its query
    parameters refuses any other with 400, naming it (a misspelt filter must not be ignored)."""

    def mark(fn: F) -> F:
        doc = Doc(**kwargs)
        allowed = frozenset(p.name for p in doc.query if p.where == "query")
        if not allowed:
            fn.__openapi__ = doc  # type: ignore[attr-defined]
            return fn

        @functools.wraps(fn)
        async def checked(request: Request, *args: Any, **kw: Any) -> Any:
            unknown = sorted(set(request.query_params) - allowed)
            if unknown:
                raise ApiError(
                    400,
                    "bad_request",
                    f"unknown query parameter {', '.join(unknown)}; this route takes {', '.join(sorted(allowed))}",
                )
            return await fn(request, *args, **kw)

        checked.__openapi__ = doc  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return mark


def string(enum: Sequence[str] | None = None, fmt: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = list(enum)
    if fmt:
        schema["format"] = fmt
    return schema


def integer(minimum: int | None = None, maximum: int | None = None, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for key, value in (("minimum", minimum), ("maximum", maximum), ("default", default)):
        if value is not None:
            schema[key] = value
    return schema


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        for name, sub in schema.pop("$defs", {}).items():
            self.components.setdefault(name, sub)
        self.components.setdefault(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(route: Route, method: str, schemas: _Schemas, error_ref: dict[str, Any]) -> dict[str, Any]:
    doc: Doc | None = getattr(route.endpoint, "__openapi__", None)
    first_line = (route.endpoint.__doc__ or route.name or "").strip().splitlines()[0:1]
    summary = doc.summary if doc else (first_line[0] if first_line else route.path)
    op: dict[str, Any] = {"summary": summary, "operationId": f"{method.lower()}_{route.name}"}
    op["tags"] = list(doc.tags) if doc else (["trace"] if route.path.startswith("/v1/") else ["ops"])
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(name, {"type": "string"})}
        for name in _PATH_PARAM.findall(route.path)
    ]
    if doc:
        params += [
            {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema, "description": p.description}
            for p in doc.query
        ]
    if params:
        op["parameters"] = params
    if doc and doc.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schemas.ref(doc.body)}}}
    elif doc and doc.multipart is not None:
        required = [k for k, v in doc.multipart.items() if v.get("x-required")]
        properties = {k: {n: x for n, x in v.items() if n != "x-required"} for k, v in doc.multipart.items()}
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": required}}
            },
        }
    ok: dict[str, Any] = {"description": "Success"}
    if doc and doc.response is not None:
        ok["content"] = {doc.media_type: {"schema": schemas.ref(doc.response)}}
    elif doc and doc.media_type == "text/event-stream":
        ok["content"] = {doc.media_type: {"schema": _SSE_EVENT}}
    elif doc and doc.media_type != "application/json":
        ok["content"] = {doc.media_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(doc.status if doc else 200): ok}
    for code in doc.errors if doc else (400, 404):
        responses[str(code)] = {
            "description": _ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": error_ref}},
        }
    if route.path.startswith("/v1/"):
        responses.setdefault(
            "429", {"description": _ERROR_TEXT[429], "content": {"application/json": {"schema": error_ref}}}
        )
    if not _public(route.path):
        # A server with authentication (`serve` without --no-auth) asks every call here for a credential.
        op["security"] = [{"bearer": []}]
        for status in (401, 403):
            responses.setdefault(
                str(status),
                {"description": _ERROR_TEXT[status], "content": {"application/json": {"schema": error_ref}}},
            )
    op["responses"] = responses
    if doc and doc.extra:
        op.update(doc.extra)
    return op


# What the server enforces on path parameters, stated (it answers 400 otherwise).
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "64 lowercase hex characters"},
}
# One Server-Sent Event as clients parse it (WHATWG HTML "Server-sent events"): the stream is a sequence.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "description": "JSON text (an event, a status or a message part)"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
# Routes without a credential (api/auth.py PUBLIC_PATHS, PUBLIC_PREFIXES; kept here to avoid an import cycle).
_PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
_PUBLIC_PREFIXES = ("/r/", "/v1/signed/")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _public(path: str) -> bool:
    return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def _bound_integers(node: Any) -> None:
    """Every integer the server reads is a 64-bit integer (a larger one is refused with 400/422): say so."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("minimum", INT64_MIN)
            node.setdefault("maximum", INT64_MAX)
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    schemas = _Schemas()
    error_ref = schemas.ref(ErrorBody)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route) or route.path == "/openapi.json":
            continue
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(route, method, schemas, error_ref)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Molar Trace API",
            "version": __version__,
            "description": "The trace store's REST API (/v1). Errors are {error, message, request_id} with an "
            "x-request-id header.",
        },
        "tags": [{"name": "trace", "description": "Traces, events, artifacts and live ingest"}, {"name": "ops"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key or an OAuth access token"}
            },
        },
    }
    _bound_integers(document)
    return document


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(request.app.routes))


def routes() -> list[Route]:
    return [Route("/openapi.json", openapi, methods=["GET"])]
