"""The capability manifest (`/.well-known/molar-capabilities.json`), generated from the registered
tools and resources, so it cannot drift from what the server really offers."""

from collections.abc import Sequence
from typing import Any

from mcp.server.mcpserver import MCPServer

from molar_mcp import __version__
from molar_mcp.mcp.tools.spec import ToolSpec

MANIFEST_SCHEMA = "molar-capabilities/1"
SCOPES = {
    "mcp:trace:read": "read traces, their events, artifacts and reports",
    "mcp:debug": "run the debugger on a trace (detectors and debugger chats)",
    "mcp:run": "replay a trace from a step with edits (executes the app under test)",
}
RESOURCE_SCOPE = "mcp:trace:read"


async def build_manifest(server: MCPServer[Any], tool_specs: Sequence[ToolSpec]) -> dict[str, Any]:
    """The manifest of `server`; `tool_specs` add each tool's scope and REST equivalent."""
    specs: dict[str, ToolSpec] = {s.name: s for s in tool_specs}
    tools = []
    for tool in sorted(await server.list_tools(), key=lambda t: t.name):
        spec = specs[tool.name]
        tools.append(
            {
                "name": tool.name,
                "title": tool.title,
                "description": tool.description,
                "scope": spec.scope,
                "rest": list(spec.rest),
                "input_schema": tool.input_schema,
                "read_only": bool(tool.annotations and tool.annotations.read_only_hint),
            }
        )
    templates = [
        {
            "uri_template": t.uri_template,
            "name": t.name,
            "description": t.description,
            "mime_type": t.mime_type,
            "scope": RESOURCE_SCOPE,
        }
        for t in sorted(await server.list_resource_templates(), key=lambda t: t.uri_template)
    ]
    return {
        "schema": MANIFEST_SCHEMA,
        "name": "molar-mcp",
        "version": __version__,
        "description": "Traces of failed test runs and agent runs, as MCP tools and resources.",
        "transports": [
            {
                "type": "streamable-http",
                "endpoint": "/mcp",
                "protocol_versions": ["2026-07-28", "2025-11-25"],
            },
            {"type": "stdio", "command": "molar-mcp", "args": ["stdio"]},
        ],
        "scopes": SCOPES,
        "tools": tools,
        "resources": templates,
        "rest": {"base": "/v1"},
    }
