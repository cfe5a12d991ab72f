"""pytest plugin: every failed test's result and Playwright trace go to Molar as the session runs.

Off unless `--molar-url URL` or `MOLAR_URL` is set (the API key: `--molar-api-key` or `MOLAR_API_KEY`,
a key with the `mcp:trace:write` scope). On, the session becomes a Molar run (`POST /v1/runs`, kind
`pytest`, with commit, branch, PR and CI job from git and the CI's variables) and each failed test —
or every test with `--molar-upload all` — is uploaded to `POST /v1/traces/ingest`: the trace.zip that
pytest-playwright keeps (`--tracing retain-on-failure` or `on`), its screenshots, and a `result` with
the test's identity (file, line, title path), status, errors and captured output.

Uploads run on background threads, bounded and retried; a Molar that is down never fails the session
and holds it up at most `--molar-flush-timeout` seconds at the end, then says so in the summary.
Registered as the `molar` pytest11 entry point: `-p no:molar` turns it off entirely.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

    from molar_mcp.integrations.uploader import FileParts, Uploader

_MAX_TEXT = 64 * 1024  # characters of a traceback or of captured output sent with one result
_MAX_FILE = 25 * 1024 * 1024
_CONTENT_TYPES = {".zip": "application/zip", ".png": "image/png", ".jpeg": "image/jpeg", ".webm": "video/webm"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("molar", "Molar MCP: upload failed tests and their Playwright traces")
    group.addoption(
        "--molar-url",
        default=None,
        help="Molar server to upload to (env MOLAR_URL); the plugin is off without one",
    )
    group.addoption("--molar-api-key", default=None, help="API key with the mcp:trace:write scope (env MOLAR_API_KEY)")
    group.addoption("--molar-run-name", default=None, help="name of the Molar run (env MOLAR_RUN_NAME)")
    group.addoption(
        "--molar-upload",
        choices=("failed", "all"),
        default="failed",
        help="which tests to upload: failed (default) or all",
    )
    group.addoption(
        "--molar-flush-timeout",
        type=float,
        default=30.0,
        help="seconds the session waits at its end for uploads still under way (default 30)",
    )


def pytest_configure(config: pytest.Config) -> None:
    url = config.getoption("molar_url") or os.environ.get("MOLAR_URL")
    if not url:
        return
    api_key = config.getoption("molar_api_key") or os.environ.get("MOLAR_API_KEY") or None
    config.pluginmanager.register(MolarSession(config, url, api_key), "molar-session")


@dataclass
class _Attempt:
    reports: list[pytest.TestReport] = field(default_factory=list)


_ATTEMPT = pytest.StashKey[_Attempt]()


@dataclass
class _Outcome:
    nodeid: str
    status: str
    link: str | None = None
    error: str | None = None


class MolarSession:
    """One pytest session as one Molar run."""

    def __init__(self, config: pytest.Config, url: str, api_key: str | None) -> None:
        from molar_mcp.integrations.uploader import Limits, Uploader  # httpx2 only when the plugin is on

        self.config = config
        self.url = url.rstrip("/")
        self.uploader: Uploader = Uploader(url, api_key, Limits())
        self.upload_all = config.getoption("molar_upload") == "all"
        self.flush_timeout = float(config.getoption("molar_flush_timeout"))
        self.run_name = config.getoption("molar_run_name") or os.environ.get("MOLAR_RUN_NAME")
        self.run_id: str | None = os.environ.get("MOLAR_RUN_ID") or None
        self.run_short: str | None = None
        self.created_run = False
        self.run_error: str | None = None
        self.finish_error: str | None = None
        self._run_ready = threading.Event()
        self.source: dict[str, Any] = {"repo": {}}
        self.uploaded: list[_Outcome] = []
        self.not_uploaded: list[_Outcome] = []
        self.left_behind = 0
        self._lock = threading.Lock()

    # -- session ---------------------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from molar_mcp.integrations.source import run_source

        self.source = run_source(os.environ, self.config.rootpath)
        if self.run_id:
            self._run_ready.set()
        else:
            self.uploader.submit(self._create_run)

    def _create_run(self) -> None:
        try:
            body: dict[str, Any] = {"kind": "pytest", **self.source}
            if self.run_name:
                body["name"] = self.run_name
            answer = self.uploader.post_json("/v1/runs", body)
            if answer.ok and isinstance(answer.body.get("id"), str):
                self.run_id = answer.body["id"]
                self.run_short = answer.body.get("short_id")
                self.created_run = True
            elif not answer.skipped:
                self.run_error = answer.error
        finally:
            self._run_ready.set()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report: pytest.TestReport = yield
        try:
            self._observe(item, report)
        except Exception as exc:
            self.not_uploaded.append(_Outcome(item.nodeid, "?", error=f"could not read the result: {exc}"))
        return report

    def _observe(self, item: pytest.Item, report: pytest.TestReport) -> None:
        if report.when == "setup":
            item.stash[_ATTEMPT] = _Attempt()  # pytest-rerunfailures runs an item again: a new attempt
        attempt = item.stash.setdefault(_ATTEMPT, _Attempt())
        attempt.reports.append(report)
        if report.when != "teardown":
            return
        del item.stash[_ATTEMPT]
        result = self._result(item, attempt.reports)
        failing = result["status"] not in (result["expected_status"], "skipped")
        if not (failing or self.upload_all):
            return
        files = self._artifacts(report)
        self.uploader.submit(lambda: self._upload(item.nodeid, result, files, failing))

    def _result(self, item: pytest.Item, reports: list[pytest.TestReport]) -> dict[str, Any]:
        """The `result` field of POST /v1/traces/ingest for one attempt of `item`."""
        failed = [r for r in reports if r.failed]
        call = next((r for r in reports if r.when == "call"), None)
        skipped = next((r for r in reports if r.skipped), None)
        xfail = any(hasattr(r, "wasxfail") for r in reports)
        if failed:
            status = "failed"
        elif skipped is not None:
            status = "failed" if xfail else "skipped"  # an xfail is a failure that was expected
        else:
            status = "passed"
        rel_file, line, _ = item.location
        parts = item.nodeid.split("::")
        last = reports[-1]
        result: dict[str, Any] = {
            "project": "pytest",
            "file": Path(rel_file).as_posix(),
            "line": (line or 0) + 1,
            "title_path": parts[1:] or [item.name],
            "status": status,
            # an xfail that failed was expected to; an xfail that passed (not strict) is no failure either
            "expected_status": "failed" if xfail and status == "failed" else "passed",
            "retry": int(getattr(item, "execution_count", 1)) - 1,
            "duration_ms": round(sum(r.duration for r in reports) * 1000),
            "errors": [_error(r) for r in failed],
            "stdout": [last.capstdout[:_MAX_TEXT]] if last.capstdout else [],
            "stderr": [last.capstderr[:_MAX_TEXT]] if last.capstderr else [],
            "repo": dict(self.source.get("repo", {})),
            "test_id": item.nodeid,
        }
        if call is not None and call.start:
            from datetime import UTC, datetime

            result["start_time"] = datetime.fromtimestamp(call.start, UTC).isoformat()
        for key in ("commit", "branch"):
            if key in self.source:
                result[key] = self.source[key]
        repo_path = self.source.get("repo", {}).get("path")
        if repo_path:
            root = os.path.relpath(self.config.rootpath, repo_path)
            result["root_dir"] = Path(root).as_posix()
        return result

    def _artifacts(self, report: pytest.TestReport) -> list[tuple[str, Path]]:
        """(kind, path) of what pytest-playwright kept for this test (its teardown report's
        `playwright_*` user properties, paths relative to where pytest was started)."""
        base = self.config.invocation_params.dir
        found: list[tuple[str, Path]] = []
        for name, value in report.user_properties:
            if isinstance(name, str) and name.startswith("playwright_") and isinstance(value, str):
                found.append((name.removeprefix("playwright_"), base / value))
        return found

    def _upload(self, nodeid: str, result: dict[str, Any], files: list[tuple[str, Path]], failing: bool) -> None:
        self._run_ready.wait(self.uploader.limits.timeout_s * (self.uploader.limits.retries + 2))
        form: dict[str, str] = {}
        parts: FileParts = []
        missing: list[dict[str, str]] = []
        for kind, path in files:
            try:
                size = path.stat().st_size
                if size > _MAX_FILE:
                    missing.append({"name": path.name, "reason": f"{size} bytes, over the {_MAX_FILE}-byte limit"})
                    continue
                data = path.read_bytes()
            except OSError as exc:
                missing.append({"name": path.name, "reason": exc.strerror or str(exc)})
                continue
            content_type = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
            if kind == "trace" and not any(name == "file" for name, _ in parts):
                parts.insert(0, ("file", (path.name, data, content_type)))
                form["format"] = "playwright-trace"
            else:
                parts.append(("attachment", (path.name, data, content_type)))
        if missing:
            result["missing_attachments"] = missing
        encoded = _json(result).encode()
        if "format" not in form:  # no trace (a failure outside the browser): the result is the file
            parts.insert(0, ("file", ("result.json", encoded, "application/json")))
            form["format"] = "playwright-result"
        form["result"] = encoded.decode()
        if self.run_id:
            form["run_id"] = self.run_id
        answer = self.uploader.post_form("/v1/traces/ingest", form, parts, idempotency_key=str(uuid.uuid4()))
        with self._lock:
            if not answer.ok:
                self.not_uploaded.append(_Outcome(nodeid, result["status"], error=answer.error))
                return
            link = None
            if failing:
                link = answer.body.get("url") or f"{self.url}/v1/traces/{answer.body.get('trace_id')}/report.md"
            self.uploaded.append(_Outcome(nodeid, result["status"], link=link))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.left_behind = self.uploader.flush(self.flush_timeout)
        if self.created_run and self.run_id and not self.left_behind:
            self.uploader.limits.retries = 1
            status = {0: "passed", 1: "failed", 5: "passed"}.get(int(exitstatus), "errored")
            answer = self.uploader.post_json(f"/v1/runs/{self.run_id}/finish", {"status": status})
            if not answer.ok and not answer.skipped:
                self.finish_error = f"could not finish run {self.run_id}: {answer.error}"
        self.uploader.close()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        write = terminalreporter.write_line
        terminalreporter.write_sep("-", "Molar")
        run = f" to run {self.run_short or self.run_id} ({self.url}/v1/runs/{self.run_id})" if self.run_id else ""
        write(f"{len(self.uploaded)} result(s) uploaded{run}")
        for outcome in self.uploaded:
            if outcome.link:
                write(f"  {outcome.nodeid} {outcome.status} → {outcome.link}")
        common = self.uploader.refused or self.uploader.unreachable  # one cause for every failure: said once
        if self.run_error and not common:
            write(f"molar: could not create a run: {self.run_error}")
        if self.finish_error:
            write(f"molar: {self.finish_error}")
        if self.left_behind:
            write(
                f"molar: {self.left_behind} upload(s) still under way after {self.flush_timeout:g} s: stopped waiting"
            )
        if self.not_uploaded:
            why = self.uploader.refused
            if why is None and self.uploader.unreachable:
                why = f"Molar at {self.url} did not answer ({self.uploader.last_error})"
            why = why or self.not_uploaded[0].error
            write(
                f"molar: {len(self.not_uploaded)} result(s) were not uploaded: {why}. "
                "The tests themselves are unaffected."
            )
            for outcome in [] if common else self.not_uploaded[:5]:
                if outcome.error != why:
                    write(f"  {outcome.nodeid}: {outcome.error}")


def _error(report: pytest.TestReport) -> dict[str, str]:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = report.longreprtext
    message = getattr(crash, "message", None) or (text.strip().splitlines() or ["(no message)"])[-1]
    if report.when != "call":
        message = f"error in {report.when}: {message}"
    return {"message": message[:_MAX_TEXT], "stack": text[:_MAX_TEXT]}


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
