"""Layer 2 replay routes: enqueue, list, status (with an optional long poll), the trace diff
and promote-fix. Replay errors are mapped to statuses here, once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molar_mcp.api.context import api_context, org_of
from molar_mcp.api.errors import ApiError, error_response
from molar_mcp.api.openapi import Param, documented, integer, string
from molar_mcp.models.diffs import DIFF_DIMENSIONS, DiffDimension, TraceDiff
from molar_mcp.models.replays import PromoteFixRequest, PromoteFixResult, ReplayList, ReplayRequest, ReplayStatus
from molar_mcp.replay.apps import DiffDoesNotApply
from molar_mcp.replay.service import (
    NotReplayable,
    QueueFull,
    ReplayNotDone,
    ReplayRefused,
    ReplayService,
    ReplaysUnavailable,
    TraceNotHot,
)
from molar_mcp.store.replays import ReplayNotFound

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_WAIT_S = 30.0
MAX_DIFF_OFFSET = 10_000_000  # past any list a diff can have (a trace holds at most 1,000,000 events)
M = TypeVar("M", bound=BaseModel)


def _service(request: Request) -> ReplayService:
    service = api_context(request).replays
    if service is None:
        raise ApiError(501, "not_implemented", "replays are not configured on this server")
    return service


async def _body(request: Request, model: type[M]) -> M:
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "json_invalid":
            raise ApiError(400, "bad_request", f"the body is not JSON: {err['msg']}") from None
        raise ApiError(422, "validation_error", f"{where}: {err['msg']}") from None


_REFUSALS = (ReplayRefused, DiffDoesNotApply, ReplayNotFound)


def _refusal(request: Request, exc: Exception) -> Response:
    """A replay refusal as `{error, message}` with its status."""
    if isinstance(exc, TraceNotHot | ReplayNotDone):
        return error_response(request, 409, "conflict", str(exc))
    if isinstance(exc, ReplaysUnavailable):
        return error_response(request, 503, "unavailable", str(exc))
    if isinstance(exc, NotReplayable):
        return error_response(request, 422, "not_replayable", str(exc))
    if isinstance(exc, DiffDoesNotApply):
        return error_response(request, 422, "diff_does_not_apply", str(exc))
    if isinstance(exc, QueueFull):
        response = error_response(request, 429, "rate_limited", str(exc))
        response.headers["retry-after"] = str(exc.retry_after_s)
        return response
    if isinstance(exc, ReplayNotFound):
        return error_response(request, 404, "not_found", f"{exc}; GET /v1/traces/{{id}}/replays lists them")
    return error_response(request, 422, "validation_error", str(exc))


async def _call(request: Request, fn: Callable[[], BaseModel], status: int = 200) -> Response:
    """Run a blocking service call in a worker thread; refusals become error responses."""
    try:
        value = await anyio.to_thread.run_sync(fn)
    except _REFUSALS as exc:
        return _refusal(request, exc)
    return JSONResponse(value.model_dump(mode="json"), status_code=status)


@documented(
    summary="Enqueue a Layer 2 replay from a step with edits (202; 409 if the trace is not hot)",
    body=ReplayRequest,
    response=ReplayStatus,
    status=202,
    errors=(400, 404, 409, 413, 415, 422, 429, 501, 503),
)
async def create_replay(request: Request) -> Response:
    service = _service(request)
    body = await _body(request, ReplayRequest)
    org, trace_ref = org_of(request), request.path_params["trace_id"]
    return await _call(request, functools.partial(service.enqueue, org, trace_ref, body), 202)


@documented(summary="List a trace's replays, newest first", response=ReplayList)
async def list_replays(request: Request) -> Response:
    service = _service(request)
    org, trace_ref = org_of(request), request.path_params["trace_id"]
    return await _call(request, functools.partial(service.list_for_trace, org, trace_ref))


@documented(
    summary="Get a replay's status (queued → running → succeeded | failed); `wait` long-polls for a change",
    response=ReplayStatus,
    query=(
        Param("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S}, "seconds to wait for a phase change"),
        Param("phase", string(), "the phase the caller last saw (with wait)"),
    ),
)
async def get_replay(request: Request) -> Response:
    service = _service(request)
    org, replay_id = org_of(request), request.path_params["replay_id"]
    raw_wait = request.query_params.get("wait") or "0"
    try:
        wait = float(raw_wait)
    except ValueError:
        raise ApiError(400, "bad_request", f"wait must be a number of seconds, got {raw_wait!r}") from None
    if not 0 <= wait <= MAX_WAIT_S:
        raise ApiError(400, "bad_request", f"wait must be between 0 and {MAX_WAIT_S:g} seconds")
    if wait == 0:
        return await _call(request, functools.partial(service.status, org, replay_id))
    phase = request.query_params.get("phase") or None
    try:
        status = await service.wait_for_change(org, replay_id, phase=phase, timeout_s=wait)
    except _REFUSALS as exc:
        return _refusal(request, exc)
    return JSONResponse(status.model_dump(mode="json"))


@documented(
    summary="Compare two traces step by step (b against a; b may be a replay id)",
    response=TraceDiff,
    query=(
        Param("a", string(), "the source trace (id or short id)", required=True),
        Param("b", string(), "the other trace, or a replay id", required=True),
        Param("dimension", string(DIFF_DIMENSIONS), "overview (default), steps, network or console"),
        Param(
            "offset",
            integer(0, MAX_DIFF_OFFSET),
            "the first row of the dimension's list to show (default 0; an answer's next_offset pages on)",
        ),
    ),
    errors=(400, 404, 422),
)
async def diff_traces(request: Request) -> Response:
    service = _service(request)
    a, b = request.query_params.get("a"), request.query_params.get("b")
    if not a or not b:
        raise ApiError(400, "bad_request", "give both traces to compare: ?a=<trace id>&b=<trace or replay id>")
    raw = request.query_params.get("dimension") or "overview"
    if raw not in DIFF_DIMENSIONS:
        raise ApiError(
            400,
            "bad_request",
            f"dimension must be one of {', '.join(DIFF_DIMENSIONS)}; got {raw!r} (dom and clone are not recorded "
            "for API scenarios)",
        )
    dimension: DiffDimension = raw  # type: ignore[assignment]
    raw_offset = request.query_params.get("offset") or "0"
    if not (raw_offset.isascii() and raw_offset.isdigit()) or int(raw_offset) > MAX_DIFF_OFFSET:
        raise ApiError(400, "bad_request", f"offset must be an integer from 0 to {MAX_DIFF_OFFSET}; got {raw_offset!r}")
    call = functools.partial(service.diff, org_of(request), a, b, dimension, offset=int(raw_offset))
    return await _call(request, call)


@documented(
    summary="Commit a succeeded replay's source diffs on a new branch (Mender hand-off)",
    body=PromoteFixRequest,
    response=PromoteFixResult,
    errors=(400, 404, 409, 415, 422),
)
async def promote_fix(request: Request) -> Response:
    service = _service(request)
    body = await _body(request, PromoteFixRequest)
    org, trace_ref = org_of(request), request.path_params["trace_id"]
    return await _call(request, functools.partial(service.promote, org, trace_ref, body))


def routes() -> list[Route]:
    # `/v1/traces/diff` must come before the traces routes, or `GET /v1/traces/{trace_id}` takes it.
    return [
        Route("/v1/traces/diff", diff_traces, methods=["GET"]),
        Route("/v1/traces/{trace_id}/replay", create_replay, methods=["POST"]),
        Route("/v1/traces/{trace_id}/replays", list_replays, methods=["GET"]),
        Route("/v1/traces/{trace_id}/promote-fix", promote_fix, methods=["POST"]),
        Route("/v1/replays/{replay_id}", get_replay, methods=["GET"]),
    ]
