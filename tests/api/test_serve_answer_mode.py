"""`create_serve_app` answers 2026-07-28 requests that no notification can belong to through the MCP SDK's
JSON-mode session manager (mcp/answer_mode.py), everything else through its SSE-mode one: over real HTTP,
the SDK's client on both protocol eras, the same answers, progress still reported, `/metrics` counting
which mode took each POST."""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
import pytest
from mcp.client import Client

from molar_mcp.compose import Embedded, create_serve_app
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID
from tests.bundles import make_bundle, summary
from tests.servers import served_in_loop

pytestmark = pytest.mark.anyio


def serving(embedded: Embedded) -> AbstractAsyncContextManager[str]:
    """The serve app under uvicorn on a free 127.0.0.1 port, in this test's event loop; its base URL."""
    return served_in_loop(create_serve_app(embedded))


async def posts_by_mode(base: str) -> dict[str, float]:
    async with httpx2.AsyncClient(base_url=base, trust_env=False) as http:
        text = (await http.get("/metrics")).text
    found = re.findall(r'^molar_mcp_posts_total\{mode="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {"json": 0.0, "sse": 0.0} | {mode: float(n) for mode, n in found}


async def test_both_eras_get_the_same_answers_and_only_modern_plain_calls_take_the_json_mode(
    embedded: Embedded,
) -> None:
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    answers: dict[str, list[Any]] = {}
    taken: dict[str, dict[str, float]] = {}
    async with serving(embedded) as base:
        for mode in ("auto", "legacy"):
            async with Client(base + "/mcp", mode=mode) as client:  # type: ignore[arg-type]
                await client.list_tools()  # what the client asks once before its first call
                before = await posts_by_mode(base)
                listed = await client.call_tool("list_traces", {"status": "failed"})
                got = await client.call_tool("get_trace", {"trace_id": trace_id})
                after = await posts_by_mode(base)
            assert not listed.is_error
            assert not got.is_error
            answers[mode] = [listed.structured_content, got.structured_content]
            taken[mode] = {m: after[m] - before[m] for m in after}
    assert answers["auto"] == answers["legacy"]
    assert taken["auto"] == {"json": 2, "sse": 0}  # 2026-07-28: one POST a call, each in JSON mode
    assert taken["legacy"] == {"json": 0, "sse": 2}  # 2025-11-25: its session's SSE transport


async def test_a_modern_call_that_asks_for_progress_keeps_the_sse_mode_and_gets_its_progress(
    embedded: Embedded,
) -> None:
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with serving(embedded) as base, Client(base + "/mcp", mode="auto") as client:
        await client.list_tools()
        before = await posts_by_mode(base)
        listed = await client.call_tool("list_traces", {"status": "failed"}, progress_callback=on_progress)
        debugged = await client.call_tool("debug_run", {"trace_id": trace_id}, progress_callback=on_progress)
        after = await posts_by_mode(base)
        long_run = await client.call_tool("debug_run", {"trace_id": trace_id})  # long-running: SSE, no token
        last = await posts_by_mode(base)
    assert not listed.is_error
    assert not debugged.is_error
    assert not long_run.is_error
    assert {m: after[m] - before[m] for m in after} == {"json": 0, "sse": 2}
    assert {m: last[m] - after[m] for m in after} == {"json": 0, "sse": 1}
    assert seen
    assert seen == sorted(seen)


META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def raw_call(http: httpx2.AsyncClient, method: str, params: dict[str, Any], meta: dict[str, Any]) -> Any:
    """One 2026-07-28 POST as the wire carries it; its status, content type and body bytes."""
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": method,
    }
    if method == "tools/call":
        headers["mcp-name"] = params["name"]
    body = {"jsonrpc": "2.0", "id": 5, "method": method, "params": {**params, "_meta": meta}}
    response = await http.post("/mcp", json=body, headers=headers)
    # A tool error names the request id of its store call, new for every call.
    content = re.sub(rb"request id [0-9a-f]{32}", b"request id R", response.content)
    return response.status_code, response.headers["content-type"], content


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tools/call", {"name": "list_traces", "arguments": {"status": "failed"}}),
        ("tools/call", {"name": "get_trace", "arguments": {"trace_id": "TRACE"}}),
        ("tools/call", {"name": "get_trace", "arguments": {"trace_id": "nope"}}),  # a tool error
        ("tools/call", {"name": "list_traces", "arguments": {"status": 3}}),  # bad arguments
        ("resources/read", {"uri": "molar://traces/nope"}),  # a protocol error: -32602, HTTP 400
        ("no/such/method", {}),
        ("tools/list", {}),
    ],
)
async def test_each_mode_answers_a_modern_request_with_the_same_bytes(
    embedded: Embedded, method: str, params: dict[str, Any]
) -> None:
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    if params.get("arguments", {}).get("trace_id") == "TRACE":
        params = {**params, "arguments": {"trace_id": trace_id}}
    async with serving(embedded) as base, httpx2.AsyncClient(base_url=base, trust_env=False) as http:
        before = await posts_by_mode(base)
        alone = await raw_call(http, method, params, META)
        streamed = await raw_call(http, method, params, {**META, "progressToken": "p1"})  # the SSE manager
        after = await posts_by_mode(base)
    assert {m: after[m] - before[m] for m in after} == {"json": 1, "sse": 1}
    assert alone == streamed
