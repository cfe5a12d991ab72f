"""POST /v1/traces/ingest over the real app: multipart in, 201 out, and every refusal stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from molar_mcp.store import SqliteTraceStore
from tests.bundles import checkout_events, make_bundle, summary
from tests.ingest.archives import SMALL_LIMIT, BadBundle, bad_bundles, noise, stored

from .support import assert_error

pytestmark = pytest.mark.anyio

CATALOGUE = bad_bundles()
STATUS = {
    "unsupported_media_type": 415,
    "bad_bundle": 400,
    "unsafe_path": 400,
    "payload_too_large": 413,
    "validation_error": 422,
}
FORM = {"scenario_slug": "checkout-coupon"}


async def post_bundle(
    client: httpx2.AsyncClient, data: bytes, form: dict[str, str] | None = None, **kw: Any
) -> httpx2.Response:
    files = {"bundle": ("bundle.tar.gz", data, "application/gzip")}
    return await client.post("/v1/traces/ingest", files=files, data=FORM if form is None else form, **kw)


async def test_a_bundle_posted_as_multipart_is_stored_and_readable(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    form = {
        "scenario_slug": "checkout-coupon",
        "source": "manual",
        "commit_sha": "fffffff",
        "pr_number": "77",
    }
    resp = await post_bundle(client, make_bundle(summary(pr_number=1)), form)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert set(body) == {"trace_id", "short_id"}
    detail = (await client.get(f"/v1/traces/{body['short_id']}")).json()
    assert detail["id"] == body["trace_id"]
    assert (detail["scenario_slug"], detail["source"], detail["code_sha"], detail["pr_number"]) == (
        "checkout-coupon",
        "manual",
        "fffffff",
        77,
    )
    events = (await client.get(f"/v1/traces/{body['trace_id']}/events", params={"limit": 1000})).json()
    assert events["total"] == len(checkout_events())
    listed = (await client.get("/v1/traces", params={"scenario": "checkout-coupon"})).json()
    assert [i["id"] for i in listed["items"]] == [body["trace_id"]]


async def test_a_zip_bundle_is_accepted_and_optional_form_fields_keep_the_summary(
    client: httpx2.AsyncClient,
) -> None:
    resp = await post_bundle(client, make_bundle(fmt="zip"), {"scenario_slug": "cart-basic", "source": ""})
    assert resp.status_code == 201, resp.text
    detail = (await client.get(f"/v1/traces/{resp.json()['trace_id']}")).json()
    assert (detail["scenario_slug"], detail["source"], detail["code_sha"]) == (
        "cart-basic",
        "pr",
        "a1b2c3d4e5",
    )


@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.name for b in CATALOGUE])
async def test_each_bad_bundle_gets_its_status_and_error_and_nothing_is_stored(
    client: httpx2.AsyncClient, store: SqliteTraceStore, bad: BadBundle
) -> None:
    before = stored(store)
    body = assert_error(await post_bundle(client, bad.data), STATUS[bad.kind], bad.kind)
    assert bad.says in body["message"]
    assert stored(store) == before


async def test_a_json_body_is_415(client: httpx2.AsyncClient, store: SqliteTraceStore) -> None:
    before = stored(store)
    resp = await client.post("/v1/traces/ingest", json={"bundle": "data", "scenario_slug": "x"})
    body = assert_error(resp, 415, "unsupported_media_type")
    assert "multipart/form-data" in body["message"]
    assert stored(store) == before


async def test_a_multipart_content_type_in_capitals_is_accepted(client: httpx2.AsyncClient) -> None:
    req = client.build_request("POST", "/v1/traces/ingest", files={"bundle": ("b.tar.gz", make_bundle())}, data=FORM)
    req.headers["content-type"] = req.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    assert (await client.send(req)).status_code == 201


async def test_a_form_without_a_bundle_file_is_422(client: httpx2.AsyncClient) -> None:
    resp = await client.post("/v1/traces/ingest", files={"other": ("x.bin", b"x")}, data=FORM)
    body = assert_error(resp, 422, "validation_error")
    assert "bundle" in body["message"]
    text_field = await client.post("/v1/traces/ingest", files={"x": ("x", b"")}, data={**FORM, "bundle": "abc"})
    assert_error(text_field, 422, "validation_error")


async def test_a_form_without_scenario_slug_takes_the_bundles_own(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    # scenario_slug is optional for every format (docs/playwright.md): the summary's slug is used.
    for n, form in enumerate(({}, {"scenario_slug": "  "})):
        # Two different runs (the same bundle sent twice is one upload: docs/playwright.md).
        resp = await post_bundle(
            client, make_bundle(summary(scenario_slug="from-the-summary", code_sha=f"c0de{n}")), form
        )
        assert resp.status_code == 201, resp.text
        detail = (await client.get(f"/v1/traces/{resp.json()['short_id']}")).json()
        assert detail["scenario_slug"] == "from-the-summary"


async def test_a_bundle_without_any_scenario_slug_is_422_and_stores_nothing(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    before = stored(store)
    body = assert_error(
        await post_bundle(client, make_bundle(summary(scenario_slug=None)), {}), 422, "validation_error"
    )
    assert "scenario_slug" in body["message"]
    assert stored(store) == before


@pytest.mark.parametrize("pr_number", ["seven", "-3", "²", str(2**64)])
async def test_a_pr_number_that_is_not_a_plain_integer_is_422(
    client: httpx2.AsyncClient, store: SqliteTraceStore, pr_number: str
) -> None:
    before = stored(store)
    body = assert_error(
        await post_bundle(client, make_bundle(), {**FORM, "pr_number": pr_number}), 422, "validation_error"
    )
    assert "pr_number" in body["message"]
    assert stored(store) == before


async def test_a_source_outside_the_vocabulary_is_422(client: httpx2.AsyncClient) -> None:
    resp = await post_bundle(client, make_bundle(), {**FORM, "source": "carrier-pigeon"})
    assert "carrier-pigeon" in assert_error(resp, 422, "validation_error")["message"]


async def test_a_body_over_the_limit_with_a_content_length_is_413_before_it_is_read(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    before = stored(store)
    resp = await post_bundle(client, noise(SMALL_LIMIT + 100_000))
    assert "content-length" in resp.request.headers
    body = assert_error(resp, 413, "payload_too_large")
    assert "request is larger" in body["message"]
    assert stored(store) == before


async def test_a_chunked_body_over_the_limit_is_413_while_it_streams(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    before = stored(store)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield (
            b'--xyz\r\nContent-Disposition: form-data; name="bundle"; filename="b.tar.gz"\r\n'
            b"Content-Type: application/gzip\r\n\r\n"
        )
        for i in range(100):
            chunk = noise(16_384, seed=i)
            sent += len(chunk)
            yield chunk

    resp = await client.post(
        "/v1/traces/ingest", content=body(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert "content-length" not in resp.request.headers
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert_error(resp, 413, "payload_too_large")
    assert sent < 100 * 16_384  # refused before the whole body was sent
    assert stored(store) == before
