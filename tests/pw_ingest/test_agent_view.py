"""What an agent sees of an ingested Playwright test through `list_traces` and `get_trace` alone: which
action failed, expected vs received, the request or page error behind it, the screenshot at the failure,
the step tree — within the default 2,000-token budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.types import CallToolResult, TextContent, TextResourceContents

from molar_mcp.api.context import ApiContext
from molar_mcp.api.runs import ingest_for_run
from molar_mcp.compose import Embedded
from molar_mcp.ingest.service import Upload
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.store import LOCAL_ORG_ID
from tests.listing import rows_of
from tests.pw_ingest.test_reports_and_runs import zipped

pytestmark = pytest.mark.anyio


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def spent(result: CallToolResult) -> int:
    """What a model is shown: the larger of the text and the structured content."""
    return max(estimate_tokens(text_of(result)), estimate_tokens(json.dumps(result.structured_content)))


async def test_an_agent_finds_the_failure_of_a_playwright_test(embedded: Embedded, pw_report: Path) -> None:
    ctx = ApiContext.embedded(embedded.store, max_bundle_bytes=50 * 1024 * 1024)
    outcome = ingest_for_run(ctx, LOCAL_ORG_ID, Upload(data=zipped(pw_report), filename="report.zip"), None)
    run_id = outcome.run_id
    assert run_id is not None
    server = create_mcp_server(embedded.client_factory())
    async with Client(server) as client:
        listed = await client.call_tool("list_traces", {"status": "failed", "run": run_id})
        assert not listed.is_error, text_of(listed)
        rows: Any = listed.structured_content
        assert len(rows_of(rows)) == 5  # four failing tests, and the first attempt of the flaky one
        for row in rows_of(rows):
            result = await client.call_tool("get_trace", {"trace_id": row["short_id"]})
            assert not result.is_error, text_of(result)
            text = text_of(result)
            assert spent(result) <= 2000, text
            data: Any = result.structured_content
            failure = data["failure"]
            assert failure["message"] in text  # the failing action or assertion, named
            if failure["kind"] == "assertion":  # expected vs received
                assert failure["expected"] in text
                assert failure["actual"] in text
            # The step tree around the failure, titled; every other step is one call away.
            assert failure["step_title"] in text
            assert any(s.get("title") for s in data["steps"])
            assert any(line.startswith("Steps: ") for line in text.splitlines())
            assert data["artifacts"][0]["kind"] == "playwright"  # the zip comes first
            # The screen at the failure: among the shown artifacts, or in the failing step's events.
            if not any(a["kind"] == "screenshot" for a in data["artifacts"]):
                page = await client.call_tool("get_trace", {"trace_id": row["short_id"], "step": str(failure["step"])})
                assert "screenshot" in text_of(page), text_of(page)
        # The page error behind the seat map's failure is among the failed events.
        [seat] = [r for r in rows_of(rows) if r["scenario"].endswith("shows-the-seat-map")]
        seat_view: Any = (await client.call_tool("get_trace", {"trace_id": seat["short_id"]})).structured_content
        before = str(seat_view["failure"]["step"] - 1)  # the click that threw, just before the failed expect
        click = await client.call_tool("get_trace", {"trace_id": seat["short_id"], "step": before})
        assert "TypeError: Cannot read properties of null" in text_of(click)
        # The request behind the checkout failure: the 500 is among the failed events, shown in the summary
        # or read from the resource its note on the failed events left out names.
        [pay] = [r for r in rows_of(rows) if r["scenario"].endswith("pays-for-the-tickets")]
        pay_view = await client.call_tool("get_trace", {"trace_id": pay["short_id"]})
        pay_data: Any = pay_view.structured_content
        failed = [json.dumps(e) for e in pay_data["notable"]]
        if not any('"network.response"' in e and "500" in e for e in failed):
            [note] = [o for o in pay_data["omitted"] if "/events?ok=false" in o]
            uri = next(word for word in note.split() if word.startswith("molar://"))
            read = await client.read_resource(uri)
            [contents] = read.contents
            assert isinstance(contents, TextResourceContents)
            failed = [json.dumps(e) for e in json.loads(contents.text)["events"]]
        assert any('"network.response"' in e and "500" in e for e in failed), failed
