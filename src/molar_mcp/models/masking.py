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


def mask_text(text: str) -> str:
    return _SECRET_VALUES.sub(MASK, text)


def mask(value: Any) -> Any:
    """Return a copy of `value` with secret-looking keys' values and secret-looking strings masked."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _SECRET_KEYS.search(k) and v not in (None, "") else mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
