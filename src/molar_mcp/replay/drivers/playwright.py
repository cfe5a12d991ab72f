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

from molar_mcp.models.replays import ReplayOrigin
from molar_mcp.replay.drivers.project import read_inside
from molar_mcp.replay.projects import NotRegistered, Project

REPORT = ".molar-replay-report.json"
OUTPUT_DIR = ".molar-replay-results"
MAX_TRACE_BYTES = 100 * 1024 * 1024
MAX_REPORT_BYTES = 20 * 1024 * 1024


def check_origin(origin: ReplayOrigin) -> None:
    if not origin.file or not origin.title_path:
        raise NotRegistered("the trace does not name its test (file and title path), so it cannot be re-run")


def playwright_argv(project: Project, origin: ReplayOrigin) -> list[str]:
    argv = [*project.replay.command]
    if origin.project:
        argv += ["--project", origin.project]
    title = " ".join(origin.title_path)
    assert origin.file is not None
    argv += [
        origin.file,
        "-g",
        re.escape(title),
        "--trace",
        "on",
        "--retries",
        "0",
        "--workers",
        "1",
        "--reporter",
        "json",
        "--output",
        OUTPUT_DIR,
    ]
    return argv


def playwright_env() -> dict[str, str]:
    return {"PLAYWRIGHT_JSON_OUTPUT_NAME": REPORT, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CI": "1"}


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


def test_result(report: bytes) -> dict[str, Any] | None:
    """The one test's result from the JSON report: status, duration, errors; None when no test ran."""
    try:
        data = json.loads(report)
    except ValueError:
        return None
    results: list[dict[str, Any]] = []

    def walk(suite: dict[str, Any], titles: list[str]) -> None:
        for spec in suite.get("specs") or []:
            for test in spec.get("tests") or []:
                for result in test.get("results") or []:
                    results.append(
                        {
                            "project": test.get("projectName"),
                            "title_path": [*titles, spec.get("title", "")],
                            "status": result.get("status"),
                            "duration_ms": result.get("duration"),
                            "errors": [
                                {"message": str(e.get("message", ""))[:4000]} for e in result.get("errors") or []
                            ],
                        }
                    )
        for child in suite.get("suites") or []:
            nested = bool(child.get("title")) and child.get("file") != child.get("title")
            walk(child, [*titles, child.get("title", "")] if nested else titles)

    for suite in data.get("suites") or []:
        walk(suite, [])
    return results[-1] if results else None
