"""The composition root: the only module that knows whether the store is embedded or remote."""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.types import ASGIApp

from molar_mcp.api.analysis_worker import AnalysisWorker, StoreAddress, min_events_from_env
from molar_mcp.api.app import create_api_app
from molar_mcp.api.append_route import LiveAppendRoute
from molar_mcp.api.bus import LiveBus
from molar_mcp.api.context import DEFAULT_LIVE_QUIET_SECONDS, ApiContext, OtlpSettings
from molar_mcp.api.live import run_reaper
from molar_mcp.api.otlp import ingest as otlp_ingest
from molar_mcp.api.otlp import run_sweeper
from molar_mcp.api.otlp_finisher import OtlpFinisher, min_spans_from_env, processes_from_env
from molar_mcp.api.telemetry import RateLimiter, RateLimits
from molar_mcp.api.workers import SessionRouter, WorkerPlace
from molar_mcp.auth import AuthKeys, McpScopeGuard, ScopePolicy, create_oauth_routes, create_protected_resource_routes
from molar_mcp.auth.keys import SESSION_SECRET_FILE, SIGNING_KEY_FILE
from molar_mcp.chat_tools import ChatTools, in_process_client_factory
from molar_mcp.client.remote import remote_client_factory
from molar_mcp.debugger.config import DebuggerConfig
from molar_mcp.ingest import DEFAULT_MAX_BUNDLE_BYTES, BundleError
from molar_mcp.ingest.formats.otlp import decode_json, decode_spans
from molar_mcp.mcp.answer_mode import AnswerModeRouter
from molar_mcp.mcp.capabilities import build_manifest
from molar_mcp.mcp.event_store import BoundedEventStore
from molar_mcp.mcp.server import TOOL_SPECS, create_mcp_server
from molar_mcp.mcp.state import ClientFactory
from molar_mcp.replay.apps import AppConfig
from molar_mcp.replay.recording import RecordedRun, record_scenarios, scenario_files
from molar_mcp.serve_auth import (
    INTERNAL_TOKEN_FILE,
    OriginGuard,
    ServeAuth,
    acting_client_factory,
    internal_token,
    run_client_expiry,
)
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.blobs import BlobStore
from molar_mcp.store.replays import ReplayStore
from molar_mcp.store.signing import DEFAULT_REFRESH_SECONDS, UrlSigner
from molar_mcp.tool_budget import ToolCallBudget

log = logging.getLogger("molar_mcp")

URL_SIGNING_FILE = "signing-keys.json"
REQUEST_STATE_KEY_FILE = "mcp-request-state-key"
DEMO_MARKER = "demo-loaded-v1"
DEMO_RECORDED_MARKER = "demo-recorded-v1"
SESSION_IDLE_SECONDS = 5 * 60  # a 2025-11-25 session unused this long is closed
DEMO_PLAYWRIGHT_MARKER = "demo-playwright-v1"


def demo_marked(store: SqliteTraceStore, name: str) -> bool:
    """Whether the demo part `name` is already in this store: a file in the data dir (the embedded store),
    or a row of the shared database (replicas on PostgreSQL: loaded once, whichever replica did it)."""
    if (store.data_dir / name).exists():
        return True
    from molar_mcp.store.postgres.db import PgDatabase

    if isinstance(store.db, PgDatabase):
        from molar_mcp.store.postgres.secrets import marked

        return marked(store.db, name)
    return False


def mark_demo(store: SqliteTraceStore, name: str, count: int) -> None:
    (store.data_dir / name).write_text(f"{count}\n")
    from molar_mcp.store.postgres.db import PgDatabase

    if isinstance(store.db, PgDatabase):
        from molar_mcp.store.postgres.secrets import mark

        mark(store.db, name, str(count))


@contextmanager
def demo_loading(store: SqliteTraceStore) -> Iterator[None]:
    """Load the demo under this: replicas starting together on one database load it once (the others wait
    for the first, then find it loaded)."""
    from molar_mcp.store.postgres.db import PgDatabase

    if not isinstance(store.db, PgDatabase):
        yield
        return
    from molar_mcp.store.postgres.secrets import exclusive

    with exclusive(store.db, "demo"):
        yield


