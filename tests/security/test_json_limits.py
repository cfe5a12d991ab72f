"""`loads_bounded` checks nesting over the containers alone and integers from the text when it has no run
of 19 digits: its verdict is the full walk's (`check_bounded`) on every kind of document."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from molar_mcp.models.limits import MAX_INT64, MIN_INT64, JsonLimitError, check_bounded, loads_bounded


def _nested(depth: int, leaf: Any) -> Any:
    doc = leaf
    for level in range(depth):
        doc = [doc] if level % 2 else {"k": doc, "n": level}
    return doc


def _documents() -> list[Any]:
    rng = random.Random(16)
    docs: list[Any] = [
        _nested(63, 1),
        _nested(64, 1),
        _nested(65, 1),
        _nested(64, {}),
        _nested(64, []),
        {"events": [{"seq": i, "payload": {"a": [i, {"b": None}]}} for i in range(50)]},
        {"big": MAX_INT64, "small": MIN_INT64},
        {"big": MAX_INT64 + 1},
        {"deep": [{"n": MIN_INT64 - 1}]},
        {"text": "9" * 40, "n": 5},  # a long digit run in a string only: the full walk, same verdict
        {"f": 1e300, "g": 12345678901234567890.5},
        "just a string",
        12,
        [],
    ]
    for _ in range(60):
        depth = rng.randint(1, 70)
        leaf = rng.choice([0, 10**18, 10**19, -(10**19), "x" * 25, 3.5, None, True])
        docs.append(_nested(depth, leaf))
    return docs


def _verdict(check: Any) -> str:
    try:
        check()
    except JsonLimitError as exc:
        return str(exc)
    return "ok"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_the_fast_checks_give_the_full_walks_verdict_on_every_document(encoding: str) -> None:
    for doc in _documents():
        text = json.dumps(doc)
        expected = _verdict(lambda d=doc: check_bounded(d))
        assert _verdict(lambda t=text: loads_bounded(t.encode(encoding))) == expected, text[:120]
        assert _verdict(lambda t=text: loads_bounded(t)) == expected, text[:120]


def test_an_integer_beyond_64_bits_is_refused_wherever_it_sits() -> None:
    for doc in ({"a": [1, 2, {"b": 2**63}]}, [[[-(2**63) - 1]]], {"events": [{"seq": 1}] * 900 + [{"seq": 2**70}]}):
        with pytest.raises(JsonLimitError, match="64 bits"):
            loads_bounded(json.dumps(doc).encode())
