"""`GET /r/{short_id}` and `/embed`: the read-only viewer of a shared trace, as HTTP (see
`test_browser.py` for the page rendered in Chromium)."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import re
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.store import LOCAL_ORG_ID
from molar_mcp.store.sharing import SqliteSharingStore
from tests.conftest import fetch
from tests.sharing.conftest import PNG, SECRET, XSS, Traces

pytestmark = pytest.mark.anyio

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"


async def share(client: httpx2.AsyncClient, ref: str, visibility: str, days: int = 7) -> str:
    resp = await client.post(f"/v1/traces/{ref}/share", json={"visibility": visibility, "expires_days": days})
    assert resp.status_code == 200, resp.text
    short_id: str = resp.json()["short_id"]
    return short_id


def text_of(page: str) -> str:
    """The visible text of a page, roughly: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


async def test_a_public_share_shows_steps_failure_network_console_and_artifacts(
    client: httpx2.AsyncClient, traces: Traces
) -> None:
    short = await share(client, traces.failed_id, "public-read")
    resp = await client.get(f"/r/{short}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    page = resp.text
    text = text_of(page)
    assert "Failing step 7: Verify" in text
    assert "expected /billing?upgraded=true" in text
    assert "actual /billing?upgraded=false" in text
    assert re.search(r'<li class="failed" data-step="7">', page)
    # The webhook's 404 at step 5 let its step pass, and it is the cause: marked as such, not green.
    assert re.search(r'<li class="causal" data-step="5">', page)
    assert len(re.findall(r'<li class="ok" data-step="\d+">', page)) == 5
    assert re.search(r'<li class="ok" data-step="5">', page) is None
    # The detectors' findings, best first: the 404 is the top one.
    findings = re.search(r'<section id="findings">(.*?)</section>', page, re.S)
    assert findings is not None
    assert re.search(r'<li class="top" data-label="http_error">', findings.group(1))
    assert "answered 404 at step 5" in text_of(findings.group(1))
    # The request that caused it, with its step and status.
    causal = re.search(r'<section class="causal-request" id="causal-request">(.*?)</section>', page, re.S)
    assert causal is not None
    assert "step 5" in causal.group(1)
    assert "/api/webhooks/stripe" in causal.group(1)
    assert "<strong>404</strong>" in causal.group(1)
    # The webhook's 404 is a highlighted row of the network table.
    network = re.search(r'<section id="network">(.*?)</section>', page, re.S)
    assert network is not None
    row = re.search(r'<tr class="failed">((?:(?!</tr>).)*?/api/webhooks/stripe.*?)</tr>', network.group(1))
    assert row is not None
    assert '<td class="status">404</td>' in row.group(1)
    assert "Failed to load resource: 404" in text
    assert "<script" not in page  # no script of ours, and the payload's is escaped


async def test_artifacts_link_to_urls_under_the_share_that_serve_the_blob(
    client: httpx2.AsyncClient, traces: Traces
) -> None:
    short = await share(client, traces.failed_short, "public-read")
    page = (await client.get(f"/r/{short}")).text
    hrefs = re.findall(r'<a href="(/r/[^"]+)"', page)
    assert hrefs == [f"/r/{short}/artifacts/{hashlib.sha256(PNG).hexdigest()}"]
    assert f'<img src="{hrefs[0]}"' in page  # an image artifact is previewed
    blob = await fetch(client, html.unescape(hrefs[0]))
    assert blob.status_code == 200
    assert blob.content == PNG
    served = await client.get(hrefs[0], headers={"range": "bytes=0-7"})
    if served.status_code == 302:  # an object store serves the bytes through its own short-lived URL
        assert "X-Amz-Expires=" in served.headers["location"]
    else:
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["content-security-policy"].startswith("sandbox")
        assert served.headers["cache-control"] == "no-store"  # no copy outlives a revocation
        assert (served.status_code, served.content) == (206, PNG[:8])


async def test_revoking_or_narrowing_a_share_stops_its_artifacts_at_once(
    client: httpx2.AsyncClient, traces: Traces
) -> None:
    short = await share(client, traces.failed_short, "public-read")
    url = re.findall(r'<a href="(/r/[^"]+)"', (await client.get(f"/r/{short}")).text)[0]
    assert (await fetch(client, url)).status_code == 200
    await share(client, traces.failed_short, "org-only")
    assert (await client.get(url)).status_code == 401  # narrowed: an anonymous fetch is refused
    assert (await client.get(url, headers={"x-molar-org": "org_acme"})).status_code == 403
    assert (await client.get(url, headers={"x-molar-org": LOCAL_ORG_ID})).status_code in (200, 302)
    assert (await client.delete(f"/v1/traces/{traces.failed_short}/share")).status_code in (200, 204)
    revoked = await client.get(url, headers={"x-molar-org": LOCAL_ORG_ID})
    assert revoked.status_code == 410
    assert PNG not in revoked.content
    unknown = await client.get(f"/r/{short}/artifacts/{'0' * 64}", headers={"x-molar-org": LOCAL_ORG_ID})
    malformed = await client.get(f"/r/{short}/artifacts/not-a-sha")
    assert (unknown.status_code, malformed.status_code) == (410, 400)


async def test_text_from_the_trace_is_escaped_and_secrets_are_masked(
    client: httpx2.AsyncClient, traces: Traces
) -> None:
    short = await share(client, traces.failed_short, "public-read")
    for path in (f"/r/{short}", f"/r/{short}/embed"):
        page = (await client.get(path)).text
        assert SECRET not in page
        assert "<script>" not in page
    page = (await client.get(f"/r/{short}")).text
    assert html.escape(XSS, quote=True) in page
    assert "invalid key [masked]" in text_of(page)


async def test_the_viewer_sends_a_strict_csp_and_may_not_be_framed(client: httpx2.AsyncClient, traces: Traces) -> None:
    short = await share(client, traces.failed_short, "public-read")
    resp = await client.get(f"/r/{short}")
    assert resp.headers["content-security-policy"].startswith(CSP)
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["cache-control"] == "private, no-store"
    assert resp.headers["x-content-type-options"] == "nosniff"


async def test_the_embed_is_compact_and_may_be_framed(client: httpx2.AsyncClient, traces: Traces) -> None:
    short = await share(client, traces.failed_short, "public-read")
    resp = await client.get(f"/r/{short}/embed")
    assert resp.status_code == 200
    assert resp.headers["content-security-policy"].startswith(CSP)
    assert "frame-ancestors *" in resp.headers["content-security-policy"]
    assert "x-frame-options" not in resp.headers
    page = resp.text
    text = text_of(page)
    assert "Failing step 7: Verify" in text
    assert "1 failed requests · 2 console errors" in text
    assert f'href="http://molar.test/r/{short}"' in page
    assert 'id="network"' not in page  # the full page has the tables; the embed only counts
    assert 'id="failing-step-events"' not in page


async def test_an_org_only_share_needs_a_session_of_the_traces_org(client: httpx2.AsyncClient, traces: Traces) -> None:
    short = await share(client, traces.failed_short, "org-only")
    for path in (f"/r/{short}", f"/r/{short}/embed"):
        anonymous = await client.get(path)
        other = await client.get(path, headers={"x-molar-org": "org_acme"})
        member = await client.get(path, headers={"x-molar-org": LOCAL_ORG_ID})
        assert anonymous.status_code == 401
        assert "Sign in to see this trace" in anonymous.text
        assert "Verify" not in anonymous.text
        assert anonymous.headers["content-security-policy"].startswith(CSP)
        assert other.status_code == 403
        assert "Verify" not in other.text
        assert member.status_code == 200
        assert "Failing step 7: Verify" in text_of(member.text)


async def test_an_expired_share_is_gone(client: httpx2.AsyncClient, ctx: ApiContext, traces: Traces) -> None:
    past = datetime.now(UTC) - timedelta(days=8)
    ctx.sharing.share(LOCAL_ORG_ID, traces.failed_short, "public-read", 7, now=past)
    for path in (f"/r/{traces.failed_short}", f"/r/{traces.failed_short}/embed"):
        resp = await client.get(path)
        assert resp.status_code == 410
        assert "This link has expired" in resp.text
        assert "Verify" not in resp.text


async def test_a_share_expires_by_the_injected_clock(ctx: ApiContext, traces: Traces) -> None:
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    sharing = SqliteSharingStore(ctx.sharing.db, clock=lambda: now[0])
    app = create_api_app(dataclasses.replace(ctx, sharing=sharing))
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://molar.test") as client:
        made = await client.post(f"/v1/traces/{traces.failed_short}/share", json={"visibility": "public-read"})
        assert made.json()["expires_at"] == "2026-03-08T00:00:00Z"
        now[0] = datetime(2026, 3, 7, 23, 59, 59, tzinfo=UTC)
        assert (await client.get(f"/r/{traces.failed_short}")).status_code == 200
        now[0] = datetime(2026, 3, 8, tzinfo=UTC)
        assert (await client.get(f"/r/{traces.failed_short}")).status_code == 410


@pytest.mark.parametrize("short_id", ["nope12345", "a" * 40, "bad%20id", "has-dash_"])
async def test_an_unknown_short_id_is_a_404_page(client: httpx2.AsyncClient, traces: Traces, short_id: str) -> None:
    resp = await client.get(f"/r/{short_id}")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert "Trace not found" in resp.text


async def test_a_trace_that_was_never_shared_is_a_404_page(client: httpx2.AsyncClient, traces: Traces) -> None:
    for path in (f"/r/{traces.failed_short}", f"/r/{traces.failed_short}/embed", f"/r/{traces.failed_id}"):
        resp = await client.get(path, headers={"x-molar-org": LOCAL_ORG_ID})
        assert resp.status_code == 404
        assert "Trace not found" in resp.text


async def test_a_passed_trace_shows_every_step_ok(client: httpx2.AsyncClient, traces: Traces) -> None:
    short = await share(client, traces.passed_short, "public-read")
    page = (await client.get(f"/r/{short}")).text
    assert 'class="badge passed"' in page
    assert 'id="failure"' not in page
    assert len(re.findall(r'<li class="ok" data-step="\d+">', page)) == 7
    assert "No console errors or warnings." in page


async def test_the_view_json_carries_the_findings_and_the_causal_request_and_writes_nothing(
    client: httpx2.AsyncClient, traces: Traces
) -> None:
    """`GET /v1/traces/{id}/view`: what the share page and the MCP App viewer show, as JSON."""
    resp = await client.get(f"/v1/traces/{traces.failed_short}/view")
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert view["short_id"] == traces.failed_short
    assert view["failing_step"]["step"] == 7
    assert view["failed_assertion"]["expected"] == "/billing?upgraded=true"
    assert view["findings"][0]["label"] == "http_error"
    assert view["causal_step"] == 5
    assert view["causal_request"]["status"] == 404
    assert view["causal_request"]["url"] == "/api/webhooks/stripe"
    assert [e["seq"] for e in view["causal_step_events"]] == [
        e["seq"] for e in view["causal_step_events"] if e["step"] == 5
    ]
    assert view["causal_step_events"], "the causal step's events come with it"
    assert SECRET not in resp.text
    # Viewing runs the detectors but stores nothing: no analysis was saved.
    assert (await client.get(f"/v1/traces/{traces.failed_short}/analysis")).status_code == 404
    missing = await client.get("/v1/traces/nope/view")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
