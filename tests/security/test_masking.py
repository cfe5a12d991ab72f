"""Masking finds every secret the patterns describe, also where a cheap test of the text skips the pattern
(`models/masking.py`: a text holding none of a secret's literal parts, an ASCII key holding none of the
secret words): the masked result equals the patterns' own on texts and keys made to hit and to miss them."""

from __future__ import annotations

import random
import re
from typing import Any

from molar_mcp.models.masking import _SECRET_KEYS, _SECRET_VALUES, MASK, mask, mask_text

SECRETS = [
    "Bearer abcDEF123._~+/=-x",
    "Basic dXNlcjpwYXNzd29yZA==",
    "sk_live_abcdefgh12",
    "pk_test_ABCDEFGH",
    "rk_live_0123456789",
    "molar_sk_abc-DEF_123",
    "ghp_" + "a" * 20,
    "gho_" + "B1" * 10,
    "xoxb-1234567890-abc",
    "AKIA" + "ABCDEFGHIJ012345",
    "eyJhbGciOiJI.eyJzdWIiOjEy.SflKxwRJSMeK",
]
NEAR = ["Bearer", "bearer abcdefgh123", "Basic x", "sk_live_", "xsk_live_abcdefgh", "gh_", "xox", "AKIA", "eyJ", "é"]
KEYS = [
    "Authorization",
    "x-API-Key",
    "apikey",
    "api_key",
    "privateKey",
    "Set-Cookie",
    "SESSION_ID",
    "passwd",
    "my_secret",
    "csrfToken",
    "url",
    "method",
    "body",
    "paſsword",  # a long s: the pattern's case-insensitive match takes it for an s
    "\u212aey",  # a Kelvin sign
    "api\u212aey",
    "ßecret",
    "ПАРОЛЬ",
    "",
]


def _reference_text(text: str) -> str:
    return _SECRET_VALUES.sub(MASK, text)


def _reference(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _SECRET_KEYS.search(k) and v not in (None, "") else _reference(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_reference(v) for v in value]
    if isinstance(value, str):
        return _reference_text(value)
    return value


def test_masking_equals_the_patterns_on_texts_and_keys_made_to_hit_and_miss_them() -> None:
    rng = random.Random(16)
    pieces = [*SECRETS, *NEAR, " ", "\n", "token=", "a", "Z9", "—", "_", "-", "."]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(3000)]
    texts += SECRETS + NEAR
    assert all(_reference_text(secret) == MASK for secret in SECRETS)  # each is a secret, whole
    for text in texts:
        assert mask_text(text) == _reference_text(text), repr(text)
    assert sum(MASK in mask_text(t) for t in texts) > 1000  # the corpus does hit
    for key in KEYS + [rng.choice(KEYS).upper() + rng.choice(["", "_x", "1"]) for _ in range(300)]:
        for value in ("v", "", None, rng.choice(texts)):
            payload = {key: value, "nested": [{key: value}, rng.choice(texts)]}
            assert mask(payload) == _reference(payload), repr(payload)
    assert mask({"paſsword": "x"}) == {"paſsword": MASK}
    assert re.search(MASK.replace("[", r"\["), str(mask({"\u212aey": "sk_live_abcdefgh12"})))
