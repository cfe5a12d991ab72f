"""Artifacts: `GET /v1/traces/{id}/blob/{sha256}` answers 302 to a signed, expiring URL that the store
itself serves (with Range support); `signed_urls` of a trace detail come from the same signer."""

from __future__ import annotations

import re

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError
from molar_mcp.api.exports import SIGNED_HEADERS, checked_org, export_urls
from molar_mcp.api.openapi import Param, documented, string
from molar_mcp.models import ArtifactRef, TraceDetail

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The artifact kinds named in `signed_urls`; the first artifact of each kind is linked.
SIGNED_KINDS = ("video", "playwright", "rrweb", "screenshot", "har")


# Uploaded bytes must never run as a page of this origin (it is the authorization server's too): only
# these types are shown inline, everything else is a download of opaque bytes, and the CSP sandbox
# keeps even a mislabelled file from running script or reaching the origin's cookies and storage.
INLINE_TYPES = frozenset({"text/plain", "application/json"})


def served_as(content_type: str | None) -> tuple[str, str]:
    """The (media type, disposition) an artifact is served with: its own type inline when it is a
    raster image, a video, plain text or JSON; `application/octet-stream` as an attachment otherwise."""
    base = (content_type or "").split(";")[0].strip().lower()
    major = base.split("/")[0]
    if base in INLINE_TYPES:
        return f"{base}; charset=utf-8", "inline"
    if (major == "image" and "svg" not in base and "xml" not in base) or major == "video":
        return base, "inline"
    return "application/octet-stream", "attachment"


def blob_path(trace_id: str, sha256: str) -> str:
    return f"/v1/signed/blobs/{trace_id}/{sha256}"


def _presigned(ctx: ApiContext, org_id: str, artifact: ArtifactRef) -> str | None:
    """The object store's own expiring URL of an artifact (same lifetime as our signed URLs), if any."""
    if ctx.blob_store is None:
        return None
    media_type, disposition = served_as(artifact.content_type)
    return ctx.blob_store.presigned_get(
        artifact.sha256,
        org_id,
        filename=artifact.name or artifact.sha256,
        content_type=media_type,
        disposition=disposition,
        ttl=ctx.signer.ttl_seconds,
    )


def signed_urls(ctx: ApiContext, request: Request, detail: TraceDetail) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    urls: dict[str, str] = export_urls(ctx, base, detail)
    for artifact in detail.artifacts:
        if artifact.kind in SIGNED_KINDS and artifact.kind not in urls:
            presigned = _presigned(ctx, detail.org_id, artifact)
            urls[artifact.kind] = presigned or base + ctx.signer.sign(
                blob_path(detail.id, artifact.sha256), detail.org_id
            )
    return urls


def _artifact(detail: TraceDetail, sha256: str) -> ArtifactRef:
    found = next((a for a in detail.artifacts if a.sha256 == sha256), None)
    if found is None:
        raise ApiError(404, "not_found", f"trace {detail.short_id} has no blob {sha256}")
    return found


def artifact_sha(request: Request) -> str:
    sha: str = request.path_params["sha256"]
    if not _SHA256.match(sha):
        raise ApiError(400, "bad_request", "sha256 must be 64 lowercase hex characters, without a sha256: prefix")
    return sha


@documented(summary="Redirect (302) to a signed, expiring URL of an artifact", status=302, errors=(400, 404))
async def redirect_to_blob(request: Request) -> Response:
    ctx = api_context(request)
    sha = artifact_sha(request)
    detail = await anyio.to_thread.run_sync(ctx.store.get_trace, org_of(request), request.path_params["trace_id"])
    presigned = _presigned(ctx, detail.org_id, _artifact(detail, sha))
    if presigned is not None:
        return RedirectResponse(presigned, status_code=302)
    base = str(request.base_url).rstrip("/")
    return RedirectResponse(base + ctx.signer.sign(blob_path(detail.id, sha), detail.org_id), status_code=302)


@documented(
    summary="Download an artifact through a signed URL (Range requests supported)",
    media_type="application/octet-stream",
    query=[Param(n, string(), required=True) for n in ("org", "exp", "kid", "sig")],
    errors=(400, 403, 404),
)
async def signed_blob(request: Request) -> Response:
    sha = artifact_sha(request)
    org = checked_org(request)
    return await artifact_response(api_context(request), org, request.path_params["trace_id"], sha)


async def artifact_response(
    ctx: ApiContext, org_id: str, trace_ref: str, sha: str, *, cache: str = "private, max-age=300"
) -> Response:
    """The artifact's bytes (Range supported), served so they can never run as this origin: a redirect
    to the object store's own short-lived URL when there is one."""
    detail = await anyio.to_thread.run_sync(ctx.store.get_trace, org_id, trace_ref)
    artifact = _artifact(detail, sha)
    presigned = _presigned(ctx, detail.org_id, artifact)
    if presigned is not None:  # the object store serves the bytes (and Range requests) itself
        return RedirectResponse(presigned, status_code=302)
    path = ctx.blob_file(sha)
    if not path.is_file():
        raise ApiError(404, "not_found", f"blob {sha} is missing from the blob store")
    media_type, disposition = served_as(artifact.content_type)
    return FileResponse(
        path,
        media_type=media_type,
        filename=artifact.name or sha,
        content_disposition_type=disposition,
        headers={"cache-control": cache, **SIGNED_HEADERS},
    )


def routes() -> list[Route]:
    return [
        Route("/v1/traces/{trace_id}/blob/{sha256}", redirect_to_blob, methods=["GET"]),
        Route("/v1/signed/blobs/{trace_id}/{sha256}", signed_blob, methods=["GET"]),
    ]
