"""The Playwright driver (`kind = "playwright"`): re-run exactly the recorded test.

Playwright cannot start a test in the middle, so the whole test re-runs — `--project`, its file, `-g` its
title path — with tracing on and one worker, no retries; `from_step` only says where the diff and the
verdict focus. The run's JSON report and trace.zip are collected from the tree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from molar_mcp.models import Event
from molar_mcp.models.replays import ReplayOrigin
from molar_mcp.replay.drivers.project import read_inside
from molar_mcp.replay.projects import NotRegistered, Project

REPORT = ".molar-replay-report.json"
STEPS_REPORTER = str(Path(__file__).with_name("steps_reporter.js"))
OUTPUT_DIR = ".molar-replay-results"
MAX_TRACE_BYTES = 100 * 1024 * 1024
MAX_REPORT_BYTES = 20 * 1024 * 1024


def check_origin(origin: ReplayOrigin) -> None:
    if not origin.file or not origin.title_path:
        raise NotRegistered("the trace does not name its test (file and title path), so it cannot be re-run")


def playwright_argv(project: Project, origin: ReplayOrigin) -> list[str]:
    argv = [*project.replay.command]
    if origin.project:
        argv.append(f"--project={origin.project}")  # `--project` takes several values: bind this one
    title = " ".join(origin.title_path)
    assert origin.file is not None
    argv += [
        origin.file,
        f"--grep={re.escape(title)}",
        "--trace",
        "on",
        "--retries",
        "0",
        "--workers",
        "1",
        "--reporter",
        f"list,{STEPS_REPORTER}",
        "--output",
        OUTPUT_DIR,
    ]
    return argv


def playwright_env() -> dict[str, str]:
    return {"MOLAR_STEPS_OUTPUT": REPORT, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CI": "1"}


def collect(tree: Path) -> dict[str, bytes]:
    """The JSON report and the (first) trace.zip the run wrote, read safely (see `read_inside`)."""
    found: dict[str, bytes] = {}
    report = read_inside(tree, REPORT, MAX_REPORT_BYTES)
    if report is not None:
        found["report"] = report
    results = tree / OUTPUT_DIR
    if results.is_dir() and not results.is_symlink():
        for path in sorted(results.glob("*/trace.zip")):
            data = read_inside(tree, str(path.relative_to(tree)), MAX_TRACE_BYTES)
            if data is not None:
                found["trace"] = data
                break
    return found


def report_result(report: bytes) -> dict[str, Any] | None:
    """The one test's result from the steps reporter's JSON (the last attempt); None when no test ran."""
    try:
        data = json.loads(report)
    except ValueError:
        return None
    tests = data.get("tests") if isinstance(data, dict) else None
    if not isinstance(tests, list) or not tests or not isinstance(tests[-1], dict):
        return None
    result: dict[str, Any] = tests[-1]
    return result


def report_events(result: dict[str, Any], *, ts: int) -> list[Event]:
    """A test result's top-level steps as trace steps (numbered 1… in order, as the store numbers them):
    `step.start`, an `error` for a step that failed, `step.end` with its outcome and duration."""
    events: list[Event] = []

    def add(kind: str, step: int, summary: str, ok: bool | None = None, **payload: Any) -> None:
        events.append(
            Event(seq=len(events), ts=ts, kind=kind, step_id=str(step), ok=ok, message=summary[:400], payload=payload)
        )

    for number, step in enumerate(result.get("steps") or [], start=1):
        title = str(step.get("title") or f"step {number}")
        add("step.start", number, title, title=title)
        error = step.get("error")
        if error:
            first = strip_ansi(error).strip().splitlines()[0] if error.strip() else "failed"
            add("error", number, first, ok=False, name="Error", message=strip_ansi(error)[:4000])
        add(
            "step.end",
            number,
            f"{title}: {'failed' if error else 'passed'}",
            ok=not error,
            duration_ms=step.get("duration_ms"),
        )
    return events


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def failure_line(result: dict[str, Any]) -> str | None:
    errors = result.get("errors") or []
    if not errors:
        return None
    lines = strip_ansi(str(errors[0].get("message", ""))).strip().splitlines()
    return lines[0][:500] if lines else None
