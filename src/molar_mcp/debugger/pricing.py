"""What a model call costs against an org's debugger budget: token usage × a price table.

Prices are US dollars per million tokens (input, output), list prices of the providers (checked
2025-11). Model ids carry dates and variants ("claude-sonnet-4-5-20250929", "gpt-4o-mini-2024-07-18"),
so a model is priced by the longest table entry its name starts with. A model the table does not know
is priced at `DEFAULT_PRICE`, on the expensive side on purpose: a budget must not be outrun because a
model was missing here. Local models (Ollama, vLLM, llama.cpp) cost nothing: say so with
`MOLAR_MODEL_PRICE=0,0` (read by the composition root, passed in as `override`).

Costs are counted in millicents (1/1000 of a cent) and rounded up, so no call is ever free by rounding.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

from molar_mcp.models.chats import Usage


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


PRICES: Final[dict[str, Price]] = {
    # OpenAI
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5": Price(1.25, 10.00),
    "o4-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    # Anthropic
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
}
DEFAULT_PRICE: Final = Price(3.00, 15.00)
FREE: Final = Price(0.0, 0.0)


def price_of(model: str, override: Price | None = None) -> Price:
    """The price of `model` ("provider:model" or a bare model id)."""
    if override is not None:
        return override
    known = known_price(model)  # "openai/gpt-4o" as some gateways name it is gpt-4o
    return known if known is not None else DEFAULT_PRICE


@functools.lru_cache(maxsize=1024)  # the table is fixed; agent runs name a few models many times
def known_price(model: str) -> Price | None:
    """The table's price of `model`, or None when the table does not know it (no guessing)."""
    name = model.split(":", 1)[1] if ":" in model else model
    name = name.rsplit("/", 1)[-1].lower()
    best = max((key for key in PRICES if name.startswith(key)), key=len, default=None)
    return PRICES[best] if best is not None else None


def cost_millicents(usage: Usage, price: Price) -> int:
    """Dollars per million tokens → millicents: $1 / 1M tokens = 0.1 millicent per token."""
    raw = (usage.input_tokens * price.input_per_mtok + usage.output_tokens * price.output_per_mtok) / 10
    return math.ceil(raw - 1e-9) if raw > 0 else 0


def parse_price(text: str) -> Price:
    """`"IN,OUT"` in dollars per million tokens, e.g. `"0,0"` for a local model or `"0.15,0.60"`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ValueError(f"a price is 'INPUT,OUTPUT' dollars per million tokens, e.g. '0.15,0.60'; got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"a price is two numbers, e.g. '0.15,0.60'; got {text!r}") from None
    if any(v < 0 or math.isnan(v) or math.isinf(v) for v in values):
        raise ValueError(f"prices cannot be negative; got {text!r}")
    return Price(values[0], values[1])
