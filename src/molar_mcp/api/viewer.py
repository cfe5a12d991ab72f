"""The shared-trace viewer: `GET /r/{short_id}` and `GET /r/{short_id}/embed`.

Read-only HTML, outside `/v1`. A trace is shown only when it was shared (`POST /v1/traces/{id}/share`)
and the share has not expired; an org-only share also needs a session of the trace's org.

Answers, in the order they are checked (each an HTML page):
- 404: no trace has this short id, or it was never shared (the two look the same from outside);
- 401: an org-only share and no session; 403: a session of another org;
- 410: the share expired; 409: the trace's events are archived (cold tier) until it is restored;
- 200: the viewer.

The page's artifacts are fetched from `GET /r/{short_id}/artifacts/{sha256}`, which checks the share the
same way on every request: revoking or narrowing a share stops its artifacts at once (no signed URL
handed out by the page outlives it).

Every page is self-contained (no script, inline CSS) and sent with a CSP of `default-src 'none'`.
`/r/{id}` may not be framed (`X-Frame-Options: DENY`, `frame-ancestors 'none'`); `/embed` exists to be
framed (`frame-ancestors *`). `Referrer-Policy: no-referrer` keeps the short id, which is the capability,
out of the Referer of links followed from the page.
"""

from __future__ import annotations

import re

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from molar_mcp.api.auth import SESSION_ORG_STATE_KEY
from molar_mcp.api.blobs import artifact_response, artifact_sha
from molar_mcp.api.context import api_context
from molar_mcp.api.openapi import documented
from molar_mcp.api.report import load_facts
from molar_mcp.reports import ShareInfo, TraceFacts, render_embed, render_message, render_viewer
from molar_mcp.store import TraceNotFound
from molar_mcp.store.sharing import SharedTrace
from molar_mcp.store.tiers import TraceIsCold

_SHORT_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_ORG_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'"


def session_org(request: Request) -> str | None:
    """The org of the signed-in user making this request, or `None`: the authorization server's login
    session cookie, looked up by `ServeAuth.session_org` (api/auth.py hands it over)."""
    lookup = request.scope.get("state", {}).get(SESSION_ORG_STATE_KEY)
    if callable(lookup):
        org: str | None = lookup(request)
        return org
    # No authentication (a loopback `serve --no-auth`): x-molar-org stands for the session.
    raw = request.headers.get("x-molar-org")
    if raw and _ORG_ID.match(raw):
        return raw
    return None


def _headers(*, embed: bool) -> dict[str, str]:
    headers = {
        "content-security-policy": _CSP + ("; frame-ancestors *" if embed else "; frame-ancestors 'none'"),
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "x-robots-tag": "noindex, nofollow",
        # A share can expire or turn org-only at any moment: no copy may outlive that.
        "cache-control": "private, no-store",
    }
    if not embed:
        headers["x-frame-options"] = "DENY"
    return headers


def _message(status: int, title: str, message: str, *, embed: bool) -> HTMLResponse:
    return HTMLResponse(render_message(status, title, message), status_code=status, headers=_headers(embed=embed))


_NOT_FOUND = ("Trace not found", "No shared trace has this link. It may be mistyped, or the trace was never shared.")


async def _open_share(request: Request, *, embed: bool) -> SharedTrace | HTMLResponse:
    """The share named by the path, or the page that says why it cannot be seen."""
    ctx = api_context(request)
    short_id: str = request.path_params["short_id"]
    if not _SHORT_ID.match(short_id):
        return _message(404, *_NOT_FOUND, embed=embed)
    shared = await anyio.to_thread.run_sync(ctx.sharing.get_share_by_short_id, short_id)
    if shared is None:
        return _message(404, *_NOT_FOUND, embed=embed)
    if shared.visibility == "org-only":
        org = session_org(request)
        if org is None:
            return _message(
                401,
                "Sign in to see this trace",
                "This trace is shared with the members of its organisation only. Sign in, then open the link again.",
                embed=embed,
            )
        if org != shared.org_id:
            return _message(
                403,
                "Not shared with your organisation",
                "This trace is shared with the members of another organisation only.",
                embed=embed,
            )
    if shared.revoked_at is not None:
        return _message(
            410,
            "This link was revoked",
            "Whoever shared this trace revoked the link. Ask them to share the trace again.",
            embed=embed,
        )
    if shared.expires_at <= ctx.sharing.now():
        return _message(
            410,
            "This link has expired",
            "The share of this trace has expired. Ask whoever sent it to share the trace again.",
            embed=embed,
        )
    return shared


