"""`serve --demo`'s agent run: an OTLP/JSON export the OpenTelemetry SDK recorded (scripts/record-agent-demo),
loaded once through the receiver's mapping; the generator makes the shipped file again."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest

from molar_mcp.compose import Embedded, load_agent_demo
from molar_mcp.demo.agent_run import DEMO_FILE, DEMO_START_NS, record_refund_run

pytestmark = pytest.mark.anyio


def without_sdk_version(body: dict[str, Any]) -> dict[str, Any]:
    for rs in body["resourceSpans"]:
        rs["resource"]["attributes"] = [a for a in rs["resource"]["attributes"] if a["key"] != "telemetry.sdk.version"]
    return body


def test_the_shipped_agent_run_is_what_the_generator_records() -> None:
    shipped = json.loads(resources.files("molar_mcp.demo").joinpath(DEMO_FILE).read_text(encoding="utf-8"))
    assert without_sdk_version(shipped) == without_sdk_version(record_refund_run(DEMO_START_NS))


async def test_the_demo_shows_a_failed_agent_run_whose_cause_is_the_failing_tool_call(
    embedded: Embedded, http: httpx2.AsyncClient
) -> None:
    # As `serve --demo` calls it: before the server's event loop runs (here: in a thread without one).
    assert (
        await anyio.to_thread.run_sync(load_agent_demo, embedded) == "loaded 1 agent run recorded through OpenTelemetry"
    )
    assert await anyio.to_thread.run_sync(load_agent_demo, embedded) == "agent run already loaded"
    items = (await http.get("/v1/traces", params={"source": "agent"})).json()["items"]
    assert [(t["scenario_slug"], t["status"], t["failure_signature"]) for t in items] == [
        ("support-desk.refund-agent", "failed", "step-4: tool lookup_order is_error")
    ]
    analysis = (await http.get(f"/v1/traces/{items[0]['id']}/analysis")).json()
    top = analysis["findings"][0]
    assert top["label"] == "tool_error"
    assert "lookup_order" in top["summary"]
