"""An ASGI `receive` that gives an app the request messages a middleware in front of it already read, then
the client's own channel (its later messages: a disconnect). The auth guard, the tool budget and the MCP
answer-mode router each read a request's body before passing the request on. No I/O here."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from starlette.types import Message, Receive


def replayed(messages: Iterable[Message], receive: Receive) -> Receive:
    """`receive` that gives `messages` first, in order, then what `receive` gives."""
    pending = deque(messages)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


def replayed_body(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the whole `body` as one message, then what `receive` gives."""
    return replayed(({"type": "http.request", "body": body, "more_body": False},), receive)
