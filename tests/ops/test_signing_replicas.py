"""Rotating the URL signing key reaches running replicas on one PostgreSQL database without a restart:
a URL signed with the new key is accepted at once by a replica that never saw it, every replica signs
with the new key and honours a revocation (`--keep 1`) within MOLAR_SECRETS_REFRESH_SECONDS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from molar_mcp.api.exports import export_path
from molar_mcp.compose import Embedded, open_embedded, rotate_url_signing_key
from molar_mcp.ingest import ingest_bundle
from molar_mcp.store import LOCAL_ORG_ID
from molar_mcp.store.signing import UrlSigner
from tests.bundles import make_bundle, summary
from tests.engines import PgCluster

pytestmark = pytest.mark.anyio

REFRESH_S = 2.0


@pytest.fixture
def two(
    tmp_path: Path, pg: PgCluster, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Embedded, Embedded, str]]:
    monkeypatch.setenv("MOLAR_SECRETS_REFRESH_SECONDS", str(REFRESH_S))
    url = pg.new_database("signing")
    with (
        open_embedded(tmp_path / "a", database_url=url, blob_url=s3_url) as a,
        open_embedded(tmp_path / "b", database_url=url, blob_url=s3_url) as b,
    ):
        yield a, b, url


def kid(url: str) -> str:
    return parse_qs(urlsplit(url).query)["kid"][0]


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def rotate(data_dir: Path, database_url: str, keep: int) -> None:
    """What `molar-mcp signing rotate --keep K --data-dir D --database-url U` does (tests/ops/test_signed_urls.py
    runs the command itself)."""
    rotate_url_signing_key(data_dir, keep=keep, database_url=database_url)


async def test_a_rotation_on_one_replica_reaches_the_other_without_a_restart(
    two: tuple[Embedded, Embedded, str],
) -> None:
    a, b, database_url = two
    trace_id, _ = ingest_bundle(a.store, LOCAL_ORG_ID, make_bundle(summary()))
    async with a.client_factory()() as ca, b.client_factory()() as cb:
        http_a, http_b = ca._http, cb._http
        old = (await http_a.get(f"/v1/traces/{trace_id}")).json()["signed_urls"]["summary"]
        assert (await http_b.get(local(old))).status_code == 200  # one ring: B checks what A signed

        rotate(a.store.data_dir, database_url, keep=2)  # `molar-mcp signing rotate` beside replica A (its data dir)
        # A URL signed with the new key (A's data dir holds the new ring) is good on B at once: B does not
        # know its key, reads the ring again from the database, and finds it.
        new_ring = UrlSigner(a.store.data_dir / "signing-keys.json")
        fresh = new_ring.sign(export_path(trace_id, "summary.json"), LOCAL_ORG_ID)
        assert kid(fresh) != kid(old)
        started = time.monotonic()
        answer = await http_b.get(fresh)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < REFRESH_S  # at once, not after the refresh period
        assert (await http_b.get(local(old))).status_code == 200  # kept: --keep 2
        forged = fresh.replace(f"kid={kid(fresh)}", "kid=deadbeef")
        assert (await http_b.get(forged)).status_code == 403  # a key no ring holds: refused after the read

        # Within the refresh period both replicas sign with the new key.
        await anyio.sleep(REFRESH_S + 0.2)
        for http in (http_a, http_b):
            signed = (await http.get(f"/v1/traces/{trace_id}")).json()["signed_urls"]["summary"]
            assert kid(signed) == kid(fresh)

        rotate(a.store.data_dir, database_url, keep=1)  # revoke every URL handed out before
        await anyio.sleep(REFRESH_S + 0.2)
        for http in (http_a, http_b):
            assert (await http.get(local(old))).status_code == 403
            assert (await http.get(fresh)).status_code == 403
