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


def _check_depth(value: Any, max_depth: int) -> None:
    """`check_bounded`'s nesting half, level by level over containers only (scalars are not walked)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise JsonLimitError(f"the JSON nests deeper than {max_depth} levels")
        below: list[Any] = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, dict | list):
                    below.append(child)
        level = below


# Every byte a digit or not: an integer beyond 64 bits has at least 19 digits in a row in the text.
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_NINETEEN_DIGITS = b"0" * 19


def _may_hold_long_integer(raw: str | bytes | bytearray) -> bool:
    """False when no integer in the document can be beyond 64 bits: its UTF-8 text has no run of 19
    digits (a string may have one too: then the document is walked in full). Text in UTF-16/32 (NUL
    bytes) is always walked."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    return b"\x00" in data or _NINETEEN_DIGITS in data.translate(_DIGITS)


def loads_bounded(raw: str | bytes | bytearray, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, with nesting and integer bounds. Raises `ValueError` for anything a client sent wrong.
    A 1,000-event batch is checked in a fraction of a walk of every value: integers from the text when
    it holds no long digit run, nesting over the containers alone."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JsonLimitError(f"the JSON nests deeper than {max_depth} levels") from None
    if _may_hold_long_integer(raw):
        check_bounded(value, max_depth=max_depth)
    else:
        _check_depth(value, max_depth)
    return value


def parsed_within_bounds(raw: str | bytes | bytearray, value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value`, what another parser made of the document `raw` (or a part of it holding every
    container of it, nested as in `raw`), passes `loads_bounded`'s checks. False also when telling would
    take a walk of every value (a run of 19 digits in `raw`): the caller then parses `raw` with
    `loads_bounded`, which says what is wrong."""
    if _may_hold_long_integer(raw):
        return False
    try:
        _check_depth(value, max_depth)
    except JsonLimitError:
        return False
    return True
