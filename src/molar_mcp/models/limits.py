"""Limits every JSON document from a client must fit: bounded nesting and 64-bit integers.

Python's parser gives up on deep nesting with a `RecursionError` (not a `ValueError`), and SQLite
stores integers in 64 bits, so an unchecked body can reach the logs as a 500. `loads_bounded` turns
both into a `JsonLimitError` (a `ValueError`) whose message a client can act on.
"""

from __future__ import annotations

import json
from typing import Any, Final

MAX_INT64: Final = 2**63 - 1
MIN_INT64: Final = -(2**63)
MAX_JSON_DEPTH: Final = 64


class JsonLimitError(ValueError):
    """The document is JSON, but nested too deeply or holding an integer beyond 64 bits."""


def check_bounded(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise `JsonLimitError` if `value` nests deeper than `max_depth` or holds an integer beyond int64."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise JsonLimitError(f"the JSON nests deeper than {max_depth} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, int) and not isinstance(item, bool) and not MIN_INT64 <= item <= MAX_INT64:
            raise JsonLimitError(f"integers must fit in 64 bits (at most {MAX_INT64}); got {item}")


def loads_bounded(raw: str | bytes | bytearray, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, with nesting and integer bounds. Raises `ValueError` for anything a client sent wrong."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JsonLimitError(f"the JSON nests deeper than {max_depth} levels") from None
    check_bounded(value, max_depth=max_depth)
    return value
