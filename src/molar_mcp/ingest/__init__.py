"""Bundle formats → events (pure parsing) and the ingest service over the store port."""

from molar_mcp.ingest.bundle import DEFAULT_MAX_BUNDLE_BYTES, BundleError, Overrides, read_bundle
from molar_mcp.ingest.service import ingest_bundle

__all__ = ["DEFAULT_MAX_BUNDLE_BYTES", "BundleError", "Overrides", "ingest_bundle", "read_bundle"]
