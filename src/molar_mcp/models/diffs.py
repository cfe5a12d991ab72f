"""Pydantic vocabulary of a step-aware comparison of two traces (`GET /v1/traces/diff`). No I/O here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

DiffDimension = Literal["overview", "steps", "network", "console"]
DIFF_DIMENSIONS: tuple[str, ...] = ("overview", "steps", "network", "console")
Side = Literal["a", "b"]
AssertionChangeKind = Literal["now_passes", "now_fails", "changed", "only_in_a", "only_in_b"]


class TraceSide(BaseModel):
    id: str
    short_id: str
    status: str
    scenario_slug: str | None = None
    failure_signature: str | None = None
    duration_ms: int | None = None
    parent_trace_id: str | None = None
    replay_from_step: int | None = None
    event_count: int = 0


class Divergence(BaseModel):
    """The first place, in step order, where the two runs differ."""

    step: int | None = None
    kind: Literal["step_status", "assertion", "response_status", "response_body", "request", "events", "missing_step"]
    what: str = Field(description="one line: what differs")
    seq_a: int | None = None
    seq_b: int | None = None


class AssertionChange(BaseModel):
    step: int
    matcher: str | None = None
    target: str = Field(description="the JSON path, or the expectation's text")
    change: AssertionChangeKind
    ok_a: bool | None = None
    ok_b: bool | None = None
    expected_a: Any = None
    expected_b: Any = None
    actual_a: Any = None
    actual_b: Any = None
    seq_a: int | None = None
    seq_b: int | None = None


class StepDiff(BaseModel):
    step: int
    title: str | None = None
    ok_a: bool | None = None
    ok_b: bool | None = None
    in_a: bool = True
    in_b: bool = True
    restored_b: bool = Field(default=False, description="b re-ran this step only to restore state before its replay")
    changed: bool = Field(description="the step's outcome, an assertion, a response status or body differs")
    duration_ms_a: int | None = None
    duration_ms_b: int | None = None
    delta_ms: int | None = Field(default=None, description="b minus a")
    events_a: int = 0
    events_b: int = 0


class BodyChange(BaseModel):
    path: str = Field(description="JSON path in the body (`$` for a whole non-JSON body)")
    a: str | None = Field(default=None, description="the value in a (JSON text, clipped); null: absent")
    b: str | None = None


class ExchangeDiff(BaseModel):
    """One HTTP request/response of a step (one redirect hop), aligned across the runs."""

    step: int | None = None
    hop: int = 1
    method: str | None = None
    url: str | None = None
    only_in: Side | None = None
    status_a: int | None = None
    status_b: int | None = None
    changed: bool = False
    body_changes: list[BodyChange] = Field(default_factory=list)
    body_changes_total: int = 0
    duration_ms_a: int | None = None
    duration_ms_b: int | None = None
    delta_ms: int | None = None


class ConsoleDiff(BaseModel):
    step: int | None = None
    kind: str
    level: str | None = None
    text: str
    only_in: Side


class TimingDiff(BaseModel):
    duration_ms_a: int | None = None
    duration_ms_b: int | None = None
    delta_ms: int | None = None
    slowest_delta_step: int | None = Field(default=None, description="the step whose duration changed the most")
    slowest_delta_ms: int | None = None


class DiffCounts(BaseModel):
    steps_compared: int = 0
    steps_changed: int = 0
    assertions_now_pass: int = 0
    assertions_now_fail: int = 0
    assertions_changed: int = 0
    exchanges_changed: int = 0
    console_only_in_a: int = 0
    console_only_in_b: int = 0


class TraceDiff(BaseModel):
    """`GET /v1/traces/diff?a=&b=&dimension=`: b compared with a, aligned by step number."""

    a: TraceSide
    b: TraceSide
    dimension: DiffDimension
    summary: str = Field(description="one or two sentences: outcome change, first divergence, assertions")
    status_changed: bool
    first_divergence: Divergence | None = None
    counts: DiffCounts = Field(default_factory=DiffCounts)
    assertions: list[AssertionChange] = Field(default_factory=list, description="assertions that differ")
    steps: list[StepDiff] = Field(default_factory=list)
    network: list[ExchangeDiff] = Field(default_factory=list)
    console: list[ConsoleDiff] = Field(default_factory=list)
    timing: TimingDiff = Field(default_factory=TimingDiff)
    truncated: bool = Field(default=False, description="a trace had more events than the diff reads")
    offset: int = Field(default=0, description="the first row of the dimension's list shown here")
    rows_total: int = Field(
        default=0,
        description="rows of the dimension's list in all (assertions; network: exchanges; console: lines);"
        " one answer holds at most 500",
    )
    next_offset: int | None = Field(default=None, description="more rows: ask again with offset=next_offset")
