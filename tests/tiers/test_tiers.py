"""Storage tiers: retention by age, cold archives events (409 for what needs them), restore brings them back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from molar_mcp.compose import Embedded, open_embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID, TraceQuery
from molar_mcp.store.tiers import RetentionPolicy
from tests.bundles import make_bundle, summary

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def add(embedded: Embedded, days_old: float) -> str:
    created = (NOW - timedelta(days=days_old)).strftime("%Y-%m-%dT%H:%M:%SZ")
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary(created_at=created)))
    return trace_id


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    async with embedded.client_factory()() as client:
        yield client._http


def tier(embedded: Embedded, trace_id: str) -> str:
    return embedded.store.get_trace(LOCAL_ORG_ID, trace_id).tier


async def test_retention_moves_traces_down_by_age_and_never_moves_pinned_ones(embedded: Embedded) -> None:
    fresh, older, old, pinned = add(embedded, 1), add(embedded, 10), add(embedded, 40), add(embedded, 40)
    with embedded.store.db.tx() as conn:
        conn.execute("UPDATE traces SET pinned = 1 WHERE id = ?", (pinned,))
    result = embedded.context.tiers.apply(RetentionPolicy(7, 30), now=NOW)
    assert (result.warmed, result.frozen, result.events_archived) == (2, 1, 30)
    assert [tier(embedded, t) for t in (fresh, older, old, pinned)] == ["hot", "warm", "cold", "hot"]
    cold = embedded.store.list_traces(LOCAL_ORG_ID, TraceQuery(tier="cold")).items
    assert [t.id for t in cold] == [old]


async def test_a_cold_trace_keeps_its_summary_answers_409_for_events_and_comes_back_on_restore(
    embedded: Embedded, http: httpx2.AsyncClient
) -> None:
    trace = add(embedded, 40)
    before = (await http.get(f"/v1/traces/{trace}/events", params={"limit": 1000})).json()["events"]
    embedded.context.tiers.apply(RetentionPolicy(7, 30), now=NOW)

    detail = await http.get(f"/v1/traces/{trace}")
    assert detail.json()["tier"] == "cold"
    assert detail.json()["steps"]  # the summary stays readable
    events = await http.get(f"/v1/traces/{trace}/events")
    assert events.status_code == 409
    assert "restore" in events.json()["message"]
    assert (await http.get(f"/v1/traces/{trace}/stream")).status_code == 409
    assert (await http.get(f"/v1/traces/{trace}", params={"failed_events": 5})).status_code == 409

    # httpx2's ASGITransport returns once the app is done, background restore included.
    transport = httpx2.ASGITransport(app=embedded.api_app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as waiting:
        restoring = await waiting.post(f"/v1/traces/{trace}/restore")
    assert restoring.status_code == 202
    assert restoring.json()["status"] == "restoring"
    assert restoring.json()["eta_seconds"] >= 1
    assert tier(embedded, trace) == "hot"
    after = (await http.get(f"/v1/traces/{trace}/events", params={"limit": 1000})).json()["events"]
    assert after == before
    again = await http.post(f"/v1/traces/{trace}/restore")
    assert again.json() == {"status": "hot", "eta_seconds": 0}


async def test_restoring_another_orgs_trace_is_not_found(embedded: Embedded, http: httpx2.AsyncClient) -> None:
    trace = add(embedded, 40)
    embedded.context.tiers.apply(RetentionPolicy(7, 30), now=NOW)
    response = await http.post(f"/v1/traces/{trace}/restore", headers={"x-molar-org": "org_other"})
    assert response.status_code == 404
    assert tier(embedded, trace) == "cold"


def test_the_retention_command_applies_the_policy_to_a_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_embedded(data) as embedded:
        trace = add(embedded, 400)
    result = subprocess.run(
        [sys.executable, "-m", "molar_mcp", "retention", "run", "--data-dir", str(data), "--cold-days", "30"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert b"1 cold" in result.stderr
    with open_embedded(data) as embedded:
        assert tier(embedded, trace) == "cold"


async def test_restoring_a_warm_trace_makes_it_hot_at_once(embedded: Embedded, http: httpx2.AsyncClient) -> None:
    trace = add(embedded, 10)
    embedded.context.tiers.apply(RetentionPolicy(7, 30), now=NOW)
    assert tier(embedded, trace) == "warm"
    response = await http.post(f"/v1/traces/{trace}/restore")
    assert response.json() == {"status": "hot", "eta_seconds": 0}
    assert tier(embedded, trace) == "hot"
