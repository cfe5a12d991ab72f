"""A scripted agent over the real SDK client, on the recorded demo: from "which runs failed?" to the
response body line that shows the coupon bug in ≤ 3 calls, and the fix verified by a replay in ≤ 5.
It prints the figures (calls, tokens per answer, events per page) for the record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.client import Client
from mcp.types import CallToolResult

from molar_mcp.compose import Embedded, open_embedded, record_demo
from molar_mcp.demo import fix_diff
from molar_mcp.mcp.server import create_mcp_server
from tests.listing import rows_of
from tests.mcp.test_tools import text_of, total_tokens

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    with open_embedded(tmp_path_factory.mktemp("agent") / "data") as emb:
        record_demo(emb.store)
        yield emb


class Agent:
    """Calls tools the way a model would, reading only what each answer says."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.log: list[tuple[str, int, int | None]] = []  # (tool, tokens, events on the page)

    async def call(self, tool: str, args: dict[str, Any]) -> CallToolResult:
        result = await self.client.call_tool(tool, args)
        assert not result.is_error, text_of(result)
        data: Any = result.structured_content or {}
        events = len(data["step_events"]) if isinstance(data.get("step_events"), list) else None
        self.log.append((tool, total_tokens(result), events))
        return result


async def test_the_coupon_bug_is_found_in_three_calls_and_its_fix_verified_by_replay_in_four(demo: Embedded) -> None:
    async with Client(create_mcp_server(demo.client_factory())) as client:
        agent = Agent(client)
        failed: Any = (await agent.call("list_traces", {"status": "failed"})).structured_content
        coupon = next(r["short_id"] for r in rows_of(failed) if r["scenario"] == "checkout-coupon")
        summary: Any = (await agent.call("get_trace", {"trace_id": coupon})).structured_content
        step = summary["failure"]["step"]
        page = await agent.call("get_trace", {"trace_id": coupon, "step": step})
        # The bug: the order's discount is 4500 of 5000 (90 % off, not 10 %) — in the response body.
        assert '"discount_cents":4500' in text_of(page)
        assert len(agent.log) <= 3
        replay = await agent.call(
            "replay_trace",
            {
                "trace_id": coupon,
                "from_step": step,
                "edits": {"source_diffs": [{"path": "app.py", "diff": fix_diff("coupon-multiplier")}]},
                "wait_seconds": 50,
            },
        )
        verdict: Any = replay.structured_content
        assert verdict["replay"]["trace_status"] == "passed", text_of(replay)
        assert len(agent.log) <= 5
    for _, tokens, _ in agent.log:
        assert tokens <= 2000
    print("\nagent path:", json.dumps([{"tool": t, "tokens": n, "events": e} for t, n, e in agent.log]))
