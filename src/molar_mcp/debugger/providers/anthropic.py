"""The Anthropic Messages API (`POST {base}/v1/messages`, `anthropic-version: 2023-06-01`), streamed.

Tool calls are `tool_use` content blocks whose input arrives as `input_json_delta` pieces; tool results go
back as `tool_result` blocks in the next user message (consecutive results share one message, as the
API requires alternating roles). Usage: `message_start` carries the input tokens, `message_delta` the
output tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import httpx2

from molar_mcp.debugger.chat import MAX_OUTPUT_TOKENS, ModelError, TokenSink
from molar_mcp.debugger.providers._http import HttpProvider, estimate_usage, parse_arguments
from molar_mcp.models.chats import ModelTurn, ToolCallRequest, ToolDef, TurnMessage, Usage

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
API_VERSION: Final = "2023-06-01"


class AnthropicProvider(HttpProvider):
    family = "anthropic"
    label = "the Anthropic API"
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
        # A base URL given as ".../v1" (as for OpenAI-style servers) still reaches /v1/messages.
        url = self.base_url + ("/messages" if self.base_url.endswith("/v1") else "/v1/messages")
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "system": system,
            "messages": wire_messages(messages),
            "stream": True,
        }
        if tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in tools
            ]
        headers = {"anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        turn = _Assembler()
        async with self.streamed_post(url, body, headers) as resp:
            async for sse in httpx2.EventSource(resp):
                if sse.data:
                    delta = turn.event(json.loads(sse.data))
                    if delta and on_token is not None:
                        await on_token(delta)
        result = turn.result()
        if not turn.saw_usage:
            result.usage = estimate_usage(system, messages, tools, result.text)
        return result


def wire_messages(messages: Sequence[TurnMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content, "is_error": m.is_error}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks or [{"type": "text", "text": "(no text)"}]})
        else:
            out.append({"role": "user", "content": m.content})
    return out


class _Assembler:
    """Builds one `ModelTurn` from the stream's events."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.blocks: dict[int, dict[str, str]] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.saw_usage = False
        self.model: str | None = None

    def event(self, data: dict[str, Any]) -> str:
        kind = data.get("type")
        if kind == "error":
            err = data.get("error") or {}
            raise ModelError(f"the Anthropic API failed mid-answer: {err.get('type')}: {err.get('message')}")
        if kind == "message_start":
            message = data["message"]
            self.model = message.get("model")
            self._usage(message.get("usage"))
        elif kind == "content_block_start":
            block = data["content_block"]
            if block.get("type") == "tool_use":
                self.blocks[int(data["index"])] = {"id": block["id"], "name": block["name"], "json": ""}
            elif block.get("type") == "text" and block.get("text"):
                self.text.append(block["text"])
                return str(block["text"])
        elif kind == "content_block_delta":
            delta = data["delta"]
            if delta.get("type") == "text_delta":
                self.text.append(delta["text"])
                return str(delta["text"])
            if delta.get("type") == "input_json_delta":
                self.blocks[int(data["index"])]["json"] += delta.get("partial_json", "")
        elif kind == "message_delta":
            self._usage(data.get("usage"))
        return ""

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage:
            self.saw_usage = True
            # Cached prompt tokens are billed too (at other rates; counted here at the input rate).
            self.input_tokens = sum(
                int(usage.get(k) or 0)
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
        if "output_tokens" in usage:
            self.saw_usage = True
            self.output_tokens = int(usage["output_tokens"] or 0)

    def result(self) -> ModelTurn:
        calls = [
            ToolCallRequest(id=b["id"], name=b["name"], arguments=parse_arguments(b["json"]))
            for _, b in sorted(self.blocks.items())
        ]
        usage = Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        return ModelTurn(text="".join(self.text), tool_calls=calls, usage=usage, model=self.model)
