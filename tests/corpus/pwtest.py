"""The corpus's Playwright Test runs (source `pwtest`): `npx playwright test -c corpus.config.js` in
tests/playwright_project (specs in its corpus/ folder) against the task board and the clinic, with
molar-playwright-reporter/record writing what the reporter would upload. `record_pwtest(out_dir)` keeps
each attempt as `<out_dir>/<app>/<name>/` (result.json, trace.zip), named by the test's title path."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.apps import board, clinic
from tests.apps.server import serve_app

PROJECT = Path(__file__).resolve().parents[1] / "playwright_project"
# Fields of a result that describe the recording machine (checkout path, commit), not the run.
_MACHINE = ("repo", "commit", "branch", "root_dir", "config_file")


def _grep(only: set[str] | None) -> list[str]:
    """`--grep` for the chosen cases: a test's full title ends with "<app> <name>" (its describe block and title)."""
    if not only:
        return []
    titles = sorted(" ".join(case_id.split("/")[1:]) for case_id in only)
    return ["--grep", "|".join(f"{re.escape(t)}$" for t in titles)]


def record_pwtest(out_dir: Path, only: set[str] | None = None) -> dict[str, str]:
    """Run every corpus spec once (or the case ids in `only`); returns {case id: the attempt's status}."""
    if not (PROJECT / "node_modules" / "@playwright" / "test").is_dir():
        raise SystemExit("tests/playwright_project has no node_modules: run `bash scripts/test` (npm ci) first")
    outcome: dict[str, str] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="molar-corpus-pw-") as tmp:
        board_url = stack.enter_context(serve_app(board.create_app))
        clinic_url = stack.enter_context(serve_app(clinic.create_app))
        record = Path(tmp) / "record"
        env = {
            **os.environ,
            "BOARD_URL": board_url,
            "CLINIC_URL": clinic_url,
            "MOLAR_RECORD_DIR": str(record),
            "PW_OUTPUT_DIR": str(Path(tmp) / "test-results"),
            "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
            "FORCE_COLOR": "0",
        }
        done = subprocess.run(
            ["npx", "--no-install", "playwright", "test", "-c", "corpus.config.js", *_grep(only)],
            cwd=PROJECT,
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode not in (0, 1) or not (record / "run.json").is_file():
            raise SystemExit(f"npx playwright test exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        for attempt in sorted(p for p in record.iterdir() if p.is_dir()):
            recorded = json.loads((attempt / "result.json").read_text(encoding="utf-8"))
            result = recorded["result"]
            for name in _MACHINE:
                result.pop(name, None)
            app, name = result["title_path"][-2:]
            target = out_dir / app / name
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            recorded["attachments"] = []  # no screenshots or error-context files: the trace carries the failure
            (target / "result.json").write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n", "utf-8")
            if recorded.get("trace"):
                shutil.copy(attempt / recorded["trace"], target / "trace.zip")
            outcome[f"pwtest/{app}/{name}"] = str(result["status"])
    return outcome