@dataclass
class Embedded:
    """The embedded store and the /v1 app serving it, opened together."""

    store: SqliteTraceStore
    api_app: Starlette
    context: ApiContext

    def client_factory(self, *, inline_reads: bool = False) -> ClientFactory:
        """Clients reach the in-process API through an ASGI transport: the same HTTP requests as remote
        mode, streamed (so SSE works), without a socket. `inline_reads`: the store's reads run on the event
        loop (api/reads.py), for one client on the embedded SQLite store; ignored on PostgreSQL, whose reads
        wait on the network."""
        inline = inline_reads and self.reads_inline_possible
        return in_process_client_factory(self.api_app, inline_reads=inline)

    @property
    def reads_inline_possible(self) -> bool:
        """The embedded SQLite store (not its PostgreSQL subclass, whose reads wait on the network)."""
        return type(self.store) is SqliteTraceStore


def open_blobs(blob_url: str, data_dir: Path) -> BlobStore:
    """`s3://bucket/prefix` (an S3-compatible bucket) or `file:///path` (a shared directory)."""
    if blob_url.startswith("s3://"):
        from molar_mcp.store.s3 import S3BlobStore

        return S3BlobStore(blob_url, data_dir / "scratch")
    if blob_url.startswith("file://"):
        return BlobStore(Path(blob_url.removeprefix("file://")))
    raise ValueError(f"blob URL must be s3://bucket/prefix or file:///path, not {blob_url!r}")


def open_store(
    data_dir: Path,
    *,
    database_url: str | None = None,
    blob_url: str | None = None,
    pool_max: int | None = None,
) -> SqliteTraceStore:
    """The trace store: embedded (SQLite + blob files in `data_dir`) unless `database_url` names a
    PostgreSQL database; blobs in `blob_url` when given. `data_dir` then holds only scratch files."""
    blobs = open_blobs(blob_url, data_dir) if blob_url else None
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"database URL must be postgresql://…, not {database_url.split(':', 1)[0]}://…")
        from molar_mcp.store.postgres import PostgresTraceStore

        pool = pool_max or int(os.environ.get("MOLAR_DB_POOL_MAX", "10"))
        return PostgresTraceStore(database_url, data_dir, blobs=blobs, pool_max=pool)
    store = SqliteTraceStore(data_dir)
    if blobs is not None:
        store.blobs = blobs
    return store


@contextmanager
def open_embedded(
    data_dir: Path,
    *,
    database_url: str | None = None,
    blob_url: str | None = None,
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
    rate_limits: RateLimits | None = None,
    debugger: DebuggerConfig | None = None,
    otlp_settings: OtlpSettings | None = None,
    live_quiet_seconds: float = DEFAULT_LIVE_QUIET_SECONDS,
    replay_demo: bool = True,
    replay_roots: Sequence[Path] = (),
    workers: WorkerPlace | None = None,
) -> Iterator[Embedded]:
    """The embedded store and its /v1 app. Debugger chats call the trace tools through our MCP server;
    `debugger` says which model answers them (none: the findings alone) and the budget. Replays run the
    demo shop when `replay_demo`, and the registered projects under `replay_roots` (docs/replay.md).
    `workers`: this process is one of `serve --workers N` (api/workers.py): its live bus and rate limits
    are shared with the other workers."""
    debugger = debugger or DebuggerConfig()
    store = open_store(data_dir, database_url=database_url, blob_url=blob_url)
    ctx: ApiContext | None = None
    bus: LiveBus | None = None
    tools = ChatTools()
    # Big traces are analysed in a worker process reading the same store (api/analysis_worker.py).
    worker = AnalysisWorker(StoreAddress(data_dir, database_url), min_events=min_events_from_env())
    # Big OTLP traces are finished in a worker process too (api/otlp_finisher.py).
    finisher = OtlpFinisher(
        StoreAddress(data_dir, database_url), min_spans=min_spans_from_env(), processes=processes_from_env()
    )
    try:
        limiter: RateLimiter | None = None
        signer: UrlSigner | None = None
        if database_url:
            bus = _replica_setup(store, data_dir)
            signer = _shared_url_signer(store, data_dir)
            from molar_mcp.api.ratelimit_pg import PgRateLimiter

            limiter = PgRateLimiter(limits=rate_limits or RateLimits(), db=store.db)
        elif workers is not None:
            from molar_mcp.api.bus_peers import PeerLiveBus
            from molar_mcp.api.ratelimit_shared import SharedRateLimiter

            bus = PeerLiveBus(store.db, workers.run_dir, workers.index, workers.workers)
            shared = workers.run_dir / "rate-limits.sqlite3"
            limiter = SharedRateLimiter(limits=rate_limits or RateLimits(), path=shared)
        ctx = ApiContext.embedded(
            store,
            bus=bus,
            rate_limiter=limiter,
            max_bundle_bytes=max_bundle_bytes,
            rate_limits=rate_limits,
            model=debugger.provider(),
            tools=tools,
            debugger_budget_cents=debugger.budget_cents,
            model_price=debugger.price,
            otlp_settings=otlp_settings,
            live_quiet_seconds=live_quiet_seconds,
            apps=None if replay_demo else {},
            replay_roots=replay_roots,
            signer=signer,
            analysis_worker=worker,
            otlp_finisher=finisher,
        )
        api_app = create_api_app(ctx)
        tools.bind(api_app)
        yield Embedded(store=store, api_app=api_app, context=ctx)
    finally:
        if ctx is not None and ctx.replays is not None:
            ctx.replays.close()  # replays still running stop their apps before the store closes
        if bus is not None:
            bus.close()
        finisher.close()
        worker.close()
        store.close()


