"""The MCP client's model as the debugger chat's model (MCP sampling), in both protocol eras.

The chat loop runs in the API (`"model": "client"`): each completion it needs arrives as a
`ModelRequest`, and the reply goes back with `POST /v1/chats/{id}/model-response`. This module turns
one into a `sampling/createMessage` request and the client's answer back into a `ModelReply`:

- 2025-11-25 (legacy): the request is sent mid-call on the session and awaited, as often as the loop
  needs; the tool call stays open meanwhile.
- 2026-07-28 (modern, MRTR): a call cannot wait for the client. The tool returns an
  `InputRequiredResult` carrying the sampling request and, in `request_state` (sealed by the SDK), the
  chat and turn; the client samples and calls again, and the tool resumes from there. The rounds are
  driven by the tool body because their number is not known in advance (`Resolve(...)` resolvers form
  a fixed graph, so they cannot express "sample until the model stops calling tools").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from mcp.server.mcpserver import Context
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    InputRequiredResult,
    SamplingMessage,
    TextContent,
    Tool,
    ToolResultContent,
    ToolUseContent,
)
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, ValidationError

from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.models.chats import ModelReply, ModelRequest, ToolCallRequest, TurnMessage, Usage

MODERN: Final = "2026-07-28"  # the first revision whose tool calls ask the client through InputRequiredResult
STATE_KEY: Final = "molar-debug-chat"


class SamplingUnavailable(Exception):
    """The client offers no sampling, or answered something that is not a model's turn."""


class _Resume(BaseModel):
    """What a modern round hands the next: which chat, which turn its model is answering."""

    chat_id: str
    turn: int


@dataclass(frozen=True)
class Resumed:
    chat_id: str
    reply: ModelReply


class ClientModel:
    """The calling client's model, reached through `ctx`."""

    def __init__(self, ctx: Context[Any, Any]) -> None:
        self._ctx = ctx

    @property
    def offered(self) -> bool:
        caps = self._ctx.client_capabilities
        return caps is not None and caps.sampling is not None

    @property
    def with_tools(self) -> bool:
        caps = self._ctx.client_capabilities
        return caps is not None and caps.sampling is not None and caps.sampling.tools is not None

    @property
    def modern(self) -> bool:
        version = self._ctx.protocol_version
        return version is not None and is_version_at_least(version, MODERN)

    def resumed(self) -> Resumed | None:
        """On a modern round after the first: the chat and the client model's reply to its request."""
        state, answers = self._ctx.request_state, self._ctx.input_responses
        if not state or not answers:
            return None
        try:
            resume = _Resume.model_validate_json(state)
        except ValidationError:
            return None  # not our state (or from an older version): start over
        answer = answers.get(STATE_KEY)
        if answer is None:
            raise SamplingUnavailable("the client retried without answering the sampling request")
        return Resumed(resume.chat_id, self._reply(answer, resume.turn))

    def defer(self, chat_id: str, request: ModelRequest) -> InputRequiredResult:
        """Modern era: end this round asking the client to sample `request`, then call again."""
        state = _Resume(chat_id=chat_id, turn=request.turn).model_dump_json()
        return InputRequiredResult(
            input_requests={STATE_KEY: CreateMessageRequest(params=self.params(request))},
            request_state=state,
        )

    async def ask(self, request: ModelRequest) -> ModelReply:
        """Legacy era: sample now, mid-call, and wait for the answer."""
        params = self.params(request)
        result_type = CreateMessageResultWithTools if params.tools else CreateMessageResult
        answer = await self._ctx.session.send_request(
            CreateMessageRequest(params=params),
            result_type,
            metadata=ServerMessageMetadata(related_request_id=self._ctx.request_id),
        )
        return self._reply(answer, request.turn, sent=params)

    def params(self, request: ModelRequest) -> CreateMessageRequestParams:
        tools = (
            [Tool(name=t.name, description=t.description, input_schema=t.input_schema) for t in request.tools]
            if self.with_tools and request.tools
            else None
        )
        return CreateMessageRequestParams(
            messages=sampling_messages(request.messages),
            system_prompt=request.system,
            max_tokens=request.max_tokens,
            include_context="none",
            tools=tools,
        )

    def _reply(self, answer: Any, turn: int, sent: CreateMessageRequestParams | None = None) -> ModelReply:
        wire = (
            answer.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(answer, BaseModel)
            else answer
        )
        try:
            result = CreateMessageResultWithTools.model_validate(wire)
        except ValidationError as exc:
            raise SamplingUnavailable(f"the client's sampling answer is not a model turn: {exc}") from exc
        reply = model_reply(result, turn)
        if sent is not None:  # sampling reports no usage: estimate it, for the chat's record
            reply.usage.input_tokens = estimate_tokens(sent.model_dump_json(exclude_none=True))
        return reply


def sampling_messages(messages: list[TurnMessage]) -> list[SamplingMessage]:
    """The loop's conversation as sampling messages: tool calls as `tool_use` blocks, their results as
    `tool_result` blocks in the next user message (consecutive results together, SEP-1577)."""
    out: list[SamplingMessage] = []
    pending_results: list[ToolResultContent] = []

    def flush() -> None:
        if pending_results:
            out.append(SamplingMessage(role="user", content=list(pending_results)))
            pending_results.clear()

    for m in messages:
        if m.role == "tool":
            pending_results.append(
                ToolResultContent(
                    type="tool_result",
                    tool_use_id=m.tool_call_id or "",
                    content=[TextContent(type="text", text=m.content)],
                    is_error=m.is_error or None,
                )
            )
            continue
        flush()
        if m.role == "assistant" and m.tool_calls:
            blocks: list[TextContent | ToolUseContent] = [TextContent(type="text", text=m.content)] if m.content else []
            blocks += [ToolUseContent(type="tool_use", id=c.id, name=c.name, input=c.arguments) for c in m.tool_calls]
            out.append(SamplingMessage(role="assistant", content=list(blocks)))
        else:
            out.append(SamplingMessage(role=m.role, content=TextContent(type="text", text=m.content)))
    flush()
    return out


def model_reply(result: CreateMessageResult | CreateMessageResultWithTools, turn: int) -> ModelReply:
    blocks = result.content if isinstance(result.content, list) else [result.content]
    text = "".join(b.text for b in blocks if isinstance(b, TextContent))
    calls = [ToolCallRequest(id=b.id, name=b.name, arguments=b.input) for b in blocks if isinstance(b, ToolUseContent)]
    output = estimate_tokens(text + json.dumps([c.arguments for c in calls]))
    return ModelReply(turn=turn, text=text, tool_calls=calls, usage=Usage(output_tokens=output), model=result.model)
