"""A small OpenAI-compatible chat completions server (Starlette on a real 127.0.0.1 port) that answers
from a script: the model side of an agent loop under test, so the real `openai` client and a real
instrumentation library produce the spans."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.servers import free_port


def tool_call_reply(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        "finish_reason": "tool_calls",
    }


def text_reply(text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}


class ScriptedOpenAI:
    def __init__(self, replies: list[dict[str, Any]], model: str = "gpt-4o-mini-2024-07-18") -> None:
        self.replies = list(replies)
        self.model = model
        self.requests: list[dict[str, Any]] = []

    async def completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        choice = self.replies.pop(0)
        prompt = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4 + 50
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, **choice}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 20, "total_tokens": prompt + 20},
            }
        )

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on a free port; yields the base URL for `openai.OpenAI(base_url=…)`."""
        app = Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)  # the server thread is starting: the one wait this needs
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
