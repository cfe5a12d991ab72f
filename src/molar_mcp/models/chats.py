"""Pydantic vocabulary of debugger chats, shared by the API, the client and
the chat loop. No I/O here.

A chat belongs to one trace. Its first message is the detectors' findings, rendered (kind `findings`);
then questions (`question`) and answers: `answer` from a model, `analysis` when no model was
available (the findings and their evidence, labelled as such: never an invented answer). Every tool
call a model makes is recorded as a `ToolCallRow` (the audit trail) on the answer it led to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ChatRole = Literal["user", "assistant"]
MessageKind = Literal["findings", "question", "answer", "analysis"]
MessageStatus = Literal["done", "streaming", "awaiting_model", "error"]
ModelChoice = Literal["server", "client"]

MAX_QUESTION_CHARS = 8000
MAX_TITLE_CHARS = 200


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(BaseModel):
    """Tokens one model call used, as the provider reported them (or estimated when it did not)."""

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)


class ToolDef(BaseModel):
    """A tool offered to a model: its MCP name, description and JSON Schema input."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolCallRequest(BaseModel):
    """A model's request to call one tool."""

    id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)


class TurnMessage(BaseModel):
    """One message of the conversation a model completes: a question, a model turn (text and the tool
    calls it asked for), or a tool's result (`tool_call_id` names the call)."""

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    tool_call_id: str | None = None
    is_error: bool = False


class ModelTurn(BaseModel):
    """What a model answered to one request: text, tool calls to make, and the tokens it used."""

    text: str = ""
    tool_calls: list[ToolCallRequest] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    model: str | None = Field(default=None, description="the model that answered, as it names itself")


class ModelRequest(BaseModel):
    """One completion the chat loop needs: the system prompt, the conversation so far, the tools.

    Sent as the `model_request` event when the caller brings its own model (`"model": "client"`);
    the caller answers with `POST /v1/chats/{id}/model-response` carrying the same `turn`.
    """

    message_id: str = Field(description="the answer this completion is for")
    turn: int = Field(ge=1, description="1 for the first completion of an answer, then 2, 3…")
    system: str
    messages: list[TurnMessage]
    tools: list[ToolDef] = Field(default_factory=list, description="empty on the last turn: answer now")
    max_tokens: int = Field(ge=1)


class ModelReply(ModelTurn):
    """`POST /v1/chats/{id}/model-response`: the caller's model answered `turn`."""

    model_config = ConfigDict(extra="forbid")

    turn: int = Field(ge=1)


class ToolCallRow(BaseModel):
    """The audit row of one tool call a model made: what, with which arguments, how big the result
    was, how long it took, and the error if it failed."""

    id: str
    message_id: str
    turn: int
    tool: str
    arguments: dict[str, Any]
    result_chars: int
    duration_ms: int
    error: str | None = None
    created_at: datetime


class ChatMessage(BaseModel):
    id: str
    role: ChatRole
    kind: MessageKind
    content: str
    status: MessageStatus = "done"
    model: str | None = Field(default=None, description="provider:model that answered; null without a model")
    usage: Usage | None = None
    cost_cents: float | None = Field(default=None, description="what the answer cost against the org's budget")
    created_at: datetime
    tool_calls: list[ToolCallRow] = Field(default_factory=list)


class ChatDetail(BaseModel):
    """`GET /v1/chats/{id}`, and the answer of `POST /v1/traces/{id}/chats`."""

    id: str
    trace_id: str
    trace_short_id: str
    title: str | None = None
    created_at: datetime
    model: str | None = Field(
        default=None, description="the server's model (provider:model); null when none is configured"
    )
    messages: list[ChatMessage]
    pending: ModelRequest | None = Field(
        default=None, description="the completion the caller's model owes, when an answer awaits one"
    )


class CreateChat(_Strict):
    """`POST /v1/traces/{id}/chats`."""

    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)


class SendMessage(_Strict):
    """`POST /v1/chats/{id}/messages`: a question; `model` "client" means the caller completes the
    loop's model requests itself (MCP sampling), "server" the server's configured model."""

    content: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    model: ModelChoice = "server"


class TokenDelta(BaseModel):
    """The `token` event: the next piece of the answer's text."""

    text: str


class StreamError(BaseModel):
    """The `error` event: the loop stopped (model failure, budget exhausted…); the answer says so too."""

    error: str
    message: str


class StreamEnd(BaseModel):
    """The `end` event, always last: `done`, `awaiting_model` (answer the `model_request`), or `error`."""

    status: MessageStatus
    message_id: str


class DebuggerUsage(BaseModel):
    """`GET /v1/debugger/usage`: this org's spend against its monthly debugger budget."""

    month: str = Field(description="YYYY-MM, UTC")
    budget_cents: int
    spent_cents: float
    remaining_cents: float
    model: str | None = Field(default=None, description="the server's model; null when none is configured")


ChatStreamItem = ChatMessage | TokenDelta | ToolCallRow | ModelRequest | StreamError | StreamEnd
"""What `POST /v1/chats/{id}/messages` streams, one SSE event each (event name: see `STREAM_EVENTS`)."""

STREAM_EVENTS: dict[str, type[BaseModel]] = {
    "message": ChatMessage,
    "token": TokenDelta,
    "tool_call": ToolCallRow,
    "model_request": ModelRequest,
    "error": StreamError,
    "end": StreamEnd,
}
