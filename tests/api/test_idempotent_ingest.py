"""`POST /v1/traces/ingest` is idempotent: a retry with the same `Idempotency-Key` after a lost answer, or the
same upload sent again, answers the first answer (200, `Idempotent-Replayed: true`) and stores nothing
twice; the same key with another upload is a 422; per org."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httpx2
import pytest

from molar_mcp.store import SqliteTraceStore, TraceQuery
from tests.bundles import checkout_events, make_bundle, summary

pytestmark = pytest.mark.anyio


@functools.cache
def bundle(slug: str = "checkout-upgrade", *, fail: bool = True) -> bytes:
    """One upload's bytes, made once (a gzip header holds its time: a retry sends the same bytes)."""
    return make_bundle(summary(scenario_slug=slug, status="failed" if fail else "passed"), checkout_events(fail=fail))


async def send(
    client: httpx2.AsyncClient,
    data: bytes,
    key: str | None = None,
    *,
    org: str | None = None,
    **form: str,
) -> httpx2.Response:
    headers = {"idempotency-key": key} if key else {}
    if org:
        headers["x-molar-org"] = org
    return await client.post(
        "/v1/traces/ingest", files={"file": ("bundle.tar.gz", data, "application/gzip")}, data=form, headers=headers
    )


def stored(store: SqliteTraceStore, org: str = "org_local") -> int:
    return len(store.list_traces(org, TraceQuery(limit=200)).items)


async def test_a_retry_with_the_same_key_answers_the_first_trace_and_stores_nothing(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    first = await send(client, bundle(), "reporter-attempt-1")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await send(client, bundle(), "reporter-attempt-1")
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert stored(store) == 1


async def test_the_same_bundle_sent_again_without_a_key_or_with_another_is_stored_once(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    first = await send(client, bundle())
    assert first.status_code == 201, first.text
    resent = await send(client, bundle())
    assert (resent.status_code, resent.json()) == (200, first.json())
    other_key = await send(client, bundle(), "a-new-key")
    assert (other_key.status_code, other_key.json()) == (200, first.json())
    # That key now answers the same upload too; a different bundle is a new trace.
    assert (await send(client, bundle(), "a-new-key")).json() == first.json()
    different = await send(client, bundle("checkout-downgrade"))
    assert different.status_code == 201
    assert different.json()["trace_id"] != first.json()["trace_id"]
    # A field that changes what is stored makes another upload: the same file into a run is stored there.
    run = (await client.post("/v1/runs", json={"name": "rerun"})).json()
    into_run = await send(client, bundle(), run_id=run["id"])
    assert into_run.status_code == 201
    assert stored(store) == 3


async def test_the_same_key_with_another_upload_is_a_422_and_stores_nothing(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    assert (await send(client, bundle(), "key-1")).status_code == 201
    reused = await send(client, bundle("checkout-downgrade"), "key-1")
    assert reused.status_code == 422, reused.text
    body = reused.json()
    assert body["error"] == "idempotency_key_reused"
    assert "key-1" in body["message"]
    assert "new key" in body["message"]
    assert body["request_id"]
    assert stored(store) == 1


async def test_a_failed_upload_leaves_its_key_free_for_the_retry(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    truncated = bundle()[:200]
    refused = await send(client, truncated, "key-2")
    assert refused.status_code in (400, 422), refused.text
    assert (await send(client, truncated, "key-2")).status_code == refused.status_code  # refused again, not replayed
    fixed = await send(client, bundle(), "key-2")
    assert fixed.status_code == 201, fixed.text
    assert stored(store) == 1


async def test_concurrent_retries_store_one_trace_and_all_get_its_answer(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    data = bundle()
    answers = await asyncio.gather(*(send(client, data, "key-3") for _ in range(4)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 201], [a.text for a in answers]
    assert len({a.json()["trace_id"] for a in answers}) == 1
    assert stored(store) == 1


async def test_keys_and_contents_are_per_org(client: httpx2.AsyncClient, store: SqliteTraceStore) -> None:
    mine = await send(client, bundle(), "shared-key", org="org_acme")
    theirs = await send(client, bundle(), "shared-key", org="org_other")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["trace_id"] != theirs.json()["trace_id"]
    assert stored(store, "org_acme") == 1
    assert stored(store, "org_other") == 1


@pytest.mark.parametrize("key", ["", " ", "has space", "x" * 256, "naïve"])
async def test_a_malformed_key_is_a_400(client: httpx2.AsyncClient, store: SqliteTraceStore, key: str) -> None:
    headers: dict[str, Any] = {"idempotency-key": key.encode("utf-8")}
    answer = await client.post(
        "/v1/traces/ingest", files={"file": ("bundle.tar.gz", bundle(), "application/gzip")}, headers=headers
    )
    assert answer.status_code == 400, answer.text
    assert "Idempotency-Key" in answer.json()["message"]
    assert stored(store) == 0
