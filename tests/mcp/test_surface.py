"""The tool surface a client loads: every tool listed with its scope, strict closed input schemas that
refuse unknown arguments by naming the accepted ones, and the price of `tools/list` in tokens."""

from __future__ import annotations

import json

import pytest
from mcp.client import Client

from molar_mcp.mcp.server import TOOL_SPECS
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.mcp.viewer_app import VIEWER_URI
from tests.mcp.conftest import Seeded
from tests.mcp.test_tools import text_of

pytestmark = pytest.mark.anyio

TOOLS_LIST_BUDGET = 4000  # tokens every conversation that loads the server pays before asking anything


async def test_tools_list_costs_at_most_four_thousand_tokens(seeded: Seeded, mode: str) -> None:
    async with Client(seeded.server, mode=mode) as client:
        listed = await client.list_tools()
    wire = json.dumps(listed.model_dump(mode="json", by_alias=True, exclude_none=True), ensure_ascii=False)
    cost = estimate_tokens(wire)
    assert cost <= TOOLS_LIST_BUDGET, f"tools/list costs {cost} tokens (budget {TOOLS_LIST_BUDGET})"
    assert len(listed.tools) == len(TOOL_SPECS)


async def test_every_tool_names_its_scope_in_its_description_and_meta(seeded: Seeded) -> None:
    async with Client(seeded.server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for spec in TOOL_SPECS:
        tool = tools[spec.name]
        # get_trace and debug_run also link the trace viewer, an MCP App (mcp/viewer_app.py).
        ui = {"ui": {"resourceUri": VIEWER_URI}} if spec.name in ("get_trace", "debug_run") else {}
        assert tool.meta == {"scope": spec.scope, **ui}
        assert f"Scope: {spec.scope}." in (tool.description or "")


async def test_input_schemas_are_closed_and_unknown_arguments_are_refused_naming_the_accepted_ones(
    seeded: Seeded, mode: str
) -> None:
    async with Client(seeded.server, mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        wrong = await client.call_tool("get_trace", {"trace_id": seeded.failed_short, "stepp": 5})
        right = await client.call_tool("get_trace", {"trace_id": seeded.failed_short, "step": 5})
    for tool in tools.values():
        assert tool.input_schema["additionalProperties"] is False, tool.name
        assert '"title":' not in json.dumps(tool.input_schema), tool.name  # generated titles repeat names
    assert wrong.is_error
    message = text_of(wrong)
    assert "unknown argument 'stepp'" in message
    for accepted in ("trace_id", "step", "kind", "events", "offset", "max_tokens"):
        assert accepted in message
    assert not right.is_error
