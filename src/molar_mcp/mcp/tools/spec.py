"""What the capability manifest says of a tool beyond its MCP listing: scope and REST equivalent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolSpec:
    name: str
    scope: str
    rest: tuple[str, ...]
