"""A conservative token estimate for tool output (no tokenizer download needed at run time).

BPE tokenizers spend about one token per 4 letters of English, one per 2–3 digits, one per
punctuation mark in JSON, and many on hex ids. We count exactly those units, which lands at or
above what cl100k-style tokenizers report for our output, so "≤ budget" here means ≤ budget there.
"""

from __future__ import annotations

import json
import re

from pydantic import BaseModel

# The rule, one match per token: a run of letters is one token per 4 letters (so at most 4 letters a match), a
# run of digits one per 3, a newline one, any other non-space character one.
_TOKENS = re.compile(r"[A-Za-z]{1,4}|\d{1,3}|\n|[^\sA-Za-z\d]")

# The same count without a match object per token (every answer is estimated part by part, so this is hot):
# the text's UTF-8 bytes are mapped to one class letter each — ASCII letter `a`, ASCII digit `d`, newline `n`,
# other whitespace a space, anything else `x` (a character beyond ASCII counts once: its lead byte becomes
# `x`, its continuation bytes are dropped). Runs are then counted in C: `aaaa` → `A` cuts a letter run into
# the 4-letter tokens the pattern matches from its start, and what is left of a run (1–3 letters, ended by
# anything else) is one more: of such runs, `a` counts each letter, `aa` and `aaa` (counted without
# overlap) what is beyond its first; digits likewise by 3. Beyond ASCII, whitespace and decimal digits
# (which `\s` and `\d` match) are rare; a text holding one is counted by the pattern itself (the characters
# beyond ASCII are found by deleting the ASCII bytes, in C). Both ways agree exactly
# (tests/mcp/test_summary_fit.py).
_CLASSES = bytes(
    (
        ord("a")
        if chr(i).isalpha()
        else ord("d")
        if chr(i).isdigit()
        else ord("n")
        if i == 10
        else ord(" ")
        if chr(i).isspace()
        else ord("x")
    )
    if i < 128
    else ord("x")
    for i in range(256)
)
_CONTINUATION = bytes(range(0x80, 0xC0))
_ASCII = bytes(range(0x80))
_SPACE_OR_DIGIT_BEYOND_ASCII = re.compile(r"[^\S\x00-\x7f]|[^\D\x00-\x7f]")

DEFAULT_TOKEN_BUDGET = 2000


def estimate_tokens(text: str) -> int:
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) != len(text):  # beyond ASCII
        beyond = raw.translate(None, _ASCII).decode("utf-8", "surrogatepass")
        if _SPACE_OR_DIGIT_BEYOND_ASCII.search(beyond):
            return len(_TOKENS.findall(text))
    classes = raw.translate(_CLASSES, _CONTINUATION)
    letters = classes.replace(b"aaaa", b"A")
    digits = classes.replace(b"ddd", b"D")
    return (
        classes.count(b"x")
        + classes.count(b"n")
        + letters.count(b"A")
        + letters.count(b"a")
        - letters.count(b"aa")
        - letters.count(b"aaa")
        + digits.count(b"D")
        + digits.count(b"d")
        - digits.count(b"dd")
    )


def shown(text_tokens: int, data_tokens: int) -> int:
    """What an answer costs a model: the larger of its text and its structured content. The protocol has a
    tool that returns structured content also return it as text for clients that do not read structured
    content, so a client shows a model one of the two, never both (docs/architecture.md, "Token budget")."""
    return max(text_tokens, data_tokens)


# ---- costs of parts, for fitting an answer by arithmetic ----------------------------------------------

json_text = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(value, ensure_ascii=False), made once

Cost = tuple[int, int, int]  # tokens as text, as structured content, as resource-link blocks
NOTHING: Cost = (0, 0, 0)


def json_tokens(value: object) -> int:
    """Tokens of a value as JSON (UTF-8, not escaped: as structured content is sent)."""
    return estimate_tokens(json_text(value))


def model_tokens(model: BaseModel) -> int:
    """A part's JSON as structured content sends it (nulls left out), serialised in one call: the estimate
    counts no whitespace, so pydantic's compact JSON and `json.dumps` of the same data count the same."""
    return estimate_tokens(model.model_dump_json(exclude_none=True))


def add_costs(a: Cost, b: Cost) -> Cost:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def prefix_costs(costs: list[Cost]) -> list[Cost]:
    """Running sums: element i is the cost of the first i parts."""
    out = [NOTHING]
    for c in costs:
        out.append(add_costs(out[-1], c))
    return out
