"""Model providers behind the `ModelProvider` port: OpenAI-compatible Chat Completions (OpenAI, Ollama,
vLLM, llama.cpp), the Anthropic Messages API, and a scripted fake. `provider_from_spec` builds one from
the configuration (`--model` / `MOLAR_MODEL` as `provider:model`)."""

from __future__ import annotations

from typing import Final

import httpx2

from molar_mcp.debugger.chat import ModelProvider
from molar_mcp.debugger.providers.anthropic import AnthropicProvider
from molar_mcp.debugger.providers.openai import OpenAIProvider
from molar_mcp.debugger.providers.scripted import ScriptedProvider

PROVIDERS: Final = ("openai", "anthropic")

__all__ = ["PROVIDERS", "AnthropicProvider", "OpenAIProvider", "ScriptedProvider", "provider_from_spec"]


def provider_from_spec(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    http: httpx2.AsyncClient | None = None,
) -> ModelProvider:
    """`openai:gpt-4o-mini`, `openai:llama3.1` (with an Ollama base URL), `anthropic:claude-sonnet-4-5`…

    Raises ValueError, worded for the command line, when the spec names no known provider or no model.
    """
    provider, sep, model = spec.partition(":")
    provider = provider.strip().lower()
    model = model.strip()
    if not sep or not model:
        raise ValueError(
            f"a model is 'provider:model', e.g. openai:gpt-4o-mini or anthropic:claude-sonnet-4-5; got {spec!r}"
        )
    if provider == "openai":
        return OpenAIProvider(model, base_url=base_url, api_key=api_key, http=http)
    if provider == "anthropic":
        return AnthropicProvider(model, base_url=base_url, api_key=api_key, http=http)
    raise ValueError(f"unknown model provider {provider!r} in {spec!r}; use one of {', '.join(PROVIDERS)}")
