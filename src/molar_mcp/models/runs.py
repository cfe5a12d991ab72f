"""Runs: the traces of one test invocation (one `npx playwright test`, one report folder, one pytest
session, one CI job), with counts and the failing tests."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["queued", "running", "passed", "failed", "errored"]
RUN_STATUSES: tuple[str, ...] = ("queued", "running", "passed", "failed", "errored")
# Test outcomes that fail a run (flaky passes: it passed on a retry).
FAILING_OUTCOMES: tuple[str, ...] = ("failed", "timed_out", "interrupted", "error", "aborted")


class RepoRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, max_length=1000)
    remote: str | None = Field(default=None, max_length=1000)


class NewRun(BaseModel):
    """`POST /v1/runs`."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=500)
    kind: str = Field(default="playwright", min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    commit: str | None = Field(default=None, max_length=64)
    branch: str | None = Field(default=None, max_length=300)
    pr_number: int | None = Field(default=None, ge=0, le=2**53)
    ci_url: str | None = Field(default=None, max_length=2000)
    repo: RepoRef | None = None


class FinishRun(BaseModel):
    """`POST /v1/runs/{id}/finish`: the status, or derived from the results when left out."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["passed", "failed", "errored"] | None = None


class RunCounts(BaseModel):
    """Tests by their outcome over all attempts (the last attempt decides; failed then passed is flaky)."""

    tests: int = 0
    attempts: int = 0
    passed: int = 0
    failed: int = 0
    flaky: int = 0
    skipped: int = 0
    timed_out: int = 0
    interrupted: int = 0
    other: int = 0


class RunTest(BaseModel):
    """One test of a run: its scenario, outcome, and the trace of each attempt (first to last)."""

    scenario_slug: str
    title: str | None = None
    status: str
    attempts: int
    trace_id: str = Field(description="the last attempt's trace")
    short_id: str
    trace_ids: list[str] = Field(default_factory=list)


class Run(BaseModel):
    id: str
    short_id: str
    org_id: str
    name: str | None = None
    kind: str
    status: RunStatus
    commit: str | None = None
    branch: str | None = None
    pr_number: int | None = None
    ci_url: str | None = None
    repo: RepoRef | None = None
    created_at: datetime
    finished_at: datetime | None = None
    counts: RunCounts = Field(default_factory=RunCounts)
    failing: list[RunTest] = Field(default_factory=list, description="the failing tests, first failure first")
    flaky: list[RunTest] = Field(default_factory=list)


class RunList(BaseModel):
    items: list[Run]
    next_cursor: str | None = None
