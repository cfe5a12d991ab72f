"""A trace holds at most MOLAR_MAX_TRACE_EVENTS events: a bundle or an append past it is refused whole
with 413 `{error, message}`, and what was stored stays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from molar_mcp.compose import Embedded
from molar_mcp.store import LOCAL_ORG_ID, TraceQuery
from tests.long_run import long_run_bundle

pytestmark = pytest.mark.anyio

TS = 1_763_629_200_000


def ev(seq: int) -> dict[str, Any]:
    return {"seq": seq, "ts": TS + seq, "kind": "log", "message": f"line {seq}"}


@pytest.fixture
async def http(embedded: Embedded, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx2.AsyncClient]:
    monkeypatch.setenv("MOLAR_MAX_TRACE_EVENTS", "150")
    async with embedded.client_factory()() as client:
        yield client._http


async def test_an_append_past_the_cap_is_refused_whole(http: httpx2.AsyncClient) -> None:
    trace = (await http.post("/v1/traces", json={"scenario_slug": "capped"})).json()["id"]
    first = await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(s) for s in range(100)]})
    assert first.json()["accepted"] == 100
    over = await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(s) for s in range(100, 151)]})
    assert over.status_code == 413
    body = over.json()
    assert body["error"] == "payload_too_large"
    assert "at most 150 events" in body["message"]
    assert body["request_id"]
    detail = (await http.get(f"/v1/traces/{trace}")).json()
    assert detail["event_count"] == 100
    fits = await http.post(f"/v1/traces/{trace}/events", json={"events": [ev(s) for s in range(100, 150)]})
    assert fits.json()["accepted"] == 50


async def test_a_bundle_past_the_cap_is_refused_and_stores_nothing(
    http: httpx2.AsyncClient, embedded: Embedded
) -> None:
    bundle = await long_run_bundle(200, steps=10)
    response = await http.post(
        "/v1/traces/ingest", files={"bundle": ("b.tar.gz", bundle)}, data={"scenario_slug": "too-big"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert embedded.store.list_traces(LOCAL_ORG_ID, TraceQuery(scenario_slug="too-big")).items == []
