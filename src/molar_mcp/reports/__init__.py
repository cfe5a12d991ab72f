"""Human-facing renderings of a trace: the forensic markdown report and the read-only HTML viewer.

Pure functions of the API models (this package imports `molar_mcp.models` only, no I/O): the API
loads the trace and serves what these render.
"""

from molar_mcp.reports.facts import TraceFacts, build_facts
from molar_mcp.reports.html import ShareInfo, render_embed, render_message, render_viewer
from molar_mcp.reports.markdown import render_report

__all__ = [
    "ShareInfo",
    "TraceFacts",
    "build_facts",
    "render_embed",
    "render_message",
    "render_report",
    "render_viewer",
]
