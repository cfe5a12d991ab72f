"""Pydantic vocabulary of traces and events. No I/O here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from molar_mcp.models.limits import MAX_INT64

# Playwright Test's outcomes are kept too: timed_out (timedOut), skipped, interrupted, and flaky (an attempt
# that passed after an earlier attempt of the same test failed).
TraceStatus = Literal[
    "queued", "running", "passed", "failed", "error", "aborted", "timed_out", "skipped", "interrupted", "flaky"
]
# `agent`: an agent run received over OTLP (api/otlp.py).
TraceSource = Literal["pr", "schedule", "manual", "shadow_diff", "agent"]
TraceTier = Literal["hot", "warm", "cold"]

TRACE_STATUSES: tuple[str, ...] = (
    "queued",
    "running",
    "passed",
    "failed",
    "error",
    "aborted",
    "timed_out",
    "skipped",
    "interrupted",
    "flaky",
)
TRACE_SOURCES: tuple[str, ...] = ("pr", "schedule", "manual", "shadow_diff", "agent")
TRACE_TIERS: tuple[str, ...] = ("hot", "warm", "cold")

# The event kinds the ingest format documents (docs/bundle-format.md). Other kinds are stored as
# they come: a trace producer may add its own, and readers treat unknown kinds as opaque.
KNOWN_EVENT_KINDS: tuple[str, ...] = (
    "step.start",
    "step.end",
    "action",
    "navigation",
    "network.request",
    "network.response",
    "assertion",
    "console",
    "error",
    "log",
    "screenshot",
    "retry",
    "llm.request",
    "llm.response",
    "tool.call",
    "tool.result",
)


class Event(BaseModel):
    """One event of a trace, ordered by `seq` (strictly increasing within a trace).

    `ts` is epoch milliseconds. `step_id` names the step the event belongs to;
    `step` is the 1-based position of that step in the trace (derived by the store from the
    order in which step ids first appear), so "step 7" means the same thing everywhere.
    """

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(ge=0, le=MAX_INT64)
    ts: int = Field(ge=0, le=MAX_INT64, description="epoch milliseconds")
    kind: str = Field(min_length=1, max_length=64)
    step_id: str | None = Field(default=None, max_length=128)
    step: int | None = Field(default=None, ge=1)
    ok: bool | None = None
    message: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class ArtifactRef(BaseModel):
    """A blob attached to a trace (video, playwright trace, rrweb, screenshot, har, …)."""

    kind: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str | None = None
    content_type: str = "application/octet-stream"
    size: int = Field(default=0, ge=0)


class TraceListItem(BaseModel):
    """A row of `GET /v1/traces`."""

    id: str
    short_id: str
    scenario_id: str | None = None
    scenario_slug: str | None = None
    scenario_title: str | None = None
    status: TraceStatus
    source: TraceSource | None = None
    tier: TraceTier = "hot"
    pinned: bool = False
    duration_ms: int | None = None
    code_sha: str | None = None
    failure_signature: str | None = None
    created_at: datetime
    replay_of: str | None = Field(
        default=None,
        description="this run is a replay of that trace (its parent), not an ordinary run of the test: "
        "it never counts in the test's history",
    )


class TraceListResponse(BaseModel):
    items: list[TraceListItem]
    next_cursor: str | None = None
    row_cursors: list[str] | None = Field(
        default=None,
        description="asked for with row_cursors=true: row_cursors[i] continues the list after items[i] "
        "(a page cut short resumes where it was cut)",
    )


class StepSummary(BaseModel):
    """One step of a trace as the store derives it from the events.

    Steps nest (a Playwright `test.step` holding actions, an agent span holding LLM and tool
    spans). `step` is the number of the step's top-level ancestor (its own number at the top
    level), so "step 3" names the same events everywhere; `path` names a nested step ("3.2.1").
    A trace's steps are listed in the order they began, parents before their children; the
    counts and seqs of a step cover its whole subtree.
    """

    step: int
    step_id: str
    title: str | None = None
    ok: bool | None = None
    first_seq: int
    last_seq: int
    event_count: int
    path: str = ""
    parent_step_id: str | None = None
    depth: int = Field(default=0, ge=0)
    category: str | None = None
    duration_ms: int | None = None

    @model_validator(mode="after")
    def _top_level_path(self) -> StepSummary:
        if not self.path:
            self.path = str(self.step)
        return self


class RunRef(BaseModel):
    """A run named in a history: enough to open it and to place it in the code's history."""

    trace_id: str
    short_id: str
    status: str
    code_sha: str | None = None
    created_at: datetime


