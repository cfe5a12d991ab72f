"""`POST /v1/uploads`: a presigned PUT URL of the object store for a large file (an artifact-heavy
trace.zip, a report), so its bytes go from the reporter straight to the bucket, not through a replica
and its proxy. The key is the org's and the file's SHA-256 (`orgs/<org>/uploads/<sha[:2]>/<sha>`); the
URL expires after `UPLOAD_TTL_SECONDS`. `POST /v1/uploads/{sha256}/ingest` (the ingest's options as JSON)
then ingests it: the bytes are read from the bucket and checked against the sha256 before anything is
stored, and the upload is removed once ingested.

A server whose blobs are on its own disk (the embedded store, `file://`) has no object store to hand
out: it answers 501 `not_implemented`, saying to send the file in the ingest request itself."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import anyio.to_thread
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from molar_mcp.api.bodies import json_body, validation_message
from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError
from molar_mcp.api.openapi import documented
from molar_mcp.api.runs import ingest_for_run
from molar_mcp.api.traces import ingest_response
from molar_mcp.ingest import Overrides
from molar_mcp.ingest.formats import FORMATS
from molar_mcp.ingest.results import TestResultInfo
from molar_mcp.ingest.service import Upload
from molar_mcp.models import IngestResponse
from molar_mcp.models.uploads import UploadIngest, UploadRequest, UploadTicket

UPLOAD_TTL_SECONDS = 900
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NO_OBJECT_STORE = (
    "this server keeps files on its own disk (no object store: --blob-url s3://…), so there is no direct "
    "upload; send the file in POST /v1/traces/ingest (multipart `file`)"
)


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
        raise ApiError(501, "not_implemented", _NO_OBJECT_STORE)
    ticket = UploadTicket(
        sha256=wanted.sha256,
        size=wanted.size,
        url=url,
        headers={"content-length": str(wanted.size)},
        expires_at=datetime.now(UTC) + timedelta(seconds=UPLOAD_TTL_SECONDS),
        ingest_url=f"/v1/uploads/{wanted.sha256}/ingest",
    )
    return JSONResponse(ticket.model_dump(mode="json"), status_code=201)


@documented(
    summary="Ingest a file uploaded straight to the object store (POST /v1/uploads), by its sha256",
    body=UploadIngest,
    response=IngestResponse,
    status=201,
    errors=(400, 404, 413, 415, 422, 501),
)
async def ingest_upload(request: Request) -> JSONResponse:
    ctx = api_context(request)
    sha256 = request.path_params["sha256"]
    if not _SHA256.match(sha256):
        raise ApiError(422, "validation_error", "the sha256 must be 64 lowercase hex digits")
    raw = await json_body(request)
    try:
        options = UploadIngest.model_validate(raw if raw is not None else {})
        result = TestResultInfo.model_validate(options.result) if options.result is not None else None
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_message(exc)) from None
    if options.format is not None and options.format not in FORMATS:
        raise ApiError(422, "validation_error", f"format must be one of {', '.join(FORMATS)}; got {options.format!r}")
    org = org_of(request)
    limit = ctx.max_bundle_bytes
    data = await anyio.to_thread.run_sync(lambda: _uploaded(ctx, org, sha256, limit))
    job = Upload(
        data=data,
        filename=options.filename,
        format=options.format,
        overrides=Overrides(
            scenario_slug=options.scenario_slug,
            source=options.source,
            commit_sha=options.commit_sha,
            pr_number=options.pr_number,
        ),
        result=result,
        attachments=[],
        keep_secrets=options.keep_secrets,
        max_bytes=limit,
    )
    outcome = await anyio.to_thread.run_sync(lambda: ingest_for_run(ctx, org, job, options.run_id))
    blobs = ctx.blob_store
    if blobs is not None:  # ingested: its blobs are stored, the upload goes
        await anyio.to_thread.run_sync(lambda: blobs.drop_upload(sha256, org))
    return ingest_response(ctx, org, outcome)


def _uploaded(ctx: ApiContext, org: str, sha256: str, limit: int) -> bytes:
    """The file a reporter PUT to the object store under `sha256` (POST /v1/uploads), checked."""
    blobs = ctx.blob_store
    if blobs is None or not blobs.direct_uploads:
        raise ApiError(501, "not_implemented", _NO_OBJECT_STORE)
    data = blobs.read_upload(sha256, org, max_bytes=limit)
    if data is None:
        raise ApiError(
            404,
            "not_found",
            f"no file uploaded under sha256 {sha256} in this org: POST /v1/uploads, PUT the file to the URL it "
            "answers, then ingest",
        )
    if len(data) > limit:
        blobs.drop_upload(sha256, org)
        raise ApiError(413, "payload_too_large", f"the uploaded file is larger than the {limit}-byte limit")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        blobs.drop_upload(sha256, org)  # never ingested under a name that is not its content's
        raise ApiError(
            422,
            "validation_error",
            f"the uploaded file's sha256 is {actual}, not {sha256}; it was removed: upload it again",
        )
    return data


def routes() -> list[Route]:
    return [
        Route("/v1/uploads", create_upload, methods=["POST"]),
        Route("/v1/uploads/{sha256}/ingest", ingest_upload, methods=["POST"]),
    ]
