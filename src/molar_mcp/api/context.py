"""What every /v1 handler needs, carried in `app.state` (set once by `create_api_app`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request

from molar_mcp.api.analysis_worker import AnalysisWorker
from molar_mcp.api.bus import LiveBus
from molar_mcp.api.errors import ApiError
from molar_mcp.api.otlp_finisher import OtlpFinisher
from molar_mcp.api.telemetry import Metrics, RateLimiter, RateLimits
from molar_mcp.debugger.chat import ModelProvider, NoTools, ToolRunner
from molar_mcp.debugger.config import DEFAULT_BUDGET_CENTS
from molar_mcp.debugger.pricing import Price
from molar_mcp.demo.config import DEMO_APP_NAME, demo_app_config
from molar_mcp.ingest import DEFAULT_MAX_BUNDLE_BYTES
from molar_mcp.replay.apps import AppConfig
from molar_mcp.replay.projects import ReplayRoots
from molar_mcp.replay.service import ReplayService, ReplaySettings
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceStore
from molar_mcp.store.analysis import SqliteAnalysisStore
from molar_mcp.store.blobs import BlobStore
from molar_mcp.store.chats import SqliteChatStore
from molar_mcp.store.ingest_keys import IngestKeys
from molar_mcp.store.live import LiveTraces
from molar_mcp.store.otlp import OtlpTraces
from molar_mcp.store.port import set_org_scope
from molar_mcp.store.replays import ReplayStore
from molar_mcp.store.runs import SqliteRunStore
from molar_mcp.store.sharing import SqliteSharingStore
from molar_mcp.store.signing import UrlSigner
from molar_mcp.store.tiers import SqliteTiers

DEFAULT_LIVE_QUIET_SECONDS = 600.0
_ORG_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# The trace tools a chat's model may call, acting in one org (the composition root backs them with our
# MCP server, `chat_tools.py`; `api` itself knows no MCP).
ToolRunnerFactory = Callable[[str], AbstractAsyncContextManager[ToolRunner]]


@asynccontextmanager
async def no_tools(org_id: str) -> AsyncIterator[ToolRunner]:
    yield NoTools()


@dataclass
class OtlpSettings:
    """When OTLP traces finish (api/otlp.py), how many exports are stored at once, and how many spans may
    wait to be read after their answer (the rest: 503 with Retry-After)."""

    quiet_seconds: float = 30.0
    abandon_seconds: float = 600.0
    max_in_flight: int = 8
    max_pending_spans: int = 200_000
    late_logs_seconds: float = 60.0  # log records this long after their trace finished are still laid out
    inline_spans: int = 64  # an export this small, with nothing waiting before it, is read before the answer
    # A trace not shown yet that nobody follows, whose spans come this many to an export (the SDK's full
    # batch: a bulk exporter), is not shown live but laid out once when it finishes (0: always shown live).
    bulk_spans: int = 512
    retry_after_seconds: int = 1
    in_flight: int = field(default=0, repr=False)
    converting: bool = field(default=False, repr=False)
    convert_wanted: bool = field(default=False, repr=False)
    received: int = field(default=0, repr=False)  # exports this replica took (wakes an idle sweeper)


@dataclass(frozen=True)
class ApiContext:
    store: TraceStore
    signer: UrlSigner
    blob_root: Path
    live: LiveTraces
    bus: LiveBus
    tiers: SqliteTiers
    analysis: SqliteAnalysisStore
    sharing: SqliteSharingStore
    chats: SqliteChatStore
    otlp: OtlpTraces
    runs: SqliteRunStore
    ingest_keys: IngestKeys
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    metrics: Metrics = field(default_factory=Metrics)
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)
    replays: ReplayService | None = None  # Layer 2 replay (api/replays.py); None: not offered
    model: ModelProvider | None = None  # the debugger chats' model; None: answers are the findings alone
    tools: ToolRunnerFactory = no_tools
    debugger_budget_cents: int = DEFAULT_BUDGET_CENTS
    model_price: Price | None = None  # overrides the price table (e.g. 0,0 for a local model)
    blob_store: BlobStore | None = None  # where artifacts live; an object store hands out presigned URLs
    otlp_settings: OtlpSettings = field(default_factory=OtlpSettings)
    # A live trace no producer touched for this long is marked `interrupted` by the reaper (api/live.py).
    live_quiet_seconds: float = DEFAULT_LIVE_QUIET_SECONDS
    # Where big traces are analysed (api/analysis_worker.py); None: every analysis runs in this process.
    analysis_worker: AnalysisWorker | None = None
    # Where big OTLP traces are finished (api/otlp_finisher.py); None: every finish runs in this process.
    otlp_finisher: OtlpFinisher | None = None
    # Analyses that did not finish, by (org, trace id): why, until one succeeds (GET …/analysis says it).
    analysis_failures: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def embedded(
        cls,
        store: SqliteTraceStore,
        *,
        max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
        rate_limits: RateLimits | None = None,
        apps: Mapping[str, AppConfig] | None = None,
        replay_roots: Sequence[Path] = (),
        model: ModelProvider | None = None,
        tools: ToolRunnerFactory = no_tools,
        debugger_budget_cents: int = DEFAULT_BUDGET_CENTS,
        model_price: Price | None = None,
        bus: LiveBus | None = None,
        rate_limiter: RateLimiter | None = None,
        otlp_settings: OtlpSettings | None = None,
        live_quiet_seconds: float = DEFAULT_LIVE_QUIET_SECONDS,
        signer: UrlSigner | None = None,
        analysis_worker: AnalysisWorker | None = None,
        otlp_finisher: OtlpFinisher | None = None,
    ) -> ApiContext:
        """The context of the store: its signer, blobs, live ingest and bus (one process's, unless given)."""
        return cls(
            store=store,
            signer=signer or UrlSigner(store.data_dir / "signing-keys.json"),
            blob_root=store.blobs.root,
            blob_store=store.blobs,
            live=LiveTraces(store.db),  # before tiers: archived events carry live ingest's columns
            bus=bus or LiveBus(),
            tiers=SqliteTiers(store.db, store.blobs),
            analysis=SqliteAnalysisStore(store.db),
            sharing=SqliteSharingStore(store.db),
            chats=SqliteChatStore(store.db),
            otlp=OtlpTraces(store.db),
            runs=SqliteRunStore(store.db),
            ingest_keys=IngestKeys(store.db),
            max_bundle_bytes=max_bundle_bytes,
            rate_limiter=rate_limiter or RateLimiter(rate_limits or RateLimits()),
            # The apps a replay can run (per-app source dir, start command, health URL); the demo shop by default.
            replays=ReplayService(
                store,
                ReplayStore(store.db),
                apps if apps is not None else {DEMO_APP_NAME: demo_app_config()},
                hide=[store.data_dir],  # should a bound directory hold it, the sandbox lays a tmpfs over it
                roots=ReplayRoots(replay_roots),
                settings=ReplaySettings.from_env(),
            ),
            model=model,
            tools=tools,
            debugger_budget_cents=debugger_budget_cents,
            model_price=model_price,
            otlp_settings=otlp_settings or OtlpSettings(),
            live_quiet_seconds=live_quiet_seconds,
            analysis_worker=analysis_worker,
            otlp_finisher=otlp_finisher,
        )

    def blob_file(self, sha256: str) -> Path:
        return self.blob_root / sha256[:2] / sha256


def api_context(request: Request) -> ApiContext:
    ctx = request.app.state.molar
    assert isinstance(ctx, ApiContext)
    return ctx


def org_of(request: Request) -> str:
    """The org a request acts in: the authenticated principal's (api/auth.py checked `x-molar-org`
    against it); without authentication (loopback dev, embedded stdio), `x-molar-org` (seed 000
    "Org scope (tests/local)"), else the local org. The rest of the request is scoped to it: a store
    that enforces isolation in the database too (PostgreSQL's row-level security) keys on it."""
    org = _org_of(request)
    set_org_scope(org)
    return org


def _org_of(request: Request) -> str:
    principal = request.scope.get("state", {}).get("principal")
    org_id = getattr(principal, "org_id", None)
    if isinstance(org_id, str):
        return org_id
    raw = request.headers.get("x-molar-org")
    if raw is None or raw == "":
        return LOCAL_ORG_ID
    if not _ORG_ID.match(raw):
        raise ApiError(400, "bad_request", "x-molar-org must be 1-64 letters, digits, '-' or '_'")
    return raw
