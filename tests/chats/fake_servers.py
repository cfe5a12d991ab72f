"""Fake model servers speaking the OpenAI Chat Completions and Anthropic Messages wire formats (streamed as
the real ones stream), served by real uvicorn on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class _Server(uvicorn.Server):
    """Tells the test thread when it listens (no polling, no sleeps)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Run `app` on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not server.ready.wait(10):
            raise RuntimeError("the fake model server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Recorder:
    """What a fake server received, and the answers it plays in order."""

    script: list[Any]
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def take(self, request: Request, body: dict[str, Any]) -> Any:
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return self.script[len(self.requests) - 1]


def _sse(chunks: list[str]) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk.encode()

    return StreamingResponse(body(), media_type="text/event-stream")


# ---- OpenAI-compatible ---------------------------------------------------------------------------


def openai_chunks(
    text: str = "", tool_calls: Sequence[tuple[str, str, dict[str, Any]]] = (), usage: tuple[int, int] | None = None
) -> list[dict[str, Any]]:
    """Stream chunks as OpenAI sends them: text in pieces, each tool call's arguments split in two."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18"}
    chunks: list[dict[str, Any]] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    for word in text.split(" ") if text else []:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]})
    for i, (call_id, name, args) in enumerate(tool_calls):
        raw = json.dumps(args)
        half = len(raw) // 2
        first = {"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": raw[:half]}}
        chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
        rest = {"index": i, "function": {"arguments": raw[half:]}}
        chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [rest]}}]})
    finish = "tool_calls" if tool_calls else "stop"
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})
    return chunks


def openai_app(recorder: Recorder) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        answer = recorder.take(request, body)
        if isinstance(answer, Response):
            return answer
        if not body.get("stream"):
            return JSONResponse(answer)
        return _sse([f"data: {json.dumps(c)}\n\n" for c in answer] + ["data: [DONE]\n\n"])

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


# ---- Anthropic -----------------------------------------------------------------------------------


def anthropic_events(
    text: str = "", tool_uses: Sequence[tuple[str, str, dict[str, Any]]] = (), usage: tuple[int, int] = (0, 0)
) -> list[dict[str, Any]]:
    """Stream events as the Messages API sends them."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "usage": {"input_tokens": usage[0], "output_tokens": 1},
            },
        }
    ]
    index = 0
    if text:
        events.append({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        for word in text.split(" "):
            events.append(
                {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word + " "}}
            )
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    for call_id, name, args in tool_uses:
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        raw = json.dumps(args)
        for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
            delta = {"type": "input_json_delta", "partial_json": part}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    stop = "tool_use" if tool_uses else "end_turn"
    events.append({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": usage[1]}})
    events.append({"type": "message_stop"})
    return events


def anthropic_app(recorder: Recorder) -> Starlette:
    async def messages(request: Request) -> Response:
        body = await request.json()
        answer = recorder.take(request, body)
        if isinstance(answer, Response):
            return answer
        return _sse([f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in answer])

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
