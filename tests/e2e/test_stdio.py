"""`molar-mcp stdio` as a child process, driven by the SDK client: what an IDE agent runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from tests.listing import rows_of
from tests.servers import Served, child_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


# What `--demo` shows (docs/demo.md): the shop's scenario runs, the Playwright Test run's attempts (two fail
# on the shop's bugs) and the agent run, as (scenario, status) rows of `list_traces`.
DEMO_FAILED = {
    ("billing-upgrade-webhook", "failed"),
    ("checkout-coupon", "failed"),
    ("login-sso", "failed"),
    ("chromium-shop-spec-js-storefront-takes-10-off-with-save10", "failed"),
    ("chromium-shop-spec-js-billing-upgrades-to-pro-once-the-provider-confirms-the-payment", "failed"),
    ("support-desk.refund-agent", "failed"),
}
DEMO_PASSED = {
    ("cart-basic", "passed"),
    ("checkout-plain", "passed"),
    ("chromium-shop-spec-js-storefront-adds-products-to-the-cart", "passed"),
    ("chromium-shop-spec-js-storefront-pays-without-a-coupon", "passed"),
}


async def demo_rows(client: Client, status: str) -> set[tuple[str, str]]:
    listed: Any = (await client.call_tool("list_traces", {"status": status, "limit": 50})).structured_content
    assert listed["next_cursor"] is None
    return {(row["scenario"], row["status"]) for row in rows_of(listed)}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_ide_agent_reads_the_whole_demo_over_stdio(tmp_path: Path, mode: str) -> None:
    data_dir = tmp_path / "data"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "molar_mcp", "stdio", "--demo", "--data-dir", str(data_dir)],
        env=child_env(data_dir),
    )
    async with Client(params, mode=mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        failed = await demo_rows(client, "failed")
        passed = await demo_rows(client, "passed")
        listed: Any = (await client.call_tool("list_traces", {"source": "agent"})).structured_content
        detail = await client.call_tool("get_trace", {"trace_id": rows_of(listed)[0]["short_id"]})
    assert {"list_traces", "get_trace"} <= tools
    assert (failed, passed) == (DEMO_FAILED, DEMO_PASSED)
    assert not detail.is_error
    assert "lookup_order" in detail.content[0].text  # type: ignore[union-attr]


async def test_stdio_proxies_to_a_remote_store_by_url_where_serve_demo_shows_the_same_demo(
    served: Served, tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "molar_mcp", "stdio", "--api-url", served.base_url],
        env=child_env(tmp_path / "unused"),
    )
    async with Client(params) as client:
        failed = await demo_rows(client, "failed")
        passed = await demo_rows(client, "passed")
        missing = await client.call_tool("get_trace", {"trace_id": "nope123"})
    # `serve --demo` (the `served` fixture) shows what `stdio --demo` shows (the test above): one loader.
    assert (failed, passed) == (DEMO_FAILED, DEMO_PASSED)
    assert missing.is_error
    assert not (tmp_path / "unused").exists()  # remote mode opens no local store
