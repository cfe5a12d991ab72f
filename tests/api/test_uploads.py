"""Direct uploads (`POST /v1/uploads`): a presigned PUT URL of the object store per org and sha256, the
real S3 client's URL PUT over HTTP (moto on 127.0.0.1), then `POST /v1/uploads/{sha256}/ingest` that
checks the bytes; on the file blob store a 501 that says to send the file in the ingest request."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.compose import open_store
from molar_mcp.store import SqliteTraceStore
from tests.bundles import artifact_for, make_bundle, summary
from tests.ingest.archives import SMALL_LIMIT

from .support import assert_error

pytestmark = pytest.mark.anyio


@pytest.fixture
def engine(pg_url: str, s3_url: str) -> dict[str, str]:
    return {"database_url": pg_url, "blob_url": s3_url}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def ticket(client: httpx2.AsyncClient, data: bytes, org: str = "org_a") -> dict[str, str]:
    answer = await client.post(
        "/v1/uploads", json={"sha256": sha(data), "size": len(data)}, headers={"x-molar-org": org}
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, str] = answer.json()
    return body


async def put(url: str, data: bytes, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as direct:  # straight to the object store, over HTTP
        return await direct.put(url, content=data, headers=headers)


async def ingest_by_sha(client: httpx2.AsyncClient, sha256: str, org: str = "org_a") -> httpx2.Response:
    return await client.post(
        f"/v1/uploads/{sha256}/ingest",
        json={"filename": "run.tar.gz", "scenario_slug": "uploaded"},
        headers={"x-molar-org": org},
    )


async def test_a_file_put_to_the_presigned_url_is_ingested_by_its_sha256(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    shot = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    bundle = make_bundle(summary(artifacts=[artifact_for(shot)]), blobs={"shot": shot})
    issued = await ticket(client, bundle)
    assert issued["sha256"] == sha(bundle)
    assert issued["method"] == "PUT"
    assert f"/orgs/org_a/uploads/{sha(bundle)[:2]}/{sha(bundle)}" in issued["url"]  # per org, by content
    assert "X-Amz-Signature" in issued["url"]
    assert issued["ingest_url"] == f"/v1/uploads/{sha(bundle)}/ingest"
    expires = datetime.fromisoformat(issued["expires_at"])
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)

    stored = await put(issued["url"], bundle, issued["headers"])
    assert stored.status_code == 200, stored.text
    ingested = await ingest_by_sha(client, sha(bundle))
    assert ingested.status_code == 201, ingested.text
    trace_id = ingested.json()["trace_id"]
    detail = (await client.get(f"/v1/traces/{trace_id}", headers={"x-molar-org": "org_a"})).json()
    assert detail["scenario_slug"] == "uploaded"
    assert detail["event_count"] > 0
    assert store.blobs.read(sha(shot), "org_a") == shot  # its artifact stored as an upload's would be
    # The upload itself is gone once ingested; another org never saw it.
    assert_error(await ingest_by_sha(client, sha(bundle)), 404, "not_found")


async def test_another_orgs_upload_and_bytes_that_are_not_their_sha256_are_refused(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    bundle = make_bundle(summary())
    issued = await ticket(client, bundle, org="org_a")
    assert (await put(issued["url"], bundle, issued["headers"])).status_code == 200
    assert_error(await ingest_by_sha(client, sha(bundle), org="org_b"), 404, "not_found")  # org_b's key: empty

    other = make_bundle(summary(scenario_slug="other"))
    forged = await ticket(client, other)  # a URL for `other`'s sha256 …
    same_size = bundle[: len(other)].ljust(len(other), b"\0")
    assert (await put(forged["url"], same_size, forged["headers"])).status_code == 200  # … with other bytes
    refused = assert_error(await ingest_by_sha(client, sha(other)), 422, "validation_error")
    assert "not " + sha(other) in refused["message"]
    assert_error(await ingest_by_sha(client, sha(other)), 404, "not_found")  # removed, never ingested
    assert (await client.get("/v1/traces", headers={"x-molar-org": "org_a"})).json()["items"] == []


async def test_bad_upload_requests_get_their_status(client: httpx2.AsyncClient) -> None:
    good = sha(b"x")
    for body, status, error in (
        ({"sha256": "ABC", "size": 1}, 422, "validation_error"),
        ({"sha256": good.upper(), "size": 1}, 422, "validation_error"),
        ({"sha256": good, "size": 0}, 422, "validation_error"),
        ({"sha256": good}, 422, "validation_error"),
        ({"sha256": good, "size": 1, "path": "../x"}, 422, "validation_error"),
        ({"sha256": good, "size": SMALL_LIMIT + 1}, 413, "payload_too_large"),
    ):
        assert_error(await client.post("/v1/uploads", json=body), status, error)
    assert_error(await client.post("/v1/uploads", content=b"{}"), 415, "unsupported_media_type")
    assert_error(await ingest_by_sha(client, "A" * 64), 422, "validation_error")
    assert_error(await ingest_by_sha(client, "%2e%2e%2fetc%2fpasswd"), 404, "not_found")  # no such route
    for options in ({"format": "tarball"}, {"result": {"status": 7}}, {"scenario_slug": "x" * 201}, {"extra": 1}):
        assert_error(await client.post(f"/v1/uploads/{good}/ingest", json=options), 422, "validation_error")
    assert_error(await client.post(f"/v1/uploads/{good}/ingest", content=b"{"), 415, "unsupported_media_type")


@pytest.fixture
async def file_store_client(tmp_path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    store = open_store(tmp_path / "data")  # the embedded store: blob files in the data dir
    transport = httpx2.ASGITransport(app=create_api_app(ApiContext.embedded(store)), raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http
    store.close()


async def test_without_an_object_store_direct_uploads_are_a_501_that_says_what_to_do(
    file_store_client: httpx2.AsyncClient,
) -> None:
    data = make_bundle(summary())
    refused = assert_error(
        await file_store_client.post("/v1/uploads", json={"sha256": sha(data), "size": len(data)}),
        501,
        "not_implemented",
    )
    assert "POST /v1/traces/ingest" in refused["message"]
    assert_error(await ingest_by_sha(file_store_client, sha(data)), 501, "not_implemented")
