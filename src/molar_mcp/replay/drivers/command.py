"""The command driver (`kind = "command"`): re-run an agent (or any program) with the replay's edits.

The registered command runs in the project's tree at the recorded commit, with the edits applied, and
with, in its environment: `MOLAR_REPLAY_ID`, `MOLAR_PARENT_TRACE_ID`, `MOLAR_FROM_STEP`,
`MOLAR_EDITS_FILE` (JSON: `{from_step, source_diffs: [{path, diff}]}`) and the standard OpenTelemetry
settings pointing at an OTLP sink inside the sandbox (`otlp_sink.py`), with the resource attribute
`molar.replay_id`. The spans it exports become the child trace; without any, the child is the run itself
(its output and exit code).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from molar_mcp.replay.projects import Project

OTLP_PORT = 4318


def command_argv(project: Project, otlp_dir: Path) -> list[str]:
    """The registered command, under the OTLP sink."""
    return [
        sys.executable,
        "-m",
        "molar_mcp.replay.otlp_sink",
        str(otlp_dir),
        str(OTLP_PORT),
        "--",
        *project.replay.command,
    ]


def command_env(*, replay_id: str, parent_trace_id: str, from_step: int, edits_file: Path) -> dict[str, str]:
    endpoint = f"http://127.0.0.1:{OTLP_PORT}"
    return {
        "MOLAR_REPLAY_ID": replay_id,
        "MOLAR_PARENT_TRACE_ID": parent_trace_id,
        "MOLAR_FROM_STEP": str(from_step),
        "MOLAR_EDITS_FILE": str(edits_file),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_RESOURCE_ATTRIBUTES": f"molar.replay_id={replay_id},molar.parent_trace_id={parent_trace_id}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def edits_document(from_step: int, diffs: Sequence[tuple[str, str]]) -> str:
    return json.dumps({"from_step": from_step, "source_diffs": [{"path": p, "diff": d} for p, d in diffs]})
