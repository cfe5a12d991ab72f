"""Pydantic vocabulary of pins and shares. No I/O."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ShareVisibility = Literal["org-only", "public-read"]
SHARE_VISIBILITIES: tuple[str, ...] = ("org-only", "public-read")
DEFAULT_SHARE_DAYS = 7
MAX_SHARE_DAYS = 365


class PinResponse(BaseModel):
    """`POST /v1/traces/{id}/pin` and `/unpin`."""

    pinned: bool


class ShareRequest(BaseModel):
    """The body of `POST /v1/traces/{id}/share`; every field has a default, so `{}` shares org-only for 7 days."""

    model_config = ConfigDict(extra="forbid")

    visibility: ShareVisibility = Field(
        default="org-only", description="org-only: members of the trace's org; public-read: anyone with the link"
    )
    # Strict: `true` or "7" is a mistake to report, not a number of days to guess.
    expires_days: int = Field(default=DEFAULT_SHARE_DAYS, ge=1, le=MAX_SHARE_DAYS, strict=True)


class RevokeShareResponse(BaseModel):
    """`DELETE /v1/traces/{id}/share`."""

    revoked: bool = Field(description="true when a share was revoked now; false when there was none")


class ShareResponse(BaseModel):
    """`POST /v1/traces/{id}/share`."""

    short_id: str
    url: str = Field(description="the read-only viewer: <base>/r/<short_id>")
    visibility: ShareVisibility
    expires_at: datetime
