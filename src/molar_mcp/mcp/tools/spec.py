"""What the capability manifest says of a tool beyond its MCP listing: scope and REST equivalent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolSpec:
    name: str
    scope: str
    rest: tuple[str, ...]
    # May run long (it reports progress, or waits): over 2026-07-28 HTTP it keeps the SSE answer mode, with
    # its keepalive pings and its cancellation when the client goes (mcp/answer_mode.py).
    long_running: bool = False
