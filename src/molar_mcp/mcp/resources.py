"""MCP resources: the same read models as the tools, addressable by `molar://` URIs."""

import base64
import binascii
import json
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, Annotations, ListResourcesResult, PaginatedRequestParams, Resource
from pydantic import BaseModel, ValidationError

from molar_mcp.client import ApiClientError, NotFoundError, TraceFilters
from molar_mcp.mcp.event_render import event_document
from molar_mcp.mcp.masking import mask_text
from molar_mcp.mcp.render import event_row
from molar_mcp.mcp.replay_calls import replay_resource
from molar_mcp.mcp.state import AppState, client_of
from molar_mcp.mcp.summary import build_trace_view
from molar_mcp.mcp.tokens import DEFAULT_TOKEN_BUDGET
from molar_mcp.models import TraceListItem

TRACE_URI = "molar://traces/{trace_id}"
EVENTS_URI = "molar://traces/{trace_id}/events{?step,kind,ok,offset,limit}"
EVENT_URI = "molar://traces/{trace_id}/events/{seq}"
BLOB_URI = "molar://traces/{trace_id}/blobs/{sha256}"
REPORT_URI = "molar://traces/{trace_id}/report.md"
INCIDENTS_URI = "molar://incidents/{org_id}{?status,cursor}"
INCIDENTS_PAGE = 50
RUN_URI = "molar://runs/{run_id}"
RUN_TRACE_URI = "molar://orgs/{org_id}/runs/{run_id}/trace"
RUN_TESTS_MAX = 50
RUN_TRACES_PAGE = 50
EVENTS_PAGE_MAX = 200
BLOB_INLINE_MAX = 1024 * 1024
RECENT_PAGE = 25  # traces per `resources/list` page
RECENT_MAX = 100  # `resources/list` lists the newest traces only: a client that walks every page stops here


def _resource_error(exc: ApiClientError, uri: str) -> Exception:
    if isinstance(exc, NotFoundError):
        return ResourceNotFoundError(f"{uri}: no such trace; list_traces finds trace ids")
    return ResourceError(f"{uri}: {exc.message}")


async def trace_resource(trace_id: str, ctx: Context) -> str:
    """The trace summary `get_trace` returns, as JSON."""
    client = client_of(ctx)
    try:
        detail = await client.get_trace(trace_id)
        failing = await client.get_events(trace_id, ok=False, limit=12)
    except ApiClientError as exc:
        raise _resource_error(exc, f"molar://traces/{trace_id}") from exc
    view, _ = build_trace_view(detail, failing.events, failing.total, DEFAULT_TOKEN_BUDGET * 2)
    return view.model_dump_json(exclude_none=True)


async def events_resource(
    trace_id: str,
    ctx: Context,
    step: str | None = None,
    kind: str | None = None,
    ok: str | None = None,
    offset: str | None = None,
    limit: str | None = None,
) -> str:
    """One page of a trace's events (masked), with the total and the next offset."""
    uri = f"molar://traces/{trace_id}/events"
    try:
        ok_flag = None if ok is None else {"true": True, "false": False}[ok.lower()]
        first = int(offset) if offset else 0
        size = min(int(limit), EVENTS_PAGE_MAX) if limit else 100
        if first < 0 or size < 1:
            raise ValueError
    except (KeyError, ValueError):
        raise ResourceError(f"{uri}: ok is true|false, offset ≥ 0, limit 1–{EVENTS_PAGE_MAX}") from None
    try:
        page = await client_of(ctx).get_events(trace_id, step=step, kind=kind, ok=ok_flag, limit=size, offset=first)
    except ApiClientError as exc:
        raise _resource_error(exc, uri) from exc
    end = first + len(page.events)
    body: dict[str, Any] = {
        "trace_id": trace_id,
        "total": page.total,
        "offset": first,
        "events": [event_row(e, trace_id).model_dump(exclude_none=True) for e in page.events],
        "next_offset": end if end < page.total else None,
    }
    return json.dumps(body, ensure_ascii=False)


async def event_resource(trace_id: str, seq: str, ctx: Context) -> str:
    """One event whole (secrets masked, a JSON body parsed): what a page's cut rows point to."""
    uri = f"molar://traces/{trace_id}/events/{seq}"
    if not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
        raise ResourceError(f"{uri}: seq is a non-negative integer")
    try:
        event = await client_of(ctx).get_event(trace_id, int(seq))
    except NotFoundError as exc:
        raise ResourceNotFoundError(
            f"{uri}: no such event; molar://traces/{trace_id}/events lists the trace's events"
        ) from exc
    except ApiClientError as exc:
        raise _resource_error(exc, uri) from exc
    payload, _ = event_document(event)
    body = {
        "trace_id": trace_id,
        "seq": event.seq,
        "ts": event.ts,
        "step": event.step,
        "step_id": event.step_id,
        "kind": event.kind,
        "ok": event.ok,
        "message": mask_text(event.message) if event.message else None,
        "payload": payload,
    }
    return json.dumps(body, ensure_ascii=False, indent=2, default=str)


_TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/yaml", "application/xml")
_TEXT_SUFFIXES = (".md", ".txt", ".log", ".json", ".ndjson", ".yaml", ".yml", ".csv", ".xml", ".html", ".diff")


def is_text_artifact(content_type: str | None, name: str | None) -> bool:
    """Scenario files, transcripts, logs, error-context.md: read as text, not as base64."""
    return (content_type or "").lower().startswith(_TEXT_TYPES) or (name or "").lower().endswith(_TEXT_SUFFIXES)


async def blob_resource(trace_id: str, sha256: str, ctx: Context) -> bytes | str:
    """An artifact: text artifacts as text (secrets masked), other small ones as bytes, large ones as a
    JSON pointer to a signed download URL."""
    uri = f"molar://traces/{trace_id}/blobs/{sha256}"
    client = client_of(ctx)
    try:
        detail = await client.get_trace(trace_id)
        artifact = next((a for a in detail.artifacts if a.sha256 == sha256), None)
        if artifact is None:
            raise ResourceNotFoundError(f"{uri}: the trace has no such artifact; molar://traces/{trace_id} lists them")
        url = await client.blob_url(trace_id, sha256)
        if artifact.size > BLOB_INLINE_MAX:
            return json.dumps(
                {
                    "kind": artifact.kind,
                    "name": artifact.name,
                    "size": artifact.size,
                    "content_type": artifact.content_type,
                    "download_url": url,
                    "note": f"larger than {BLOB_INLINE_MAX} bytes: download it from the signed URL (expires)",
                }
            )
        content, _ = await client.fetch_signed(url)
    except ApiClientError as exc:
        raise _resource_error(exc, uri) from exc
    if is_text_artifact(artifact.content_type, artifact.name):
        try:
            return mask_text(content.decode("utf-8"))
        except UnicodeDecodeError:
            return content
    return content


async def report_resource(trace_id: str, ctx: Context) -> str:
    """The forensic markdown report of a trace: summary, timeline, failing step, network and console
    errors, artifacts (masked; the same text as `GET /v1/traces/{id}/report.md`)."""
    try:
        return await client_of(ctx).get_report(trace_id)
    except ApiClientError as exc:
        raise _resource_error(exc, f"molar://traces/{trace_id}/report.md") from exc


async def incidents_resource(org_id: str, ctx: Context, status: str | None = None, cursor: str | None = None) -> str:
    """The org's incidents (failures clustered by cause: the signature without its step), open ones unless
    `status` says otherwise (`all` for every status), most recently seen first, one bounded page with the
    cursor of the next."""
    uri = f"molar://incidents/{org_id}"
    wanted = "open" if status is None else status
    if wanted not in ("open", "acknowledged", "resolved", "muted", "all"):
        raise ResourceError(f"{uri}: status is open, acknowledged, resolved, muted or all")
    try:
        page = await client_of(ctx).list_incidents(
            status=None if wanted == "all" else wanted, limit=INCIDENTS_PAGE, cursor=cursor
        )
    except ApiClientError as exc:
        raise ResourceError(f"{uri}: {exc.message}") from exc
    # One org per credential until authentication lands: the API says which org the caller acts in,
    # and another org's incidents do not exist for it (no hint of whether that org does).
    if page.org_id != org_id:
        raise ResourceNotFoundError(f"{uri}: no such org for this credential; read molar://incidents/{page.org_id}")
    items = [
        {
            **i.model_dump(mode="json", exclude_none=True),
            "title": mask_text(i.title),
            "signature": mask_text(i.signature),
        }
        for i in page.items
    ]
    body: dict[str, Any] = {
        "org_id": page.org_id,
        "status": wanted,
        "incidents": items,
        "next_cursor": page.next_cursor,
    }
    if page.next_cursor:
        body["more"] = f"read {uri}?status={wanted}&cursor={page.next_cursor} for the next page"
    return json.dumps(body, ensure_ascii=False)


class _RecentCursor(BaseModel):
    """`resources/list`'s cursor: the trace list's own cursor and how many traces came before."""

    after: str
    listed: int