SHARED_SECRETS = (
    SIGNING_KEY_FILE,
    SESSION_SECRET_FILE,
    INTERNAL_TOKEN_FILE,
    URL_SIGNING_FILE,
    REQUEST_STATE_KEY_FILE,
)


def _replica_setup(store: SqliteTraceStore, data_dir: Path) -> LiveBus:
    """What replicas on one database share beyond the tables: the secrets (so a token, a signed URL or an
    MCP request state made by one replica is good on another) and the live bus (LISTEN/NOTIFY)."""
    from molar_mcp.api.bus_pg import PgLiveBus
    from molar_mcp.store.postgres.db import PgDatabase
    from molar_mcp.store.postgres.secrets import share_secrets

    db = store.db
    assert isinstance(db, PgDatabase)

    def create() -> None:
        AuthKeys.load_or_create(data_dir)
        internal_token(data_dir)
        UrlSigner(data_dir / URL_SIGNING_FILE)
        request_state_key(data_dir)

    share_secrets(db, data_dir, SHARED_SECRETS, create)
    return PgLiveBus(db)


def _shared_url_signer(store: SqliteTraceStore, data_dir: Path) -> UrlSigner:
    """The artifact URL signer of a replica: its key ring read again from the database on a key it does
    not know and every `MOLAR_SECRETS_REFRESH_SECONDS` (default 30), so a rotation reaches running replicas."""
    from molar_mcp.store.postgres.db import PgDatabase
    from molar_mcp.store.postgres.secrets import secret_source

    assert isinstance(store.db, PgDatabase)
    refresh = float(os.environ.get("MOLAR_SECRETS_REFRESH_SECONDS") or DEFAULT_REFRESH_SECONDS)
    return UrlSigner(
        data_dir / URL_SIGNING_FILE, source=secret_source(store.db, URL_SIGNING_FILE), refresh_seconds=refresh
    )


def request_state_key(data_dir: Path) -> bytes:
    """The key that seals MCP request state (input-required round trips): kept in the data dir, so it
    survives restarts and, shared through the database, holds across replicas."""
    path = data_dir / REQUEST_STATE_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def rotate_url_signing_key(data_dir: Path, *, keep: int, database_url: str | None = None) -> str:
    """Sign new artifact URLs with a new key (keeping `keep` keys in all); with a database, the new ring
    becomes every replica's (running replicas read it again: at once on a URL signed with the new key,
    within `MOLAR_SECRETS_REFRESH_SECONDS` for signing and for revocations). Returns the new key id."""
    if not database_url:
        return UrlSigner(data_dir / URL_SIGNING_FILE).rotate(keep=keep)
    from molar_mcp.store.postgres.db import PgDatabase
    from molar_mcp.store.postgres.secrets import share_secrets, store_secret

    db = PgDatabase(database_url, data_dir, min_size=1, max_size=1)
    try:
        share_secrets(db, data_dir, [URL_SIGNING_FILE], lambda: None)
        kid = UrlSigner(data_dir / URL_SIGNING_FILE).rotate(keep=keep)
        store_secret(db, data_dir, URL_SIGNING_FILE)
    finally:
        db.close()
    return kid


