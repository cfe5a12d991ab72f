"""The ingest service: a bundle's bytes in, a stored trace out (validated first, stored atomically)."""

from __future__ import annotations

from molar_mcp.ingest.bundle import DEFAULT_MAX_BUNDLE_BYTES, Overrides, read_bundle
from molar_mcp.store.port import TraceStore


def ingest_bundle(
    store: TraceStore,
    org_id: str,
    data: bytes,
    overrides: Overrides | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BUNDLE_BYTES,
) -> tuple[str, str]:
    """Store one bundle; return `(trace_id, short_id)`. Raises `BundleError` and stores nothing."""
    parsed = read_bundle(data, overrides, max_bytes=max_bytes)
    return store.add_trace(org_id, parsed.trace, parsed.blobs)
