"""A light MCP client for load generation: the streamable HTTP wire of both protocol eras on httpx2, many
clients on one event loop, little CPU a call (no pydantic models, no per-session task group or streams).

It speaks what a conforming client must, and checks every answer:
- 2026-07-28: stateless. Each request carries `MCP-Protocol-Version`, `Mcp-Method` (and `Mcp-Name` for
  `tools/call`) headers and the version, client info and capabilities in `params._meta`; a client asks
  `server/discover` once first.
- 2025-11-25: `initialize` (the answer names the session in `Mcp-Session-Id`), `notifications/initialized`
  (202), then every request carries `Mcp-Session-Id` and `MCP-Protocol-Version`; `DELETE` ends the session.
Answers are `application/json` or `text/event-stream` (parsed with httpx2's `EventSource`; events without
data, such as the resumability priming event, are skipped). A call is good when the JSON-RPC id matches,
there is a `result` with `isError` false and content of the expected shape; anything else raises
`CallFailed` (the load loop counts it as an error).

Used by `bench_load.py --client light`; `tests/e2e/test_light_client.py` runs it against a real server.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx2
import msgspec

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
CLIENT_INFO = {"name": "molar-bench-light", "version": "1"}

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class CallFailed(Exception):
    """A request whose answer was not a good one (status, JSON-RPC error, `isError`, wrong shape)."""


class LightClient:
    """One MCP client (one session on 2025-11-25) over its own `httpx2.AsyncClient` (its own connection)."""

    def __init__(
        self, url: str, era: str, *, timeout: float = 120, transport: httpx2.AsyncBaseTransport | None = None
    ) -> None:
        if era not in (MODERN, LEGACY):
            raise ValueError(f"era must be {MODERN} or {LEGACY}, not {era!r}")
        self.url = url
        self.era = era
        self.session_id: str | None = None
        self.answered_as: set[str] = set()  # the content types of the answers (JSON, SSE)
        self._ids = itertools.count(1)
        self._http = httpx2.AsyncClient(timeout=timeout, trust_env=False, transport=transport)
        self._meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
            "io.modelcontextprotocol/clientCapabilities": {},
        }

    async def __aenter__(self) -> LightClient:
        try:
            await self.open()
        except BaseException:
            await self._http.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.session_id is not None:  # the session ends with the client (2025-11-25 §Session Management)
                await self._http.delete(self.url, headers=self._headers(None, None))
        finally:
            await self._http.aclose()

    async def open(self) -> None:
        """`server/discover` (2026-07-28), or the `initialize` handshake (2025-11-25)."""
        if self.era == MODERN:
            result = await self.request("server/discover", {})
            if "serverInfo" not in result and "capabilities" not in result:
                raise CallFailed(f"server/discover: no server info in {list(result)}")
            return
        result = await self.request(
            "initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": CLIENT_INFO}
        )
        if result.get("protocolVersion") != LEGACY:
            raise CallFailed(f"initialize: the server answered protocol {result.get('protocolVersion')!r}")
        if self.session_id is None:
            raise CallFailed("initialize: no Mcp-Session-Id in the answer")
        body = _encode({"jsonrpc": "2.0", "method": "notifications/initialized"})
        r = await self._http.post(self.url, content=body, headers=self._headers("notifications/initialized", None))
        if r.status_code != 202:
            raise CallFailed(f"notifications/initialized: HTTP {r.status_code}")

    def _headers(self, method: str | None, name: str | None) -> dict[str, str]:
        headers = {"accept": ACCEPT, "content-type": "application/json"}
        if self.era == MODERN:
            headers["mcp-protocol-version"] = MODERN
            if method is not None:
                headers["mcp-method"] = method
            if name is not None:
                headers["mcp-name"] = name
        elif self.session_id is not None:  # after initialize (whose own request carries neither)
            headers["mcp-session-id"] = self.session_id
            headers["mcp-protocol-version"] = LEGACY
        return headers

    async def request(self, method: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        """One JSON-RPC request; its `result` (raises `CallFailed` on anything else)."""
        rid = next(self._ids)
        if self.era == MODERN:
            params = {**params, "_meta": self._meta}
        body = _encode({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        request = self._http.build_request("POST", self.url, content=body, headers=self._headers(method, name))
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code != 200:
                await response.aread()
                raise CallFailed(f"{method}: HTTP {response.status_code}: {response.text[:200]}")
            if method == "initialize":
                self.session_id = response.headers.get("mcp-session-id")
            kind = response.headers.get("content-type", "").partition(";")[0].strip()
            self.answered_as.add(kind)
            if kind == "application/json":
                message = _decode(await response.aread())
            elif kind == "text/event-stream":
                message = await _answer_in_stream(response, rid)
            else:
                raise CallFailed(f"{method}: unexpected content type {kind!r}")
        finally:
            await response.aclose()
        if not isinstance(message, dict) or message.get("id") != rid:
            raise CallFailed(f"{method}: an answer to another request: {str(message)[:200]}")
        if "error" in message:
            raise CallFailed(f"{method}: error {message['error']}")
        result = message.get("result")
        if not isinstance(result, dict):
            raise CallFailed(f"{method}: no result in {str(message)[:200]}")
        return result

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """`tools/call`: the result, which must not be an error and must carry text content."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments}, name)
        if result.get("isError"):
            raise CallFailed(f"{name}: isError: {str(result.get('content'))[:200]}")
        content = result.get("content")
        if not content or content[0].get("type") != "text" or not content[0].get("text"):
            raise CallFailed(f"{name}: no text content in {str(result)[:200]}")
        return result

    async def aclose(self) -> None:
        await self.__aexit__()


async def _answer_in_stream(response: httpx2.Response, rid: int) -> Any:
    """The JSON-RPC answer to request `rid` in an SSE response (notifications before it are skipped). The
    stream is read to its end (the server closes it after the answer): a response left unread closes its
    connection, and the next request would open another."""
    answer = None
    async for sse in httpx2.EventSource(response):
        if sse.event != "message" or not sse.data:  # the priming event of a resumable stream has no data
            continue
        message = _decode(sse.data)
        if answer is None and isinstance(message, dict) and ("result" in message or "error" in message):
            answer = message
    if answer is None:
        raise CallFailed(f"the event stream ended without an answer to request {rid}")
    return answer


def list_rows(result: dict[str, Any]) -> list[str]:
    """The short ids a `list_traces` result lists (rows as arrays under `columns`, short_id first; or, from
    a checkout before that, objects under `items`). Raises `CallFailed` when there are none."""
    listed = result.get("structuredContent") or {}
    if "rows" in listed:
        rows = [str(r[0]) for r in listed["rows"]]
    else:
        rows = [str(r["short_id"]) for r in listed.get("items", [])]
    if not rows:
        raise CallFailed(f"list_traces: no rows in {str(listed)[:200]}")
    return rows


def check_trace(result: dict[str, Any], short_id: str) -> None:
    """A `get_trace` result must be about the trace asked for."""
    if short_id not in result["content"][0]["text"]:
        raise CallFailed(f"get_trace {short_id}: the answer does not name the trace")