def load_shipped_demo(store: SqliteTraceStore, org_id: str = LOCAL_ORG_ID) -> int:
    """The shipped recordings of the demo shop's scenario runs (`molar_mcp.demo.recorded`, made by
    `scripts/record_demo_runs.py`), stored once per store (data dir or shared database) as replayable runs.
    Returns how many were stored now."""
    from molar_mcp.demo.recorded import load_shipped_runs

    if demo_marked(store, DEMO_MARKER):
        return 0
    try:
        stored = load_shipped_runs(store, ReplayStore(store.db), org_id)
    except (BundleError, ValueError) as exc:  # shipped data that fails is a packaging bug: say so
        raise RuntimeError(f"the shipped demo runs are invalid: {getattr(exc, 'message', exc)}") from exc
    mark_demo(store, DEMO_MARKER, len(stored))
    return len(stored)


def record_demo(
    store: SqliteTraceStore, org_id: str = LOCAL_ORG_ID, *, app: AppConfig | None = None
) -> list[RecordedRun]:
    """Run the shipped scenarios against the demo shop (a fresh copy each, all at once) and store the
    real traces — some pass, some fail — as replayable. Raises if the shop cannot start."""
    from molar_mcp.demo import scenario_paths
    from molar_mcp.demo.config import demo_app_config

    items = scenario_files(scenario_paths())
    run = functools.partial(record_scenarios, store, ReplayStore(store.db), org_id, app or demo_app_config(), items)
    runs = anyio.run(run)
    mark_demo(store, DEMO_RECORDED_MARKER, len(runs))
    return runs


def load_playwright_demo(store: SqliteTraceStore, org_id: str = LOCAL_ORG_ID) -> int:
    """The demo's Playwright Test run, once per store (data dir or shared database): browser tests of the
    demo shop recorded from a real `npx playwright test` (`scripts/record_playwright_demo.py` →
    `demo/playwright_run/`: run.json and a folder per test attempt with result.json, trace.zip and
    attachments), stored as the reporter would have uploaded it — one run, a trace per attempt.
    Returns how many traces were stored now."""
    import json

    from molar_mcp.ingest.playwright import Attachment
    from molar_mcp.ingest.results import TestResultInfo
    from molar_mcp.ingest.service import StoredTrace, Upload, ingest_upload
    from molar_mcp.models.runs import NewRun
    from molar_mcp.store.runs import SqliteRunStore

    if demo_marked(store, DEMO_PLAYWRIGHT_MARKER):
        return 0
    folder = resources.files("molar_mcp.demo") / "playwright_run"
    meta = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    status = meta.pop("status", None)
    runs = SqliteRunStore(store.db)
    run = runs.create(org_id, NewRun.model_validate(meta))

    def link(stored: StoredTrace) -> None:
        r = stored.result
        runs.add_trace(
            org_id,
            run.id,
            trace_id=stored.trace_id,
            short_id=stored.short_id,
            test_key=stored.scenario_slug,
            title=r.title() if r is not None else None,
            status=stored.status,
            retry=r.retry if r is not None else 0,
        )

    count = 0
    for attempt in sorted((entry for entry in folder.iterdir() if entry.is_dir()), key=lambda entry: entry.name):
        recorded = json.loads((attempt / "result.json").read_text(encoding="utf-8"))
        result = TestResultInfo.model_validate(recorded["result"])
        files = [
            Attachment(a["name"], a["content_type"], (attempt / a["name"]).read_bytes())
            for a in recorded["attachments"]
        ]
        trace = recorded.get("trace")
        upload = Upload(
            data=(attempt / trace).read_bytes() if trace else json.dumps(recorded["result"]).encode(),
            filename=trace or "result.json",
            format="playwright-trace" if trace else "playwright-result",
            result=result,
            attachments=files,
        )
        try:
            count += len(ingest_upload(store, org_id, upload, link).traces)
        except BundleError as exc:  # shipped data that fails is a packaging bug: say which
            raise RuntimeError(f"demo Playwright result {attempt.name} is invalid: {exc.message}") from exc
    runs.finish(org_id, run.id, status)
    mark_demo(store, DEMO_PLAYWRIGHT_MARKER, count)
    return count


