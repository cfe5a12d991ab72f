"""Errors of the /v1 API: one `{error, message, request_id}` shape, mapped once at this boundary."""

from __future__ import annotations

import logging
import re
import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from molar_mcp.ingest import BundleError
from molar_mcp.store import InvalidCursor, TraceNotFound
from molar_mcp.store.live import EventConflict, TraceNotRunning
from molar_mcp.store.port import IngestInterrupted, TooManyEvents
from molar_mcp.store.tiers import TraceIsCold

log = logging.getLogger("molar_mcp.api")

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_BUNDLE_STATUS = {
    "unsupported_media_type": 415,
    "bad_bundle": 400,
    "unsafe_path": 400,
    "payload_too_large": 413,
    "validation_error": 422,
    "unsupported_version": 422,
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def request_id_of(request: Request) -> str:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else ""


def error_response(request: Request, status: int, error: str, message: str) -> JSONResponse:
    rid = request_id_of(request)
    return JSONResponse(
        {"error": error, "message": message, "request_id": rid},
        status_code=status,
        headers={REQUEST_ID_HEADER: rid} if rid else None,
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.error, exc.message)


async def _not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TraceNotFound)
    return error_response(
        request, 404, "not_found", f"no trace {exc.trace_ref!r} in this org; GET /v1/traces lists them"
    )


async def _bad_cursor(request: Request, exc: Exception) -> Response:
    return error_response(request, 400, "bad_request", str(exc))


async def _bundle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BundleError)
    return error_response(request, _BUNDLE_STATUS[exc.kind], exc.kind, exc.message)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    return error_response(request, exc.status_code, code, message)


async def _too_many_events(request: Request, exc: Exception) -> Response:
    return error_response(request, 413, "payload_too_large", str(exc))


async def _ingest_interrupted(request: Request, exc: Exception) -> Response:
    # The server's own trouble, not the upload's (store/port.py): nothing was stored; the same upload may come again.
    log.error("an ingest stopped in %s %s: %s", request.method, request.url.path, exc)
    answer = error_response(request, 503, "ingest_interrupted", str(exc))
    answer.headers["retry-after"] = "5"
    return answer


async def _conflict(request: Request, exc: Exception) -> Response:
    return error_response(request, 409, "conflict", str(exc))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(
        request, 500, "internal_error", "unexpected server error; quote the request id when reporting it"
    )


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    TraceNotFound: _not_found,
    InvalidCursor: _bad_cursor,
    BundleError: _bundle,
    HTTPException: _http,
    TraceNotRunning: _conflict,
    TraceIsCold: _conflict,
    EventConflict: _conflict,
    TooManyEvents: _too_many_events,
    IngestInterrupted: _ingest_interrupted,
    Exception: _unexpected,
}


class RequestIdMiddleware:
    """Give every request an id (the caller's `x-request-id` when well-formed) and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for key, value in scope.get("headers", []):
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
        rid = incoming if _CLIENT_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
