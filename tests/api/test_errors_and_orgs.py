"""What every /v1 response shares: one error shape, a request id, and the org the caller acts in."""

from __future__ import annotations

import re

import httpx2
import pytest

from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from tests.bundles import make_bundle
from tests.store.factory import new_trace

from .support import assert_error

pytestmark = pytest.mark.anyio


async def test_an_unknown_route_is_a_404_in_the_error_shape(client: httpx2.AsyncClient) -> None:
    body = assert_error(await client.get("/v2/nothing/here"), 404, "not_found")
    assert "/v2/nothing/here" in body["message"]


async def test_a_wrong_method_is_a_405_in_the_error_shape(client: httpx2.AsyncClient) -> None:
    assert_error(await client.delete("/v1/traces"), 405, "method_not_allowed")


async def test_a_success_carries_a_generated_request_id(client: httpx2.AsyncClient) -> None:
    first = await client.get("/v1/traces")
    second = await client.get("/v1/traces")
    assert first.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("rid", ["req-123", "a.b:c_d-e", "X" * 128])
async def test_a_well_formed_caller_request_id_is_echoed_in_the_header_and_the_error(
    client: httpx2.AsyncClient, rid: str
) -> None:
    ok = await client.get("/v1/traces", headers={"x-request-id": rid})
    assert ok.headers["x-request-id"] == rid
    body = assert_error(await client.get("/v1/traces/nope", headers={"x-request-id": rid}), 404, "not_found")
    assert body["request_id"] == rid


@pytest.mark.parametrize("rid", ["", "has space", "semi;colon", "X" * 129, "ünïcode"])
async def test_a_malformed_caller_request_id_is_replaced(client: httpx2.AsyncClient, rid: str) -> None:
    resp = await client.get("/v1/traces/nope", headers={"x-request-id": rid.encode()})
    body = assert_error(resp, 404, "not_found")
    assert body["request_id"] != rid
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])


async def test_x_molar_org_picks_the_org_and_orgs_do_not_see_each_other(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    local_id, _ = store.add_trace(LOCAL_ORG_ID, new_trace(), {})
    files = {"bundle": ("b.tar.gz", make_bundle(), "application/gzip")}
    acme = {"x-molar-org": "org_acme"}
    resp = await client.post("/v1/traces/ingest", files=files, data={"scenario_slug": "s"}, headers=acme)
    assert resp.status_code == 201
    acme_id, acme_short = resp.json()["trace_id"], resp.json()["short_id"]

    listed = (await client.get("/v1/traces", headers=acme)).json()["items"]
    assert [i["id"] for i in listed] == [acme_id]
    assert [i["id"] for i in (await client.get("/v1/traces")).json()["items"]] == [local_id]
    other = {"x-molar-org": "org_other"}
    assert (await client.get("/v1/traces", headers=other)).json()["items"] == []

    for ref in (acme_id, acme_short):
        assert (await client.get(f"/v1/traces/{ref}", headers=acme)).json()["org_id"] == "org_acme"
        assert_error(await client.get(f"/v1/traces/{ref}", headers=other), 404, "not_found")
        assert_error(await client.get(f"/v1/traces/{ref}/events", headers=other), 404, "not_found")
        assert_error(await client.get(f"/v1/traces/{ref}"), 404, "not_found")
    assert_error(await client.get(f"/v1/traces/{local_id}", headers=acme), 404, "not_found")


@pytest.mark.parametrize("org", ["org acme", "org/acme", "x" * 65, "org;drop"])
async def test_a_malformed_x_molar_org_is_a_400(client: httpx2.AsyncClient, store: SqliteTraceStore, org: str) -> None:
    trace_id, _ = store.add_trace(LOCAL_ORG_ID, new_trace(), {})
    headers = {"x-molar-org": org}
    for path in ("/v1/traces", f"/v1/traces/{trace_id}", f"/v1/traces/{trace_id}/events"):
        body = assert_error(await client.get(path, headers=headers), 400, "bad_request")
        assert "x-molar-org" in body["message"]
    files = {"bundle": ("b.tar.gz", make_bundle(), "application/gzip")}
    resp = await client.post("/v1/traces/ingest", files=files, data={"scenario_slug": "s"}, headers=headers)
    assert_error(resp, 400, "bad_request")
    assert len((await client.get("/v1/traces")).json()["items"]) == 1


async def test_an_empty_x_molar_org_means_the_local_org(client: httpx2.AsyncClient, store: SqliteTraceStore) -> None:
    trace_id, _ = store.add_trace(LOCAL_ORG_ID, new_trace(), {})
    resp = await client.get(f"/v1/traces/{trace_id}", headers={"x-molar-org": ""})
    assert resp.json()["org_id"] == LOCAL_ORG_ID
