"""The SSE stream of a trace: backfill then live, and no gap or duplicate across reconnects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest

from molar_mcp.compose import Embedded
from tests.servers import Served

pytestmark = pytest.mark.anyio

TS = 1_763_629_200_000
TOTAL = 400
BATCH = 10
READ_PER_CONNECTION = 37


async def write_all(http: httpx2.AsyncClient, trace: str) -> None:
    for first in range(0, TOTAL, BATCH):
        batch = [{"seq": s, "ts": TS + s, "kind": "log", "message": f"{s}"} for s in range(first, first + BATCH)]
        response = await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
        assert response.json()["accepted"] == BATCH
        await anyio.lowlevel.checkpoint()  # let the reader interleave with the writer
    assert (await http.post(f"/v1/traces/{trace}/finish", json={"status": "passed"})).status_code == 200


async def read_with_reconnects(http: httpx2.AsyncClient, trace: str) -> tuple[list[int], int]:
    """Read the stream, hanging up every READ_PER_CONNECTION events and resuming with Last-Event-ID."""
    seen: list[int] = []
    connections = 0
    while True:
        connections += 1
        headers = {"accept": "text/event-stream"}
        if seen:
            headers["last-event-id"] = str(seen[-1])
        async with http.stream("GET", f"/v1/traces/{trace}/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            read = 0
            async for sse in httpx2.EventSource(response):
                if sse.event == "end":
                    return seen, connections
                assert sse.event == "message"
                seen.append(int(sse.id))
                read += 1
                if read == READ_PER_CONNECTION:
                    break


@asynccontextmanager
async def in_process(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    async with embedded.client_factory()() as client:
        yield client._http


async def run_scenario(http: httpx2.AsyncClient) -> None:
    trace = (await http.post("/v1/traces", json={"scenario_slug": "sse"})).json()["id"]
    results: list[tuple[list[int], int]] = []

    async def reader() -> None:
        results.append(await read_with_reconnects(http, trace))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(write_all, http, trace)
    seen, connections = results[0]
    assert seen == list(range(TOTAL)), "every event exactly once, in order"
    assert connections >= TOTAL // READ_PER_CONNECTION


async def test_reconnecting_sse_readers_see_every_event_once_in_process(embedded: Embedded) -> None:
    async with in_process(embedded) as http:
        await run_scenario(http)


@pytest.mark.e2e
async def test_reconnecting_sse_readers_see_every_event_once_over_http(served: Served) -> None:
    async with httpx2.AsyncClient(base_url=served.base_url, timeout=30) as http:
        await run_scenario(http)


async def test_after_seq_backfills_a_finished_trace_and_ends(embedded: Embedded) -> None:
    async with in_process(embedded) as http:
        trace = (await http.post("/v1/traces", json={"scenario_slug": "sse"})).json()["id"]
        batch = [{"seq": s, "ts": TS + s, "kind": "log"} for s in range(5)]
        await http.post(f"/v1/traces/{trace}/events", json={"events": batch})
        await http.post(f"/v1/traces/{trace}/finish", json={"status": "passed"})
        async with http.stream("GET", f"/v1/traces/{trace}/stream", params={"after_seq": 2, "live": 1}) as response:
            frames = [(sse.event, sse.id) async for sse in httpx2.EventSource(response)]
    # The end frame carries no id of its own; per the SSE spec the last event id (4) stays in force.
    assert frames == [("message", "3"), ("message", "4"), ("end", "4")]


async def test_a_bad_last_event_id_is_a_400(embedded: Embedded) -> None:
    async with in_process(embedded) as http:
        trace = (await http.post("/v1/traces", json={"scenario_slug": "sse"})).json()["id"]
        response = await http.get(f"/v1/traces/{trace}/stream", headers={"last-event-id": "abc"})
    assert response.status_code == 400
