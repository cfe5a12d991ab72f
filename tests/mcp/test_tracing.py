"""The MCP SDK's OpenTelemetry span per request: entered when a tracer is installed or the request carries
trace context, skipped otherwise (mcp/tracing.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from molar_mcp.compose import open_embedded
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.tracing import SDK_SPANS_CLASS, SpansWhenTraced, carries_trace_context, tracer_installed

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# A tracer provider is process-wide and set once, so the installed case runs in a process of its own. The
# server is built before the provider is installed: the check is made per request, not when it is built.
SPANS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import anyio
    from mcp.client import Client
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from molar_mcp.compose import open_embedded
    from molar_mcp.mcp.server import create_mcp_server

    async def main() -> None:
        with open_embedded(Path(sys.argv[1])) as embedded:
            server = create_mcp_server(embedded.client_factory())
            async with Client(server) as client:
                await client.call_tool("list_traces", {})
                exporter = InMemorySpanExporter()
                provider = TracerProvider()
                provider.add_span_processor(SimpleSpanProcessor(exporter))
                trace.set_tracer_provider(provider)
                await client.call_tool("list_traces", {"status": "failed"})
        print(json.dumps([span.name for span in exporter.get_finished_spans()]))

    anyio.run(main)
    """
)


def test_with_no_tracer_installed_a_request_without_trace_context_skips_the_span() -> None:
    assert not tracer_installed()  # nothing in the test process installs one
    assert not carries_trace_context(None)
    assert not carries_trace_context({})
    assert not carries_trace_context({"progressToken": 1, "io.modelcontextprotocol/protocolVersion": "2026-07-28"})


def test_a_request_that_carries_trace_context_keeps_the_span() -> None:
    assert carries_trace_context({"traceparent": TRACEPARENT})
    assert carries_trace_context({"progressToken": 1, "traceparent": TRACEPARENT, "tracestate": "a=b"})


def test_a_tracer_installed_while_the_server_runs_gets_a_server_span_a_tool_call(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SPANS_SCRIPT, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout.strip().splitlines()[-1])
    assert names.count("tools/call list_traces") == 1, names  # the call after the tracer was installed


def test_the_server_puts_the_sdk_span_behind_the_check(tmp_path: Path) -> None:
    # The SDK's middleware is found by its class's name; a release that renames it must fail here, not
    # leave every request paying for a span nobody records.
    with open_embedded(tmp_path / "data") as embedded:
        server = create_mcp_server(embedded.client_factory())
        chain = server.middleware
        wrapped = [m for m in chain if isinstance(m, SpansWhenTraced)]
        assert len(wrapped) == 1
        assert type(wrapped[0].spans).__name__ == SDK_SPANS_CLASS
        assert not [m for m in chain if type(m).__name__ == SDK_SPANS_CLASS]
