"""Direct uploads: a reporter asks for a URL, PUTs a large file straight into the object store, then
ingests it by its SHA-256 (`POST /v1/uploads/{sha256}/ingest`). No I/O here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class UploadRequest(BaseModel):
    """`POST /v1/uploads`: the file to be uploaded, named by its content."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=SHA256_PATTERN, description="SHA-256 of the file, 64 lowercase hex digits")
    size: int = Field(ge=1, description="the file's size in bytes; the PUT must send exactly this many")


class UploadTicket(BaseModel):
    """Where to PUT the file, until when, and how to ingest it afterwards."""

    sha256: str
    size: int
    method: str = "PUT"
    url: str = Field(description="a presigned URL of the object store; PUT the file's bytes there")
    headers: dict[str, str] = Field(description="headers the PUT must carry")
    expires_at: datetime
    ingest_url: str = Field(description="then POST here (JSON, the ingest's options) to ingest the file")


class UploadIngest(BaseModel):
    """`POST /v1/uploads/{sha256}/ingest`: the options of `POST /v1/traces/ingest`, as JSON."""

    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(default=None, max_length=500, description="the file's name (helps detect the format)")
    format: str | None = Field(default=None, description="as the ingest's `format`; default: detected")
    scenario_slug: str | None = Field(default=None, max_length=200)
    run_id: str | None = Field(default=None, max_length=64)
    result: dict[str, Any] | None = Field(default=None, description="the Playwright Test result of this attempt")
    keep_secrets: bool = False
    source: str | None = None
    commit_sha: str | None = Field(default=None, max_length=200)
    pr_number: int | None = Field(default=None, ge=0)
