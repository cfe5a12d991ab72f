"""Debugger chats:

- `POST /v1/traces/{id}/chats` → `ChatDetail`, seeded with the detectors' findings, rendered;
- `POST /v1/chats/{id}/messages` → Server-Sent Events: `message` (the question, stored), `token`s of the
  answer, `tool_call` audit rows as the model calls the trace tools, `message` (the answer, stored),
  `end`. With `"model": "client"` the caller's model completes the loop: the stream ends with a
  `model_request`, answered by `POST /v1/chats/{id}/model-response` (the same events again);
- `GET /v1/chats/{id}`; `GET /v1/debugger/usage` (the org's spend against its monthly budget).

Without a model the answer is the findings and their evidence, labelled as analysis without a model.
A spent budget is a 429 with Retry-After (the start of next month) before anything is stored.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molar_mcp.api.bodies import json_body, validation_message
from molar_mcp.api.context import ApiContext, api_context, org_of
from molar_mcp.api.errors import ApiError, error_response
from molar_mcp.api.openapi import documented
from molar_mcp.debugger.briefing import failing_step_events, no_model_answer, render_findings, system_prompt
from molar_mcp.debugger.chat import (
    Answered,
    LoopStopped,
    ModelError,
    ToolResult,
    advance,
    first_request,
    run_exchange,
)
from molar_mcp.debugger.detectors import analyze
from molar_mcp.debugger.pricing import cost_millicents, price_of
from molar_mcp.models.chats import (
    ChatDetail,
    ChatMessage,
    CreateChat,
    DebuggerUsage,
    ModelReply,
    ModelRequest,
    ModelTurn,
    SendMessage,
    StreamEnd,
    StreamError,
    TokenDelta,
    ToolCallRequest,
    TurnMessage,
)
from molar_mcp.store.chats import ChatNotFound, ChatState, NotAwaited, month_of

log = logging.getLogger("molar_mcp.api.chats")

HEARTBEAT_SECONDS: Final = 15
LOOP_DEADLINE_SECONDS: Final = 300  # an answer that takes longer is stopped and says so
CLIENT_MODEL: Final = "client"

Emit = Callable[[str, BaseModel], None]


def _chat_not_found(exc: ChatNotFound) -> ApiError:
    return ApiError(404, "not_found", f"no chat {exc.chat_id!r} in this org; POST /v1/traces/{{id}}/chats starts one")


async def _state(ctx: ApiContext, org: str, chat_id: str) -> ChatState:
    try:
        return await anyio.to_thread.run_sync(ctx.chats.chat_state, org, chat_id)
    except ChatNotFound as exc:
        raise _chat_not_found(exc) from None


async def _body(request: Request, model: type[BaseModel], *, empty_ok: bool = False) -> Any:
    if empty_ok and not await request.body():
        return model.model_validate({})
    try:
        return model.model_validate(await json_body(request))
    except ValidationError as exc:
        raise ApiError(422, "validation_error", validation_message(exc)) from None


# ---- create and read -----------------------------------------------------------------------------


@documented(
    summary="Start a debugger chat on a trace: its first message is the detectors' findings",
    body=CreateChat,
    response=ChatDetail,
    status=201,
    errors=(400, 404, 409, 415, 422),
    tags=("debugger",),
)
async def create_chat(request: Request) -> JSONResponse:
    ctx = api_context(request)
    org = org_of(request)
    body: CreateChat = await _body(request, CreateChat, empty_ok=True)
    trace_ref = request.path_params["trace_id"]

    def run() -> ChatDetail:
        detail = ctx.store.get_trace(org, trace_ref)
        events = ctx.store.list_events(org, detail.id, limit=max(1, detail.event_count)).events
        findings = render_findings(detail, analyze(events, detail.status), events)
        chat_id = ctx.chats.create_chat(
            org,
            detail.id,
            title=body.title,
            system=system_prompt(detail, findings, failing_step_events(detail, events)),
            findings=findings,
        )
        return ctx.chats.get_chat(org, chat_id, model=_model_name(ctx))

    chat = await anyio.to_thread.run_sync(run)
    return JSONResponse(chat.model_dump(mode="json"), status_code=201)


@documented(
    summary="A debugger chat: every message, tool call audit row and cost", response=ChatDetail, tags=("debugger",)
)
async def get_chat(request: Request) -> JSONResponse:
    ctx = api_context(request)
    org = org_of(request)
    chat_id = request.path_params["chat_id"]
    try:
        chat = await anyio.to_thread.run_sync(lambda: ctx.chats.get_chat(org, chat_id, model=_model_name(ctx)))
    except ChatNotFound as exc:
        raise _chat_not_found(exc) from None
    return JSONResponse(chat.model_dump(mode="json"))


@documented(
    summary="This org's debugger spend this month against its budget", response=DebuggerUsage, tags=("debugger",)
)
async def usage(request: Request) -> JSONResponse:
    ctx = api_context(request)
    org = org_of(request)
    spent, budget, month = await _spend(ctx, org)
    body = DebuggerUsage(
        month=month,
        budget_cents=budget,
        spent_cents=spent / 1000,
        remaining_cents=max(0.0, budget - spent / 1000),
        model=_model_name(ctx),
    )
    return JSONResponse(body.model_dump(mode="json"))


def _model_name(ctx: ApiContext) -> str | None:
    return ctx.model.name if ctx.model is not None else None


# ---- messages ------------------------------------------------------------------------------------


@documented(
    summary="Ask a question: streams the answer's tokens and the model's tool calls (Server-Sent Events)",
    body=SendMessage,
    media_type="text/event-stream",
    errors=(400, 404, 415, 422, 429),
    tags=("debugger",),
)
async def send_message(request: Request) -> Response:
    ctx = api_context(request)
    org = org_of(request)
    body: SendMessage = await _body(request, SendMessage)
    state = await _state(ctx, org, request.path_params["chat_id"])
    use_server_model = body.model != CLIENT_MODEL and ctx.model is not None
    if use_server_model:
        refused = await _over_budget(request, ctx, org)
        if refused is not None:
            return refused
    history = await anyio.to_thread.run_sync(ctx.chats.history, org, state.id)
    question = await _add(ctx, org, state.id, role="user", kind="question", content=body.content)

    async def produce(emit: Emit) -> None:
        emit("message", question)
        if body.model == CLIENT_MODEL:
            await _start_client_turns(ctx, org, state, history, body.content, emit)
        elif ctx.model is None:
            answer = await _add(
                ctx, org, state.id, role="assistant", kind="analysis", content=no_model_answer(state.findings)
            )
            emit("message", answer)
            emit("end", StreamEnd(status="done", message_id=answer.id))
        else:
            await _answer_with_server_model(ctx, org, state, history, body.content, emit)

    return _stream(produce)


@documented(
    summary="Answer the model_request of a chat whose caller brings its own model; streams what follows",
    body=ModelReply,
    media_type="text/event-stream",
    errors=(400, 404, 409, 415, 422),
    tags=("debugger",),
)
async def model_response(request: Request) -> Response:
    ctx = api_context(request)
    org = org_of(request)
    reply: ModelReply = await _body(request, ModelReply)
    chat_id = request.path_params["chat_id"]
    try:
        pending = await anyio.to_thread.run_sync(ctx.chats.take_pending, org, chat_id, reply.turn)
    except ChatNotFound as exc:
        raise _chat_not_found(exc) from None
    except NotAwaited as exc:
        if exc.awaited is None:
            message = "this chat awaits no model response; POST /v1/chats/{id}/messages asks a question"
        else:
            message = f"this chat awaits the model's answer to turn {exc.awaited}, not {reply.turn}"
        raise ApiError(409, "conflict", message) from None

    async def produce(emit: Emit) -> None:
        sink = _Sink(ctx, org, pending.message_id, emit, CLIENT_MODEL)
        try:
            await sink.model_turn(pending.turn, reply)
            async with ctx.tools(org) as runner:
                tools = await runner.list_tools()
                step = await advance(pending, reply, runner, sink, tools)
        except Exception:
            log.exception("the chat loop of %s failed", chat_id)
            problem = StreamError(
                error="internal_error", message="The debugger failed; the server log has the details."
            )
            emit("error", problem)
            final = await anyio.to_thread.run_sync(
                lambda: ctx.chats.finish_message(
                    org, pending.message_id, content=f"[{problem.message}]", status="error"
                )
            )
            emit("message", final)
            emit("end", StreamEnd(status="error", message_id=final.id))
            return
        await _after_client_step(ctx, org, chat_id, pending.message_id, step, reply.model, emit)

    return _stream(produce)


async def _start_client_turns(
    ctx: ApiContext, org: str, state: ChatState, history: list[TurnMessage], question: str, emit: Emit
) -> None:
    answer = await _add(ctx, org, state.id, role="assistant", kind="answer", content="", status="awaiting_model")
    async with ctx.tools(org) as runner:
        tools = await runner.list_tools()
    request = first_request(answer.id, state.system, history, question, tools)
    await _after_client_step(ctx, org, state.id, answer.id, request, None, emit)


async def _after_client_step(
    ctx: ApiContext,
    org: str,
    chat_id: str,
    message_id: str,
    step: ModelRequest | Answered,
    model: str | None,
    emit: Emit,
) -> None:
    """Store where the client-driven loop is: the next completion it owes, or the final answer."""
    if isinstance(step, ModelRequest):
        await anyio.to_thread.run_sync(ctx.chats.set_pending, org, chat_id, step)
        emit("model_request", step)
        emit("end", StreamEnd(status="awaiting_model", message_id=message_id))
        return
    name = f"client:{model or 'unknown'}"
    final = await anyio.to_thread.run_sync(
        lambda: ctx.chats.finish_message(org, message_id, content=step.text, status="done", model=name)
    )
    emit("message", final)
    emit("end", StreamEnd(status="done", message_id=message_id))


async def _answer_with_server_model(
    ctx: ApiContext, org: str, state: ChatState, history: list[TurnMessage], question: str, emit: Emit
) -> None:
    assert ctx.model is not None
    model = ctx.model
    answer = await _add(
        ctx, org, state.id, role="assistant", kind="answer", content="", status="streaming", model=model.name
    )
    sink = _Sink(ctx, org, answer.id, emit, model.name)
    text, problem = "", None
    try:
        with anyio.fail_after(LOOP_DEADLINE_SECONDS):
            async with ctx.tools(org) as runner:
                tools = await runner.list_tools()
                request = first_request(answer.id, state.system, history, question, tools)
                # Caught inside the runner's block: out of it they would come wrapped in its task group's.
                try:
                    text = await run_exchange(model, runner, sink, request, tools)
                except LoopStopped as exc:
                    problem = StreamError(error=exc.error, message=exc.message)
                except ModelError as exc:
                    problem = StreamError(error="model_error", message=f"The model failed: {exc}")
    except TimeoutError:
        message = f"The answer took longer than {LOOP_DEADLINE_SECONDS} s and was stopped."
        problem = StreamError(error="timeout", message=message)
    except Exception:
        log.exception("the chat loop of %s failed", state.id)
        problem = StreamError(error="internal_error", message="The debugger failed; the server log has the details.")
    if problem is not None:
        emit("error", problem)
        text = _stopped(sink.text, problem.message)
    final = await anyio.to_thread.run_sync(
        lambda: ctx.chats.finish_message(
            org, answer.id, content=text, status="error" if problem else "done", model=model.name
        )
    )
    emit("message", final)
    emit("end", StreamEnd(status=final.status, message_id=final.id))


def _stopped(partial: str, why: str) -> str:
    return f"{partial.rstrip()}\n\n[{why}]" if partial.strip() else f"[{why}]"


class _Sink:
    """The loop's listener for one answer: streams tokens, charges each model turn once against the
    org's budget, records each tool call's audit row, and stops the loop when the budget is spent."""

    def __init__(self, ctx: ApiContext, org: str, message_id: str, emit: Emit, model: str) -> None:
        self.ctx = ctx
        self.org = org
        self.message_id = message_id
        self.emit = emit
        self.model = model
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def before_model(self, turn: int) -> None:
        if turn == 1:
            return  # checked before the question was stored
        spent, budget, month = await _spend(self.ctx, self.org)
        if spent >= budget * 1000:
            raise LoopStopped("budget_exhausted", _budget_message(budget, spent, month))

    async def token(self, text: str) -> None:
        self.parts.append(text)
        self.emit("token", TokenDelta(text=text))

    async def model_turn(self, turn: int, result: ModelTurn) -> None:
        if turn > 1 and self.parts:
            self.parts.append("\n\n")
        if self.model == CLIENT_MODEL:
            cost = 0  # the caller's own model: its tokens are recorded, the caller pays for them
            model = f"client:{result.model or 'unknown'}"
        else:
            cost = cost_millicents(result.usage, price_of(self.model, self.ctx.model_price))
            model = self.model
        await anyio.to_thread.run_sync(
            lambda: self.ctx.chats.charge(
                self.org, self.message_id, turn=turn, model=model, usage=result.usage, cost_millicents=cost
            )
        )

    async def tool_call(self, turn: int, call: ToolCallRequest, result: ToolResult, duration_ms: int) -> None:
        row = await anyio.to_thread.run_sync(
            lambda: self.ctx.chats.add_tool_call(
                self.org,
                self.message_id,
                turn=turn,
                tool=call.name,
                arguments=call.arguments,
                result_chars=len(result.text),
                duration_ms=duration_ms,
                error=result.text[:500] if result.is_error else None,
            )
        )
        self.emit("tool_call", row)


# ---- budget --------------------------------------------------------------------------------------


async def _spend(ctx: ApiContext, org: str) -> tuple[int, int, str]:
    month = month_of(datetime.now(UTC))
    spent = await anyio.to_thread.run_sync(ctx.chats.spent_millicents, org, month)
    return spent, ctx.debugger_budget_cents, month


def _budget_message(budget: int, spent: int, month: str) -> str:
    return (
        f"this org's debugger budget for {month} is spent ({spent / 1000:.2f} of {budget} cents); it renews at the "
        "start of next month (Retry-After). Raise MOLAR_DEBUGGER_BUDGET_CENTS to allow more."
    )


async def _over_budget(request: Request, ctx: ApiContext, org: str) -> Response | None:
    spent, budget, month = await _spend(ctx, org)
    if spent < budget * 1000:
        return None
    response = error_response(request, 429, "budget_exhausted", _budget_message(budget, spent, month))
    response.headers["retry-after"] = str(_seconds_to_next_month(datetime.now(UTC)))
    return response


def _seconds_to_next_month(now: datetime) -> int:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    )
    return max(1, math.ceil((following - now).total_seconds()))


# ---- streaming -----------------------------------------------------------------------------------


async def _add(ctx: ApiContext, org: str, chat_id: str, **fields: Any) -> ChatMessage:
    return await anyio.to_thread.run_sync(lambda: ctx.chats.add_message(org, chat_id, **fields))


def _stream(produce: Callable[[Emit], Awaitable[None]]) -> EventSourceResponse:
    """Stream what `produce` emits. The producer runs shielded from the client going away: an answer
    being written is finished and stored either way (and its tool calls and costs recorded), so a
    caller that had to stop reading can fetch it later with `GET /v1/chats/{id}`."""
    send: MemoryObjectSendStream[ServerSentEvent]
    send, receive = anyio.create_memory_object_stream[ServerSentEvent](max_buffer_size=math.inf)
    counter = 0

    def emit(event: str, payload: BaseModel) -> None:
        nonlocal counter
        counter += 1
        frame = ServerSentEvent(data=payload.model_dump_json(), event=event, id=str(counter))
        # A reader that left is no reason to stop: the answer is stored either way.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            send.send_nowait(frame)

    async def run() -> None:
        with anyio.CancelScope(shield=True), send:
            try:
                await produce(emit)
            except Exception:
                log.exception("a chat stream failed")
                emit("error", StreamError(error="internal_error", message="the debugger failed; see the server log"))

    async def frames() -> AsyncIterator[ServerSentEvent]:
        with receive:
            async for frame in receive:
                yield frame

    return EventSourceResponse(
        frames(), data_sender_callable=run, ping=HEARTBEAT_SECONDS, headers={"cache-control": "no-store"}
    )


def routes() -> list[Route]:
    return [
        Route("/v1/traces/{trace_id}/chats", create_chat, methods=["POST"]),
        Route("/v1/chats/{chat_id}", get_chat, methods=["GET"]),
        Route("/v1/chats/{chat_id}/messages", send_message, methods=["POST"]),
        Route("/v1/chats/{chat_id}/model-response", model_response, methods=["POST"]),
        Route("/v1/debugger/usage", usage, methods=["GET"]),
    ]
