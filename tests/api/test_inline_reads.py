"""Store reads on the event loop for an in-process client that asks (api/reads.py): what `molar-mcp stdio`
and `molar-mcp serve` by default do, without two thread hops a read; everyone else reads in a worker thread,
and so does a long read whoever asks."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import pytest

from molar_mcp.api.reads import INLINE_EVENTS_LIMIT
from molar_mcp.cli import build_parser
from molar_mcp.client import TraceClient, TraceFilters
from molar_mcp.compose import Embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID
from tests.bundles import make_bundle, summary

pytestmark = pytest.mark.anyio


async def reads(client: TraceClient, trace_id: str) -> list[Any]:
    """The reads `get_trace` and `list_traces` make (a trace with its failed events, a step's events, one
    event, a page of traces), as answered."""
    return [
        await client.get_trace_with_failures(trace_id, 12),
        await client.get_trace(trace_id, signed_urls=False),
        await client.get_events(trace_id, step="1", limit=40),
        await client.get_event(trace_id, 0),
        await client.list_traces(TraceFilters(status="failed"), limit=5, row_cursors=True),
    ]


async def test_inline_reads_need_no_worker_thread_and_answer_what_threaded_reads_answer(
    embedded: Embedded, engine: dict[str, str]
) -> None:
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    limiter = anyio.to_thread.current_default_thread_limiter()
    async with embedded.client_factory(inline_reads=True)() as inline, embedded.client_factory()() as threaded:
        expected = await reads(threaded, trace_id)
        limiter.total_tokens = 1
        await limiter.acquire()  # no worker thread can start now
        try:
            if engine:  # PostgreSQL: its reads wait on the network, so they keep their thread
                with anyio.move_on_after(0.3) as waited:
                    await inline.get_trace(trace_id, signed_urls=False)
                assert waited.cancelled_caught
                return
            with anyio.fail_after(10):
                got = await reads(inline, trace_id)
            with anyio.move_on_after(0.3) as waited:  # the control: a threaded read waits for a thread
                await threaded.get_trace(trace_id, signed_urls=False)
            assert waited.cancelled_caught
        finally:
            limiter.release()
    assert got == expected


async def test_a_long_events_page_keeps_its_worker_thread_even_when_inline_reads_were_asked(
    embedded: Embedded, engine: dict[str, str]
) -> None:
    if engine:  # PostgreSQL: every read keeps its thread (the test above)
        return
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary()))
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    async with embedded.client_factory(inline_reads=True)() as inline, embedded.client_factory()() as threaded:
        expected = await threaded.get_events(trace_id, limit=INLINE_EVENTS_LIMIT + 1)
        limiter.total_tokens = 1
        await limiter.acquire()  # no worker thread can start now
        try:
            with anyio.fail_after(10):  # the MCP tools' pages, up to the bound, are read on the loop
                short = await inline.get_events(trace_id, limit=INLINE_EVENTS_LIMIT)
            with anyio.move_on_after(0.3) as waited:  # a longer page waits for its thread
                await inline.get_events(trace_id, limit=INLINE_EVENTS_LIMIT + 1)
            assert waited.cancelled_caught
        finally:
            limiter.release()
            limiter.total_tokens = tokens
        assert await inline.get_events(trace_id, limit=INLINE_EVENTS_LIMIT + 1) == expected
    assert short.events == expected.events[:INLINE_EVENTS_LIMIT]


@pytest.mark.parametrize(
    ("argv", "env", "inline"),
    [
        ([], None, True),
        (["--no-inline-reads"], None, False),
        (["--inline-reads"], "0", True),
        ([], "0", False),
        ([], "off", False),
        ([], "1", True),
    ],
)
def test_serve_reads_inline_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None, inline: bool
) -> None:
    if env is None:
        monkeypatch.delenv("MOLAR_INLINE_READS", raising=False)
    else:
        monkeypatch.setenv("MOLAR_INLINE_READS", env)
    assert build_parser().parse_args(["serve", *argv]).inline_reads is inline
