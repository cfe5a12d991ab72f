"""Signed artifact URLs: the 302, Range, exports, and key rotation (tampering and expiry: tests/security)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from molar_mcp.compose import Embedded
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID
from tests.bundles import artifact_for, make_bundle, summary

pytestmark = pytest.mark.anyio

VIDEO = bytes(range(256)) * 40


@pytest.fixture
async def http(embedded: Embedded) -> AsyncIterator[httpx2.AsyncClient]:
    async with embedded.client_factory()() as client:
        yield client._http


@pytest.fixture
def trace(embedded: Embedded) -> str:
    art = artifact_for(VIDEO, kind="video", name="run.webm") | {"content_type": "video/webm"}
    trace_id, _ = ingest_bundle(embedded.store, LOCAL_ORG_ID, make_bundle(summary(artifacts=[art]), blobs={"v": VIDEO}))
    return trace_id


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_the_blob_endpoint_redirects_to_a_signed_url_that_serves_the_bytes(
    http: httpx2.AsyncClient, trace: str
) -> None:
    sha = hashlib.sha256(VIDEO).hexdigest()
    redirect = await http.get(f"/v1/traces/{trace}/blob/{sha}")
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert set(parse_qs(urlsplit(location).query)) == {"org", "exp", "kid", "sig"}
    blob = await http.get(path_of(location))
    assert blob.status_code == 200
    assert blob.content == VIDEO
    assert blob.headers["content-type"] == "video/webm"


async def test_trace_detail_lists_signed_urls_for_its_artifacts_and_exports(
    http: httpx2.AsyncClient, trace: str
) -> None:
    urls = (await http.get(f"/v1/traces/{trace}")).json()["signed_urls"]
    assert set(urls) == {"video", "ndjson", "summary", "report"}
    ndjson = await http.get(path_of(urls["ndjson"]))
    assert ndjson.headers["content-type"].startswith("application/x-ndjson")
    assert len(ndjson.text.strip().splitlines()) == 30
    assert (await http.get(path_of(urls["summary"]))).json()["id"] == trace
    assert "webhook" in (await http.get(path_of(urls["report"]))).text


async def test_range_requests_return_the_asked_bytes(http: httpx2.AsyncClient, trace: str) -> None:
    url = (await http.get(f"/v1/traces/{trace}")).json()["signed_urls"]["video"]
    part = await http.get(path_of(url), headers={"range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == VIDEO[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(VIDEO)}"


async def test_rotating_the_key_keeps_recent_urls_and_keep_one_revokes_them(
    embedded: Embedded, http: httpx2.AsyncClient, trace: str
) -> None:
    old = path_of((await http.get(f"/v1/traces/{trace}")).json()["signed_urls"]["video"])
    embedded.context.signer.rotate(keep=2)
    assert (await http.get(old)).status_code == 200
    fresh = path_of((await http.get(f"/v1/traces/{trace}")).json()["signed_urls"]["video"])
    assert parse_qs(urlsplit(fresh).query)["kid"] != parse_qs(urlsplit(old).query)["kid"]
    embedded.context.signer.rotate(keep=1)
    assert (await http.get(old)).status_code == 403
    assert (await http.get(fresh)).status_code == 403


def test_the_rotate_command_writes_a_new_key_to_the_data_dir(embedded: Embedded) -> None:
    before = (embedded.store.data_dir / "signing-keys.json").read_text()
    done = subprocess.run(
        [sys.executable, "-m", "molar_mcp", "signing", "rotate", "--data-dir", str(embedded.store.data_dir)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert b"is now used" in done.stderr
    assert (embedded.store.data_dir / "signing-keys.json").read_text() != before
    assert oct((embedded.store.data_dir / "signing-keys.json").stat().st_mode & 0o777) == "0o600"