def load_demo_data(store: SqliteTraceStore, org_id: str = LOCAL_ORG_ID, *, app: AppConfig | None = None) -> str:
    """The demo's test runs, once per store (data dir or shared database): the recorded Playwright Test run
    (`load_playwright_demo`), then the scenario runs recorded now against the demo shop (`record_demo`), or
    their shipped recordings when recording fails (`load_shipped_demo`). Returns a line for the log."""
    said: list[str] = []
    playwright = load_playwright_demo(store, org_id)
    if playwright:
        said.append(f"a Playwright Test run of {playwright} test attempts")
    if demo_marked(store, DEMO_RECORDED_MARKER) or demo_marked(store, DEMO_MARKER):
        return "; ".join(said) or "already loaded"
    try:
        runs = record_demo(store, org_id, app=app)
    except Exception as exc:
        log.warning("recording the demo traces failed (%s); loading their shipped recordings instead", exc)
        shipped = load_shipped_demo(store, org_id)
        return "; ".join([f"loaded {shipped} shipped recordings of the demo runs (recording now failed)", *said])
    failed = sum(1 for r in runs if r.status != "passed")
    return "; ".join([f"recorded {len(runs)} demo traces ({len(runs) - failed} passed, {failed} failed)", *said])


def load_demo(embedded: Embedded, org_id: str = LOCAL_ORG_ID, *, app: AppConfig | None = None) -> str:
    """Everything `--demo` shows, for `serve` and `stdio` alike, once per store (replicas on one database
    load it once): the test runs (`load_demo_data`) and the agent run (`load_agent_demo`). Returns a line
    for the log."""
    with demo_loading(embedded.store):
        return "; ".join([load_demo_data(embedded.store, org_id, app=app), load_agent_demo(embedded, org_id)])


DEMO_AGENT_MARKER = "demo-agent-v1"
DEMO_AGENT_FILE = "refund-agent-run.otlp.json"


def load_agent_demo(embedded: Embedded, org_id: str = LOCAL_ORG_ID) -> str:
    """The demo's agent run, once per store (data dir or shared database): an OTLP/JSON export the
    OpenTelemetry SDK recorded (`scripts/record-agent-demo`), stored through the OTLP receiver's own
    mapping. Returns a log line."""
    context = embedded.context
    if demo_marked(embedded.store, DEMO_AGENT_MARKER):
        return "agent run already loaded"
    body = resources.files("molar_mcp.demo").joinpath(DEMO_AGENT_FILE).read_bytes()
    message = decode_json(body)
    decoded = decode_spans(message)
    if decoded.rejected:  # a shipped recording that does not load is a packaging bug: say which
        raise RuntimeError(f"demo agent run {DEMO_AGENT_FILE}: {decoded.rejected[0].reason}")
    outcomes = anyio.run(otlp_ingest, context, org_id, message)
    mark_demo(embedded.store, DEMO_AGENT_MARKER, len(outcomes))
    return f"loaded {len(outcomes)} agent run recorded through OpenTelemetry"


