"""`molar-mcp serve` runs on uvloop where it is installed (a dependency on Linux and macOS): uvicorn picks it
by itself, and it takes ~10% of the server's CPU off a live append of 100 events (bench/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import start_server, stop_server

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps (Linux)")


def test_serve_runs_its_event_loop_on_uvloop(tmp_path: Path) -> None:
    served = start_server(tmp_path / "data")
    try:
        mapped = Path(f"/proc/{served.process.pid}/maps").read_text()
    finally:
        stop_server(served)
    # uvloop's loop is its C extension `uvloop/loop.*.so`, loaded only when a uvloop loop is made.
    assert any("/uvloop/loop." in line for line in mapped.splitlines()), "serve did not start a uvloop loop"
