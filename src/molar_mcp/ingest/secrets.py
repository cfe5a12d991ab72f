"""Secrets masked at ingest, before anything is stored (docs/playwright.md, "Secrets").

Masked: values typed into password inputs (`fill`/`type`/`press_sequentially` on an `input[type=password]`
or a password-named locator), the `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie`
headers, any header or query parameter whose name looks like a key, token, secret, password or session,
and HAR cookies. Every value masked once is masked everywhere else it appears (call logs, messages,
bodies, and the stored copy of the original trace.zip). `keep_secrets=True` (the `keep_secrets` form field,
`molar-mcp ingest --keep-secrets`) stores them as they came, for self-hosted stores that want them.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "[masked]"
_ALWAYS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}
_SECRET_NAME = re.compile(
    r"(api[-_]?key|apikey|token|secret|passw(or)?d|pwd|session|signature|credential|private[-_]?key|auth)",
    re.IGNORECASE,
)
_SECRET_PARAM = re.compile(
    r"^(key|sig|code|.*(api[-_]?key|apikey|token|secret|passw(or)?d|pwd|session|signature|credential|auth).*)$",
    re.IGNORECASE,
)
_PASSWORD_TARGET = re.compile(r"(type=[\"']?password|passw(or)?d|pwd|secret|\bpin\b|otp)", re.IGNORECASE)
_TYPING = {"fill", "type", "pressSequentially", "press_sequentially", "setInputValue"}
# Values shorter than this are masked where they stand but not searched for elsewhere (too common).
_MIN_SCRUB = 4


class Secrets:
    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.values: set[str] = set()

    def _found(self, value: str) -> str:
        if len(value) >= _MIN_SCRUB:
            self.values.add(value)
        return MASK

    def header(self, name: str, value: Any) -> Any:
        if self.keep or not isinstance(value, str) or not value:
            return value
        low = name.lower()
        if low in _ALWAYS or _SECRET_NAME.search(low):
            if low in ("cookie", "set-cookie"):
                for part in re.split(r";\s*|,\s*(?=[^;=\s]+=)", value):
                    if "=" in part:
                        self._found(part.split("=", 1)[1])
            else:
                self._found(value)
                if " " in value:  # "Bearer abc…": the token alone appears elsewhere too
                    self._found(value.split(" ", 1)[1])
            return MASK
        return value

    def headers(self, headers: Any) -> Any:
        if self.keep or not isinstance(headers, list):
            return headers
        out = []
        for h in headers:
            if isinstance(h, dict) and "name" in h:
                h = {**h, "value": self.header(str(h["name"]), h.get("value"))}
            out.append(h)
        return out

    def cookies(self, cookies: Any) -> Any:
        if self.keep or not isinstance(cookies, list):
            return cookies
        out = []
        for c in cookies:
            if isinstance(c, dict) and c.get("value"):
                self._found(str(c["value"]))
                c = {**c, "value": MASK}
            out.append(c)
        return out

    def url(self, url: str) -> str:
        if self.keep or "?" not in url:
            return url
        try:
            parts = urlsplit(url)
            pairs = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError:
            return url
        changed = False
        masked = []
        for k, v in pairs:
            if v and _SECRET_PARAM.match(k):
                self._found(v)
                masked.append((k, MASK))
                changed = True
            else:
                masked.append((k, v))
        if not changed:
            return url
        return urlunsplit(parts._replace(query=urlencode(masked, safe="[]")))

    def typed(self, method: str, params: dict[str, Any], log: list[str]) -> dict[str, Any]:
        """Mask the value of a typing call aimed at a password field."""
        if self.keep or method not in _TYPING:
            return params
        value = params.get("value", params.get("text"))
        if not isinstance(value, str) or not value:
            return params
        target = " ".join(str(params.get(k, "")) for k in ("selector", "locator", "runner_locator"))
        resolved = " ".join(line for line in log if "resolved to" in line)
        if _PASSWORD_TARGET.search(target) or 'type="password"' in resolved:
            self._found(value)
            return {k: (MASK if k in ("value", "text") else v) for k, v in params.items()}
        return params

    def scrub(self, text: str) -> str:
        if self.keep or not self.values or not text:
            return text
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def scrub_any(self, value: Any) -> Any:
        if self.keep or not self.values:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.scrub_any(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_any(v) for v in value]
        return value

    def scrub_bytes(self, data: bytes) -> bytes:
        """Mask the known values in raw archive text (also in their JSON-escaped form)."""
        if self.keep or not self.values:
            return data
        for value in self.values:
            for form in {value, json.dumps(value)[1:-1]}:
                raw = form.encode()
                if raw in data:
                    data = data.replace(raw, MASK.encode())
        return data