class ScenarioHistory(BaseModel):
    """How the recent ordinary runs of a trace's scenario (a test's identity) went; replays never count."""

    runs: int = Field(description="runs looked at (the newest, at most 20)")
    failed: int = Field(description="of those, how many failed (flaky ones included)")
    recent: str = Field(description="one letter a run, newest first: p passed, f failed, k flaky")
    flaky: bool
    newly_failing: bool = Field(description="the newest runs fail and the ones before them passed")
    fail_streak: int = Field(description="failing runs in a row, up to the newest")
    pass_streak: int = Field(description="passing runs in a row, up to the newest")
    first_failing: RunRef | None = Field(default=None, description="the first run of the current failing streak")
    last_passing: RunRef | None = Field(default=None, description="the newest passing run before that streak")
    summary: str = Field(description="the history in one sentence")


class TraceDetail(TraceListItem):
    """`GET /v1/traces/{id}` plus the fields an agent needs to act."""

    org_id: str
    s3_prefix: str
    signed_urls: dict[str, str] = Field(default_factory=dict)
    parent_trace_id: str | None = None
    replay_from_step: int | None = None
    total_size_bytes: int = 0
    blob_count: int = 0
    event_count: int = 0
    pr_number: int | None = None
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    steps: list[StepSummary] = Field(default_factory=list)
    event_counts: dict[str, int] = Field(default_factory=dict)
    history: ScenarioHistory | None = None
    spans_waiting: int | None = Field(
        default=None,
        description="an OpenTelemetry run still running: spans received and not shown as events yet (an "
        "export of 512 or more spans of a run nobody follows is laid out when the run ends)",
    )


class EventsResponse(BaseModel):
    """`GET /v1/traces/{id}/events`: a slice of the ordered events, with the total that matched."""

    events: list[Event]
    total: int
    offset: int
    limit: int


class TraceWithFailures(TraceDetail):
    """`GET /v1/traces/{id}?failed_events=N`: the trace, and in the same read its first N failed events
    (what `GET /v1/traces/{id}/events?ok=false&limit=N` answers)."""

    failed_events: EventsResponse


class IngestedTrace(BaseModel):
    trace_id: str
    short_id: str
    scenario_slug: str
    status: str
    name: str | None = None


class RejectedFile(BaseModel):
    """A file of an upload that was not stored, and why (the rest of the upload was)."""

    name: str
    error: str
    message: str


class IngestResponse(BaseModel):
    """`POST /v1/traces/ingest`: the (first) stored trace; for a report, every stored trace and every
    file that could not be read."""

    trace_id: str
    short_id: str
    run_id: str | None = None
    format: str | None = None
    traces: list[IngestedTrace] = Field(default_factory=list)
    rejected: list[RejectedFile] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every error the API returns: `{error, message}` plus the request id."""

    error: str
    message: str
    request_id: str | None = None


class LiveTrace(BaseModel):
    """`POST /v1/traces`: a running trace to append events to."""

    id: str
    short_id: str
    status: str


class RejectedEvent(BaseModel):
    index: int
    idempotency_key: str | None = None
    reason: str


class AppendResponse(BaseModel):
    """`POST /v1/traces/{id}/events`."""

    accepted: int
    duplicates: int = 0
    rejected: list[RejectedEvent] = Field(default_factory=list)
    last_seq: int | None = None
