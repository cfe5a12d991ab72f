"""Artifacts can never run as a page of the server's origin (it is the authorization server's too):
uploaded HTML or SVG is a download of opaque bytes, every signed response is `nosniff` and CSP-sandboxed,
the login cookie is never sent to the blob URLs, a signed URL tampered with or expired is refused, and
a revoked share stops the artifacts its page linked at once."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from molar_mcp.store.signing import UrlSigner
from tests.auth.conftest import hidden_fields
from tests.bundles import artifact_for, make_bundle, summary
from tests.security.conftest import Secured

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

HTML = b"<html><body><script>fetch('/api/oauth/authorize').then(r=>r.text()).then(alert)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
TEXT = b"plain log line\n<script>alert(1)</script>\n"
JSON = b'{"a": 1}'

CASES: dict[str, tuple[bytes, str, str, str]] = {
    # name: (bytes, declared content_type, served content type, disposition)
    "page.html": (HTML, "text/html", "application/octet-stream", "attachment"),
    "drawing.svg": (SVG, "image/svg+xml", "application/octet-stream", "attachment"),
    "page.xhtml": (HTML, "application/xhtml+xml", "application/octet-stream", "attachment"),
    "unknown.bin": (HTML, "application/x-unknown", "application/octet-stream", "attachment"),
    "page.txt.html": (HTML, "text/html; charset=utf-8", "application/octet-stream", "attachment"),
    "shot.png": (PNG, "image/png", "image/png", "inline"),
    "log.txt": (TEXT, "text/plain", "text/plain; charset=utf-8", "inline"),
    "data.json": (JSON, "application/json", "application/json; charset=utf-8", "inline"),
}


async def _ingest(http: httpx2.AsyncClient, blobs: dict[str, bytes], artifacts: list[dict[str, Any]]) -> str:
    bundle = make_bundle(summary(artifacts=artifacts), blobs=blobs)
    files = {"bundle": ("b.tar.gz", bundle, "application/gzip")}
    response = await http.post("/v1/traces/ingest", files=files, data={"scenario_slug": "artifact-xss"})
    assert response.status_code == 201, response.text
    trace_id: str = response.json()["trace_id"]
    return trace_id


async def test_uploaded_html_and_svg_are_served_as_downloads_in_a_csp_sandbox(secured: Secured) -> None:
    async with secured.http(secured.key_all) as http:
        for name, (data, declared, served, disposition) in CASES.items():
            art = artifact_for(data, kind="attachment", name=name) | ({"content_type": declared} if declared else {})
            trace_id = await _ingest(http, {name: data}, [art])
            redirect = await http.get(f"/v1/traces/{trace_id}/blob/{art['sha256']}")
            assert redirect.status_code == 302
            location = urlsplit(redirect.headers["location"])
            async with httpx2.AsyncClient(base_url=secured.base) as anonymous:  # signed URLs need no credential
                blob = await anonymous.get(f"{location.path}?{location.query}")
            assert blob.status_code == 200, name
            assert blob.content == data
            assert blob.headers["content-type"] == served, name
            assert blob.headers["content-disposition"].startswith(disposition), name
            assert blob.headers["x-content-type-options"] == "nosniff"
            assert blob.headers["content-security-policy"].startswith("sandbox"), name


async def test_signed_exports_are_sandboxed_too(secured: Secured) -> None:
    async with secured.http(secured.key_all) as http:
        listed = (await http.get("/v1/traces", params={"limit": 1})).json()["items"][0]
        urls = (await http.get(f"/v1/traces/{listed['id']}")).json()["signed_urls"]
        for kind in ("ndjson", "summary", "report"):
            parts = urlsplit(urls[kind])
            response = await http.get(f"{parts.path}?{parts.query}")
            assert response.status_code == 200
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-security-policy"].startswith("sandbox")


async def test_the_login_cookie_is_not_sent_to_blob_or_api_urls(secured: Secured) -> None:
    async with httpx2.AsyncClient(base_url=secured.base, follow_redirects=False) as browser:
        page = await browser.get("/api/oauth/authorize", params={"client_id": "nobody", "response_type": "code"})
        assert page.status_code in (200, 400)
        # A login page hands out the session cookie; the browser's jar decides where it goes.
        login = await browser.get(
            "/api/oauth/authorize",
            params={
                "client_id": (await _register(browser))["client_id"],
                "response_type": "code",
                "redirect_uri": "http://127.0.0.1:7777/callback",
                "code_challenge": "x" * 43,
                "code_challenge_method": "S256",
            },
        )
        assert "csrf_token" in hidden_fields(login.text)
        paths = sorted(cookie.path for cookie in browser.cookies.jar)
    assert paths == ["/api/oauth", "/r"]


async def _register(http: httpx2.AsyncClient) -> dict[str, Any]:
    response = await http.post(
        "/api/oauth/register",
        json={"client_name": "probe", "redirect_uris": ["http://127.0.0.1:7777/callback"]},
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_revoked_share_link_answers_410_until_the_trace_is_shared_again(secured: Secured) -> None:
    async with secured.http(secured.key_all) as http:
        art = artifact_for(PNG, kind="screenshot", name="shot.png") | {"content_type": "image/png"}
        trace = await _ingest(http, {"shot.png": PNG}, [art])
        shared = await http.post(f"/v1/traces/{trace}/share", json={"visibility": "public-read", "expires_days": 1})
        link = urlsplit(shared.json()["url"]).path
        async with secured.http() as anyone:
            before = await anyone.get(link)
            artifact = re.findall(r'<img src="(/r/[^"]+)"', before.text)[0]
            artifact_before = await anyone.get(artifact)
            async with secured.http(secured.key_other) as intruder:
                foreign = await intruder.delete(f"/v1/traces/{trace}/share")
            async with secured.http(secured.key_read) as reader:
                read_only = await reader.delete(f"/v1/traces/{trace}/share")
            revoked = await http.delete(f"/v1/traces/{trace}/share")
            again = await http.delete(f"/v1/traces/{trace}/share")
            after = await anyone.get(link)
            artifact_after = await anyone.get(artifact)
            reshared = await http.post(f"/v1/traces/{trace}/share", json={"visibility": "public-read"})
            back = await anyone.get(link)
    assert before.status_code == 200
    assert (artifact_before.status_code, artifact_before.content) == (200, PNG)
    assert foreign.status_code == 404  # another org's trace does not exist for it
    assert read_only.status_code == 403
    assert (revoked.status_code, revoked.json()) == (200, {"revoked": True})
    assert again.json() == {"revoked": False}
    assert after.status_code == 410
    assert "revoked" in after.text
    short = link.rsplit("/", 1)[1]
    assert short not in after.text.replace(link, "")  # nothing of the trace is shown
    # The artifacts the page linked stop with the share, not an hour later.
    assert artifact_after.status_code == 410
    assert PNG not in artifact_after.content
    assert reshared.status_code == 200
    assert back.status_code == 200


async def _signed_video(secured: Secured, data: bytes = PNG) -> tuple[str, dict[str, str]]:
    async with secured.http(secured.key_all) as http:
        art = artifact_for(data, kind="video", name="run.webm") | {"content_type": "video/webm"}
        trace = await _ingest(http, {"run.webm": data}, [art])
        url = (await http.get(f"/v1/traces/{trace}")).json()["signed_urls"]["video"]
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


async def test_a_tampered_signed_url_is_refused_with_403(secured: Secured) -> None:
    """Signed-URL tampering: another org, a later expiry, another blob, another key id, no signature, a
    signature of another URL. The untouched URL works, with no credential at all."""
    path, query = await _signed_video(secured)
    other_path, other_query = await _signed_video(secured, PNG + b"other")
    tampered = {
        "org": (path, dict(query, org="org_other")),
        "later expiry": (path, dict(query, exp=str(int(query["exp"]) + 3600))),
        "another blob": (path.replace(path[-64:], "0" * 64), query),
        "another trace": (other_path.replace(other_path[-64:], path[-64:]), query),
        "unknown key id": (path, dict(query, kid="deadbeef")),
        "no signature": (path, {k: v for k, v in query.items() if k != "sig"}),
        "another URL's signature": (path, dict(query, sig=other_query["sig"])),
        "bad expiry": (path, dict(query, exp="soon")),
    }
    async with secured.http() as anyone:
        genuine = await anyone.get(f"{path}?{urlencode(query)}")
        answers = {name: await anyone.get(f"{p}?{urlencode(q)}") for name, (p, q) in tampered.items()}
    assert genuine.status_code == 200
    assert genuine.content == PNG
    for name, answer in answers.items():
        assert answer.status_code in (400, 403), name
        assert answer.json()["error"] in ("forbidden", "bad_request"), name
        assert PNG not in answer.content, name
    assert {name for name, a in answers.items() if a.status_code == 403} >= set(tampered) - {"no signature"}


async def test_an_expired_signed_url_is_refused_and_says_so(secured: Secured) -> None:
    """Signed with the server's own key (read from its data dir, as an insider with a leaked old URL
    would hold one), but expired: 403 naming the expiry."""
    path, _ = await _signed_video(secured, PNG + b"stale")
    org = "org_local"
    signer = UrlSigner(secured.served.data_dir / "signing-keys.json")
    stale = signer.sign(path, org, now=0)
    async with secured.http() as anyone:
        refused = await anyone.get(stale)
    assert refused.status_code == 403
    assert "expired" in refused.json()["message"]
