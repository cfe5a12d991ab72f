"""An MCP client subscribed to a running trace is notified as events arrive (both protocol eras)."""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.types import ResourceUpdatedNotification

from molar_mcp.compose import Embedded
from molar_mcp.mcp.server import create_mcp_server

pytestmark = pytest.mark.anyio

TS = 1_763_629_200_000


async def start_trace(embedded: Embedded) -> str:
    async with embedded.client_factory()() as client:
        return (await client.create_trace("live-run")).short_id


async def append(embedded: Embedded, trace: str, first: int, count: int) -> None:
    async with embedded.client_factory()() as client:
        events = [{"seq": s, "ts": TS + s, "kind": "log", "message": f"{s}"} for s in range(first, first + count)]
        assert (await client.append_events(trace, events)).accepted == count


async def test_a_modern_listener_is_told_when_a_running_trace_gets_events(embedded: Embedded) -> None:
    trace = await start_trace(embedded)
    await append(embedded, trace, 0, 3)
    uri = f"molar://traces/{trace}"
    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode="2026-07-28") as client:
        async with client.listen(resource_subscriptions=[uri]) as sub:
            # Acknowledged: the follower starts at the trace's current end, so only new events notify.
            await append(embedded, trace, 3, 2)
            with anyio.fail_after(10):
                event = await sub.__anext__()
        assert str(event.uri) == uri  # type: ignore[attr-defined]
        after = await client.read_resource(uri)
    assert '"event_count":5' in after.contents[0].text  # type: ignore[union-attr]


async def test_a_legacy_subscriber_gets_resource_updated_notifications(embedded: Embedded) -> None:
    trace = await start_trace(embedded)
    uri = f"molar://traces/{trace}"
    updated: list[str] = []
    got = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            got.set()

    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resources/subscribe is the 2025-era API, deprecated for modern
            await client.subscribe_resource(uri)
        await append(embedded, trace, 0, 1)
        with anyio.fail_after(10):
            await got.wait()
    assert uri in updated
