"""`serve` writes no line per request unless asked (`--access-log`, `MOLAR_ACCESS_LOG=1`): the access log
costs every request its formatting and a write."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from molar_mcp.cli import build_parser
from tests.servers import start_server

ACCESS_LINE = '"GET /v1/traces HTTP/1.1" 200'


def _log_after_requests(tmp_path: Path, *extra: str) -> str:
    served = start_server(tmp_path / "data", *extra)
    try:
        for _ in range(3):
            assert httpx2.get(f"{served.base_url}/v1/traces", timeout=30).status_code == 200
        # The "Application startup complete" line is written before /healthz answers; an access line is
        # written before its response is sent. Anything still buffered is flushed when the process ends.
    finally:
        served.process.terminate()
        served.process.wait(30)
    port = served.base_url.rsplit(":", 1)[1]
    return (tmp_path / f"serve-{port}.log").read_text()


def test_serve_logs_no_line_per_request_by_default(tmp_path: Path) -> None:
    log = _log_after_requests(tmp_path)
    assert "Application startup complete" in log  # the server's own lines are there
    assert ACCESS_LINE not in log


def test_serve_logs_each_request_when_asked(tmp_path: Path) -> None:
    log = _log_after_requests(tmp_path, "--access-log")
    assert log.count(ACCESS_LINE) == 3, log[-2000:]


@pytest.mark.parametrize(("value", "on"), [("1", True), ("0", False), ("", False)])
def test_the_environment_turns_the_access_log_on(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv("MOLAR_ACCESS_LOG", value)
    assert build_parser().parse_args(["serve"]).access_log is on
