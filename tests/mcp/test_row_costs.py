"""`list_traces` estimates a row's tokens once per process (mcp/render.py `row_cost`), and its frame's
(`list_frame_cost`): the same traces come back call after call, and a row's cost is a function of its values
alone. A changed trace is a new row. Fitting a page makes no row past the first that does not fit. `get_trace`
estimates a step once per process too (mcp/summary.py `step_costs`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from mcp.client import Client

from molar_mcp.compose import Embedded
from molar_mcp.mcp.render import ROW_COSTS_KEPT, RowCosts, fit_rows, frame_cost, row_cost, trace_row
from molar_mcp.mcp.summary import cached_step_costs
from molar_mcp.mcp.views import TraceRow
from molar_mcp.models import TraceListItem
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


async def test_a_repeated_list_estimates_no_frame_again_and_answers_the_same(seeded: Seeded, mode: str) -> None:
    frame_cost.cache_clear()
    first = await listed(seeded, mode)
    estimated = frame_cost.cache_info().misses
    assert estimated >= 1
    again = await listed(seeded, mode)
    assert frame_cost.cache_info().misses == estimated
    assert again == first
    frame_cost.cache_clear()  # estimated afresh: the same answer
    assert await listed(seeded, mode) == first


class _Page(list[TraceListItem]):
    """A page whose items may be read only up to `readable`: reading past it fails the test."""

    def __init__(self, items: list[TraceListItem], readable: int) -> None:
        super().__init__(items)
        self.readable = readable

    def __iter__(self) -> Iterator[TraceListItem]:
        for n, item in enumerate(super().__iter__()):
            assert n < self.readable, f"item {n} was read"
            yield item


def _items(n: int) -> list[TraceListItem]:
    at = datetime(2026, 12, 7, 10, tzinfo=UTC)
    return [
        TraceListItem(
            id=f"{i:032x}", short_id=f"T{i:08d}", scenario_slug=f"checkout-{i}", status="failed", created_at=at
        )
        for i in range(n)
    ]


def test_fitting_a_page_makes_the_rows_that_fit_and_reads_no_item_past_the_first_that_does_not() -> None:
    items = _items(50)
    whole, _ = fit_rows(items, 20_000, "status=failed", RowCosts())
    assert whole == 50
    keep, rows = fit_rows(items, 600, "status=failed", RowCosts())
    assert 1 < keep < 50
    assert rows == [trace_row(i) for i in items[:keep]]
    # The item after the last that fits is read (it is what does not fit); none after it.
    assert fit_rows(_Page(items, keep + 1), 600, "status=failed", RowCosts()) == (keep, rows)
    # A budget no row fits still answers one.
    assert fit_rows(_Page(items, 1), 1, "status=failed", RowCosts()) == (1, rows[:1])
    assert fit_rows([], 600, "status=failed", RowCosts()) == (1, [])


async def test_a_trace_read_again_estimates_no_step_again_and_answers_the_same(seeded: Seeded, mode: str) -> None:
    async def read() -> Any:
        async with Client(seeded.server, mode=mode) as client:  # type: ignore[arg-type]
            result = await client.call_tool("get_trace", {"trace_id": seeded.failed_short})
        assert not result.is_error
        return result.structured_content, result.content

    cached_step_costs.cache_clear()
    first = await read()
    estimated = cached_step_costs.cache_info().misses
    assert estimated >= 5  # the seeded run's steps
    again = await read()
    assert cached_step_costs.cache_info().misses == estimated
    assert again == first
    cached_step_costs.cache_clear()  # estimated afresh: the same answer
    assert await read() == first