async def _view(request: Request, *, embed: bool) -> HTMLResponse:
    ctx = api_context(request)
    shared = await _open_share(request, embed=embed)
    if isinstance(shared, HTMLResponse):
        return shared
    try:
        facts = await anyio.to_thread.run_sync(load_facts, ctx, shared.org_id, shared.trace_id)
    except TraceNotFound:
        return _message(404, *_NOT_FOUND, embed=embed)
    except TraceIsCold:
        return _message(
            409,
            "This trace is archived",
            "The events of this trace are in cold storage. Someone in its organisation can restore it.",
            embed=embed,
        )
    info = ShareInfo(
        visibility=shared.visibility,
        expires_at=shared.expires_at,
        full_url=f"{str(request.base_url).rstrip('/')}/r/{facts.short_id}",
    )
    if embed:
        page = render_embed(facts, info)
    else:
        page = render_viewer(facts, info, _artifact_urls(request.path_params["short_id"], facts))
    return HTMLResponse(page, headers=_headers(embed=embed))


def _artifact_urls(short_id: str, facts: TraceFacts) -> dict[str, str]:
    """Same-origin URLs under the share (relative, so they work behind any proxy; `img-src 'self'`
    allows them), each checked against the share when fetched."""
    return {a.sha256: f"/r/{short_id}/artifacts/{a.sha256}" for a in facts.artifacts}


_HTML_PAGES = {
    str(code): {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
    for code, text in (
        (200, "The viewer page"),
        (401, "An org-only share, and no session"),
        (403, "An org-only share, and a session of another org"),
        (404, "No shared trace has this short id"),
        (409, "The trace's events are archived (cold)"),
        (410, "The share expired"),
    )
}


@documented(
    summary="Read-only HTML viewer of a shared trace (no /v1 prefix; checks visibility and expiry)",
    media_type="text/html",
    errors=(),
    tags=("viewer",),
    extra={"responses": _HTML_PAGES},
)
async def viewer(request: Request) -> HTMLResponse:
    return await _view(request, embed=False)


@documented(
    summary="Compact HTML viewer of a shared trace, for an iframe (checks visibility and expiry)",
    media_type="text/html",
    errors=(),
    tags=("viewer",),
    extra={"responses": _HTML_PAGES},
)
async def embed(request: Request) -> HTMLResponse:
    return await _view(request, embed=True)


@documented(
    summary="An artifact of a shared trace, checked against the share on every request (Range supported)",
    media_type="application/octet-stream",
    errors=(400, 404),
    tags=("viewer",),
    extra={"responses": {k: v for k, v in _HTML_PAGES.items() if k in ("401", "403", "409", "410")}},
)
async def shared_artifact(request: Request) -> Response:
    sha = artifact_sha(request)
    shared = await _open_share(request, embed=True)
    if isinstance(shared, HTMLResponse):
        return shared
    try:
        return await artifact_response(api_context(request), shared.org_id, shared.trace_id, sha, cache="no-store")
    except TraceNotFound:
        return _message(404, *_NOT_FOUND, embed=True)


def routes() -> list[Route]:
    return [
        Route("/r/{short_id}", viewer, methods=["GET"]),
        Route("/r/{short_id}/artifacts/{sha256}", shared_artifact, methods=["GET"]),
        Route("/r/{short_id}/embed", embed, methods=["GET"]),
    ]
