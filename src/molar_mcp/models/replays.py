"""Pydantic vocabulary of Layer 2 replays. No I/O here."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from molar_mcp.models.traces import TraceStatus

ReplayState = Literal["queued", "running", "succeeded", "failed"]
ReplayPhase = Literal["queued", "starting_app", "restoring", "running", "recording", "done"]
TriggeredVia = Literal["api", "mcp", "cli"]
ReplayErrorCode = Literal[
    "diff_does_not_apply",
    "app_start_failed",
    "timeout",
    "output_limit",
    "run_failed",
    "sandbox_error",
    "interrupted",
    "internal_error",
]
PromoteStatus = Literal["committed", "skipped", "failed"]

REPLAY_PHASES: tuple[ReplayPhase, ...] = ("queued", "starting_app", "restoring", "running", "recording", "done")
FINAL_REPLAY_STATES: tuple[ReplayState, ...] = ("succeeded", "failed")

MAX_DIFF_CHARS = 512 * 1024
MAX_SOURCE_DIFFS = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceDiff(_Strict):
    """A unified diff of the app's source; its paths are relative to the app's source directory."""

    path: str = Field(min_length=1, max_length=500, description="the file the diff changes (names it in errors)")
    diff: str = Field(min_length=1, max_length=MAX_DIFF_CHARS, description="a unified diff (`git diff` output)")


class ReplayEdits(_Strict):
    scenario_diff: str | None = Field(
        default=None, max_length=MAX_DIFF_CHARS, description="a unified diff of the trace's scenario file"
    )
    source_diffs: list[SourceDiff] = Field(default_factory=list, max_length=MAX_SOURCE_DIFFS)


class ReplayRequest(_Strict):
    """`POST /v1/traces/{id}/replay`."""

    from_step: int = Field(ge=1, le=10_000, description="the first step to run again; earlier steps are restored")
    edits: ReplayEdits = Field(default_factory=ReplayEdits)
    triggered_via: TriggeredVia = "api"


class PromoteFixRequest(_Strict):
    """`POST /v1/traces/{id}/promote-fix`."""

    replay_id: str = Field(min_length=1, max_length=64)
    summary: str = Field(min_length=1, max_length=500, description="the commit's subject line")


class PromoteFixResult(BaseModel):
    """What promote-fix did. `pr_url` stays null until a forge (GitHub, GitLab…) is configured."""

    mender_attempt_id: str
    status: PromoteStatus
    message: str = Field(description="what happened, and what to do next")
    branch: str | None = None
    commit_sha: str | None = None
    repository: str | None = Field(default=None, description="the git work tree the branch was created in")
    pr_url: str | None = None


class ReplayOrigin(BaseModel):
    """Where a project's trace was recorded: its repository, commit and (for a Playwright test) the test.
    A replay of it runs that test (or the project's registered command) at that commit (docs/replay.md)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["playwright", "command"]
    repo_path: str | None = Field(default=None, max_length=1000, description="the repository's path where it ran")
    repo_remote: str | None = Field(default=None, max_length=1000, description="its remote URL")
    commit: str | None = Field(default=None, max_length=64)
    dirty: bool = Field(default=False, description="recorded from uncommitted changes: the commit alone is not it")
    project: str | None = Field(default=None, max_length=200, description="Playwright project")
    file: str | None = Field(default=None, max_length=1000, description="test file, relative to the repository")
    title_path: list[str] = Field(default_factory=list, max_length=50, description="the test's titles, outer first")


class ReplayStatus(BaseModel):
    """A replay's state plus what a caller needs to follow and judge it.

    `status` is about the replay itself: `succeeded` means the steps ran and the child trace
    `replay_trace_id` was recorded — whether that run passed is `trace_status`. `failed` means no child
    trace: the app did not start, a diff did not apply, the replay timed out or was interrupted.
    """

    id: str
    trace_id: str = Field(description="the source trace")
    status: ReplayState
    phase: ReplayPhase
    from_step: int
    triggered_via: TriggeredVia = "api"
    app: str | None = Field(default=None, description="the app config the replay runs")
    scenario_edited: bool = False
    source_diff_paths: list[str] = Field(default_factory=list)
    replay_trace_id: str | None = None
    replay_short_id: str | None = None
    trace_status: TraceStatus | None = Field(default=None, description="the child trace's status")
    failure_signature: str | None = Field(default=None, description="the child trace's failure signature")
    message: str | None = Field(default=None, description="what is happening, or what went wrong")
    error: ReplayErrorCode | None = None
    log_tail: str | None = Field(default=None, description="the end of the app's output when it failed to start")
    queue_position: int | None = Field(default=None, description="1 = next to start (queued replays only)")
    attempts: int = Field(
        default=0,
        description="times a server started this replay; above 1 when the server running it stopped and "
        "another took it over (it ran again from the start)",
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    promotion: PromoteFixResult | None = None


class ReplayList(BaseModel):
    items: list[ReplayStatus]
