"""Pin, unpin and share a trace: `POST /v1/traces/{id}/pin`, `/unpin`, `/share`; `DELETE …/share` revokes.

A share is read at `GET /r/{short_id}` (`api/viewer.py`); the URL answered here points there.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from molar_mcp.api.bodies import parse_json
from molar_mcp.api.context import api_context, org_of
from molar_mcp.api.errors import ApiError
from molar_mcp.api.openapi import documented
from molar_mcp.models.sharing import PinResponse, RevokeShareResponse, ShareRequest, ShareResponse

MAX_SHARE_BODY = 4096


async def _pin(request: Request, pinned: bool) -> JSONResponse:
    ctx = api_context(request)
    org, trace_ref = org_of(request), request.path_params["trace_id"]
    state = await anyio.to_thread.run_sync(ctx.sharing.pin, org, trace_ref, pinned)
    return JSONResponse(PinResponse(pinned=state).model_dump())


@documented(summary="Pin a trace (retention keeps it hot)", response=PinResponse)
async def pin(request: Request) -> JSONResponse:
    return await _pin(request, True)


@documented(summary="Unpin a trace", response=PinResponse)
async def unpin(request: Request) -> JSONResponse:
    return await _pin(request, False)


async def _share_body(request: Request) -> Any:
    """The JSON body; an empty one means "all defaults" (org-only, 7 days)."""
    too_large = ApiError(413, "payload_too_large", f"the body is larger than {MAX_SHARE_BODY} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_SHARE_BODY:
        raise too_large
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SHARE_BODY:
            raise too_large
    if not body.strip():
        return {}
    # Media types are case-insensitive (RFC 9110 §8.3.1).
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    return parse_json(body)


@documented(
    summary="Share a trace read-only at /r/{short_id}: org-only or public-read, 1-365 days (default org-only, 7)",
    response=ShareResponse,
    body=ShareRequest,
    errors=(400, 404, 413, 415, 422),
)
async def share(request: Request) -> JSONResponse:
    ctx = api_context(request)
    org, trace_ref = org_of(request), request.path_params["trace_id"]
    raw = await _share_body(request)
    try:
        body = ShareRequest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(
            422,
            "validation_error",
            f"{where}: {err['msg']} (visibility is org-only or public-read; expires_days 1-365)",
        ) from None
    made = await anyio.to_thread.run_sync(lambda: ctx.sharing.share(org, trace_ref, body.visibility, body.expires_days))
    url = str(request.base_url).rstrip("/") + f"/r/{made.short_id}"
    response = ShareResponse(short_id=made.short_id, url=url, visibility=made.visibility, expires_at=made.expires_at)
    return JSONResponse(response.model_dump(mode="json"))


@documented(
    summary="Revoke the share of a trace: its /r/{short_id} link answers 410 until it is shared again",
    response=RevokeShareResponse,
    errors=(404,),
)
async def revoke_share(request: Request) -> JSONResponse:
    ctx = api_context(request)
    org, trace_ref = org_of(request), request.path_params["trace_id"]
    revoked = await anyio.to_thread.run_sync(lambda: ctx.sharing.revoke(org, trace_ref))
    return JSONResponse(RevokeShareResponse(revoked=revoked).model_dump())


def routes() -> list[Route]:
    return [
        Route("/v1/traces/{trace_id}/pin", pin, methods=["POST"]),
        Route("/v1/traces/{trace_id}/unpin", unpin, methods=["POST"]),
        Route("/v1/traces/{trace_id}/share", share, methods=["POST"]),
        Route("/v1/traces/{trace_id}/share", revoke_share, methods=["DELETE"]),
    ]
