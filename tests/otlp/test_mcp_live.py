"""An MCP client subscribed to a running agent run's resource is told as its spans arrive over OTLP
(both protocol eras), and reads the run grown, then finished."""

from __future__ import annotations

import json
import warnings
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.types import ResourceUpdatedNotification

from molar_mcp.compose import Embedded
from molar_mcp.mcp.server import create_mcp_server
from tests.otlp.support import only_trace, post_protobuf, refund_run, settled_trace

pytestmark = pytest.mark.anyio


def trace_of(read: Any) -> dict[str, Any]:
    return dict(json.loads(read.contents[0].text)["trace"])


async def test_a_listener_is_told_as_spans_arrive_and_reads_the_run_grow_then_finish(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    spans = refund_run()  # export order: children first, the root last
    assert (await post_protobuf(http, spans[:3])).status_code == 200
    running = await only_trace(http)
    assert running["status"] == "running"
    uri = f"molar://traces/{running['short_id']}"
    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode="2026-07-28") as client:
        before = trace_of(await client.read_resource(uri))
        async with client.listen(resource_subscriptions=[uri]) as updates:
            assert (await post_protobuf(http, spans[3:-1])).status_code == 200
            with anyio.fail_after(10):
                event = await updates.__anext__()
            assert str(event.uri) == uri  # type: ignore[attr-defined]
            grown = trace_of(await client.read_resource(uri))
            assert grown["status"] == "running"
            assert grown["event_count"] > before["event_count"]
            assert (await post_protobuf(http, spans[-1:])).status_code == 200  # the root: the run is complete
            with anyio.fail_after(10):
                await updates.__anext__()
            await settled_trace(http)
        read = await client.read_resource(uri)
    assert trace_of(read)["status"] == "failed"
    assert "lookup_order" in read.contents[0].text  # type: ignore[union-attr]


async def test_a_legacy_subscriber_gets_resource_updated_as_spans_arrive(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    spans = refund_run()
    assert (await post_protobuf(http, spans[:2])).status_code == 200
    uri = f"molar://traces/{(await only_trace(http))['short_id']}"
    got = anyio.Event()
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            updated.append(str(message.params.uri))
            got.set()

    server = create_mcp_server(embedded.client_factory())
    async with Client(server, mode="legacy", message_handler=on_message) as client:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resources/subscribe is the 2025-era API, deprecated for modern
            await client.subscribe_resource(uri)
        assert (await post_protobuf(http, spans[2:5])).status_code == 200
        with anyio.fail_after(10):
            await got.wait()
    assert uri in updated
