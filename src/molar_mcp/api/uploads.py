"""`POST /v1/uploads`: a presigned PUT URL of the object store for a large file (an artifact-heavy
trace.zip, a report), so its bytes go from the reporter straight to the bucket, not through a replica
and its proxy. The key is the org's and the file's SHA-256 (`orgs/<org>/uploads/<sha[:2]>/<sha>`); the
URL expires after `UPLOAD_TTL_SECONDS`. `POST /v1/traces/ingest` with `file_sha256` then ingests it: the
bytes are read from the bucket and checked against the sha256 before anything is stored.

A server whose blobs are on its own disk (the embedded store, `file://`) has no object store to hand
out: it answers 501 `not_implemented`, saying to send the file in the ingest request itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from molar_mcp.api.bodies import json_body, validation_message
from molar_mcp.api.context import api_context, org_of
from molar_mcp.api.errors import ApiError
from molar_mcp.api.openapi import documented
from molar_mcp.models.uploads import UploadRequest, UploadTicket

UPLOAD_TTL_SECONDS = 900


@documented(
    summary="Get a presigned URL to upload a large file straight to the object store, then ingest it by sha256",
    body=UploadRequest,
    response=UploadTicket,
    status=201,
    errors=(400, 413, 415, 422, 501),
)
async def create_upload(request: Request) -> JSONResponse:
    ctx = api_context(request)
    raw = await json_body(request)
    try:
        wanted = UploadRequest.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_message(exc)) from None
    if wanted.size > ctx.max_bundle_bytes:
        raise ApiError(
            413, "payload_too_large", f"the file is {wanted.size} bytes; the limit is {ctx.max_bundle_bytes} bytes"
        )
    org = org_of(request)
    blobs = ctx.blob_store
    url = (
        None
        if blobs is None
        else await anyio.to_thread.run_sync(
            lambda: blobs.presigned_put(wanted.sha256, org, size=wanted.size, ttl=UPLOAD_TTL_SECONDS)
        )
    )
    if url is None:
        raise ApiError(
            501,
            "not_implemented",
            "this server keeps files on its own disk (no object store: --blob-url s3://…), so there is no "
            "direct upload; send the file in POST /v1/traces/ingest (multipart `file`)",
        )
    ticket = UploadTicket(
        sha256=wanted.sha256,
        size=wanted.size,
        url=url,
        headers={"content-length": str(wanted.size)},
        expires_at=datetime.now(UTC) + timedelta(seconds=UPLOAD_TTL_SECONDS),
    )
    return JSONResponse(ticket.model_dump(mode="json"), status_code=201)


def routes() -> list[Route]:
    return [Route("/v1/uploads", create_upload, methods=["POST"])]
