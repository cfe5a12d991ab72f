"""Untrusted text from traces (page text, console messages, response bodies, tool results) is fenced
as data in every answer, so a recorded page cannot instruct the agent reading it (`models.fence`, shared
with the debugger's prompts)."""

from __future__ import annotations

from molar_mcp.models.fence import defuse, fence

__all__ = ["defuse", "fence"]
