"""A test result beside a trace: what a Playwright Test reporter, report.json or JUnit XML says of one attempt.

`POST /v1/traces/ingest` takes it as the `result` JSON part; report.json and JUnit results are read into it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Playwright Test's statuses → trace statuses (docs/playwright.md).
RESULT_STATUSES: dict[str, str] = {
    "passed": "passed",
    "failed": "failed",
    "timedOut": "timed_out",
    "timed_out": "timed_out",
    "skipped": "skipped",
    "interrupted": "interrupted",
    "flaky": "flaky",
}

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class ResultError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str = Field(default="", max_length=100_000)
    stack: str | None = Field(default=None, max_length=100_000)


class RepoInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str | None = Field(default=None, max_length=1000)
    remote: str | None = Field(default=None, max_length=1000)


class TestResultInfo(BaseModel):
    """One attempt of one test. Its identity (project + file + title path) is its scenario."""

    model_config = ConfigDict(extra="ignore")

    project: str | None = Field(default=None, max_length=200)
    file: str | None = Field(default=None, max_length=1000)
    line: int | None = Field(default=None, ge=0)
    title_path: list[str] = Field(default_factory=list, max_length=50)
    status: Literal["passed", "failed", "timedOut", "timed_out", "skipped", "interrupted", "flaky"] = "failed"
    expected_status: str | None = Field(default=None, max_length=20)
    retry: int = Field(default=0, ge=0, le=1000)
    duration_ms: int | None = Field(default=None, ge=0, le=2**53)
    errors: list[ResultError] = Field(default_factory=list, max_length=100)
    stdout: list[str] = Field(default_factory=list, max_length=10_000)
    stderr: list[str] = Field(default_factory=list, max_length=10_000)
    commit: str | None = Field(default=None, max_length=64)
    branch: str | None = Field(default=None, max_length=300)
    repo: RepoInfo | None = None
    start_time: str | None = Field(default=None, max_length=64)

    @property
    def trace_status(self) -> str:
        return RESULT_STATUSES[self.status]

    def title(self) -> str:
        return " › ".join(self.title_path) if self.title_path else (self.file or "test")

    def scenario_slug(self) -> str:
        """The test's identity as a slug: project, file and title path (stable across runs)."""
        parts = [p for p in (self.project, self.file, *self.title_path) if p]
        return slugify(" ".join(parts) or "playwright-test")


def slugify(text: str, limit: int = 200) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", strip_ansi(text).lower()).strip("-")
    return (slug or "trace")[:limit].rstrip("-") or "trace"
