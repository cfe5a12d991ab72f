"""`/v1/runs`: a run groups the traces of one test invocation; `ingest_for_run` links uploads to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio.to_thread
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molar_mcp.api.bodies import json_body, validation_message
from molar_mcp.api.bus import Published
from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError
from molar_mcp.api.openapi import Param, documented, integer, string
from molar_mcp.ingest.service import IngestOutcome, StoredTrace, Upload, ingest_upload
from molar_mcp.models.replays import ReplayOrigin
from molar_mcp.models.runs import RUN_STATUSES, FinishRun, NewRun, Run, RunList
from molar_mcp.store.runs import RunNotFound, SqliteRunStore


def run_topic(run_id: str) -> str:
    """The bus topic a run's subscribers listen on (a result arrived, or the run finished)."""
    return f"run:{run_id}"


def _runs(ctx: ApiContext) -> SqliteRunStore:
    return ctx.runs


def ingest_for_run(ctx: ApiContext, org: str, upload: Upload, run_ref: str | None) -> IngestOutcome:
    """Ingest an upload and link its traces to a run: the one named, or, for a report, a new run of its own
    (finished at once). Runs on a worker thread."""
    runs = _runs(ctx)
    run_id: str | None = None
    if run_ref is not None:
        try:
            run_id = runs.resolve(org, run_ref)
        except RunNotFound:
            raise ApiError(404, "not_found", f"no run {run_ref!r} in this org (POST /v1/runs makes one)") from None

    made_run = False

    def link(stored: StoredTrace) -> None:
        nonlocal run_id, made_run
        if run_id is None:
            return
        r = stored.result
        runs.add_trace(
            org,
            run_id,
            trace_id=stored.trace_id,
            short_id=stored.short_id,
            test_key=stored.scenario_slug,
            title=r.title() if r is not None else None,
            status=stored.status,
            retry=r.retry if r is not None else 0,
        )
        ctx.bus.publish(run_topic(run_id), Published())

    fmt = upload.format
    if run_id is None and fmt is None:
        from molar_mcp.ingest.formats import detect_format

        fmt = detect_format(upload.data, upload.filename)
        upload.format = fmt
    if run_id is None and fmt in ("playwright-report", "junit"):
        commit = upload.overrides.commit_sha
        run_id = runs.create(
            org,
            NewRun(name=upload.filename, kind="playwright" if fmt == "playwright-report" else "junit", commit=commit),
        ).id
        made_run = True
    try:
        outcome = ingest_upload(ctx.store, org, upload, link)
    except Exception:
        if made_run and run_id is not None:
            runs.finish(org, run_id, "errored")
        raise
    if made_run and run_id is not None:
        runs.finish(org, run_id)
        ctx.bus.publish(run_topic(run_id), Published(finished="finished"))
    outcome.run_id = run_id
    record_replay_origins(ctx, org, outcome, runs.get(org, run_id) if run_id is not None else None)
    return outcome


def record_replay_origins(ctx: ApiContext, org: str, outcome: IngestOutcome, run: Run | None) -> None:
    """Remember where each Playwright test trace was recorded (repository, commit, project, file, title
    path: the result's, else its run's), so a registered project's trace can be replayed (docs/replay.md)."""
    if ctx.replays is None:
        return
    for stored in outcome.traces:
        r = stored.result
        if r is None or not r.file or not r.title_path:
            continue
        repo_path = (r.repo.path if r.repo else None) or (run.repo.path if run and run.repo else None)
        remote = (r.repo.remote if r.repo else None) or (run.repo.remote if run and run.repo else None)
        commit = r.commit or (run.commit if run else None)
        if not (repo_path or remote) or not commit:
            continue
        origin = ReplayOrigin(
            kind="playwright",
            repo_path=repo_path,
            repo_remote=remote,
            commit=commit,
            project=r.project,
            file=r.file,
            title_path=r.title_path,
        )
        ctx.replays.replays.record_origin(org, stored.trace_id, origin)


@documented(
    summary="Start a run (the traces of one test invocation join it at ingest with `run_id`)",
    body=NewRun,
    response=Run,
    status=201,
    errors=(400, 415, 422),
)
async def create_run(request: Request) -> JSONResponse:
    ctx = api_context(request)
    raw = await json_body(request)
    try:
        new = NewRun.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_message(exc)) from None
    run = await anyio.to_thread.run_sync(lambda: _runs(ctx).create(org_of(request), new))
    return JSONResponse(run.model_dump(mode="json"), status_code=201)


