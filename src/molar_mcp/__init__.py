"""Molar MCP: traces of failed test runs and agent runs, given to AI agents as MCP tools."""

__version__ = "0.1.0"
