"""The debugger chat's `ToolRunner` over our own MCP server: a chat's model calls exactly the tools an IDE
agent calls (list_traces, get_trace with its steps and pages), through the SDK's in-memory client, so
their answers are the same token-budgeted, masked text.

The only module besides `compose` that knows both the debugger's port and the MCP server; imported by
`compose` alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx2
from mcp.client import Client
from mcp.types import CallToolResult, TextContent
from starlette.types import ASGIApp

from molar_mcp.api.reads import INLINE_READS_EXTENSION
from molar_mcp.api.telemetry import IN_PROCESS_EXTENSION
from molar_mcp.client import TraceClient
from molar_mcp.client.asgi_stream import StreamingASGITransport
from molar_mcp.debugger.chat import ToolResult, ToolRunner
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.state import ClientFactory
from molar_mcp.models.chats import ToolDef

EMBEDDED_BASE_URL: Final = "http://molar.embedded"
# debug_run would start a chat inside the chat; tools that change things (replays) are not a debugger's
# to call on its own. A chat's model gets the read-only tools.
EXCLUDED: Final = frozenset({"debug_run"})


def in_process_client_factory(
    api_app: ASGIApp, *, org_id: str | None = None, inline_reads: bool = False
) -> ClientFactory:
    """Clients of the in-process /v1 app through an ASGI transport: the same HTTP requests as remote mode,
    streamed (so SSE works), without a socket. With `org_id`, every request acts in that org; with
    `inline_reads`, the app reads the store on the event loop rather than in a worker thread (api/reads.py)."""
    headers = {"x-molar-org": org_id} if org_id else None
    extensions: dict[str, Any] = {IN_PROCESS_EXTENSION: {}}
    if inline_reads:
        extensions[INLINE_READS_EXTENSION] = {}

    @asynccontextmanager
    async def factory() -> AsyncIterator[TraceClient]:
        transport = StreamingASGITransport(api_app, extensions=extensions)
        async with httpx2.AsyncClient(transport=transport, base_url=EMBEDDED_BASE_URL, headers=headers) as http:
            yield TraceClient(http, in_process=transport)

    return factory


class McpToolRunner:
    """`ToolRunner` over a connected MCP client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def list_tools(self) -> list[ToolDef]:
        listed = await self._client.list_tools()
        return [
            ToolDef(name=t.name, description=t.description or "", input_schema=t.input_schema)
            for t in listed.tools
            if t.name not in EXCLUDED and t.annotations is not None and t.annotations.read_only_hint
        ]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        result = await self._client.call_tool(name, arguments)
        return ToolResult(text=result_text(result), is_error=bool(result.is_error))


def result_text(result: CallToolResult) -> str:
    """The text blocks (our tools' compact text already says what the structured content says); the
    structured content itself when a result has no text."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, separators=(",", ":"))
    return "(empty result)"


class ChatTools:
    """The chats' `ToolRunnerFactory`: for one org, our MCP server over the in-process /v1 app, with an
    in-memory client.

    Bound after the /v1 app is built (the app's context holds this factory), to the app without
    authentication: the chat's caller was authenticated by the request that asked the question, and the
    tools act in that caller's org only (`x-molar-org`), as `serve`'s internal credential would.
    """

    def __init__(self) -> None:
        self._api_app: ASGIApp | None = None

    def bind(self, api_app: ASGIApp) -> None:
        self._api_app = api_app

    @asynccontextmanager
    async def __call__(self, org_id: str) -> AsyncIterator[ToolRunner]:
        if self._api_app is None:
            raise RuntimeError("ChatTools is not bound to a /v1 app yet")
        server = create_mcp_server(in_process_client_factory(self._api_app, org_id=org_id))
        async with Client(server) as client:
            yield McpToolRunner(client)
