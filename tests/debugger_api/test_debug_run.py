"""`debug_run` without a model, and the `molar://incidents/{org_id}` resource, through the SDK's in-memory
client in both protocol eras."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from mcp.client import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, TextResourceContents

from molar_mcp.compose import Embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.state import AppState
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.store import LOCAL_ORG_ID
from tests.bundles import checkout_events, make_bundle, summary
from tests.long_run import long_run_bundle

pytestmark = pytest.mark.anyio

NO_MODEL = "Analysis without a model:"


@dataclass
class Traces:
    server: MCPServer[AppState]
    failed_id: str
    failed_short: str
    passed_short: str


@pytest.fixture
def traces(embedded: Embedded) -> Traces:
    failed_id, failed_short = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle())
    doc = summary(status="passed", failure_signature=None, scenario_slug="cart-basic")
    _, passed_short = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(doc, checkout_events(fail=False)))
    return Traces(create_mcp_server(embedded.client_factory()), failed_id, failed_short, passed_short)


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def tokens(result: CallToolResult) -> int:
    """What a model is shown: the larger of the text and the structured content."""
    return max(
        estimate_tokens(text_of(result)), estimate_tokens(json.dumps(result.structured_content, ensure_ascii=False))
    )


async def test_debug_run_is_listed_with_its_scope_annotations_and_output_schema(traces: Traces, mode: str) -> None:
    async with Client(traces.server, mode=mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    tool = tools["debug_run"]
    assert tool.output_schema is not None
    assert {"chat_id", "answer", "findings", "suggested_replay", "tool_calls", "model"} <= set(
        tool.output_schema["properties"]
    )
    assert tool.input_schema["required"] == ["trace_id"]
    assert {"trace_id", "question", "chat_id", "max_tokens"} == set(tool.input_schema["properties"])
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is False  # it stores the analysis it runs
    assert tool.annotations.destructive_hint is False
    assert tool.annotations.idempotent_hint is True
    description = tool.description or ""
    assert "list_traces" in description
    assert "get_trace" in description


async def test_debug_run_finds_the_404_at_step_5_cites_its_events_and_suggests_a_replay(
    traces: Traces, mode: str
) -> None:
    async with Client(traces.server, mode=mode) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short})
    assert not result.is_error, text_of(result)
    view: Any = result.structured_content
    assert view["trace_id"] == traces.failed_id
    assert view["status"] == "failed"
    assert view["model"] is None
    assert view["chat_id"] is None
    top = view["findings"][0]
    assert (top["label"], top["critical_step"], top["critical_seq"]) == ("http_error", 5, 18)
    assert {18, 28} <= set(top["evidence_seqs"])
    # Every cited seq is quoted, each as the store holds it.
    quoted = {e["seq"]: e for e in view["evidence"]}
    assert set(quoted) == {s for f in view["findings"] for s in f["evidence_seqs"]}
    assert quoted[18]["kind"] == "network.response"
    assert quoted[18]["ok"] is False
    assert "404" in quoted[18]["detail"]
    assert quoted[28]["kind"] == "assertion"
    assert view["suggested_replay"] == {
        "from_step": 5,
        "change": "fix the failing request at step 5, then replay from step 5",
    }
    assert view["failure_signature"] == "step-5: http 404 POST /api/webhooks/stripe"
    assert view["incident_id"]
    assert view["omitted"] == []
    calls = [c["tool"] for c in view["tool_calls"]]
    assert "POST /v1/traces/{id}/analyze" in calls
    assert "GET /v1/traces/{id}/events" in calls
    for call in view["tool_calls"]:
        assert call["result_tokens"] > 0
        assert call["duration_ms"] >= 0
        assert "error" not in call
    text = text_of(result)
    assert "seq 18 step 5 network.response ✗" in text
    assert "sk_live" not in json.dumps(result.structured_content) + text


async def test_without_a_model_the_answer_only_restates_the_findings(traces: Traces, mode: str) -> None:
    question = "Why did the upgrade fail? Is Stripe down?"
    async with Client(traces.server, mode=mode) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short, "question": question})
    view: Any = result.structured_content
    answer: str = view["answer"]
    assert answer.startswith(NO_MODEL)
    assert view["model"] is None
    numbered = [line for line in answer.splitlines() if line[:1].isdigit()]
    assert len(numbered) == len(view["findings"])
    for line, finding in zip(numbered, view["findings"], strict=True):
        assert finding["label"] in line
        assert finding["summary"] in line
    assert "No model is configured, so the question got no answer beyond these findings." in answer
    assert NO_MODEL in text_of(result)


async def test_a_follow_up_chat_id_without_a_model_is_not_continued(traces: Traces) -> None:
    async with Client(traces.server) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short, "chat_id": "chat-123"})
    view: Any = result.structured_content
    assert view["chat_id"] is None
    assert "Chat chat-123 was not continued: no model is configured." in view["answer"]


async def test_a_passed_run_gets_no_invented_cause(traces: Traces, mode: str) -> None:
    async with Client(traces.server, mode=mode) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.passed_short})
    view: Any = result.structured_content
    assert view["findings"] == []
    assert view["suggested_replay"] is None
    assert view["answer"] == f"{NO_MODEL} the deterministic detectors found no sign of a failure in this passed run."


async def test_debug_run_reports_progress_while_it_works(traces: Traces, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(traces.server, mode=mode) as client:
        result = await client.call_tool("debug_run", {"trace_id": traces.failed_short}, progress_callback=on_progress)
    assert not result.is_error
    assert len(seen) >= 3
    values = [p for p, _, _ in seen]
    assert values == sorted(values)
    assert seen[-1][0] == seen[-1][1]
    assert all(message for _, _, message in seen)
    assert "detectors" in (seen[0][2] or "")


async def test_an_unknown_trace_is_an_error_that_says_to_call_list_traces(traces: Traces, mode: str) -> None:
    async with Client(traces.server, mode=mode) as client:
        result = await client.call_tool("debug_run", {"trace_id": "nope"})
    assert result.is_error
    assert "No trace 'nope'" in text_of(result)
    assert "list_traces" in text_of(result)


async def test_quotes_cited_events_of_a_trace_whose_seqs_have_gaps(embedded: Embedded) -> None:
    events = checkout_events()
    for ev in events:
        ev["seq"] = ev["seq"] * 7 + 3
    _, short = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary(), events))
    async with Client(create_mcp_server(embedded.client_factory())) as client:
        result = await client.call_tool("debug_run", {"trace_id": short})
    view: Any = result.structured_content
    cited = {s for f in view["findings"] for s in f["evidence_seqs"]}
    assert 18 * 7 + 3 in cited
    assert {e["seq"] for e in view["evidence"]} == cited


async def test_debug_run_on_a_10000_event_trace_fits_the_token_budget(embedded: Embedded, mode: str) -> None:
    # A real run of the demo shop: 50 steps, 10,000 events, failing at its last step (the coupon bug).
    _, short = ingest_bundle(embedded.store, LOCAL_ORG_ID, await long_run_bundle(10_000))
    async with Client(create_mcp_server(embedded.client_factory()), mode=mode) as client:
        default = await client.call_tool("debug_run", {"trace_id": short})
        small = await client.call_tool("debug_run", {"trace_id": short, "max_tokens": 1000})
    assert not default.is_error, text_of(default)
    assert tokens(default) <= 2000
    view: Any = default.structured_content
    assert view["findings"][0]["critical_step"] == 50
    assert view["evidence"]
    assert tokens(small) <= 1000
    cut: Any = small.structured_content
    assert cut["findings"], "the top finding always stays"
    assert cut["answer"].startswith(NO_MODEL)
    # As a model is shown it (the larger of text and structured content) the whole answer fits 1,000
    # tokens: the smallest budget cuts nothing and says it cut nothing.
    assert tokens(default) <= 1000
    assert cut["omitted"] == []
    timed = "tool_calls"  # the calls made, with their durations
    assert {k: v for k, v in cut.items() if k != timed} == {k: v for k, v in view.items() if k != timed}


async def test_the_incidents_resource_lists_the_orgs_open_incidents(traces: Traces, mode: str) -> None:
    async with Client(traces.server, mode=mode) as client:
        await client.call_tool("debug_run", {"trace_id": traces.failed_short})
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        read = await client.read_resource(f"molar://incidents/{LOCAL_ORG_ID}")
        muted = await client.read_resource(f"molar://incidents/{LOCAL_ORG_ID}?status=muted")
        with pytest.raises(MCPError):
            await client.read_resource("molar://incidents/org_someone_else")
    assert "molar://incidents/{org_id}{?status,cursor}" in templates
    block = read.contents[0]
    assert isinstance(block, TextResourceContents)
    body = json.loads(block.text)
    assert body["org_id"] == LOCAL_ORG_ID
    assert body["status"] == "open"
    assert body["next_cursor"] is None
    (incident,) = body["incidents"]
    assert incident["signature"] == "step-5: http 404 POST /api/webhooks/stripe"
    assert incident["trace_count"] == 1
    assert incident["last_trace_id"] == traces.failed_id
    muted_block = muted.contents[0]
    assert isinstance(muted_block, TextResourceContents)
    assert json.loads(muted_block.text)["incidents"] == []
