"""Assertions every /v1 test shares."""

from __future__ import annotations

from typing import Any

import httpx2


def assert_error(resp: httpx2.Response, status: int, error: str) -> dict[str, Any]:
    """The one error shape: exactly `{error, message, request_id}`, the id echoed in `x-request-id`."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body: dict[str, Any] = resp.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == error
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["request_id"]
    assert resp.headers["x-request-id"] == body["request_id"]
    return body
