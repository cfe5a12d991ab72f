"""OpenAI-compatible Chat Completions (`POST {base}/chat/completions`): OpenAI itself, and the servers that
speak its wire format — Ollama (`http://localhost:11434/v1`), vLLM, llama.cpp's server, gateways.

Streams (`stream: true`, with `stream_options.include_usage` for the token counts) and assembles the
tool calls from their deltas. A server that ignores `stream` and answers one JSON body is read too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import httpx2

from molar_mcp.debugger.chat import MAX_OUTPUT_TOKENS, ModelError, TokenSink
from molar_mcp.debugger.providers._http import HttpProvider, estimate_usage, parse_arguments
from molar_mcp.models.chats import ModelTurn, ToolCallRequest, ToolDef, TurnMessage, Usage

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"


class OpenAIProvider(HttpProvider):
    family = "openai"
    label = "the OpenAI-compatible server"
    default_base_url = DEFAULT_BASE_URL

    async def complete(
        self,
        messages: Sequence[TurnMessage],
        tools: Sequence[ToolDef],
        *,
        system: str,
        max_tokens: int = MAX_OUTPUT_TOKENS,
        on_token: TokenSink | None = None,
    ) -> ModelTurn:
        url = f"{self.base_url}/chat/completions"
        body: dict[str, Any] = {
            "model": self.model,
            "messages": wire_messages(system, messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # OpenAI's own API wants max_completion_tokens (its reasoning models refuse max_tokens); the
        # compatible servers know max_tokens.
        body["max_completion_tokens" if "api.openai.com" in self.base_url else "max_tokens"] = max_tokens
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                }
                for t in tools
            ]
        headers = {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        turn = _Assembler()
        async with self.streamed_post(url, body, headers) as resp:
            if resp.headers.get("content-type", "").startswith("application/json"):
                await resp.aread()
                turn.whole(resp.json())
            else:
                async for sse in httpx2.EventSource(resp):
                    if sse.data.strip() == "[DONE]":
                        break
                    if sse.data:
                        delta = turn.chunk(json.loads(sse.data))
                        if delta and on_token is not None:
                            await on_token(delta)
        result = turn.result()
        if turn.usage is None:
            result.usage = estimate_usage(system, messages, tools, result.text)
        return result


def wire_messages(system: str, messages: Sequence[TurnMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class _Assembler:
    """Builds one `ModelTurn` from stream chunks (or a whole response)."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: Usage | None = None
        self.model: str | None = None

    def chunk(self, data: dict[str, Any]) -> str:
        if isinstance(data.get("error"), dict):
            raise ModelError(f"the OpenAI-compatible server failed mid-answer: {data['error'].get('message')}")
        self.model = data.get("model") or self.model
        self._usage(data.get("usage"))
        delta_text = ""
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                delta_text += delta["content"]
            for call in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(
                    int(call.get("index", len(self.calls))), {"id": "", "name": "", "args": ""}
                )
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["args"] += fn.get("arguments") or ""
        self.text.append(delta_text)
        return delta_text

    def whole(self, data: dict[str, Any]) -> None:
        self.model = data.get("model")
        self._usage(data.get("usage"))
        message = data["choices"][0]["message"]
        self.text.append(message.get("content") or "")
        for i, call in enumerate(message.get("tool_calls") or []):
            fn = call["function"]
            self.calls[i] = {"id": call.get("id", ""), "name": fn["name"], "args": fn.get("arguments") or ""}

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict) and "prompt_tokens" in usage:
            self.usage = Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            )

    def result(self) -> ModelTurn:
        calls = [
            ToolCallRequest(id=slot["id"] or f"call_{i}", name=slot["name"], arguments=parse_arguments(slot["args"]))
            for i, slot in sorted(self.calls.items())
        ]
        return ModelTurn(text="".join(self.text), tool_calls=calls, usage=self.usage or Usage(), model=self.model)