def create_serve_app(
    embedded: Embedded,
    *,
    host: str = "127.0.0.1",
    allowed_hosts: list[str] | None = None,
    auth: ServeAuth | None = None,
    allowed_origins: list[str] | None = None,
    workers: WorkerPlace | None = None,
    inline_reads: bool = False,
) -> Starlette:
    """One ASGI app: `/mcp` (streamable HTTP, both protocol eras), `/v1`, well-knowns, `/healthz`, and
    with `auth` the OAuth 2.1 authorization server (`/api/oauth/*`) guarding `/mcp` and `/v1`.
    `inline_reads`: the MCP tools' reads of the embedded SQLite store run on the event loop (api/reads.py;
    ignored on PostgreSQL); requests over the network keep their worker thread."""
    api_app: Starlette = embedded.api_app
    inline = inline_reads and embedded.reads_inline_possible
    factory = embedded.client_factory(inline_reads=inline)
    if auth is not None:
        api_app = create_api_app(embedded.context, auth=auth.api_auth())
        factory = acting_client_factory(api_app, auth.internal_token, inline_reads=inline)
    mcp_server = create_mcp_server(
        factory, request_state_keys=[request_state_key(embedded.store.data_dir)], shared_state=True
    )
    security = None
    if allowed_hosts:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=allowed_hosts,
            allowed_origins=[f"http://{h}" for h in allowed_hosts] + [f"https://{h}" for h in allowed_hosts],
        )
    # Two session managers of one server: 2026-07-28 requests no notification can belong to are answered
    # in JSON mode, in their own task; everything else in SSE mode (mcp/answer_mode.py). Each call of
    # streamable_http_app() makes the server's session_manager a new one.
    mcp_server.streamable_http_app(host=host, transport_security=security, json_response=True)
    json_manager = mcp_server.session_manager
    mcp_server.streamable_http_app(
        host=host,
        transport_security=security,
        # 2025-11-25 SSE resumability (event ids, priming event, Last-Event-ID replay), bounded.
        event_store=BoundedEventStore(),
        retry_interval=1000,
        # Abandoned 2025-11-25 sessions are reaped after minutes, not half an hour.
        session_idle_timeout=SESSION_IDLE_SECONDS,
    )
    sse_manager = mcp_server.session_manager
    context = embedded.context
    mcp_app = AnswerModeRouter(
        sse_manager.handle_request,
        json_manager.handle_request,
        streaming_tools=[spec.name for spec in TOOL_SPECS if spec.long_running],
        counted=lambda mode: context.metrics.mcp_answers.labels(mode).inc(),
    )

    async def capabilities(request: Request) -> JSONResponse:
        return JSONResponse(await build_manifest(mcp_server, TOOL_SPECS, auth_required=auth is not None))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan never runs: run the MCP session manager here (MCP-NOTES.md).
        async with (
            embedded.context.bus.running(),
            # Both enter the server's lifespan; the first opens its state, the second shares it.
            json_manager.run(),
            sse_manager.run(),
            anyio.create_task_group() as tasks,
        ):
            # OTLP traces finish after a quiet period even when no request comes to notice it.
            tasks.start_soon(run_sweeper, embedded.context)
            # Live traces left running by a crashed producer are marked interrupted after a quiet period.
            tasks.start_soon(run_reaper, embedded.context)
            if auth is not None:  # registered OAuth clients never used are deleted after a while
                tasks.start_soon(run_client_expiry, auth)
            if embedded.context.replays is not None:
                embedded.context.replays.start()  # claims replays queued through any replica
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                if router is not None:
                    await router.aclose()
                worker = embedded.context.analysis_worker
                if worker is not None:  # no analysis process outlives the server
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(worker.stop)

    # One tool call is one unit of its org's `tool` budget (the reads it makes inside are not counted).
    mcp_endpoint: ASGIApp = ToolCallBudget(mcp_app, limiter=context.rate_limiter, metrics=context.metrics)
    # A discovery document: readable from any origin (CORS, no cookies), like the OAuth well-knowns.
    public_capabilities = CORSMiddleware(request_response(capabilities), allow_origins=["*"], allow_methods=["GET"])
    routes: list[BaseRoute] = [
        Route("/.well-known/molar-capabilities.json", public_capabilities, methods=["GET", "OPTIONS"])
    ]
    if auth is not None:
        routes += create_oauth_routes(auth.config, auth.db)
        routes += create_protected_resource_routes([auth.mcp_resource, auth.api_resource])
        # Per-tool scopes with step-up (403 insufficient_scope), tools/list filtered to what the token may call.
        policy = ScopePolicy.of({spec.name: [spec.scope] for spec in TOOL_SPECS})
        mcp_endpoint = McpScopeGuard(
            mcp_endpoint, verifier=auth.verifier(auth.mcp_resource), resource=auth.mcp_resource, policy=policy
        )
    router = None
    if workers is not None:  # 2025-11-25 sessions stay with the worker that opened them (api/workers.py)
        mcp_endpoint = router = SessionRouter(mcp_endpoint, workers, metrics=context.metrics)
    routes += [Route("/mcp", endpoint=mcp_endpoint), Mount("/", app=api_app)]
    middleware = [Middleware(OriginGuard, allowed=allowed_origins)] if allowed_origins is not None else []
    # Live appends skip the routers: the /v1 app's own middleware around the endpoint (api/append_route.py).
    middleware.append(Middleware(LiveAppendRoute, api_app=api_app))
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)


async def manifest_document(*, auth_required: bool = True) -> dict[str, Any]:
    """The capability manifest, without a store: listing tools never opens the server's client."""
    server = create_mcp_server(remote_client_factory("http://127.0.0.1:9", None))
    return await build_manifest(server, TOOL_SPECS, auth_required=auth_required)