def _encode_cursor(cursor: _RecentCursor) -> str:
    return base64.urlsafe_b64encode(cursor.model_dump_json().encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> _RecentCursor:
    try:
        return _RecentCursor.model_validate_json(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, ValidationError) as exc:
        raise MCPError(INVALID_PARAMS, "invalid cursor: pass the nextCursor of the previous page") from exc


def _recent_resource(t: TraceListItem) -> Resource:
    scenario = t.scenario_slug or "an unnamed scenario"
    when = t.created_at.strftime("%Y-%m-%d %H:%M UTC")
    description = f"{t.status} run of {scenario}, {when}"
    if t.code_sha:
        description += f", commit {t.code_sha[:10]}"
    if t.replay_of:
        description += f", a replay of {t.replay_of} (not an ordinary run)"
    return Resource(
        uri=f"molar://traces/{t.short_id}",
        name=f"trace-{t.short_id}",
        title=f"{t.status.upper()} {t.scenario_slug or 'trace'} {t.short_id}" + (" (replay)" if t.replay_of else ""),
        description=description + " (JSON summary; get_trace explains it)",
        mime_type="application/json",
        annotations=Annotations(last_modified=t.created_at.isoformat()),
    )


async def list_recent_traces(ctx: Any, params: PaginatedRequestParams | None) -> ListResourcesResult:
    """`resources/list`: the caller's org's most recent traces, newest first, RECENT_PAGE per page and
    RECENT_MAX in all (older ones: list_traces, whose filters and cursor reach every trace)."""
    state = ctx.lifespan_context
    assert isinstance(state, AppState)
    cursor = _decode_cursor(params.cursor) if params is not None and params.cursor else None
    listed = cursor.listed if cursor else 0
    size = min(RECENT_PAGE, RECENT_MAX - listed)
    if size <= 0:
        return ListResourcesResult(resources=[])
    try:
        page = await state.client.list_traces(limit=size, cursor=cursor.after if cursor else None)
    except ApiClientError as exc:
        raise MCPError(INVALID_PARAMS if exc.status == 400 else INTERNAL_ERROR, exc.message) from exc
    resources = [_recent_resource(t) for t in page.items]
    listed += len(resources)
    more = page.next_cursor is not None and listed < RECENT_MAX
    next_cursor = (
        _encode_cursor(_RecentCursor(after=page.next_cursor, listed=listed)) if more and page.next_cursor else None
    )
    return ListResourcesResult(resources=resources, next_cursor=next_cursor)


def _run_not_found(uri: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(f"{uri}: no such run; GET /v1/runs lists the runs of your org")


def _run_tests(tests: list[Any], what: str, run_id: str) -> dict[str, Any]:
    rows = [
        {**t.model_dump(mode="json", exclude_none=True), "title": mask_text(t.title) if t.title else None}
        for t in tests[:RUN_TESTS_MAX]
    ]
    out: dict[str, Any] = {what: [{k: v for k, v in r.items() if v is not None} for r in rows]}
    if len(tests) > RUN_TESTS_MAX:
        out[f"{what}_cut"] = (
            f"{len(tests) - RUN_TESTS_MAX} more {what} tests not shown: list_traces(run={run_id!r}) lists every trace"
        )
    return out


async def run_resource(run_id: str, ctx: Context) -> str:
    """A run (the traces of one test invocation): status queued/running/passed/failed/errored, counts, the
    failing and flaky tests with their trace ids. Live: subscribers are notified as results arrive."""
    uri = f"molar://runs/{run_id}"
    try:
        run = await client_of(ctx).get_run(run_id)
    except NotFoundError as exc:
        raise _run_not_found(uri) from exc
    except ApiClientError as exc:
        raise ResourceError(f"{uri}: {exc.message}") from exc
    body = run.model_dump(mode="json", exclude_none=True, exclude={"failing", "flaky"})
    if run.name:
        body["name"] = mask_text(run.name)
    body.update(_run_tests(run.failing, "failing", run.short_id))
    body.update(_run_tests(run.flaky, "flaky", run.short_id))
    body["trace"] = f"molar://orgs/{run.org_id}/runs/{run.short_id}/trace"
    return json.dumps(body, ensure_ascii=False)


async def run_trace_resource(org_id: str, run_id: str, ctx: Context) -> str:
    """The trace of a run that failed (its one failing test's last attempt, as `molar://traces/{id}`), or,
    when several tests or none failed, the list of the run's traces (failed first)."""
    uri = f"molar://orgs/{org_id}/runs/{run_id}/trace"
    client = client_of(ctx)
    try:
        run = await client.get_run(run_id)
    except NotFoundError as exc:
        raise _run_not_found(uri) from exc
    except ApiClientError as exc:
        raise ResourceError(f"{uri}: {exc.message}") from exc
    if run.org_id != org_id:  # the same words as for no run: nothing tells another org it exists
        raise _run_not_found(uri)
    head: dict[str, Any] = {
        "run": {"id": run.id, "short_id": run.short_id, "status": run.status, "counts": run.counts.model_dump()}
    }
    if len(run.failing) == 1:
        test = run.failing[0]
        if test.attempts > 1:
            head["attempts"] = test.trace_ids
        # The failing trace as molar://traces/{id} reads it, under the run it belongs to.
        return json.dumps({**head, **json.loads(await trace_resource(test.trace_id, ctx))}, ensure_ascii=False)
    try:
        page = await client.list_traces(TraceFilters(run=run.id), limit=RUN_TRACES_PAGE)
    except ApiClientError as exc:
        raise ResourceError(f"{uri}: {exc.message}") from exc
    failed = [i for i in page.items if i.status not in ("passed", "flaky", "skipped")]
    rest = [i for i in page.items if i.status in ("passed", "flaky", "skipped")]
    head["why_a_list"] = (
        f"{len(run.failing)} tests failed: read each trace by its id"
        if run.failing
        else "no test failed in this run: its traces"
    )
    head["traces"] = [
        {
            "id": i.id,
            "short_id": i.short_id,
            "scenario": i.scenario_slug,
            "title": mask_text(i.scenario_title) if i.scenario_title else None,
            "status": i.status,
            "uri": f"molar://traces/{i.short_id}",
        }
        for i in failed + rest
    ]
    if page.next_cursor:
        head["more"] = f"more than {RUN_TRACES_PAGE} traces: list_traces(run={run.short_id!r}) pages through them"
    return json.dumps(head, ensure_ascii=False, default=str)


def register(server: MCPServer[Any]) -> None:
    # `resources/list` pages the most recent traces (MCPServer's own handler lists static resources,
    # of which there are none, in one page).
    server._lowlevel_server.add_request_handler("resources/list", PaginatedRequestParams, list_recent_traces)
    server.resource(
        BLOB_URI,
        name="trace-artifact",
        title="Trace artifact",
        description="An artifact of a trace (screenshot, video, HAR, …): bytes, or a signed link when large.",
        mime_type="application/octet-stream",
    )(blob_resource)
    server.resource(
        TRACE_URI,
        name="trace",
        title="Trace summary",
        description="A recorded run: status, failing step, steps, failed events, artifacts (JSON).",
        mime_type="application/json",
    )(trace_resource)
    server.resource(
        EVENTS_URI,
        name="trace-events",
        title="Trace events",
        description="A page of a trace's ordered events; filter by step, kind, ok; page with offset/limit.",
        mime_type="application/json",
    )(events_resource)
    server.resource(
        EVENT_URI,
        name="trace-event",
        title="Trace event",
        description="One event whole: message and payload uncut (secrets masked, a JSON body parsed).",
        mime_type="application/json",
    )(event_resource)
    server.resource(
        REPORT_URI,
        name="trace-report",
        title="Trace report",
        description="A trace's forensic report (markdown): summary, timeline, failing step, network and "
        "console errors, artifacts.",
        mime_type="text/markdown",
    )(report_resource)
    server.resource(
        INCIDENTS_URI,
        name="incidents",
        title="Incidents",
        description="An org's failures clustered by cause across runs and tests (open ones unless status= "
        "says otherwise), newest first, with trace counts, the tests and commits they struck, and the latest "
        "trace; page with cursor.",
        mime_type="application/json",
    )(incidents_resource)
    server.resource(
        RUN_URI,
        name="run",
        title="Run",
        description="A test run (the traces of one invocation): status, counts, failing tests with trace "
        "ids (JSON). Live: subscribers are notified as results arrive.",
        mime_type="application/json",
    )(run_resource)
    server.resource(
        RUN_TRACE_URI,
        name="run-trace",
        title="Run trace",
        description="A run's failing trace (as molar://traces/{id}), or the list of its traces when several "
        "tests or none failed (JSON). Live like the run.",
        mime_type="application/json",
    )(run_trace_resource)
    server.resource(
        "molar://replays/{replay_id}",
        name="replay",
        title="Replay",
        description="A replay's status (queued, running, succeeded, failed) and, once it succeeded, whether "
        "the replayed run passed and its diff against the source trace (JSON).",
        mime_type="application/json",
    )(replay_resource)
