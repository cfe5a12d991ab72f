"""Mask secrets in trace payloads before they reach a model (PRODUCT.md requirement 8).

Shared by every layer that hands trace text to a model: the MCP renderers and the debugger chat.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[masked]"
_SECRET_KEYS = re.compile(
    r"(authorization|cookie|set-cookie|password|passwd|secret|token|api[-_]?key|x-api-key|session|private[-_]?key)",
    re.IGNORECASE,
)
_SECRET_VALUES = re.compile(
    r"(Bearer\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|Basic\s+[A-Za-z0-9+/=]{8,}"
    r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}"
    r"|\bmolar_sk_[A-Za-z0-9_-]{8,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)


# What each secret above must contain, literally (`(?:sk|pk|rk)_(?:live|test)_`: `_live_` or `_test_`;
# `gh[pousr]_`: `gh`): a text holding none of them holds no secret, found without running the pattern.
# Likewise the secret keys' words, lowercased (`api[-_]?key`: `api`; `private[-_]?key`: `private`); a key
# beyond ASCII is tested by the pattern itself (its case-insensitive matching knows more than `lower`).
# (tests/security/test_masking.py checks both against the patterns alone.)


def mask_text(text: str) -> str:
    if (
        "Bearer" in text
        or "Basic" in text
        or "_live_" in text
        or "_test_" in text
        or "molar_sk_" in text
        or "gh" in text
        or "xox" in text
        or "AKIA" in text
        or "eyJ" in text
    ):
        return _SECRET_VALUES.sub(MASK, text)
    return text


def _secret_key(key: str) -> bool:
    if key.isascii():
        k = key.lower()
        if not (
            "authorization" in k
            or "cookie" in k
            or "password" in k
            or "passwd" in k
            or "secret" in k
            or "token" in k
            or "api" in k
            or "session" in k
            or "private" in k
        ):
            return False
    return _SECRET_KEYS.search(key) is not None


def mask(value: Any) -> Any:
    """Return a copy of `value` with secret-looking keys' values and secret-looking strings masked."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _secret_key(k) and v not in (None, "") else mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
