"""Rate limits on what an MCP caller did: one `tools/call` is one unit of its org's `tool` budget.

A tool reaches the store through the in-process /v1 app (several reads for one `get_trace`); those calls
are the server's own and are not counted (api/telemetry.py, IN_PROCESS_EXTENSION). This ASGI middleware
sits in front of the streamable HTTP app (behind the scope guard, so the caller is known), reads each POST's
JSON-RPC body and spends one unit per tool call in it. Past the budget: HTTP 429 with `Retry-After` and a
JSON-RPC error the MCP client surfaces to its caller (the SDK reads a JSON-RPC error from a non-2xx body).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from molar_mcp.api.telemetry import Metrics, RateLimiter
from molar_mcp.asgi_replay import replayed_body
from molar_mcp.auth import get_principal
from molar_mcp.store import LOCAL_ORG_ID

MAX_BODY_BYTES: Final = 4 * 1024 * 1024
RATE_LIMITED: Final = -32000  # JSON-RPC implementation-defined server error


def _tool_call_ids(body: bytes) -> list[Any]:
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return []  # the SDK answers a parse error and runs nothing
    items = decoded if isinstance(decoded, list) else [decoded]
    return [item.get("id") for item in items if isinstance(item, dict) and item.get("method") == "tools/call"]


class ToolCallBudget:
    """Spend one unit of the caller's org `tool` budget per `tools/call` (the org of the principal the
    scope guard set; without authentication, the local org)."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, metrics: Metrics) -> None:
        self.app = app
        self.limiter = limiter
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > MAX_BODY_BYTES:
                await JSONResponse({"error": "too_large", "message": "request body too large"}, status_code=413)(
                    scope, receive, send
                )
                return
            if not message.get("more_body", False):
                break
        ids = _tool_call_ids(bytes(body))
        if ids:
            principal = get_principal()
            org = principal.org_id if principal is not None else LOCAL_ORG_ID
            wait = max([await self.limiter.spend(org, "tool") for _ in ids])
            if wait > 0:
                self.metrics.rate_limited.labels("tool").inc()
                limit = self.limiter.limits.tool
                refusal = JSONResponse(
                    {
                        "jsonrpc": "2.0",
                        "id": ids[0],
                        "error": {
                            "code": RATE_LIMITED,
                            "message": f"rate limited: more than {limit} tool calls a minute for this org; "
                            f"retry in {math.ceil(wait)} s",
                            "data": {"retry_after": max(1, math.ceil(wait)), "limit_per_minute": limit},
                        },
                    },
                    status_code=429,
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, replayed_body(bytes(body), receive), send)
