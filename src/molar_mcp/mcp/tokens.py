"""A conservative token estimate for tool output (no tokenizer download needed at run time).

BPE tokenizers spend about one token per 4 letters of English, one per 2–3 digits, one per
punctuation mark in JSON, and many on hex ids. We count exactly those units, which lands at or
above what cl100k-style tokenizers report for our output, so "≤ budget" here means ≤ budget there.
"""

from __future__ import annotations

import re

# One match per token: a run of letters is one token per 4 letters (so at most 4 letters a match), a run of
# digits one per 3, a newline one, any other non-space character one. Counting matches in C is many times
# faster than walking the units in Python, which matters: every answer is estimated part by part.
_TOKENS = re.compile(r"[A-Za-z]{1,4}|\d{1,3}|\n|[^\sA-Za-z\d]")

DEFAULT_TOKEN_BUDGET = 2000


def estimate_tokens(text: str) -> int:
    return len(_TOKENS.findall(text))
