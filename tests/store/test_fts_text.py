"""The indexed text of a trace gathered from a bundle's rows a chunk at a time (`FtsText.add_rows`, and
`add_flat` of the rows laid end to end: which rows
count and each message once found without a Python step per row) is the text that folding in each event's
`(kind, ok, message)` one by one gives (`FtsText.add`): the same messages in the same order, each once, the
same cut at the size cap."""

from __future__ import annotations

import random
from typing import Any

import pytest

from molar_mcp.store.db import FlatRows
from molar_mcp.store.sqlite import _FTS_MAX_CHARS, FtsText

KINDS = ["assertion", "error", "console", "step.start", "tool.result", "llm.response", "log", "action", "network"]


def _rows(count: int, seed: int, *, messages: int) -> list[tuple[Any, ...]]:
    """`events` rows as `event_rows` builds them with a pk: kinds counted and not, ok 1 / 0 / None, messages
    repeated, empty or missing."""
    rng = random.Random(seed)
    pool: list[str | None] = [None, "", *(f"message {n} " + "x" * rng.randint(0, 40) for n in range(messages))]
    return [
        (1, seq, seq, rng.choice(KINDS), "s", 1, rng.choice([1, 0, None]), rng.choice(pool), "{}")
        for seq in range(count)
    ]


def _both(rows: list[tuple[Any, ...]], chunk: int) -> tuple[FtsText, FtsText]:
    one, rowwise, flat = FtsText(["slug", "title"]), FtsText(["slug", "title"]), FtsText(["slug", "title"])
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        one.add((r[3], r[6], r[7]) for r in part)
        rowwise.add_rows(part)
        flat.add_flat(FlatRows(9, (value for row in part for value in row)))  # the rows laid end to end
    assert (flat.text(), flat.full, flat.size, flat.seen) == (rowwise.text(), rowwise.full, rowwise.size, rowwise.seen)
    return one, rowwise


@pytest.mark.parametrize(("messages", "chunk"), [(30, 100), (30, 7), (3_000, 500)])
def test_rows_folded_a_chunk_at_once_give_the_text_of_one_event_at_a_time(messages: int, chunk: int) -> None:
    for seed in range(5):
        one, rowwise = _both(_rows(2_000, seed, messages=messages), chunk)
        assert rowwise.text() == one.text()
        assert (rowwise.full, rowwise.size, rowwise.seen) == (one.full, one.size, one.seen)


def test_the_text_ends_at_the_first_new_message_past_the_cap_either_way() -> None:
    rows = _rows(6_000, 1, messages=5_000)
    one, rowwise = _both(rows, 256)
    assert one.full
    assert rowwise.full
    assert rowwise.text() == one.text()
    assert rowwise.size <= _FTS_MAX_CHARS < rowwise.size + 60  # (a next new message would not fit)
