"""Pydantic vocabulary of analyses and incidents (`/v1/traces/{id}/analysis`, `/v1/incidents`). No I/O.

An analysis is what the deterministic detectors said about one trace; an incident is the failures of
one org that share a failure signature.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IncidentStatus = Literal["open", "acknowledged", "resolved", "muted"]
INCIDENT_STATUSES: tuple[str, ...] = ("open", "acknowledged", "resolved", "muted")


class AnalysisFinding(BaseModel):
    """One suspected cause of a failure, as a detector judged it (the debugger's `Finding`, on the wire)."""

    label: str = Field(description="what kind of failure, e.g. http_error, assertion_failed, timeout")
    confidence: float = Field(ge=0.0, le=1.0)
    critical_step: int | None = Field(default=None, description="1-based step of the cause")
    critical_seq: int | None = Field(default=None, description="seq of the causing event")
    evidence_seqs: list[int] = Field(default_factory=list, description="sorted seqs of the cited events")
    summary: str
    signature: str = Field(description="short, stable across runs of the same failure")


class SuggestedReplay(BaseModel):
    """Where a replay should start and what to change first (derived from the top finding)."""

    from_step: int = Field(ge=1)
    reason: str = Field(description="what to change before replaying, and why from this step")


class Analysis(BaseModel):
    """`POST /v1/traces/{id}/analyze` and `GET /v1/traces/{id}/analysis`: findings best first."""

    trace_id: str
    analyzer_version: str
    findings: list[AnalysisFinding]
    failure_signature: str | None = Field(default=None, description="the top finding's signature")
    suggested_replay: SuggestedReplay | None = None
    incident_id: str | None = Field(default=None, description="the incident this failure is clustered into")
    created_at: datetime


class Incident(BaseModel):
    """The failures of one org that share a cause: the failure signature without its step, so the same
    failure in several tests, at different steps, and across runs and commits, is one incident.
    `signature` is the first failure's."""

    id: str
    signature: str
    status: IncidentStatus
    owner: str | None = None
    title: str = Field(description="the top finding's summary, from the latest failure")
    label: str = Field(description="the top finding's label")
    trace_count: int
    last_trace_id: str | None = None
    first_seen_at: datetime
    last_seen_at: datetime
    test_count: int = Field(default=0, description="tests (scenarios) this cause failed, at whatever step")
    tests: list[str] = Field(default_factory=list, description="those tests, the latest failing first (up to 10)")
    commit_count: int = Field(default=0, description="commits the failures were recorded at")
    commits: list[str] = Field(default_factory=list, description="those commits, in the order first seen (up to 10)")
    first_commit: str | None = Field(default=None, description="the commit of the first failure")
    last_commit: str | None = Field(default=None, description="the commit of the latest failure")


class IncidentListResponse(BaseModel):
    org_id: str = Field(description="the org the caller acts in: every incident listed is this org's")
    items: list[Incident]
    next_cursor: str | None = None


class IncidentUpdate(BaseModel):
    """The body of `PATCH /v1/incidents/{id}`: each field left out stays as it is; `owner: null` clears it."""

    model_config = ConfigDict(extra="forbid")

    status: IncidentStatus | None = None
    owner: str | None = Field(default=None, min_length=1, max_length=200)
