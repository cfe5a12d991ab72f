"""The seam between `debug_run` and a model: `answer_with_model`, through the client only (the `mcp`
package never imports the debugger or the store). The answer comes from a debugger chat
(`POST /v1/traces/{id}/chats`, `POST /v1/chats/{id}/messages`, docs/debugger.md):

- the server's model (`--model` / `MOLAR_MODEL`) when one is configured: the chat's SSE stream is read
  as it comes, each tool call and every few hundred characters of answer reported as progress;
- else the calling client's model, when it offers MCP sampling (`"model": "client"`: the API hands each
  completion the loop needs to this process, `mcp/sampling.py` asks the client for it);
- else None, and `debug_run` answers with the findings alone.

An answer still being written after `ANSWER_SECONDS` is left to finish on the server: the result says so
and gives the chat_id; `debug_run(chat_id=…)` without a question reads it then (poll by id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import InputRequiredResult

from molar_mcp.client import NotFoundError, TraceClient
from molar_mcp.mcp.sampling import ClientModel, SamplingUnavailable
from molar_mcp.mcp.views import ToolCallRecord
from molar_mcp.models import Analysis
from molar_mcp.models.chats import (
    ChatMessage,
    ChatStreamItem,
    ModelRequest,
    StreamEnd,
    StreamError,
    TokenDelta,
    ToolCallRow,
)

Progress = Callable[[str], Awaitable[None]]

DEFAULT_QUESTION: Final = "Why did this run fail? Name the root cause, the step and the events that show it."
ANSWER_SECONDS: Final = 40.0  # debug_run's own reads come first; clients give up near 60 s
PROGRESS_CHARS: Final = 400


@dataclass(frozen=True)
class ModelAnswer:
    chat_id: str
    model: str  # the model that answered, as the provider names it
    answer: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)


async def answer_with_model(
    client: TraceClient,
    *,
    trace_id: str,
    question: str | None,
    chat_id: str | None,
    analysis: Analysis,
    progress: Progress,
    client_model: ClientModel | None = None,
) -> ModelAnswer | InputRequiredResult | None:
    """A model's answer to `question` about the trace (grounded in the findings, which open the chat);
    None when neither the server nor the client has a model. An `InputRequiredResult` (modern protocol,
    client's model only) is for `debug_run` to return as it is: the client samples and calls again."""
    del analysis  # the chat computes and cites the same findings itself
    if client_model is not None and client_model.offered:
        try:
            resumed = client_model.resumed()
        except SamplingUnavailable as exc:
            raise ToolError(f"{exc}; call debug_run again to start over") from exc
        if resumed is not None:  # a modern round after the first: carry on where the last one stopped
            stream = client.model_response(resumed.chat_id, resumed.reply)
            return await _drive(client, resumed.chat_id, stream, client_model, progress)
    try:
        server_model = (await client.debugger_usage()).model
    except NotFoundError:  # a remote store without debugger chats: the findings alone
        return None
    use_client = server_model is None and client_model is not None and client_model.offered
    if server_model is None and not use_client:
        return None
    if chat_id is not None and question is None:
        chat = await client.get_chat(chat_id)
        if chat.pending is not None and use_client:  # an answer left waiting for this client's model
            return await _drive(client, chat_id, chat.pending, client_model, progress)
        return await _read_back(client, chat_id)
    if chat_id is None:
        chat_id = (await client.create_chat(trace_id, title=question[:200] if question else None)).id
    stream = client.send_message(chat_id, question or DEFAULT_QUESTION, model="client" if use_client else "server")
    return await _drive(client, chat_id, stream, client_model if use_client else None, progress)


async def _drive(
    client: TraceClient,
    chat_id: str,
    start: AsyncIterator[ChatStreamItem] | ModelRequest,
    client_model: ClientModel | None,
    progress: Progress,
) -> ModelAnswer | InputRequiredResult:
    """Read the chat's stream to its end; with the client's model, answer each model request it ends
    with (legacy: here and now; modern: by handing the request back to the client)."""
    stream = start
    with anyio.move_on_after(ANSWER_SECONDS):
        while True:
            outcome = stream if isinstance(stream, ModelRequest) else await _read(stream, progress)
            if isinstance(outcome, ChatMessage):
                return _answer(chat_id, outcome)
            if isinstance(outcome, StreamError) or client_model is None:
                break
            if client_model.modern:
                return client_model.defer(chat_id, outcome)
            await progress(f"Asking your model (turn {outcome.turn})")
            try:
                reply = await client_model.ask(outcome)
            except SamplingUnavailable as exc:
                return ModelAnswer(chat_id, "client", f"Your model could not be asked: {exc}")
            stream = client.model_response(chat_id, reply)
    return await _read_back(client, chat_id)


async def _read(stream: AsyncIterator[ChatStreamItem], progress: Progress) -> ChatMessage | ModelRequest | StreamError:
    """The stream's outcome: the stored answer, the next model request, or the error it stopped with."""
    outcome: ChatMessage | ModelRequest | StreamError | None = None
    chars = reported = 0
    async for item in stream:
        if isinstance(item, TokenDelta):
            chars += len(item.text)
            if chars - reported >= PROGRESS_CHARS:
                reported = chars
                await progress(f"The model is writing ({chars} characters)")
        elif isinstance(item, ToolCallRow):
            await progress(f"The model called {item.tool}" + (" (failed)" if item.error else ""))
        elif isinstance(item, ChatMessage):
            if item.role == "assistant":
                outcome = item  # the stored answer: the last word, even after an error event
        elif isinstance(item, ModelRequest | StreamError) and not isinstance(outcome, ChatMessage):
            outcome = item
        elif isinstance(item, StreamEnd):
            break
    if isinstance(outcome, StreamError) or outcome is None:
        return outcome or StreamError(error="incomplete", message="the chat stream ended without an answer")
    return outcome


async def _read_back(client: TraceClient, chat_id: str) -> ModelAnswer:
    """The chat's latest answer as stored; says so when it is still being written."""
    chat = await client.get_chat(chat_id)
    answers = [m for m in chat.messages if m.kind in ("answer", "analysis")]
    if not answers:
        return ModelAnswer(chat_id, chat.model or "none", "This chat has no answer yet; ask a question.")
    last = answers[-1]
    if last.status in ("streaming", "awaiting_model"):
        return ModelAnswer(
            chat_id,
            last.model or chat.model or "unknown",
            f"The model is still answering. Call debug_run(trace_id, chat_id={chat_id!r}) in a little while "
            "(without a question) to read the answer.",
            _records(last),
        )
    return _answer(chat_id, last)


def _answer(chat_id: str, message: ChatMessage) -> ModelAnswer:
    return ModelAnswer(chat_id, message.model or "unknown", message.content, _records(message))


def _records(message: ChatMessage) -> list[ToolCallRecord]:
    return [
        ToolCallRecord(
            tool=c.tool,
            arguments=c.arguments,
            result_tokens=-(-c.result_chars // 4),  # the stored size is in characters: ~4 a token
            duration_ms=c.duration_ms,
            error=c.error,
        )
        for c in message.tool_calls
    ]
