"""A real OTel-instrumented Python agent replayed through the command driver: its run exports spans with
the OpenTelemetry SDK's OTLP/HTTP exporter; the recorded run fails on a tool result; the replay edits
that tool result, re-runs the agent in the sandbox, and the child trace is built from the spans the
agent exported with `molar.replay_id` — and passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from molar_mcp.ingest.formats.agent_spans import run_status, scenario_of, trace_events
from molar_mcp.ingest.formats.otlp import decode_protobuf, decode_spans
from molar_mcp.models.replays import ReplayOrigin, ReplayRequest
from molar_mcp.replay.apps import free_port
from molar_mcp.replay.projects import ReplayRoots
from molar_mcp.replay.service import ReplayService
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.port import NewTrace
from molar_mcp.store.replays import ReplayStore
from tests.replays.test_projects import file_diff, git, make_repo, manifest

pytestmark = pytest.mark.e2e

AGENT = """\
import json, os
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "refund-agent"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
tracer = provider.get_tracer("refund-agent")
from_step = int(os.environ.get("MOLAR_FROM_STEP", "1"))
tool_results = json.load(open("tool_results.json"))
failed = False
with tracer.start_as_current_span("agent.run", attributes={"gen_ai.agent.name": "refunds"}) as run:
    for step, (tool, result) in enumerate(tool_results.items(), start=1):
        with tracer.start_as_current_span(f"execute_tool {tool}") as span:
            span.set_attribute("gen_ai.operation.name", "execute_tool")
            span.set_attribute("gen_ai.tool.name", tool)
            span.set_attribute("replayed", step >= from_step)
            if "error" in result:
                span.set_status(trace.Status(trace.StatusCode.ERROR, result["error"]))
                failed = True
    if failed:
        run.set_status(trace.Status(trace.StatusCode.ERROR, "a tool failed"))
provider.shutdown()
print("agent done", "failed" if failed else "ok")
"""
BROKEN = json.dumps({"lookup_order": {"id": 7}, "refund": {"error": "amount over the limit"}}, indent=1) + "\n"
FIXED = json.dumps({"lookup_order": {"id": 7}, "refund": {"ok": True}}, indent=1) + "\n"


def record_parent(repo: Path, store: SqliteTraceStore, commit: str, tmp: Path) -> str:
    """Run the agent for real, its exporter pointed at an OTLP sink on this machine; store its spans as
    the OTLP receiver lays them out, with the origin the resource would name."""
    sink = tmp / "sink"
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    command = [
        sys.executable,
        "-m",
        "molar_mcp.replay.otlp_sink",
        str(sink),
        str(port),
        "--",
        sys.executable,
        "agent.py",
    ]
    subprocess.run(command, cwd=repo, env=env, check=False, capture_output=True, timeout=120)
    spans = [s for body in sorted(sink.iterdir()) for s in decode_spans(decode_protobuf(body.read_bytes())).spans]
    assert spans, "the agent exported no spans"
    slug, title = scenario_of(spans)
    trace_id, _ = store.add_trace(
        LOCAL_ORG_ID,
        NewTrace(scenario_slug=slug, scenario_title=title, status=run_status(spans), events=trace_events(spans)),
        {},
    )
    origin = ReplayOrigin(kind="command", repo_path=str(repo), commit=commit)
    ReplayStore(store.db).record_origin(LOCAL_ORG_ID, trace_id, origin)
    return trace_id


def test_an_otel_agent_replayed_with_an_edited_tool_result_passes(tmp_path: Path) -> None:
    root = tmp_path / "roots"
    repo = root / "agent"
    commit = make_repo(
        repo, manifest=manifest(f"{sys.executable} agent.py"), files={"agent.py": AGENT, "tool_results.json": BROKEN}
    )
    store = SqliteTraceStore(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    service = ReplayService(store, ReplayStore(store.db), {}, roots=ReplayRoots([root]), workdir=work)
    try:
        parent = record_parent(repo, store, commit, tmp_path)
        detail = store.get_trace(LOCAL_ORG_ID, parent)
        assert detail.status == "failed"
        failing = next(s.step for s in detail.steps if s.ok is False)
        edit = ("tool_results.json", file_diff("tool_results.json", BROKEN, FIXED))
        request = ReplayRequest.model_validate(
            {"from_step": failing, "edits": {"source_diffs": [{"path": edit[0], "diff": edit[1]}]}}
        )
        status = service.wait(LOCAL_ORG_ID, service.enqueue(LOCAL_ORG_ID, parent, request).id, timeout_s=120)

        assert (status.status, status.trace_status) == ("succeeded", "passed"), (status.message, status.log_tail)
        child = store.get_trace(LOCAL_ORG_ID, status.replay_trace_id or "")
        assert child.parent_trace_id == detail.id
        titles = [s.title or "" for s in child.steps]
        assert any("refund" in t for t in titles), titles  # the steps are the agent's spans
        diff = service.diff(LOCAL_ORG_ID, parent, child.id, "steps")
        changed = [s for s in diff.steps if s.ok_a is False and s.ok_b is True]
        assert changed, diff.steps
        assert os.listdir(work) == []
        assert git(repo, "status", "--porcelain") == ""
    finally:
        service.close()
        store.close()
