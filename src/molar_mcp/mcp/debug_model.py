"""The seam between `debug_run` and a model: `answer_with_model`. Today no model is wired, so it answers
None and `debug_run` gives the detectors' findings alone, labelled as analysis without a model.

For the debugger-chats work (issue 5 part 2), implement `answer_with_model` here, through the client
only (the `mcp` package never imports the debugger or the store):

1. decide whether a model is configured — ask the API (e.g. `POST /v1/traces/{id}/chats` answering an
   error such as `no_model`); return None when there is none, and `debug_run` stays as it is;
2. with `chat_id` None, create a chat (`POST /v1/traces/{id}/chats`); otherwise continue that chat;
3. send `question` (or, without one, "why did this run fail?") with `POST /v1/chats/{id}/messages`
   and read its SSE stream, calling `progress(message)` as tokens and tool calls arrive (each call
   sends an MCP progress notification, so the client's ~60 s timeout keeps being reset);
4. return a `ModelAnswer`: the chat id, the model's name, its answer, and every tool call it made.

`debug_run` keeps the findings, cited events and suggested replay beside the model's answer (the answer
is grounded in them), adds the model's tool calls after its own REST calls, fits everything to the same
token budget, and reports `model` and `chat_id` from the `ModelAnswer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from molar_mcp.client import TraceClient
from molar_mcp.mcp.views import ToolCallRecord
from molar_mcp.models import Analysis

Progress = Callable[[str], Awaitable[None]]


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
) -> ModelAnswer | None:
    """A model's answer to `question` about the trace, grounded in `analysis`; None when no model is
    configured (always, until the debugger chats land — see the module docstring)."""
    del client, trace_id, question, chat_id, analysis, progress
    return None
