"""The debugger chats' configuration: which model answers, where, with which key, at which price, and the
monthly budget per org. Read from the command line and the environment by the composition root:

| setting | flag / variable | default |
|---|---|---|
| model | `--model` / `MOLAR_MODEL` (`provider:model`: `openai:…`, `anthropic:…`) | none: findings only |
| endpoint | `MOLAR_MODEL_BASE_URL` (e.g. `http://localhost:11434/v1` for Ollama) | the provider's |
| key | `MOLAR_MODEL_API_KEY` | none |
| price | `MOLAR_MODEL_PRICE` (`IN,OUT` dollars per million tokens; `0,0` for a local model) | the price table |
| budget | `MOLAR_DEBUGGER_BUDGET_CENTS` (per org and month) | 500 |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httpx2

from molar_mcp.debugger.chat import ModelProvider
from molar_mcp.debugger.pricing import Price, parse_price
from molar_mcp.debugger.providers import provider_from_spec

DEFAULT_BUDGET_CENTS: Final = 500


@dataclass(frozen=True)
class DebuggerConfig:
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    price: Price | None = None
    budget_cents: int = DEFAULT_BUDGET_CENTS

    @classmethod
    def from_env(cls, env: Mapping[str, str], model: str | None = None) -> DebuggerConfig:
        """`model` (the `--model` flag) wins over `MOLAR_MODEL`. Raises ValueError, worded for the
        command line, on a malformed value (before anything starts)."""
        spec = (model or env.get("MOLAR_MODEL") or "").strip() or None
        raw_budget = env.get("MOLAR_DEBUGGER_BUDGET_CENTS", "").strip()
        budget = DEFAULT_BUDGET_CENTS
        if raw_budget:
            if not (raw_budget.isascii() and raw_budget.isdigit()):
                raise ValueError(f"MOLAR_DEBUGGER_BUDGET_CENTS must be a whole number of cents; got {raw_budget!r}")
            budget = int(raw_budget)
        raw_price = env.get("MOLAR_MODEL_PRICE", "").strip()
        config = cls(
            model=spec,
            base_url=env.get("MOLAR_MODEL_BASE_URL", "").strip() or None,
            api_key=env.get("MOLAR_MODEL_API_KEY", "").strip() or None,
            price=parse_price(raw_price) if raw_price else None,
            budget_cents=budget,
        )
        config.provider()  # a bad spec fails here, at start-up
        return config

    def provider(self, http: httpx2.AsyncClient | None = None) -> ModelProvider | None:
        if self.model is None:
            return None
        return provider_from_spec(self.model, base_url=self.base_url, api_key=self.api_key, http=http)
