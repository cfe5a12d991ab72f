"""Every answer fits its `max_tokens`, at every value a tool accepts: the demo's traces (its Playwright Test
run, its scenario runs and its agent run), each tool that takes `max_tokens` called from the least value its
input schema allows upward, each answer counted as a model is shown it (the larger of its text and its
structured content, its resource links, its image as a vision model counts it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import TextContent

from molar_mcp.compose import load_agent_demo, load_playwright_demo, load_shipped_demo, open_embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.state import AppState
from molar_mcp.store import LOCAL_ORG_ID, TraceQuery
from tests.bundles import make_bundle, summary
from tests.mcp.test_playwright_answers import _answer_cost

pytestmark = pytest.mark.anyio

TOP = 2000  # the default budget: the sweep's last value


@dataclass
class Demo:
    server: MCPServer[AppState]
    traces: list[str]  # short ids: every demo trace
    coupon: str  # the Playwright coupon test's failed trace


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with open_embedded(tmp_path_factory.mktemp("sweep") / "data") as embedded:
        load_playwright_demo(embedded.store)
        load_shipped_demo(embedded.store)
        load_agent_demo(embedded)
        rows = embedded.store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=100)).items
        assert {r.source for r in rows} >= {"agent", "manual"}  # the agent run and the scenario runs are there
        coupon = next(r.short_id for r in rows if r.scenario_slug.endswith("takes-10-off-with-save10"))
        yield Demo(create_mcp_server(embedded.client_factory()), [r.short_id for r in rows], coupon)


async def _least(client: Client, name: str, args: dict[str, Any]) -> int:
    """The least `max_tokens` a tool accepts: the listed schema leaves bounds out, a refusal names them."""
    refused = await client.call_tool(name, {**args, "max_tokens": 1})
    assert refused.is_error
    text = refused.content[0]
    assert isinstance(text, TextContent)
    found = re.search(r"max_tokens\s+Input should be greater than or equal to (\d+)", text.text)
    assert found, text.text
    return int(found[1])


def _budgets(least: int, step: int) -> list[int]:
    return sorted({*range(least, TOP + 1, step), least, least + 1, TOP})


async def test_the_coupon_trace_fits_a_small_budget_and_says_what_it_cut(demo: Demo) -> None:
    """The Playwright coupon trace at 800 tokens: its frame, the failing step and a failed event came to 893."""
    async with Client(demo.server) as client:
        result = await client.call_tool("get_trace", {"trace_id": demo.coupon, "max_tokens": 800})
    assert not result.is_error
    assert _answer_cost(result) <= 800
    view: Any = result.structured_content
    # The failure itself is kept whole, and the failing step; the failed events go, saying where they are.
    assert view["failure"]["step_title"] == "check the total"
    assert view["failure"]["expected"] == "$33.75"
    assert [s["title"] for s in view["steps"]] == ["check the total"]
    assert view["notable"] == []
    assert f"3 failed events; read molar://traces/{demo.coupon}/events?ok=false for all of them" in view["omitted"]


async def test_a_run_whose_smallest_summary_does_not_fit_is_refused_with_the_budget_it_needs(tmp_path: Path) -> None:
    """A run recorded with a failure signature and a title as long as a bundle allows (500 characters each),
    quotes and signs that cost a token each: its header alone exceeds the least budget; the answer says what
    it needs, and that budget answers."""
    long = ("expect(#total).toHaveText: " + '"$3.75" ' * 60)[:500]
    bundle = make_bundle(summary(failure_signature=long, scenario_title=("storefront › " * 40)[:500]))
    with open_embedded(tmp_path / "data") as embedded:
        _, short = ingest_bundle(embedded.store, LOCAL_ORG_ID, bundle)
        async with Client(create_mcp_server(embedded.client_factory())) as client:
            refused = await client.call_tool("get_trace", {"trace_id": short, "max_tokens": 800})
            text = refused.content[0]
            assert isinstance(text, TextContent)
            found = re.search(rf'call get_trace\(trace_id="{short}", max_tokens=(\d+)\)', text.text)
            assert refused.is_error
            assert found, text.text
            assert f"Trace {short}'s smallest summary" in text.text
            need = int(found[1])
            answered = await client.call_tool("get_trace", {"trace_id": short, "max_tokens": need})
    assert not answered.is_error
    assert _answer_cost(answered) <= need
    view: Any = answered.structured_content
    assert view["trace"]["failure_signature"] == long  # the header is never cut


async def test_every_answer_fits_its_budget_from_each_tools_least_value_up(demo: Demo) -> None:
    over: list[tuple[str, dict[str, Any], int, int]] = []
    calls = 0

    async def check(client: Client, name: str, args: dict[str, Any], budget: int) -> None:
        nonlocal calls
        calls += 1
        result = await client.call_tool(name, {**args, "max_tokens": budget})
        assert not result.is_error, (name, args, budget, result.content)
        if (spent := _answer_cost(result)) > budget:
            over.append((name, args, budget, spent))

    async with Client(demo.server) as client:
        tools = await client.list_tools()
        taking = {t.name for t in tools.tools if "max_tokens" in t.input_schema["properties"]}
        # replay_trace runs the app under test, and get_replay reads what it started: their answers are
        # fitted by tests/replays/test_mcp.py; every other tool that takes a budget is swept here.
        assert taking == {
            "get_trace",
            "get_event",
            "list_traces",
            "diff_traces",
            "debug_run",
            "replay_trace",
            "get_replay",
        }
        first = demo.traces[0]
        least = {
            "get_trace": await _least(client, "get_trace", {"trace_id": first}),
            "get_event": await _least(client, "get_event", {"trace_id": first, "seq": 0}),
            "debug_run": await _least(client, "debug_run", {"trace_id": first}),
            "list_traces": await _least(client, "list_traces", {}),
            "diff_traces": await _least(client, "diff_traces", {"a": first, "b": demo.traces[1]}),
        }
        assert least["get_trace"] == 800  # the least that holds a run's tightest summary (summary.py)
        for trace in demo.traces:
            for budget in _budgets(least["get_trace"], 100):
                await check(client, "get_trace", {"trace_id": trace}, budget)
            for budget in (least["get_trace"], TOP):
                await check(client, "get_trace", {"trace_id": trace, "events": True}, budget)
            await check(client, "get_event", {"trace_id": trace, "seq": 0}, least["get_event"])
            await check(client, "debug_run", {"trace_id": trace}, least["debug_run"])
        for budget in _budgets(least["list_traces"], 250):
            await check(client, "list_traces", {}, budget)
        for budget in _budgets(least["diff_traces"], 250):
            await check(client, "diff_traces", {"a": first, "b": demo.traces[1]}, budget)
    assert calls > 150
    assert not over, over
