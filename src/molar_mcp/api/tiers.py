"""`POST /v1/traces/{id}/restore`: bring a cold trace back hot, in the background."""

from __future__ import annotations

import logging
import math

import anyio.to_thread
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from molar_mcp.api.context import api_context, org_of
from molar_mcp.api.openapi import documented

log = logging.getLogger("molar_mcp.api")

# What a restore reads per second from the blob store, for the ETA (measured: bench/README.md).
RESTORE_BYTES_PER_SECOND = 20 * 1024 * 1024


class RestoreStatus(BaseModel):
    status: str
    eta_seconds: int


@documented(summary="Bring a cold trace back hot (202 while restoring)", response=RestoreStatus, status=202)
async def restore(request: Request) -> JSONResponse:
    ctx = api_context(request)
    org = org_of(request)
    ref = request.path_params["trace_id"]
    detail = await anyio.to_thread.run_sync(ctx.store.get_trace, org, ref)
    if detail.tier == "warm":
        # Warm traces keep every row: hot again at once (replays need hot traces).
        await anyio.to_thread.run_sync(ctx.tiers.restore, org, detail.id)
        return JSONResponse({"status": "hot", "eta_seconds": 0})
    if detail.tier != "cold":
        return JSONResponse({"status": detail.tier, "eta_seconds": 0})
    size = await anyio.to_thread.run_sync(ctx.tiers.archived_size, org, detail.id)

    async def run() -> None:
        restored = await anyio.to_thread.run_sync(ctx.tiers.restore, org, detail.id)
        log.info("restored trace %s: %d events back hot", detail.short_id, restored)

    eta = max(1, math.ceil(size / RESTORE_BYTES_PER_SECOND))
    return JSONResponse({"status": "restoring", "eta_seconds": eta}, status_code=202, background=BackgroundTask(run))


def routes() -> list[Route]:
    return [Route("/v1/traces/{trace_id}/restore", restore, methods=["POST"])]
