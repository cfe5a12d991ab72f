"""Text rules the detectors share: what an error message says, and stable names for URLs.

Patterns follow what Playwright, Chromium (`net::ERR_*`), Node (`ECONNREFUSED`, …) and agent
frameworks actually print. Classification is by priority: the first rule that matches wins.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

_I = re.IGNORECASE

# net::ERR_ABORTED is a cancelled navigation, not a dead network: it belongs to navigation.
NETWORK_RE: Final = re.compile(
    r"net::ERR_(?!ABORTED\b)[A-Z_]+"
    r"|\bE(?:CONNREFUSED|CONNRESET|NOTFOUND|AI_AGAIN|TIMEDOUT|HOSTUNREACH|NETUNREACH|PIPE)\b"
    r"|socket hang up|\bfailed to fetch\b|NetworkError when attempting|\bconnection (?:refused|reset)\b"
    r"|getaddrinfo",
    _I,
)
MAX_STEPS_RE: Final = re.compile(
    r"\bmax(?:imum)?[ _-]?(?:number of )?(?:steps|iterations|turns)\b"
    r"|\b(?:step|iteration|turn|recursion) limit\b",
    _I,
)
# A max-steps phrase alone may be configuration ("max_steps=30"); the limit must have been hit.
MAX_STEPS_HIT_RE: Final = re.compile(r"\breach|\bexceed|\bhit\b|\bexhaust|\bstopp|\bran out\b|without (?:a )?final", _I)
ASSERTION_RE: Final = re.compile(r"\bexpect\(|\bAssertionError\b|\bassertion failed\b", _I)
SELECTOR_RE: Final = re.compile(
    r"waiting for (?:selector|locator|getBy\w*)"
    r"|\bno (?:node|element)s? found\b|\belements? not found\b|element\(s\) not found"
    r"|unable to (?:find|locate) element|resolved to 0 elements|NoSuchElement",
    _I,
)
TIMEOUT_RE: Final = re.compile(r"\btimed out\b|\btimeout\b|TimeoutError|deadline exceeded", _I)
NAVIGATION_RE: Final = re.compile(
    r"net::ERR_ABORTED|\bnavigation (?:failed|interrupted)|interrupted by another navigation"
    r"|frame was detached|ERR_TOO_MANY_REDIRECTS|too many redirects|page crashed",
    _I,
)
# The browser's echo of an HTTP status: the response itself is the evidence, not this line.
HTTP_ECHO_RE: Final = re.compile(r"failed to load resource: the server responded with a status", _I)

# Error names that only a page's JavaScript throws (a runner's TimeoutError is not one of them).
JS_ERROR_NAMES: Final = frozenset(
    {
        "TypeError",
        "ReferenceError",
        "SyntaxError",
        "RangeError",
        "URIError",
        "EvalError",
        "AggregateError",
        "ChunkLoadError",
        "InternalError",
    }
)

# Requests that rarely decide a test: static assets and telemetry.
_STATIC_RE: Final = re.compile(r"favicon|\.(?:ico|png|jpe?g|gif|svg|webp|avif|css|js|mjs|map|woff2?|ttf|otf|eot)$", _I)
_TELEMETRY_RE: Final = re.compile(
    r"analytics|telemetry|beacon|sentry|segment\.io|googletagmanager|doubleclick|hotjar|/collect\b", _I
)
_UUID_RE: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", _I)
_WORD_DIGIT_RE: Final = re.compile(r"[A-Za-z]+\d")  # v1, oauth2, s3: names, not ids


def classify_text(text: str) -> str | None:
    """The failure label a message points at, or None.

    Priority: network_failure > max_steps > assertion_failed > selector_not_found > timeout >
    navigation_error. Selector beats timeout because Playwright reports a missing element as
    `Timeout 30000ms exceeded … waiting for locator(...)`; the element is the story.
    """
    if NETWORK_RE.search(text):
        return "network_failure"
    if says_max_steps(text):
        return "max_steps"
    if ASSERTION_RE.search(text):
        return "assertion_failed"
    if SELECTOR_RE.search(text):
        return "selector_not_found"
    if TIMEOUT_RE.search(text):
        return "timeout"
    if NAVIGATION_RE.search(text):
        return "navigation_error"
    return None


def says_max_steps(text: str) -> bool:
    """The text reports that an agent hit its step / iteration / turn limit."""
    return bool(MAX_STEPS_RE.search(text) and MAX_STEPS_HIT_RE.search(text))


def sentence(text: str) -> str:
    """One line, first letter capitalised, ending with a full stop."""
    line = " ".join(text.split())
    if not line:
        return line
    line = line[0].upper() + line[1:]
    return line if line.endswith((".", "!", "?")) else line + "."


def url_path(url: str) -> str:
    """The path of a URL (or of a bare path), without query or fragment; "/" when empty."""
    return urlsplit(url).path or "/"


def path_and_query(url: str) -> str:
    """A URL without scheme and host: its path, plus `?query` when there is one."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def endpoint(url: str) -> str:
    """A stable name for a URL: its path with id-like segments replaced by ':id'.

    A segment is id-like when it holds a digit (`42`, `sku-42`, a UUID, `cs_test_a1B2…`),
    unless it is a word ending in one digit (`v1`, `oauth2`).
    """
    parts = []
    for segment in url_path(url).split("/"):
        is_id = _UUID_RE.match(segment) or (any(c.isdigit() for c in segment) and not _WORD_DIGIT_RE.fullmatch(segment))
        parts.append(":id" if is_id else segment)
    return "/".join(parts) or "/"


def is_incidental(url: str) -> bool:
    """Static assets and telemetry: their failures rarely decide a test."""
    return bool(_STATIC_RE.search(url_path(url)) or _TELEMETRY_RE.search(url))


def shorten(text: str, limit: int = 80) -> str:
    """The first line of `text`, whitespace collapsed, capped at `limit` characters."""
    lines = text.strip().splitlines()
    line = " ".join(lines[0].split()) if lines else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def quoted(value: object, limit: int = 40) -> str:
    """A value for a sentence: strings in double quotes, others as they print; capped."""
    text = f'"{shorten(value, limit)}"' if isinstance(value, str) else shorten(repr(value), limit)
    return text
