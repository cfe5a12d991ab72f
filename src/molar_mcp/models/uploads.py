"""Direct uploads: a reporter asks for a URL, PUTs a large file straight into the object store, then
ingests it by its SHA-256 (`POST /v1/traces/ingest` with `file_sha256`). No I/O here."""

from __future__ import annotations

from datetime import datetime

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
    ingest_field: str = Field(
        default="file_sha256",
        description="then POST /v1/traces/ingest with this form field set to the sha256 (and no `file` part)",
    )
