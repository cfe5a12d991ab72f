"""Output models of the MCP tools: what `structuredContent` holds and `outputSchema` describes."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, Field


class TraceRow(NamedTuple):
    """A trace in a list. Sent as an array in the order of `TRACE_COLUMNS` (a page holds many rows, and
    keys would repeat in each), without its trailing nulls (the fields most often null come last)."""

    short_id: str
    status: str
    scenario: str | None
    created_at: str
    duration_ms: int | None
    source: str | None
    code_sha: str | None
    failure_signature: str | None
    replay_of: str | None


TRACE_COLUMNS = list(TraceRow._fields)


class TraceList(BaseModel):
    columns: list[str] = Field(
        default_factory=lambda: list(TRACE_COLUMNS),
        description="what each row holds, in order (a shorter row: the rest null). short_id is what get_trace "
        "takes; code_sha its first 7 characters; replay_of set: a replay of that trace, not an ordinary run",
    )
    rows: list[list[str | int | None]] = Field(default_factory=list, description="one array per trace, newest first")
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` to list_traces for the next page; null on the last page"
    )
    omitted: list[str] = Field(default_factory=list, description="what this answer left out, and how to get it")


class EventRow(BaseModel):
    seq: int
    step: int | None = None
    kind: str
    ok: bool | None = None
    message: str | None = None
    detail: str | None = Field(default=None, description="the payload, compacted and masked; may be cut")


class PageEvent(NamedTuple):
    """An event in a page: its message and payload on one line (masked, long values cut with a pointer).
    Sent as an array `[seq, step, kind, failed, text]`: a page holds many, and keys would repeat."""

    seq: int
    step: int | None
    kind: str
    failed: bool
    text: str


class StepRow(BaseModel):
    step: int
    path: str | None = Field(default=None, description="a nested step's path (3.2 is the 2nd step inside step 3)")
    title: str | None = None
    ok: bool | None = None
    events: int


class Failure(BaseModel):
    step: int | None = None
    step_title: str | None = None
    seq: int | None = None
    kind: str | None = None
    message: str | None = None
    expected: str | None = None
    actual: str | None = None
    recovered: list[str] = Field(
        default_factory=list,
        description="steps that failed earlier and the run went on from (retried, or not the final failure)",
    )


class Artifact(BaseModel):
    kind: str
    name: str | None = None
    size: int
    uri: str


class TraceHeader(BaseModel):
    id: str | None = Field(default=None, description="UUID (left out of event pages)")
    short_id: str
    status: str
    scenario: str | None = None
    title: str | None = None
    source: str | None = None
    code_sha: str | None = None
    created_at: str | None = None
    duration_ms: int | None = None
    failure_signature: str | None = None
    parent_trace_id: str | None = None
    replay_from_step: int | None = None
    tier: str | None = None
    event_count: int
    history: str | None = Field(
        default=None, description="how this test's recent runs went: passing, failing since a commit, flaky"
    )
    spans_waiting: int | None = Field(default=None, description="a running OpenTelemetry run's spans not shown yet")


class AgentCall(BaseModel):
    """One model call or tool call of an agent run, as `get_trace` reads it to you."""

    seq: int
    step: int | None = None
    kind: str = Field(description="model or tool")
    name: str = Field(description="the model, or the tool")
    ok: bool | None = None
    tokens: str | None = Field(default=None, description="input→output tokens of a model call")
    cost_usd: float | None = None
    arguments: str | None = Field(default=None, description="a tool call's arguments (compacted, may be cut)")
    said: str | None = Field(default=None, description="the answer, tool calls, result or error (may be cut)")


class AgentConversation(BaseModel):
    calls: list[AgentCall] = Field(default_factory=list, description="model and tool calls in order (may be cut)")
    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(default=None, description="where the model's price is known")
    last_output: str | None = Field(default=None, description="the model's last answer text (may be cut)")


class TraceView(BaseModel):
    trace: TraceHeader
    failure: Failure | None = Field(default=None, description="the failing step and its failing event")
    steps: list[StepRow] = Field(default_factory=list, description="steps overview (may be a window)")
    event_counts: dict[str, int] = Field(default_factory=dict, description="events by kind")
    notable: list[EventRow] = Field(
        default_factory=list,
        description="failed events across the trace: HTTP ≥400, errors, failed assertions",
    )
    step_events: list[PageEvent] | None = Field(
        default=None, description="one page of events, each [seq, step, kind, failed, text]"
    )
    next_offset: int | None = Field(default=None, description="pass as `offset` to get_trace for more step events")
    artifacts: list[Artifact] = Field(default_factory=list)
    conversation: AgentConversation | None = Field(
        default=None, description="an agent run's model and tool calls, tokens, cost and last output"
    )
    omitted: list[str] = Field(default_factory=list, description="what this answer left out, and how to get it")


class EventView(BaseModel):
    trace_id: str
    seq: int
    step: int | None = None
    kind: str
    ok: bool | None = None
    message: str | None = None
    path: str | None = Field(default=None, description="the JSON path or key the content was narrowed by")
    find: str | None = Field(default=None, description="the substring the content's lines were searched for")
    matches: int | None = Field(default=None, description="values at the path, or lines found")
    total_chars: int = Field(description="length of the whole content (payload, selection or search result)")
    offset: int = Field(description="first character of `content`")
    content: str = Field(description="pretty-printed, secrets masked; a text body follows `--- body ---`")
    next_offset: int | None = Field(default=None, description="pass as `offset` for the next characters")
    omitted: list[str] = Field(default_factory=list, description="what this answer left out, and how to get it")


# ---- debug_run -----------------------------------------------------------------------------------


class DebugFinding(BaseModel):
    label: str = Field(description="what kind of failure, e.g. http_error, assertion_failed, timeout")
    confidence: float
    critical_step: int | None = Field(default=None, description="the step of the cause (replay from here)")
    critical_seq: int | None = Field(default=None, description="the seq of the causing event")
    evidence_seqs: list[int] = Field(default_factory=list, description="seqs of the events this finding cites")
    summary: str
    signature: str


class ReplaySuggestion(BaseModel):
    from_step: int
    change: str = Field(description="what to change before replaying from `from_step`")


class ToolCallRecord(BaseModel):
    tool: str = Field(description="the call made: a tool name, or the REST call when no model ran")
    arguments: dict[str, Any] = Field(default_factory=dict)
    result_tokens: int = Field(description="estimated tokens of what the call returned")
    duration_ms: float
    error: str | None = None


class DebugView(BaseModel):
    trace_id: str
    short_id: str | None = None
    status: str | None = None
    chat_id: str | None = Field(
        default=None, description="pass back as `chat_id` to ask a follow-up; null when no model answered"
    )
    model: str | None = Field(default=None, description="the model that answered; null: analysis without a model")
    answer: str = Field(description="the answer; without a model, only what the detectors' findings say")
    findings: list[DebugFinding] = Field(default_factory=list, description="detector findings, best first")
    evidence: list[EventRow] = Field(
        default_factory=list, description="the cited events, quoted (secrets masked, payloads cut)"
    )
    failure_signature: str | None = None
    suggested_replay: ReplaySuggestion | None = None
    incident_id: str | None = Field(default=None, description="the incident this failure is clustered into")
    tool_calls: list[ToolCallRecord] = Field(default_factory=list, description="the calls made to answer")
    analyzer_version: str | None = None
    omitted: list[str] = Field(default_factory=list, description="what this answer left out, and how to get it")


# ---- replay_trace, get_replay, diff_traces ---------------------------------------------------------


class ReplayRow(BaseModel):
    replay_id: str
    trace_id: str = Field(description="the source trace")
    status: str = Field(description="queued, running, succeeded (the replayed run was recorded) or failed")
    phase: str = Field(description="queued, starting_app, restoring, running, recording or done")
    from_step: int
    replay_trace_id: str | None = Field(default=None, description="short id of the child trace (get_trace reads it)")
    trace_status: str | None = Field(default=None, description="whether the replayed run passed: passed, failed, error")
    failure_signature: str | None = None
    message: str | None = None
    error: str | None = Field(default=None, description="why the replay failed: app_start_failed, timeout, …")
    log_tail: str | None = Field(default=None, description="the end of the app's output when it did not start")
    queue_position: int | None = None
    duration_ms: int | None = None
    resource: str = Field(description="the molar://replays/{id} resource of this replay")


class DiffStepRow(BaseModel):
    step: int
    title: str | None = None
    a: str = Field(description="passed, failed or absent")
    b: str
    restored: bool = Field(default=False, description="b re-ran this step only to restore the app's state")
    delta_ms: int | None = None


class DiffAssertionRow(BaseModel):
    step: int
    target: str = Field(description="the JSON path or what the assertion checks")
    change: str = Field(description="now_passes, now_fails, changed, only_in_a, only_in_b")
    expected_a: str | None = None
    actual_a: str | None = None
    expected_b: str | None = None
    actual_b: str | None = None


class DiffExchangeRow(BaseModel):
    step: int | None = None
    request: str = Field(description="method and path (hosts differ between runs and are left out)")
    status: str = Field(description="`a → b`, e.g. `200 → 200`")
    only_in: str | None = None
    body: list[str] = Field(default_factory=list, description="changed body fields: `path: a → b`")


class DiffConsoleRow(BaseModel):
    step: int | None = None
    kind: str
    text: str
    only_in: str


class DiffView(BaseModel):
    a: str = Field(description="short id of trace a")
    b: str = Field(description="short id of trace b")
    a_status: str
    b_status: str
    dimension: str
    summary: str
    first_divergence: str | None = Field(default=None, description="the first place the runs differ, in step order")
    first_divergence_step: int | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    assertions: list[DiffAssertionRow] = Field(default_factory=list, description="assertions that differ")
    steps: list[DiffStepRow] = Field(default_factory=list)
    network: list[DiffExchangeRow] = Field(default_factory=list)
    console: list[DiffConsoleRow] = Field(default_factory=list)
    duration_ms_a: int | None = None
    duration_ms_b: int | None = None
    next_offset: int | None = Field(default=None, description="more rows: call again with this offset")
    omitted: list[str] = Field(default_factory=list, description="what this answer left out, and how to get it")


class ReplayView(BaseModel):
    replay: ReplayRow
    diff: DiffView | None = Field(default=None, description="the overview diff against the source, once it succeeded")
    next: str = Field(description="what to call next")
    omitted: list[str] = Field(default_factory=list, description="what this answer left out, and how to get it")
