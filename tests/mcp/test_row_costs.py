"""`list_traces` estimates a row's tokens once per process (mcp/render.py `row_cost`): the same traces come
back call after call, and a row's cost is a function of its values alone. A changed trace is a new row."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.client import Client

from molar_mcp.compose import Embedded
from molar_mcp.mcp.render import ROW_COSTS_KEPT, row_cost
from molar_mcp.mcp.views import TraceRow
from tests.mcp.conftest import Seeded

pytestmark = pytest.mark.anyio


async def listed(seeded: Seeded, mode: str) -> Any:
    async with Client(seeded.server, mode=mode) as client:  # type: ignore[arg-type]
        result = await client.call_tool("list_traces", {})
    assert not result.is_error
    return result.structured_content, result.content


async def test_a_repeated_list_estimates_no_row_again_and_answers_the_same(seeded: Seeded, mode: str) -> None:
    row_cost.cache_clear()
    first = await listed(seeded, mode)
    estimated = row_cost.cache_info().misses
    assert estimated >= 2  # the seeded failed and passed traces
    again = await listed(seeded, mode)
    assert row_cost.cache_info().misses == estimated
    assert again == first
    row_cost.cache_clear()  # estimated afresh: the same answer
    assert await listed(seeded, mode) == first


async def test_a_trace_that_changes_is_a_new_row_and_estimated_anew(seeded: Seeded, embedded: Embedded) -> None:
    async with embedded.client_factory()() as client:
        live = await client.create_trace(scenario_slug="cart-live")
        await listed(seeded, "auto")
        estimated = row_cost.cache_info().misses
        await client.finish_trace(live.id, "failed", failure_signature="a-new-signature")
    structured, _ = await listed(seeded, "auto")
    assert row_cost.cache_info().misses == estimated + 1  # the finished trace's row; the others are known
    assert [live.short_id, "failed"] == structured["rows"][0][:2]
    assert "a-new-signature" in structured["rows"][0]


def test_the_rows_kept_are_bounded() -> None:
    row_cost.cache_clear()
    for n in range(ROW_COSTS_KEPT + 100):
        row_cost(TraceRow(f"t{n}", "failed", "checkout", "2026-12-07T10:00:00Z", n, "pr", None, None, None))
    assert row_cost.cache_info().currsize == ROW_COSTS_KEPT
    row_cost.cache_clear()
