"""The HTML pages of the authorization server: login, consent, and errors. Pure rendering.

Every value from a request or a client registration is HTML-escaped. Pages may not be framed
(clickjacking of the consent button) and are never cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Final
from urllib.parse import urlsplit

from starlette.responses import HTMLResponse

from molar_mcp.auth.clients import OAuthClient
from molar_mcp.auth.config import AUTHORIZE_PATH, LOGIN_PATH, SCOPE_DESCRIPTIONS

PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_STYLE: Final = """
body{font-family:system-ui,sans-serif;background:#f5f5f4;color:#1c1917;margin:0}
main{max-width:28rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.75rem;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.25rem;margin-top:0}label{display:block;margin:.75rem 0 .25rem}
input[type=email],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box}
button{padding:.55rem 1.1rem;margin:1rem .5rem 0 0;border-radius:.4rem;border:1px solid #a8a29e;
background:#fff;cursor:pointer}button.primary{background:#1c1917;color:#fff;border-color:#1c1917}
.error{color:#b91c1c}.muted{color:#57534e;font-size:.875rem}li{margin:.4rem 0}code{font-size:.8rem}
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} · Molar</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _hidden(name: str, value: str) -> str:
    return f'<input type=hidden name="{escape(name)}" value="{escape(value)}">'


def login_page(*, authorize_query: str, csrf: str, email: str = "", error: str | None = None) -> HTMLResponse:
    """The sign-in form. `authorize_query` is the pending authorization request, resumed after login."""
    problem = f"<p class=error role=alert>{escape(error)}</p>" if error else ""
    body = (
        "<h1>Sign in to Molar</h1>"
        "<p class=muted>An application asked to use your Molar account. Sign in to review its request.</p>"
        f"{problem}"
        f'<form method=post action="{LOGIN_PATH}">'
        f"{_hidden('csrf_token', csrf)}{_hidden('request', authorize_query)}"
        "<label for=email>Email</label>"
        f'<input id=email name=email type=email autocomplete=username required value="{escape(email)}">'
        "<label for=password>Password</label>"
        "<input id=password name=password type=password autocomplete=current-password required>"
        "<button class=primary type=submit>Sign in</button>"
        "</form>"
    )
    return _page("Sign in", body, status=401 if error else 200)


def consent_page(
    *,
    client: OAuthClient,
    user_email: str,
    scopes: Sequence[str],
    redirect_uri: str,
    authorize_query: str,
    csrf: str,
    ticket: str,
) -> HTMLResponse:
    """Ask the signed-in person to approve `client` for `scopes`, each named in plain words."""
    items = "".join(
        f"<li><strong>{escape(SCOPE_DESCRIPTIONS.get(scope, scope))}</strong>"
        f" <span class=muted>(<code>{escape(scope)}</code>)</span></li>"
        for scope in scopes
    )
    origin = urlsplit(redirect_uri)
    where = f"{origin.scheme}://{origin.netloc}" if origin.netloc else f"{origin.scheme}:"
    source = "described by its metadata document at" if client.source == "metadata_document" else "registered as"
    body = (
        f"<h1>Allow {escape(client.display_name)} to use your Molar account?</h1>"
        f"<p>Signed in as <strong>{escape(user_email)}</strong>.</p>"
        f"<p>{escape(client.display_name)} is asking to:</p><ul>{items}</ul>"
        f"<p class=muted>The application names itself; Molar has not verified it. It is {source}"
        f" <code>{escape(client.client_id)}</code>. If you approve, you will be sent back to"
        f" <code>{escape(where)}</code>.</p>"
        f'<form method=post action="{AUTHORIZE_PATH}">'
        f"{_hidden('csrf_token', csrf)}{_hidden('request', authorize_query)}{_hidden('consent_ticket', ticket)}"
        "<button class=primary type=submit name=decision value=approve>Allow</button>"
        "<button type=submit name=decision value=deny>Deny</button>"
        "</form>"
    )
    return _page("Allow access", body)


def signed_out_page() -> HTMLResponse:
    page = _page("Signed out", "<h1>Signed out</h1><p>You are signed out of Molar in this browser.</p>", status=200)
    page.headers["Cache-Control"] = "no-store"
    return page


def error_page(title: str, message: str, status: int = 400) -> HTMLResponse:
    """Shown instead of redirecting when the client or redirect URI cannot be trusted (RFC 6749 §4.1.2.1)."""
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(message)}</p>", status=status)
