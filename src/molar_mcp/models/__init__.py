"""Shared vocabulary: pydantic types of traces, events, pages and errors (no I/O)."""

from molar_mcp.models.traces import (
    KNOWN_EVENT_KINDS,
    TRACE_SOURCES,
    TRACE_STATUSES,
    TRACE_TIERS,
    ArtifactRef,
    ErrorBody,
    Event,
    EventsResponse,
    IngestResponse,
    StepSummary,
    TraceDetail,
    TraceListItem,
    TraceListResponse,
    TraceSource,
    TraceStatus,
    TraceTier,
)

__all__ = [
    "KNOWN_EVENT_KINDS",
    "TRACE_SOURCES",
    "TRACE_STATUSES",
    "TRACE_TIERS",
    "ArtifactRef",
    "ErrorBody",
    "Event",
    "EventsResponse",
    "IngestResponse",
    "StepSummary",
    "TraceDetail",
    "TraceListItem",
    "TraceListResponse",
    "TraceSource",
    "TraceStatus",
    "TraceTier",
]