@documented(
    summary="List runs, newest first",
    response=RunList,
    query=[
        Param("status", string(RUN_STATUSES)),
        Param("limit", integer(1, 200, 50)),
        Param("cursor", string(), "next_cursor of the previous page"),
    ],
    errors=(400,),
)
async def list_runs(request: Request) -> JSONResponse:
    ctx = api_context(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        raise ApiError(400, "bad_request", f"status must be one of {', '.join(RUN_STATUSES)}; got {status!r}")
    raw_limit = request.query_params.get("limit") or "50"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
        raise ApiError(400, "bad_request", f"limit must be an integer between 1 and 200; got {raw_limit!r}")
    cursor = request.query_params.get("cursor") or None
    try:
        page = await anyio.to_thread.run_sync(
            lambda: _runs(ctx).list_runs(org_of(request), limit=int(raw_limit), cursor=cursor, status=status)
        )
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return JSONResponse(page.model_dump(mode="json"))


@documented(summary="Get a run: status, counts, failing and flaky tests with their traces", response=Run, errors=(404,))
async def get_run(request: Request) -> JSONResponse:
    ctx = api_context(request)
    ref = request.path_params["run_id"]
    try:
        run = await anyio.to_thread.run_sync(lambda: _runs(ctx).get(org_of(request), ref))
    except RunNotFound:
        raise ApiError(404, "not_found", f"no run {ref!r}") from None
    return JSONResponse(run.model_dump(mode="json"))


@documented(
    summary="Finish a run: its status, or passed/failed from its tests when left out",
    body=FinishRun,
    response=Run,
    errors=(404, 415, 422),
)
async def finish_run(request: Request) -> JSONResponse:
    ctx = api_context(request)
    ref = request.path_params["run_id"]
    raw = await json_body(request) if request.headers.get("content-length") not in (None, "0") else {}
    try:
        body = FinishRun.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_message(exc)) from None
    try:
        run = await anyio.to_thread.run_sync(lambda: _runs(ctx).finish(org_of(request), ref, body.status))
    except RunNotFound:
        raise ApiError(404, "not_found", f"no run {ref!r}") from None
    ctx.bus.publish(run_topic(run.id), Published(finished=run.status))
    return JSONResponse(run.model_dump(mode="json"))


HEARTBEAT_SECONDS = 15


@documented(
    summary="Follow a run as Server-Sent Events: a `run` event with the run now, another each time a result "
    "arrives or it finishes, then `end`",
    media_type="text/event-stream",
    errors=(404,),
)
async def stream_run(request: Request) -> Response:
    ctx = api_context(request)
    org = org_of(request)
    ref = request.path_params["run_id"]
    try:
        first = await anyio.to_thread.run_sync(lambda: _runs(ctx).get(org, ref))
    except RunNotFound:
        raise ApiError(404, "not_found", f"no run {ref!r}") from None

    def frame(run: Run) -> ServerSentEvent:
        return ServerSentEvent(data=run.model_dump_json(), event="run")

    async def frames() -> AsyncIterator[ServerSentEvent]:
        run = first
        while True:
            # Subscribe, then read the run: a result stored meanwhile is in the snapshot or announced after it.
            with ctx.bus.subscribe(run_topic(run.id)) as sub:
                run = await anyio.to_thread.run_sync(lambda: _runs(ctx).get(org, first.id))
                yield frame(run)
                if run.status not in ("queued", "running"):
                    yield ServerSentEvent(data=json.dumps({"status": run.status}), event="end")
                    return
                async for _ in sub.stream:
                    # Announcements come in bursts (a report stores many results): read once per burst.
                    while True:
                        try:
                            sub.stream.receive_nowait()
                        except anyio.WouldBlock:
                            break
                        except anyio.EndOfStream:
                            break
                    run = await anyio.to_thread.run_sync(lambda: _runs(ctx).get(org, first.id))
                    yield frame(run)
                    if run.status not in ("queued", "running"):
                        yield ServerSentEvent(data=json.dumps({"status": run.status}), event="end")
                        return
                if not sub.lagged:
                    return
            # Lagged behind the announcements: read the run again and subscribe again.

    return EventSourceResponse(frames(), ping=HEARTBEAT_SECONDS, headers={"cache-control": "no-store"})


def routes() -> list[Route]:
    return [
        Route("/v1/runs", list_runs, methods=["GET"]),
        Route("/v1/runs", create_run, methods=["POST"]),
        Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
        Route("/v1/runs/{run_id}/finish", finish_run, methods=["POST"]),
        Route("/v1/runs/{run_id}/stream", stream_run, methods=["GET"]),
    ]
