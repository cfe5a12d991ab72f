"""Request bodies of the /v1 API: JSON only, bounded, and validation errors worded once."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from molar_mcp.api.errors import ApiError
from molar_mcp.models.limits import JsonLimitError, loads_bounded

MAX_JSON_BYTES = 5 * 1024 * 1024


async def json_body(request: Request) -> Any:
    return parse_json(await json_bytes(request))


async def json_bytes(request: Request) -> bytes:
    """The bytes of a JSON body, checked for type and size (`parse_json` reads them, on any thread)."""
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is larger than {MAX_JSON_BYTES} bytes")
    if not hasattr(request, "_body"):
        # The usual body comes in one message: taken as it is (a live append's fixed cost matters in small
        # batches), and kept where `Request.body()` keeps it, so a later read gets it, not a second receive.
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        first: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            _too_large(len(first))
            request._body = first
            return first
    else:
        first = b""
    # A bytearray grows in place: `bytes +=` copied the whole body for every chunk, so a body sent in many
    # small pieces (a slow or hostile client's small TCP segments) cost time quadratic in its size.
    body = bytearray(first)
    async for chunk in request.stream():
        body += chunk
        _too_large(len(body))
    return bytes(body)


def _too_large(size: int) -> None:
    if size > MAX_JSON_BYTES:
        raise ApiError(413, "payload_too_large", f"the body is larger than {MAX_JSON_BYTES} bytes")


def parse_json(body: bytes) -> Any:
    """A client's JSON body, bounded (nesting, 64-bit integers); 400 with the reason otherwise."""
    try:
        return loads_bounded(body)
    except JsonLimitError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_request", f"the body is not JSON: {exc}") from None


def validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
