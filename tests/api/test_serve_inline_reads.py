"""`create_serve_app(inline_reads=True)` (what `molar-mcp serve` builds unless told `--no-inline-reads`): the MCP
tools' reads of the embedded SQLite store run on the event loop (api/reads.py), over real HTTP, on both protocol
eras; with `inline_reads=False` they wait for a worker thread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp.client import Client

from molar_mcp.compose import Embedded, create_serve_app
from molar_mcp.ingest import ingest_bundle
from molar_mcp.serve_auth import acting_client_factory, open_serve_auth
from molar_mcp.store import LOCAL_ORG_ID
from tests.bundles import make_bundle, summary
from tests.servers import served_in_loop

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serving(embedded: Embedded, *, inline_reads: bool) -> AsyncIterator[str]:
    """The serve app under uvicorn on a free 127.0.0.1 port, in this test's event loop; its /mcp URL."""
    async with served_in_loop(create_serve_app(embedded, inline_reads=inline_reads)) as base:
        yield base + "/mcp"


async def calls(url: str, mode: str, trace_id: str) -> list[Any]:
    """list_traces and get_trace over HTTP as the SDK's client (`mode`) sees them."""
    async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
        listed = await client.call_tool("list_traces", {"status": "failed"})
        got = await client.call_tool("get_trace", {"trace_id": trace_id})
    assert not listed.is_error
    assert not got.is_error
    return [listed.structured_content, got.structured_content]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_serve_with_inline_reads_answers_tools_without_a_worker_thread(
    embedded: Embedded, engine: dict[str, str], mode: str
) -> None:
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    async with serving(embedded, inline_reads=False) as threaded_url:
        expected = await calls(threaded_url, mode, trace_id)
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    async with serving(embedded, inline_reads=True) as inline_url, serving(embedded, inline_reads=False) as threaded:
        limiter.total_tokens = 1
        await limiter.acquire()  # no worker thread can start now
        try:
            if engine:  # PostgreSQL: its reads wait on the network, so the flag leaves them on their thread
                with anyio.move_on_after(1) as waited:
                    await calls(inline_url, mode, trace_id)
                assert waited.cancelled_caught
                return
            with anyio.fail_after(20):
                got = await calls(inline_url, mode, trace_id)
            with anyio.move_on_after(1) as waited:  # the control: the default server waits for a thread
                await calls(threaded, mode, trace_id)
            assert waited.cancelled_caught
        finally:
            limiter.release()
            limiter.total_tokens = tokens
    assert got == expected


async def test_the_acting_clients_of_serve_with_auth_read_inline_when_asked(
    embedded: Embedded, engine: dict[str, str], tmp_path: Path
) -> None:
    from molar_mcp.api.app import create_api_app
    from molar_mcp.auth.resource import reset_principal, set_principal
    from molar_mcp.auth.verify import Principal

    if engine:  # PostgreSQL: serve never asks its acting clients for inline reads (the gate it passes them)
        assert not embedded.reads_inline_possible
        return
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    with open_serve_auth(tmp_path / "auth", "http://127.0.0.1:9") as auth:
        api_app = create_api_app(embedded.context, auth=auth.api_auth())
        inline = acting_client_factory(api_app, auth.internal_token, inline_reads=True)
        threaded = acting_client_factory(api_app, auth.internal_token)
        caller = Principal("user", LOCAL_ORG_ID, frozenset({"mcp:trace:read"}), None, "oauth", "jti", None)
        said = set_principal(caller)  # what the /mcp guard does for a tool call
        async with inline() as reader, threaded() as control:
            expected = await control.get_trace_with_failures(trace_id, 12)
            limiter = anyio.to_thread.current_default_thread_limiter()
            tokens = limiter.total_tokens
            limiter.total_tokens = 1
            await limiter.acquire()
            try:
                with anyio.fail_after(10):
                    got = await reader.get_trace_with_failures(trace_id, 12)
                with anyio.move_on_after(0.3) as waited:
                    await control.get_trace_with_failures(trace_id, 12)
                assert waited.cancelled_caught
            finally:
                limiter.release()
                limiter.total_tokens = tokens
        reset_principal(said)
    assert got == expected
