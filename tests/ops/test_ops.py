"""Operations endpoints and per-org rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from starlette.applications import Starlette

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.api.telemetry import RateLimiter, RateLimits, limit_class
from molar_mcp.store import SqliteTraceStore
from tests.bundles import make_bundle, summary

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def http(tmp_path: Path, clock: Clock) -> AsyncIterator[httpx2.AsyncClient]:
    store = SqliteTraceStore(tmp_path / "data")
    ctx = ApiContext.embedded(store, rate_limits=RateLimits(read=5, write=3, ingest=2))
    ctx.rate_limiter.clock = clock
    app: Starlette = create_api_app(ctx)
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client
    store.close()


async def test_reads_past_the_per_minute_limit_get_429_with_retry_after_until_the_bucket_refills(
    http: httpx2.AsyncClient, clock: Clock
) -> None:
    statuses = [(await http.get("/v1/traces")).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    refused = await http.get("/v1/traces")
    assert refused.json()["error"] == "rate_limited"
    assert refused.json()["request_id"] == refused.headers["x-request-id"]
    assert int(refused.headers["retry-after"]) == 12  # one read every 60/5 seconds
    clock.now += 12
    assert (await http.get("/v1/traces")).status_code == 200


async def test_limits_are_per_org_and_per_class(http: httpx2.AsyncClient) -> None:
    for _ in range(5):
        await http.get("/v1/traces")
    assert (await http.get("/v1/traces")).status_code == 429
    assert (await http.get("/v1/traces", headers={"x-molar-org": "org_b"})).status_code == 200
    # Three different runs (the same bundle sent again would be the first upload's answer, not a new one).
    bundles = [make_bundle(summary(code_sha=f"c0de{n}")) for n in range(3)]
    ingests = [
        (
            await http.post(
                "/v1/traces/ingest", data={"scenario_slug": "s"}, files={"bundle": ("b.tar.gz", b, "application/gzip")}
            )
        ).status_code
        for b in bundles
    ]
    assert ingests == [201, 201, 429]
    assert (await http.get("/healthz")).status_code == 200  # health is never limited


async def test_metrics_count_requests_by_route_template_and_ingested_events(http: httpx2.AsyncClient) -> None:
    files = {"bundle": ("b.tar.gz", make_bundle(), "application/gzip")}
    created = (await http.post("/v1/traces/ingest", data={"scenario_slug": "s"}, files=files)).json()
    await http.get(f"/v1/traces/{created['trace_id']}")
    text = (await http.get("/metrics")).text
    assert 'molar_http_requests_total{method="GET",route="/v1/traces/{trace_id}",status="200"} 1.0' in text
    assert 'molar_ingested_events_total{mode="bundle"} 30.0' in text
    assert "molar_http_request_duration_seconds_bucket" in text


async def test_metrics_name_the_first_route_that_matches_in_full(http: httpx2.AsyncClient) -> None:
    """The route the router picked names the series when it is the app's first full match (`/v1/traces/diff`
    is listed before `/v1/traces/{trace_id}`); a path no route takes, or a method its route does not take,
    counts as unmatched."""
    created = (await http.post("/v1/traces", json={"scenario_slug": "s"})).json()
    await http.post(f"/v1/traces/{created['id']}/events", json={"seq": 0, "ts": 1, "kind": "log"})
    await http.get("/v1/traces/diff", params={"a": "x", "b": "y"})
    await http.get("/v1/no-such-thing")
    await http.put(f"/v1/traces/{created['id']}/events", json={})
    text = (await http.get("/metrics")).text
    assert 'molar_http_requests_total{method="POST",route="/v1/traces/{trace_id}/events",status="200"} 1.0' in text
    assert 'molar_http_requests_total{method="GET",route="/v1/traces/diff",' in text
    assert 'route="/v1/traces/{trace_id}",status="404"' not in text
    assert 'molar_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'molar_http_requests_total{method="PUT",route="unmatched",status="405"} 1.0' in text


async def test_readyz_reports_ready_when_the_store_answers(http: httpx2.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_readyz_is_503_and_names_the_problem_when_the_store_is_gone(tmp_path: Path) -> None:
    store = SqliteTraceStore(tmp_path / "data")
    app = create_api_app(ApiContext.embedded(store))
    store.close()
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert "store" in response.json()["problems"]


def test_rate_limit_specs_parse_and_reject_nonsense() -> None:
    from molar_mcp.cli import parse_rate_limits

    assert parse_rate_limits("read=10,ingest=2") == RateLimits(read=10, write=120, ingest=2)
    for bad in ("read=0", "reads=5", "read", "read=x"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate_limits(bad)
    assert isinstance(RateLimiter().limits, RateLimits)


def test_the_default_ingest_limit_lets_a_test_runs_uploads_through_at_once() -> None:
    """The reporter uploads each test attempt as it finishes: a 500-test run's uploads are not held back
    (30 a minute kept them queued for 17 minutes), and the bucket still ends."""
    clock = [0.0]
    limiter = RateLimiter(clock=lambda: clock[0])
    assert all(limiter.take("org_ci", "ingest") == 0 for _ in range(500))
    assert RateLimits().ingest == 1200
    assert [limiter.take("org_ci", "ingest") == 0 for _ in range(701)].count(False) == 1


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/traces/ingest", "ingest"),
        ("POST", "/v1/traces", "ingest"),
        ("POST", "/v1/traces/abc123/events", "ingest"),
        ("POST", "/v1/traces/abc123/finish", "ingest"),
        ("POST", "/v1/traces/abc123/share", "write"),
        ("DELETE", "/v1/traces/abc123/share", "write"),
        ("POST", "/v1/traces/abc123/replay", "write"),
        ("POST", "/v1/traces/abc123/events/extra", "write"),
        ("GET", "/v1/traces/abc123/events", "read"),
        ("POST", "/otlp/v1/traces", "otlp"),
        ("GET", "/v1/signed/blobs/a/b", None),
    ],
)
def test_a_runs_reporting_counts_as_ingest_and_edits_as_write(method: str, path: str, expected: str | None) -> None:
    assert limit_class(method, path) == expected


async def test_a_live_reporter_does_not_spend_the_write_budget(http: httpx2.AsyncClient) -> None:
    created = await http.post("/v1/traces", json={"scenario_slug": "live-limits"})
    assert created.status_code == 201, created.text
    trace = created.json()["short_id"]
    event = {"seq": 0, "ts": 1_763_629_200_000, "kind": "log", "message": "x"}
    appended = await http.post(f"/v1/traces/{trace}/events", json={"events": [event]})
    refused = await http.post(f"/v1/traces/{trace}/finish", json={"status": "passed"})
    shares = [
        (await http.post(f"/v1/traces/{trace}/share", json={"visibility": "org-only"})).status_code for _ in range(4)
    ]
    assert appended.status_code in (200, 202)
    assert refused.status_code == 429  # the third reporting request of a budget of two
    assert shares == [200, 200, 200, 429]  # the write budget (three) was untouched by the reporting
