"""The one typed client of the /v1 Trace REST API, over an injected `httpx2.AsyncClient`.

Embedded mode injects an `ASGITransport` to the in-process API; remote mode a real network client.
Either way the same requests go over the same HTTP semantics, so the two modes cannot drift.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import httpx2
from pydantic import BaseModel, ValidationError

from molar_mcp.client.asgi_stream import READ_WHOLE, StreamingASGITransport
from molar_mcp.models import (
    Analysis,
    AppendResponse,
    Event,
    EventsResponse,
    Incident,
    IncidentListResponse,
    IngestResponse,
    LiveTrace,
    TraceDetail,
    TraceListResponse,
    TraceWithFailures,
)
from molar_mcp.models.chats import (
    STREAM_EVENTS,
    ChatDetail,
    ChatStreamItem,
    DebuggerUsage,
    ModelChoice,
    ModelReply,
)
from molar_mcp.models.diffs import TraceDiff
from molar_mcp.models.replays import PromoteFixResult, ReplayList, ReplayStatus
from molar_mcp.models.runs import Run, RunList
from molar_mcp.reports.facts import TraceFacts

M = TypeVar("M", bound=BaseModel)


class ApiClientError(Exception):
    """The API answered with an error (or not at all). `status` 0 means no answer."""

    def __init__(self, status: int, error: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.request_id = request_id


class NotFoundError(ApiClientError):
    pass


class BadRequestError(ApiClientError):
    pass


class ForbiddenError(ApiClientError):
    pass


class UnavailableError(ApiClientError):
    pass


@dataclass(frozen=True)
class TraceFilters:
    """Filters of `list_traces`, as the API names them."""

    status: str | None = None
    scenario_id: str | None = None
    scenario: str | None = None
    source: str | None = None
    signature: str | None = None
    tier: str | None = None
    commit: str | None = None
    q: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    flaky: bool | None = None
    newly_failing: bool | None = None
    run: str | None = None

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in ("status", "scenario_id", "scenario", "source", "signature", "tier", "commit", "q", "run"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.created_from is not None:
            out["from"] = self.created_from.isoformat()
        if self.created_to is not None:
            out["to"] = self.created_to.isoformat()
        for key in ("flaky", "newly_failing"):
            flag = getattr(self, key)
            if flag is not None:
                out[key] = "true" if flag else "false"
        return out


class HeaderAuth(httpx2.Auth):
    """Credentials that are request headers alone, worked out per request (`headers`): a `TraceClient`
    read from the in-process app applies them without building an `httpx2.Request`."""

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        for name, value in self.headers().items():
            request.headers[name] = value  # one by one: a value beyond ASCII is sent as UTF-8
        yield request


# A read whose URL would be longer goes the whole way through httpx2, which refuses it (InvalidURL) as before.
IN_PROCESS_URL_CHARS = 8192


class TraceClient:
    def __init__(self, http: httpx2.AsyncClient, *, in_process: StreamingASGITransport | None = None) -> None:
        """`in_process`: the transport `http` sends through, when it is the in-process app's. Reads (`GET`s
        answered whole) then go to the app without an `httpx2.Request` and `Response` built around them: the
        same method, path, query and headers (the client's own, its `HeaderAuth`'s and Host) reach the app
        in the same scope, and the same answer comes back; what is skipped matters only on a network (URL
        parsing and joining, redirects). A client with hooks, or an auth that is not headers alone, sends
        every request through httpx2; so does a read while the client holds cookies."""
        self._http = http
        self._in_process = None
        auth = http.auth
        base = http.base_url
        plain = not any(http.event_hooks.values()) and (auth is None or isinstance(auth, HeaderAuth))
        if in_process is not None and plain and base.raw_path == b"/":
            self._in_process = in_process
            self._base = base
            self._headers = httpx2.Headers([(b"Host", base.netloc), *http.headers.raw])
            self._auth = auth if isinstance(auth, HeaderAuth) else None

    async def list_traces(
        self,
        filters: TraceFilters | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        row_cursors: bool = False,
    ) -> TraceListResponse:
        """A page of traces; with `row_cursors`, also the cursor after each row (to cut a page short)."""
        params = (filters or TraceFilters()).params()
        params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        if row_cursors:
            params["row_cursors"] = "true"
        return await self._get("/v1/traces", TraceListResponse, params)

    async def get_trace(self, trace_id: str, *, signed_urls: bool = True) -> TraceDetail:
        """The trace; `signed_urls=False` leaves its signed URLs out (nothing signed or presigned for a
        reader that does not hand them on)."""
        params = None if signed_urls else {"signed_urls": "false"}
        return await self._get(f"/v1/traces/{_segment(trace_id)}", TraceDetail, params)

    async def get_trace_with_failures(self, trace_id: str, limit: int) -> TraceWithFailures:
        """The trace and its first `limit` failed events (and their total), in one read; without signed
        URLs (what reads it, `get_trace`'s summary, links artifacts by their resource URIs)."""
        path = f"/v1/traces/{_segment(trace_id)}"
        return await self._get(path, TraceWithFailures, {"failed_events": str(limit), "signed_urls": "false"})

    async def get_events(
        self,
        trace_id: str,
        *,
        step: str | int | None = None,
        kind: str | None = None,
        ok: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> EventsResponse:
        params: dict[str, str] = {"limit": str(limit), "offset": str(offset)}
        if step is not None:
            params["step"] = str(step)
        if kind is not None:
            params["kind"] = kind
        if ok is not None:
            params["ok"] = "true" if ok else "false"
        return await self._get(f"/v1/traces/{_segment(trace_id)}/events", EventsResponse, params)

    async def get_event(self, trace_id: str, seq: int) -> Event:
        """One event whole (payload uncut); `NotFoundError` when the trace or the seq is absent."""
        return await self._get(f"/v1/traces/{_segment(trace_id)}/events/{int(seq)}", Event)

    async def create_trace(
        self,
        scenario_slug: str,
        *,
        scenario_title: str | None = None,
        source: str | None = None,
        code_sha: str | None = None,
    ) -> LiveTrace:
        """Start a running trace to append events to (`POST /v1/traces`)."""
        body: dict[str, Any] = {"scenario_slug": scenario_slug}
        for key, value in (("scenario_title", scenario_title), ("source", source), ("code_sha", code_sha)):
            if value is not None:
                body[key] = value
        return _parse(await self._send("POST", "/v1/traces", json=body), LiveTrace)

    async def append_events(self, trace_id: str, events: list[dict[str, Any]]) -> AppendResponse:
        """Append a batch (`POST /v1/traces/{id}/events`): valid events are kept, the others reported."""
        response = await self._send("POST", f"/v1/traces/{_segment(trace_id)}/events", json={"events": events})
        return _parse(response, AppendResponse)

    async def finish_trace(self, trace_id: str, status: str, *, failure_signature: str | None = None) -> TraceDetail:
        body: dict[str, Any] = {"status": status}
        if failure_signature is not None:
            body["failure_signature"] = failure_signature
        return _parse(await self._send("POST", f"/v1/traces/{_segment(trace_id)}/finish", json=body), TraceDetail)

    async def follow(self, trace_id: str, *, after_seq: int = -1) -> AsyncIterator[Event]:
        """The trace's events after `after_seq`, then live ones as they are appended, until the trace
        finishes (the store's SSE stream: `GET /v1/traces/{id}/stream`)."""
        path = f"/v1/traces/{_segment(trace_id)}/stream"
        try:
            async with self._http.stream(
                "GET",
                path,
                params={"after_seq": str(after_seq)},
                headers={"accept": "text/event-stream"},
                timeout=httpx2.Timeout(10.0, read=None),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_from(response)
                async for sse in httpx2.EventSource(response):
                    if sse.event == "end":
                        return
                    if sse.event == "message" and sse.data:
                        yield Event.model_validate_json(sse.data)
        except httpx2.TransportError as exc:
            raise UnavailableError(0, "unavailable", f"the trace stream of {trace_id} broke: {exc}") from exc

    async def blob_url(self, trace_id: str, sha256: str) -> str:
        """The signed, expiring URL of an artifact (the target of the API's 302)."""
        response = await self._send("GET", f"/v1/traces/{_segment(trace_id)}/blob/{_segment(sha256)}")
        location = response.headers.get("location")
        if response.status_code != 302 or not location:
            raise ApiClientError(response.status_code, "bad_response", "the blob endpoint did not redirect")
        return location

    async def get_view(self, trace_id: str) -> TraceFacts:
        """What a trace viewer shows (`GET /v1/traces/{id}/view`): steps, the failure, the detectors'
        findings, the causal request with its bodies; secrets masked."""
        return await self._get(f"/v1/traces/{_segment(trace_id)}/view", TraceFacts)

    async def get_report(self, trace_id: str) -> str:
        """The forensic markdown report of a trace (`GET /v1/traces/{id}/report.md`), secrets masked."""
        return (await self._send("GET", f"/v1/traces/{_segment(trace_id)}/report.md")).text

    async def fetch_signed(self, url: str) -> tuple[bytes, str]:
        """Download a signed URL the API handed out; return `(content, content_type)`."""
        response = await self._send("GET", url)
        return response.content, response.headers.get("content-type", "application/octet-stream")

    async def ingest_file(
        self,
        data: bytes,
        *,
        filename: str,
        scenario_slug: str | None = None,
        format: str | None = None,
        run_id: str | None = None,
        keep_secrets: bool = False,
    ) -> IngestResponse:
        """`POST /v1/traces/ingest` of any format Molar reads (detected unless `format` is given)."""
        fields: dict[str, str] = {}
        for key, value in (("scenario_slug", scenario_slug), ("format", format), ("run_id", run_id)):
            if value:
                fields[key] = value
        if keep_secrets:
            fields["keep_secrets"] = "true"
        response = await self._send(
            "POST", "/v1/traces/ingest", data=fields, files={"file": (filename, data, "application/octet-stream")}
        )
        return _parse(response, IngestResponse)

    async def get_run(self, run_id: str) -> Run:
        return await self._get(f"/v1/runs/{_segment(run_id)}", Run, {})

    async def follow_run(self, run_id: str) -> AsyncIterator[Run]:
        """The run now, then again each time a result arrives, until it finishes
        (`GET /v1/runs/{id}/stream`)."""
        path = f"/v1/runs/{_segment(run_id)}/stream"
        try:
            async with self._http.stream(
                "GET", path, headers={"accept": "text/event-stream"}, timeout=httpx2.Timeout(10.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_from(response)
                async for sse in httpx2.EventSource(response):
                    if sse.event == "end":
                        return
                    if sse.event == "run" and sse.data:
                        yield Run.model_validate_json(sse.data)
        except httpx2.TransportError as exc:
            raise UnavailableError(0, "unavailable", f"the run stream of {run_id} broke: {exc}") from exc

    async def list_runs(self, *, limit: int = 20, cursor: str | None = None) -> RunList:
        params = {"limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        return await self._get("/v1/runs", RunList, params)

    async def ingest_bundle(
        self,
        data: bytes,
        *,
        scenario_slug: str,
        filename: str = "bundle.tar.gz",
        source: str | None = None,
        commit_sha: str | None = None,
        pr_number: int | None = None,
    ) -> IngestResponse:
        fields: dict[str, str] = {"scenario_slug": scenario_slug}
        if source:
            fields["source"] = source
        if commit_sha:
            fields["commit_sha"] = commit_sha
        if pr_number is not None:
            fields["pr_number"] = str(pr_number)
        response = await self._send(
            "POST",
            "/v1/traces/ingest",
            data=fields,
            files={"bundle": (filename, data, "application/octet-stream")},
        )
        return _parse(response, IngestResponse)

    async def analyze(self, trace_id: str, *, rerun: bool = False) -> Analysis:
        """Run the detectors over all of the trace's events and store the findings
        (`POST /v1/traces/{id}/analyze`); an analysis of unchanged events comes back as stored."""
        params = {"rerun": "true"} if rerun else None
        response = await self._send("POST", f"/v1/traces/{_segment(trace_id)}/analyze", params=params)
        return _parse(response, Analysis)

    async def get_analysis(self, trace_id: str) -> Analysis:
        """The stored analysis (`GET /v1/traces/{id}/analysis`); `NotFoundError` with error `not_analyzed`
        when the trace was never analysed."""
        return await self._get(f"/v1/traces/{_segment(trace_id)}/analysis", Analysis)

    async def list_incidents(
        self, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> IncidentListResponse:
        """The org's failures clustered by cause, most recently seen first (`GET /v1/incidents`)."""
        params: dict[str, str] = {"limit": str(limit)}
        if status is not None:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return await self._get("/v1/incidents", IncidentListResponse, params)

    async def update_incident(
        self, incident_id: str, *, status: str | None = None, owner: str | None = None, clear_owner: bool = False
    ) -> Incident:
        """Set an incident's status and/or owner (`PATCH /v1/incidents/{id}`); `clear_owner` unassigns it."""
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = status
        if clear_owner:
            body["owner"] = None
        elif owner is not None:
            body["owner"] = owner
        return _parse(await self._send("PATCH", f"/v1/incidents/{_segment(incident_id)}", json=body), Incident)

    # ---- Layer 2 replay --------------------------------------------------------------

    async def create_replay(
        self,
        trace_id: str,
        *,
        from_step: int,
        scenario_diff: str | None = None,
        source_diffs: Sequence[tuple[str, str]] = (),
        triggered_via: str = "api",
    ) -> ReplayStatus:
        """Queue a replay (`POST /v1/traces/{id}/replay`). A diff that does not apply is a
        `BadRequestError` (422) naming the hunk; a trace that is not hot an `ApiClientError` 409."""
        edits: dict[str, Any] = {"source_diffs": [{"path": p, "diff": d} for p, d in source_diffs]}
        if scenario_diff is not None:
            edits["scenario_diff"] = scenario_diff
        body = {"from_step": from_step, "edits": edits, "triggered_via": triggered_via}
        response = await self._send("POST", f"/v1/traces/{_segment(trace_id)}/replay", json=body)
        return _parse(response, ReplayStatus)

    async def get_replay(self, replay_id: str, *, wait_s: float = 0, phase: str | None = None) -> ReplayStatus:
        """A replay's status (`GET /v1/replays/{id}`); with `wait_s`, the store answers once the phase
        differs from `phase` (or the replay finished), or after `wait_s` seconds (a long poll)."""
        params: dict[str, str] = {}
        if wait_s > 0:
            params["wait"] = f"{wait_s:g}"
            if phase is not None:
                params["phase"] = phase
        response = await self._send(
            "GET", f"/v1/replays/{_segment(replay_id)}", params=params, timeout=httpx2.Timeout(10.0 + wait_s)
        )
        return _parse(response, ReplayStatus)

    async def list_replays(self, trace_id: str) -> ReplayList:
        return await self._get(f"/v1/traces/{_segment(trace_id)}/replays", ReplayList)

    async def diff_traces(self, a: str, b: str, *, dimension: str = "overview", offset: int = 0) -> TraceDiff:
        """Compare trace `b` (or a replay id's child trace) with trace `a` (`GET /v1/traces/diff`); `offset`
        pages through the dimension's rows (`TraceDiff.next_offset`)."""
        params: dict[str, Any] = {"a": a, "b": b, "dimension": dimension}
        if offset:
            params["offset"] = offset
        return await self._get("/v1/traces/diff", TraceDiff, params)

    async def promote_fix(self, trace_id: str, *, replay_id: str, summary: str) -> PromoteFixResult:
        body = {"replay_id": replay_id, "summary": summary}
        response = await self._send("POST", f"/v1/traces/{_segment(trace_id)}/promote-fix", json=body)
        return _parse(response, PromoteFixResult)

    async def create_chat(self, trace_id: str, *, title: str | None = None) -> ChatDetail:
        """Start a debugger chat on the trace; its first message is the detectors' findings."""
        body = {"title": title} if title is not None else {}
        response = await self._send("POST", f"/v1/traces/{_segment(trace_id)}/chats", json=body)
        return _parse(response, ChatDetail)

    async def get_chat(self, chat_id: str) -> ChatDetail:
        return await self._get(f"/v1/chats/{_segment(chat_id)}", ChatDetail)

    async def debugger_usage(self) -> DebuggerUsage:
        """The server's debugger model (None: findings only) and this org's spend against its budget."""
        return await self._get("/v1/debugger/usage", DebuggerUsage)

    def send_message(
        self, chat_id: str, content: str, *, model: ModelChoice = "server"
    ) -> AsyncIterator[ChatStreamItem]:
        """Ask a question; yields the stream as it comes: the stored question, answer tokens, tool-call
        audit rows, the stored answer, a `ModelRequest` when `model="client"`, and a `StreamEnd` last.
        A spent budget raises `ApiClientError` with status 429 before anything is stored."""
        path = f"/v1/chats/{_segment(chat_id)}/messages"
        return self._chat_stream(path, {"content": content, "model": model})

    def model_response(self, chat_id: str, reply: ModelReply) -> AsyncIterator[ChatStreamItem]:
        """Answer a chat's `ModelRequest` with the caller's model's turn; yields what follows, as above."""
        path = f"/v1/chats/{_segment(chat_id)}/model-response"
        return self._chat_stream(path, reply.model_dump(mode="json"))

    async def _chat_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[ChatStreamItem]:
        try:
            async with self._http.stream(
                "POST",
                path,
                json=body,
                headers={"accept": "text/event-stream"},
                timeout=httpx2.Timeout(10.0, read=None),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_from(response)
                async for sse in httpx2.EventSource(response):
                    model = STREAM_EVENTS.get(sse.event)
                    if model is None or not sse.data:
                        continue  # an event this client does not know yet: skip it, as SSE intends
                    item = model.model_validate_json(sse.data)
                    assert isinstance(item, ChatStreamItem)
                    yield item
        except httpx2.TransportError as exc:
            raise UnavailableError(0, "unavailable", f"the chat stream {path} broke: {exc}") from exc
        except ValidationError as exc:
            raise ApiClientError(0, "bad_response", f"the chat stream {path} sent an unexpected event: {exc}") from exc

    async def _get(self, path: str, model: type[M], params: dict[str, str] | None = None) -> M:
        if self._in_process is not None and not self._http.cookies:
            query = urlencode(params) if params else ""
            if len(path) + len(query) <= IN_PROCESS_URL_CHARS:
                return await self._read_in_process(path, query, model)
        return _parse(await self._send("GET", path, params=params), model)

    async def _read_in_process(self, path: str, query: str, model: type[M]) -> M:
        assert self._in_process is not None
        headers = self._headers
        if self._auth is not None:
            headers = httpx2.Headers(headers)
            for name, value in self._auth.headers().items():
                headers[name] = value  # as `HeaderAuth.auth_flow` sets them
        scope = self._in_process.read_scope(self._base, "GET", path, query, headers.raw)
        try:
            answer = await self._in_process.call_whole(scope, b"")
        except httpx2.TransportError as exc:
            raise UnavailableError(
                0, "unavailable", f"the trace store at {self._http.base_url} did not answer: {exc}"
            ) from exc
        if answer.status >= 400:
            raise _error_from(httpx2.Response(answer.status, headers=answer.headers, content=answer.body))
        if isinstance(answer.model, model) and type(answer.model) is model:
            return answer.model  # what parsing its JSON would give: the route handed it over
        return _parse_body(answer.status, answer.body, model)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        try:
            # The answer is read whole here: an in-process transport may run the app in this task.
            response = await self._http.request(method, path, extensions={READ_WHOLE: True}, **kwargs)
        except httpx2.TransportError as exc:
            raise UnavailableError(
                0, "unavailable", f"the trace store at {self._http.base_url} did not answer: {exc}"
            ) from exc
        except httpx2.InvalidURL as exc:
            raise ApiClientError(400, "bad_request", "the parameters are too long for a URL; shorten them") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        return response


def _segment(value: str) -> str:
    # Ids are UUIDs or short ids; whatever else a caller passes must not be able to change the path
    # (a "." or ".." segment would be resolved away by the URL itself, even percent-encoded).
    if value.strip(".") == "":
        raise ApiClientError(404, "not_found", f"no trace {value!r}")
    return quote(value, safe="")


def _parse(response: httpx2.Response, model: type[M]) -> M:
    return _parse_body(response.status_code, response.content, model)


def _parse_body(status: int, body: bytes, model: type[M]) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ApiClientError(status, "bad_response", f"the trace store answered an unexpected shape: {exc}") from exc


def _error_from(response: httpx2.Response) -> ApiClientError:
    error, message = "error", response.text[:300]
    try:
        body = response.json()
        if isinstance(body, dict):
            error = str(body.get("error", error))
            message = str(body.get("message", message))
    except ValueError:
        pass
    rid = response.headers.get("x-request-id")
    cls: type[ApiClientError] = ApiClientError
    if response.status_code == 404:
        cls = NotFoundError
    elif response.status_code in (400, 422):
        cls = BadRequestError
    elif response.status_code in (401, 403):
        cls = ForbiddenError
    elif response.status_code >= 500:
        cls = UnavailableError
    return cls(response.status_code, error, message, rid)
