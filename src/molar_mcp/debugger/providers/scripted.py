"""`ScriptedProvider`: a `ModelProvider` that plays a script, for tests and demos. Each step is a
`ModelTurn` to answer, or a function of the conversation so far that returns one (to answer with what
a tool returned). It streams each answer's text word by word, and records every request it got."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from molar_mcp.debugger.chat import MAX_OUTPUT_TOKENS, ModelError, TokenSink
from molar_mcp.models.chats import ModelTurn, ToolDef, TurnMessage

Step = ModelTurn | Callable[[Sequence[TurnMessage]], ModelTurn]


@dataclass(frozen=True)
class SeenRequest:
    system: str
    messages: list[TurnMessage]
    tools: list[ToolDef]


@dataclass
class ScriptedProvider:
    script: list[Step]
    model: str = "scripted"
    requests: list[SeenRequest] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"scripted:{self.model}"

    async def complete(
        self,
        messages: Sequence[TurnMessage],
        tools: Sequence[ToolDef],
        *,
        system: str,
        max_tokens: int = MAX_OUTPUT_TOKENS,
        on_token: TokenSink | None = None,
    ) -> ModelTurn:
        self.requests.append(SeenRequest(system, list(messages), list(tools)))
        if len(self.requests) > len(self.script):
            raise ModelError(f"the script has {len(self.script)} turn(s) and was asked for another")
        step = self.script[len(self.requests) - 1]
        turn = step(messages) if callable(step) else step
        if on_token is not None and turn.text:
            words = turn.text.split(" ")
            for i, word in enumerate(words):
                await on_token(word if i == len(words) - 1 else word + " ")
        return turn
