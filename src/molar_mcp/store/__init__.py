"""Persistence: the store port and its adapters (embedded SQLite + blob files)."""

from molar_mcp.store.port import (
    LOCAL_ORG_ID,
    InvalidCursor,
    NewTrace,
    StoreError,
    TraceNotFound,
    TraceQuery,
    TraceStore,
)
from molar_mcp.store.sqlite import SqliteTraceStore

__all__ = [
    "LOCAL_ORG_ID",
    "InvalidCursor",
    "NewTrace",
    "SqliteTraceStore",
    "StoreError",
    "TraceNotFound",
    "TraceQuery",
    "TraceStore",
]
