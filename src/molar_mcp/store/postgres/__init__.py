"""The PostgreSQL adapter of the store (`--database-url postgresql://…`)."""

from molar_mcp.store.postgres.db import PgDatabase
from molar_mcp.store.postgres.store import PostgresTraceStore

__all__ = ["PgDatabase", "PostgresTraceStore"]
