"""`molar-mcp stdio` on the embedded store answers `initialize` and `tools/list` before it imports the /v1 app
and opens the store (an IDE agent waits for both at every session start); the first tool call opens it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from tests.bundles import make_bundle
from tests.servers import child_env, molar_cli

pytestmark = [pytest.mark.e2e]

# Modules the first answers do not need; each costs start-up CPU (bench/bench_startup.py). A prefix matches
# the module and its submodules.
NOT_BEFORE_A_TOOL_CALL = (
    "molar_mcp.compose",
    "molar_mcp.store",
    "molar_mcp.api.app",
    "molar_mcp.auth",
    "molar_mcp.ingest",
    "molar_mcp.replay",
    "molar_mcp.debugger.detectors",
    "molar_mcp.serve_auth",
    "psycopg",
    "joserfc",
    "authlib",
    "google.protobuf",
    "uvloop",
)

# The CLI in a child, as `python -m molar_mcp` runs it; when stdin ends, the names it imported go to a file.
CHILD = """
import json, sys
from molar_mcp.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump(sorted(sys.modules), out)
sys.exit(code)
"""


def rpc(msg_id: int | None, method: str, params: dict[str, Any] | None = None) -> str:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if msg_id is not None:
        msg["id"] = msg_id
    return json.dumps(msg) + "\n"


def test_stdio_answers_initialize_and_tools_list_without_importing_the_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    modules_file = tmp_path / "modules.json"
    wire = rpc(
        1,
        "initialize",
        {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    )
    wire += rpc(None, "notifications/initialized") + rpc(2, "tools/list")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(modules_file), "stdio", "--data-dir", str(data_dir)],
        input=wire.encode(),
        capture_output=True,
        timeout=180,
        env=child_env(data_dir),
        check=True,
    )
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert answers[1]["result"]["serverInfo"]["name"] == "molar-mcp"
    assert "list_traces" in {t["name"] for t in answers[2]["result"]["tools"]}
    imported = json.loads(modules_file.read_text())
    early = [m for m in imported if any(m == p or m.startswith(p + ".") for p in NOT_BEFORE_A_TOOL_CALL)]
    assert early == []
    assert data_dir.is_dir()
    assert not list(data_dir.iterdir())


@pytest.mark.anyio
async def test_the_first_tool_call_opens_the_embedded_store_and_reads_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    bundle = tmp_path / "run.tar.gz"
    bundle.write_bytes(make_bundle())
    molar_cli(data_dir, "ingest", str(bundle))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "molar_mcp", "--log-level", "WARNING", "stdio", "--data-dir", str(data_dir)],
        env=child_env(data_dir),
    )
    async with Client(params) as client:
        listed: Any = (await client.call_tool("list_traces", {"status": "failed"})).structured_content
        missing = await client.call_tool("get_trace", {"trace_id": "nope123"})
    assert [row[listed["columns"].index("scenario")] for row in listed["rows"]] == ["stripe-subscription-upgrade"]
    assert missing.is_error


@pytest.mark.anyio
async def test_a_store_that_cannot_be_opened_is_a_clear_tool_error_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "molar.sqlite3").write_bytes(b"not a database" * 100)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "molar_mcp", "--log-level", "ERROR", "stdio", "--data-dir", str(data_dir)],
        env=child_env(data_dir),
    )
    async with Client(params) as client:
        first = await client.call_tool("list_traces", {})
        again = await client.call_tool("list_traces", {})
        tools = await client.list_tools()
    for result in (first, again):
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "The trace store is unavailable: the trace store could not be opened: " in text
        assert "not a database" in text
    assert tools.tools
    assert (data_dir / "molar.sqlite3").read_bytes() == b"not a database" * 100  # nothing stored is lost


def test_a_data_dir_that_cannot_be_made_fails_the_start_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "molar_mcp", "stdio", "--data-dir", str(blocker / "data")],
        input=b"",
        capture_output=True,
        timeout=180,
        env=child_env(blocker / "data"),
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().startswith(f"molar-mcp: data dir {blocker / 'data'}: ")
