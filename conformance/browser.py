"""Stand-in for the person at the browser in `conformance authorization`.

The suite's authorization-code-grant scenario prints an authorization URL and waits for someone to
sign in and consent, then for the redirect to its callback server. This drives our own pages the way
a browser would: GET the URL (login page), POST the login form, follow the 303 back to the consent
page, POST "Allow", and follow the redirect to the callback. Standard library only, loopback only.

Usage: python3 conformance/browser.py AUTHORIZE_URL EMAIL PASSWORD
"""

from __future__ import annotations

import http.cookiejar
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

TIMEOUT = 15


class _Form(HTMLParser):
    """The first <form>'s action and hidden inputs, and the value of its approve button."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, str] = {}
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if self._done:
            return
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden" and "name" in a:
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("name"):
            self.buttons.setdefault(a["name"], a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.action is not None:
            self._done = True


def _loopback(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"browser.py: refusing a non-loopback URL: {url}")


class _LoopbackOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        _loopback(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _form(html: str, page: str) -> _Form:
    form = _Form()
    form.feed(html)
    if form.action is None or "csrf_token" not in form.fields:
        raise SystemExit(f"browser.py: no form on the {page} page:\n{html[:2000]}")
    return form


def main(url: str, email: str, password: str) -> int:
    _loopback(url)
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _LoopbackOnly()
    )

    def submit(base: str, form: _Form, extra: dict[str, str]) -> tuple[str, str]:
        target = urllib.parse.urljoin(base, form.action or "")
        _loopback(target)
        body = urllib.parse.urlencode({**form.fields, **extra}).encode()
        request = urllib.request.Request(target, data=body, method="POST")  # noqa: S310 (_loopback: http only)
        with opener.open(request, timeout=TIMEOUT) as resp:
            return resp.geturl(), resp.read().decode("utf-8", "replace")

    with opener.open(url, timeout=TIMEOUT) as resp:
        where, html = resp.geturl(), resp.read().decode("utf-8", "replace")
    login = _form(html, "login")
    if "password" not in html:
        raise SystemExit(f"browser.py: expected the login page, got:\n{html[:2000]}")
    where, html = submit(where, login, {"email": email, "password": password})
    consent = _form(html, "consent")
    if consent.buttons.get("decision") != "approve":
        raise SystemExit(f"browser.py: expected the consent page, got:\n{html[:2000]}")
    where, html = submit(where, consent, {"decision": "approve"})
    print(f"browser.py: consented; redirected to {urllib.parse.urlsplit(where)._replace(query='').geturl()}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    try:
        sys.exit(main(*sys.argv[1:]))
    except urllib.error.HTTPError as exc:  # e.g. 401 from a refused login, 4xx from an error page
        page = re.sub(r"<style.*?</style>", "", exc.read().decode("utf-8", "replace"), flags=re.DOTALL)
        text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
        raise SystemExit(f"browser.py: HTTP {exc.code} from {exc.url}: {text[:1000]}") from None
