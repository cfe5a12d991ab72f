"""A conservative token estimate for tool output (no tokenizer download needed at run time).

BPE tokenizers spend about one token per 4 letters of English, one per 2–3 digits, one per
punctuation mark in JSON, and many on hex ids. We count exactly those units, which lands at or
above what cl100k-style tokenizers report for our output, so "≤ budget" here means ≤ budget there.
"""

from __future__ import annotations

import re

_UNITS = re.compile(r"[A-Za-z]+|\d+|\n|[^\sA-Za-z\d]")

DEFAULT_TOKEN_BUDGET = 2000


def estimate_tokens(text: str) -> int:
    total = 0
    for match in _UNITS.finditer(text):
        unit = match.group()
        first = unit[0]
        if first.isalpha():
            total += (len(unit) + 3) // 4
        elif first.isdigit():
            total += (len(unit) + 2) // 3
        else:
            total += 1
    return total
