"""`molar-mcp stdio` as a child process, driven by the SDK client: what an IDE agent runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from tests.servers import Served, child_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_ide_agent_reads_demo_traces_over_stdio(tmp_path: Path, mode: str) -> None:
    data_dir = tmp_path / "data"
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "molar_mcp", "stdio", "--demo", "--data-dir", str(data_dir)],
        env=child_env(data_dir),
    )
    async with Client(params, mode=mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        listed = await client.call_tool("list_traces", {"status": "failed", "limit": 10})
        rows: Any = listed.structured_content
        detail = await client.call_tool("get_trace", {"trace_id": rows["items"][0]["short_id"]})
    assert {"list_traces", "get_trace"} <= tools
    assert len(rows["items"]) >= 2
    assert not detail.is_error


async def test_stdio_proxies_to_a_remote_store_by_url(served: Served, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "molar_mcp", "stdio", "--api-url", served.base_url],
        env=child_env(tmp_path / "unused"),
    )
    async with Client(params) as client:
        listed = await client.call_tool("list_traces", {"status": "failed"})
        missing = await client.call_tool("get_trace", {"trace_id": "nope123"})
    rows: Any = listed.structured_content
    assert len(rows["items"]) >= 2
    assert missing.is_error
    assert not (tmp_path / "unused").exists()  # remote mode opens no local store
