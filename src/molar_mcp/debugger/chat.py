"""The debugger chat's agent loop and its ports: a model that may call the trace tools, each call timed and
reported, until the model answers without asking for a tool (or runs out of turns).

Ports (STYLE.md: protocols, with fakes beside them):
- `ModelProvider` completes a conversation (OpenAI-compatible, Anthropic, a scripted fake…);
- `ToolRunner` lists and calls the trace tools (the composition root backs it with our MCP server);
- `LoopSink` hears what happens: tokens, model turns (to charge), tool calls (to audit). It may stop
  the loop before a model call by raising `LoopStopped` (the budget is spent, for one).

The loop is written as steps (`first_request` → `advance` → … ) so that a model outside this process
can drive it one completion at a time (`"model": "client"`: MCP sampling by the caller's model);
`run_exchange` drives the same steps with a `ModelProvider`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from molar_mcp.models.chats import ModelRequest, ModelTurn, ToolCallRequest, ToolDef, TurnMessage

MAX_TURNS: Final = 8  # model calls per answer; the last one is offered no tools, so it must answer
MAX_OUTPUT_TOKENS: Final = 1024
MAX_TOOL_RESULT_CHARS: Final = 24_000  # what one tool result may add to the conversation

TokenSink = Callable[[str], Awaitable[None]]


class ModelError(Exception):
    """The model provider failed (unreachable, refused the key, answered garbage). The message is
    written for the person reading the chat: what failed and what to check."""


class LoopStopped(Exception):
    """Raised by a `LoopSink` to stop the loop before the next model call."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


class ModelProvider(Protocol):
    @property
    def name(self) -> str:
        """`provider:model`, e.g. `openai:gpt-4o-mini`: shown on answers and used to price them."""
        ...

    async def complete(
        self,
        messages: Sequence[TurnMessage],
        tools: Sequence[ToolDef],
        *,
        system: str,
        max_tokens: int = MAX_OUTPUT_TOKENS,
        on_token: TokenSink | None = None,
    ) -> ModelTurn:
        """Complete the conversation once. Text deltas go to `on_token` as they arrive (when the
        provider streams); raise `ModelError` on failure."""
        ...


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool = False


class ToolRunner(Protocol):
    async def list_tools(self) -> list[ToolDef]: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call one tool. A tool's own failure is a result with `is_error`; raising is for the runner
        breaking, and the loop reports that to the model as an error result too."""
        ...


class LoopSink(Protocol):
    async def before_model(self, turn: int) -> None:
        """Called before every model call; raise `LoopStopped` to stop."""
        ...

    async def token(self, text: str) -> None: ...

    async def model_turn(self, turn: int, result: ModelTurn) -> None:
        """A model call finished (charge its usage here, exactly once per turn)."""
        ...

    async def tool_call(self, turn: int, call: ToolCallRequest, result: ToolResult, duration_ms: int) -> None:
        """A tool call finished (record its audit row here)."""
        ...


class NoTools:
    """A `ToolRunner` with no tools: the model answers from the findings alone."""

    async def list_tools(self) -> list[ToolDef]:
        return []

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        return ToolResult(f"no tool named {name!r} is available", is_error=True)


def first_request(
    message_id: str,
    system: str,
    history: Sequence[TurnMessage],
    question: str,
    tools: Sequence[ToolDef],
    *,
    max_tokens: int = MAX_OUTPUT_TOKENS,
) -> ModelRequest:
    """The first completion an answer needs: the earlier questions and answers, then the question."""
    return ModelRequest(
        message_id=message_id,
        turn=1,
        system=system,
        messages=[*history, TurnMessage(role="user", content=question)],
        tools=list(tools),
        max_tokens=max_tokens,
    )


@dataclass(frozen=True)
class Answered:
    """The loop's end: the model answered with `text` (no tool call asked for)."""

    text: str


async def advance(
    request: ModelRequest, result: ModelTurn, runner: ToolRunner, sink: LoopSink, tools: Sequence[ToolDef]
) -> ModelRequest | Answered:
    """Apply the model's answer to `request`: the final answer when it called no tool (or had no more
    turns), else run its tool calls (each reported to the sink) and return the next request."""
    if not result.tool_calls:
        return Answered(result.text)
    if not request.tools:  # the last turn, and the model still wants tools: stop here
        gave_up = f"The model still wanted tools after {request.turn} turns and gave no answer; ask something narrower."
        return Answered(result.text or gave_up)
    messages = [*request.messages, TurnMessage(role="assistant", content=result.text, tool_calls=result.tool_calls)]
    offered = {t.name for t in request.tools}
    for call in result.tool_calls:
        outcome, duration_ms = await _call_tool(runner, call, offered)
        await sink.tool_call(request.turn, call, outcome, duration_ms)
        messages.append(
            TurnMessage(role="tool", content=_for_model(outcome.text), tool_call_id=call.id, is_error=outcome.is_error)
        )
    turn = request.turn + 1
    return request.model_copy(
        update={"turn": turn, "messages": messages, "tools": list(tools) if turn < MAX_TURNS else []}
    )


async def run_exchange(
    provider: ModelProvider, runner: ToolRunner, sink: LoopSink, request: ModelRequest, tools: Sequence[ToolDef]
) -> str:
    """Drive the loop with `provider` from `request` to the final answer's text."""
    step: ModelRequest | Answered = request
    while isinstance(step, ModelRequest):
        await sink.before_model(step.turn)
        result = await provider.complete(
            step.messages, step.tools, system=step.system, max_tokens=step.max_tokens, on_token=sink.token
        )
        await sink.model_turn(step.turn, result)
        step = await advance(step, result, runner, sink, tools)
    return step.text


async def _call_tool(runner: ToolRunner, call: ToolCallRequest, offered: set[str]) -> tuple[ToolResult, int]:
    started = time.perf_counter()
    if call.name not in offered:
        result = ToolResult(f"no tool named {call.name!r}; the tools are: {', '.join(sorted(offered))}", True)
    else:
        try:
            result = await runner.call(call.name, call.arguments)
        except Exception as exc:  # a broken runner is reported to the model, which can go on without it
            result = ToolResult(f"the tool {call.name} failed: {type(exc).__name__}: {exc}", is_error=True)
    return result, round((time.perf_counter() - started) * 1000)


def _for_model(text: str) -> str:
    if len(text) <= MAX_TOOL_RESULT_CHARS:
        return text
    return text[:MAX_TOOL_RESULT_CHARS] + f"\n… ({len(text) - MAX_TOOL_RESULT_CHARS} characters cut)"
