"""A user's search text as a PostgreSQL `tsquery`, split into words exactly as stored text is
(`molar_fts_text` in migrations.py): lower case, no diacritics, every run of characters that are not
letters or digits a separator. As with FTS5: every word must match, a word that punctuation splits
(`webhook-404`) is a phrase, and the last word matches as a prefix."""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\W_]+")


def tokens(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return [t for t in _SEPARATORS.split(plain) if t]


def ts_query(q: str) -> str:
    """The `to_tsquery('simple', …)` text of `q`, or "" when `q` has no word to look for."""
    phrases = [tokens(word) for word in q.split()]
    phrases = [p for p in phrases if p]
    if not phrases:
        return ""
    parts = []
    for i, phrase in enumerate(phrases):
        lexemes = [f"'{t}'" for t in phrase]
        if i == len(phrases) - 1:
            lexemes[-1] += ":*"
        parts.append(lexemes[0] if len(lexemes) == 1 else "(" + " <-> ".join(lexemes) + ")")
    return " & ".join(parts)
