"""`POST /v1/traces/{id}/analyze`, `GET …/analysis`, `GET /v1/incidents`, `PATCH /v1/incidents/{id}`, in
process, and the typed client's methods for them."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from molar_mcp.client import BadRequestError, NotFoundError, TraceClient
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from tests.api.support import assert_error
from tests.bundles import checkout_events, make_bundle, summary

pytestmark = pytest.mark.anyio

WEBHOOK_SIG = "step-5: http 404 POST /api/webhooks/stripe"


def failed(store: SqliteTraceStore, org: str = LOCAL_ORG_ID, **fields: Any) -> tuple[str, str]:
    """The checkout run whose webhook answers 404 at step 5, before step 7's assertion fails."""
    return ingest_bundle(store, org, make_bundle(summary(**fields)))


def passed(store: SqliteTraceStore) -> tuple[str, str]:
    doc = summary(status="passed", failure_signature=None)
    return ingest_bundle(store, LOCAL_ORG_ID, make_bundle(doc, checkout_events(fail=False)))


async def test_analyze_names_the_404_at_step_5_as_the_cause_and_suggests_a_replay_from_it(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    trace_id, short_id = failed(store)
    resp = await api.post(f"/v1/traces/{short_id}/analyze")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {
        "trace_id",
        "analyzer_version",
        "findings",
        "failure_signature",
        "suggested_replay",
        "incident_id",
        "created_at",
    }
    assert body["trace_id"] == trace_id
    top = body["findings"][0]
    assert set(top) == {"label", "confidence", "critical_step", "critical_seq", "evidence_seqs", "summary", "signature"}
    assert (top["label"], top["critical_step"], top["critical_seq"]) == ("http_error", 5, 18)
    assert {18, 28} <= set(top["evidence_seqs"])  # the 404 and the assertion it broke
    assert body["findings"][1]["label"] == "assertion_failed"
    assert body["failure_signature"] == top["signature"] == WEBHOOK_SIG
    assert body["suggested_replay"] == {
        "from_step": 5,
        "reason": "fix the failing request at step 5, then replay from step 5",
    }
    assert body["created_at"].endswith("Z")


async def test_the_stored_analysis_reads_back_and_a_rerun_gives_the_same_findings(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    trace_id, _ = failed(store)
    first = (await api.post(f"/v1/traces/{trace_id}/analyze")).json()
    read = await api.get(f"/v1/traces/{trace_id}/analysis")
    assert read.status_code == 200
    assert read.json() == first
    again = (await api.post(f"/v1/traces/{trace_id}/analyze")).json()
    assert again == first  # same events: the stored analysis, as it is
    rerun = (await api.post(f"/v1/traces/{trace_id}/analyze?rerun=true")).json()
    assert rerun["findings"] == first["findings"]
    assert rerun["created_at"] >= first["created_at"]
    assert_error(await api.post(f"/v1/traces/{trace_id}/analyze?rerun=maybe"), 400, "bad_request")


async def test_reading_an_analysis_never_run_says_how_to_run_it(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    _, short_id = failed(store)
    body = assert_error(await api.get(f"/v1/traces/{short_id}/analysis"), 404, "not_analyzed")
    assert f"POST /v1/traces/{short_id}/analyze" in body["message"]


async def test_an_unknown_or_other_orgs_trace_is_not_found(store: SqliteTraceStore, api: httpx2.AsyncClient) -> None:
    trace_id, _ = failed(store)
    assert_error(await api.post("/v1/traces/nope/analyze"), 404, "not_found")
    assert_error(await api.get("/v1/traces/nope/analysis"), 404, "not_found")
    other = {"x-molar-org": "org_other"}
    assert_error(await api.post(f"/v1/traces/{trace_id}/analyze", headers=other), 404, "not_found")
    await api.post(f"/v1/traces/{trace_id}/analyze")
    assert_error(await api.get(f"/v1/traces/{trace_id}/analysis", headers=other), 404, "not_found")


async def test_a_trace_without_a_signature_takes_the_top_findings(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    trace_id, _ = failed(store, failure_signature=None)
    await api.post(f"/v1/traces/{trace_id}/analyze")
    listed = (await api.get("/v1/traces", params={"signature": WEBHOOK_SIG})).json()
    assert [t["id"] for t in listed["items"]] == [trace_id]


async def test_two_failures_with_one_signature_are_one_incident_of_two_traces(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    first, _ = failed(store, created_at="2026-05-31T10:00:00Z")
    second, _ = failed(store, created_at="2026-05-31T11:00:00Z")
    ok, _ = passed(store)
    for trace_id in (first, second, ok):
        assert (await api.post(f"/v1/traces/{trace_id}/analyze")).status_code == 200
    resp = await api.get("/v1/incidents")
    assert resp.status_code == 200
    page = resp.json()
    assert page["org_id"] == LOCAL_ORG_ID
    assert page["next_cursor"] is None
    (incident,) = page["items"]
    assert incident["signature"] == WEBHOOK_SIG
    assert incident["trace_count"] == 2
    assert incident["status"] == "open"
    assert incident["label"] == "http_error"
    assert incident["last_trace_id"] == second
    assert incident["first_seen_at"] == "2026-05-31T10:00:00Z"
    assert incident["last_seen_at"] == "2026-05-31T11:00:00Z"
    analysis = (await api.get(f"/v1/traces/{first}/analysis")).json()
    assert analysis["incident_id"] == incident["id"]
    assert (await api.get("/v1/incidents", headers={"x-molar-org": "org_other"})).json()["items"] == []


async def test_incidents_filter_by_status_and_reject_bad_parameters(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    trace_id, _ = failed(store)
    await api.post(f"/v1/traces/{trace_id}/analyze")
    assert len((await api.get("/v1/incidents?status=open")).json()["items"]) == 1
    assert (await api.get("/v1/incidents?status=muted")).json()["items"] == []
    assert_error(await api.get("/v1/incidents?status=closed"), 400, "bad_request")
    assert_error(await api.get("/v1/incidents?limit=0"), 400, "bad_request")
    assert_error(await api.get("/v1/incidents?limit=201"), 400, "bad_request")
    assert_error(await api.get("/v1/incidents?cursor=garbage"), 400, "bad_request")


async def test_patch_sets_status_and_owner_and_null_clears_the_owner(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    trace_id, _ = failed(store)
    await api.post(f"/v1/traces/{trace_id}/analyze")
    incident_id = (await api.get("/v1/incidents")).json()["items"][0]["id"]
    resp = await api.patch(f"/v1/incidents/{incident_id}", json={"status": "acknowledged", "owner": "ana"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["owner"]) == ("acknowledged", "ana")
    resp = await api.patch(f"/v1/incidents/{incident_id}", json={"status": "resolved"})
    assert (resp.json()["status"], resp.json()["owner"]) == ("resolved", "ana")
    resp = await api.patch(f"/v1/incidents/{incident_id}", json={"owner": None})
    assert resp.json()["status"] == "resolved"
    assert "owner" not in resp.json() or resp.json()["owner"] is None
    listed = (await api.get("/v1/incidents?status=resolved")).json()["items"]
    assert [i["id"] for i in listed] == [incident_id]


@pytest.mark.parametrize(
    "body",
    [
        {"status": "closed"},
        {"status": None},
        {"owner": ""},
        {"owner": 7},
        {"assignee": "ana"},
        {},
        ["resolved"],
    ],
)
async def test_patch_refuses_bad_values_with_422(
    store: SqliteTraceStore, api: httpx2.AsyncClient, body: object
) -> None:
    trace_id, _ = failed(store)
    await api.post(f"/v1/traces/{trace_id}/analyze")
    incident_id = (await api.get("/v1/incidents")).json()["items"][0]["id"]
    assert_error(await api.patch(f"/v1/incidents/{incident_id}", json=body), 422, "validation_error")
    assert (await api.get("/v1/incidents")).json()["items"][0]["status"] == "open"  # nothing changed


async def test_patch_of_an_unknown_or_other_orgs_incident_is_404(
    store: SqliteTraceStore, api: httpx2.AsyncClient
) -> None:
    trace_id, _ = failed(store)
    await api.post(f"/v1/traces/{trace_id}/analyze")
    incident_id = (await api.get("/v1/incidents")).json()["items"][0]["id"]
    assert_error(await api.patch("/v1/incidents/nope", json={"status": "muted"}), 404, "not_found")
    other = {"x-molar-org": "org_other"}
    assert_error(
        await api.patch(f"/v1/incidents/{incident_id}", json={"status": "muted"}, headers=other), 404, "not_found"
    )
    assert (await api.get("/v1/incidents")).json()["items"][0]["status"] == "open"


async def test_patch_needs_a_json_body(store: SqliteTraceStore, api: httpx2.AsyncClient) -> None:
    trace_id, _ = failed(store)
    await api.post(f"/v1/traces/{trace_id}/analyze")
    incident_id = (await api.get("/v1/incidents")).json()["items"][0]["id"]
    url = f"/v1/incidents/{incident_id}"
    assert_error(await api.patch(url, content=b"status=muted"), 415, "unsupported_media_type")
    bad_json = await api.patch(url, content=b"{nope", headers={"content-type": "application/json"})
    assert_error(bad_json, 400, "bad_request")


async def test_the_client_analyzes_reads_lists_and_updates(store: SqliteTraceStore, api: httpx2.AsyncClient) -> None:
    trace_id, short_id = failed(store)
    client = TraceClient(api)
    with pytest.raises(NotFoundError) as missing:
        await client.get_analysis(short_id)
    assert missing.value.error == "not_analyzed"
    analysis = await client.analyze(short_id)
    assert analysis.findings[0].critical_step == 5
    assert analysis.suggested_replay is not None
    assert analysis.suggested_replay.from_step == 5
    assert await client.get_analysis(trace_id) == analysis
    page = await client.list_incidents(status="open", limit=10)
    (incident,) = page.items
    assert incident.id == analysis.incident_id
    updated = await client.update_incident(incident.id, status="acknowledged", owner="ana")
    assert (updated.status, updated.owner) == ("acknowledged", "ana")
    cleared = await client.update_incident(incident.id, clear_owner=True)
    assert cleared.owner is None
    with pytest.raises(BadRequestError):
        await client.update_incident(incident.id, status="closed")
    with pytest.raises(NotFoundError):
        await client.update_incident("nope", status="muted")
