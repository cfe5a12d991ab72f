"""The bubblewrap sandbox, proved from inside: real `bwrap`, real processes. A replay's code cannot read
the server's keys, data dir or environment, cannot reach the network beyond its own loopback, and
cannot outlive or outgrow its limits; nothing it starts or writes is left behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from molar_mcp.replay.sandbox import (
    Bind,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
    Workspace,
    processes_of_uid,
    runtime_paths,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """A data dir like the server's: a signing key and a token file, readable by the server only."""
    (tmp_path / "srv").mkdir(mode=0o755)
    data = tmp_path / "srv" / "data"
    data.mkdir(mode=0o755)  # even world-readable: the sandbox must hide it
    (data / "signing-keys.json").write_text('{"keys": ["the-signing-key"]}')
    (data / "internal-token").write_text("the-internal-token")
    return data


async def run_python(
    sandbox: Sandbox, ws: Workspace, code: str, *, wall_s: float = 60, binds: list[Bind] | None = None
) -> SandboxResult:
    script = ws.path / "probe.py"
    script.write_text(textwrap.dedent(code))
    return await sandbox.run(
        ws, [sys.executable, str(script)], binds=[*(Bind(p) for p in runtime_paths()), *(binds or [])], wall_s=wall_s
    )


def test_the_sandbox_tool_is_installed() -> None:
    # CI installs bubblewrap (.ci/run); a missing sandbox must fail the suite, never skip it.
    assert shutil.which("bwrap") is not None, "install bubblewrap: apt-get install bubblewrap"
    Sandbox.find()


def test_without_bwrap_the_server_refuses_and_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match=r"apt-get install bubblewrap"):
        Sandbox.find()


async def test_inside_the_keys_data_dir_server_environment_and_network_are_out_of_reach(
    tmp_path: Path, secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLAR_INTERNAL_TOKEN", "server-env-secret")
    server_pid = os.getpid()
    # An outside listener on a non-loopback address of this machine, if it has one, and on loopback.
    outside = socket.socket()
    outside.bind(("127.0.0.1", 0))
    outside.listen()
    outside_port = outside.getsockname()[1]
    sandbox = Sandbox.find(hide=[secrets])
    # Even a careless bind of the data dir's parent keeps the data dir itself hidden.
    (tmp_path / "ws").mkdir()
    async with sandbox.workspace(parent=tmp_path / "ws") as ws:
        result = await run_python(
            sandbox,
            ws,
            f"""
            import json, os, socket
            seen = {{}}
            def attempt(name, fn):
                try:
                    seen[name] = "READ: " + repr(fn())[:80]
                except Exception as exc:
                    seen[name] = "denied: " + type(exc).__name__
            attempt("signing_key", lambda: open({str(secrets / "signing-keys.json")!r}).read())
            attempt("data_dir", lambda: os.listdir({str(secrets)!r}))
            attempt("server_environ", lambda: open("/proc/{server_pid}/environ", "rb").read())
            attempt("init_environ", lambda: open("/proc/1/environ", "rb").read())
            attempt("own_env_token", lambda: os.environ["MOLAR_INTERNAL_TOKEN"])
            attempt("host_root_home", lambda: os.listdir("/root"))
            attempt("etc_shadow", lambda: open("/etc/shadow").read())
            def connect(host, port):
                s = socket.create_connection((host, port), timeout=3)
                s.close()
                return "connected"
            attempt("internet", lambda: connect("1.1.1.1", 80))
            attempt("host_loopback_server", lambda: connect("127.0.0.1", {outside_port}))
            listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen()
            attempt("own_loopback", lambda: connect("127.0.0.1", listener.getsockname()[1]))
            seen["uid"] = os.getuid()
            seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            open("result.json", "w").write(json.dumps(seen))
            """,
            binds=[Bind(tmp_path / "srv")],
        )
        assert result.exit_code == 0, result.output_tail
        seen = json.loads((ws.path / "result.json").read_text())
    outside.close()

    assert seen["data_dir"] in ("READ: []", "denied: PermissionError")  # an empty tmpfs lies over it
    for name in (
        "signing_key",
        "server_environ",
        "init_environ",
        "own_env_token",
        "etc_shadow",
        "internet",
        "host_loopback_server",
    ):
        assert seen[name].startswith("denied"), (name, seen[name])
    assert seen["own_loopback"] == "READ: 'connected'"  # the app and its test talk over the sandbox's own lo
    assert server_pid not in seen["pids"] or server_pid < 10  # its own pid namespace: the server is not there
    assert max(seen["pids"]) < 50
    if os.geteuid() == 0:
        assert seen["uid"] >= 200_000  # a dedicated unprivileged uid, not root
    # Of the host's home only the interpreter's directory is there (when Python lives under it).
    needed = sorted({p.parts[2] for p in runtime_paths() if p.parts[:2] == ("/", "root")})
    assert seen["host_root_home"].startswith("denied") or seen["host_root_home"] == f"READ: {needed!r}"


async def test_an_endless_loop_is_stopped_at_the_wall_time_limit_and_nothing_is_left(tmp_path: Path) -> None:
    sandbox = Sandbox.find()
    async with sandbox.workspace(parent=tmp_path) as ws:
        uid = ws.uid
        started = time.monotonic()
        result = await run_python(
            sandbox,
            ws,
            """
            import subprocess, sys
            subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a child that would outlive it
            print("looping", flush=True)
            while True:
                pass
            """,
            wall_s=3,
        )
        took = time.monotonic() - started
        assert processes_of_uid(uid) == [] or os.geteuid() != 0
    assert result.timed_out
    assert result.exit_code is None
    assert "wall-time limit" in (result.reason or "")
    assert "looping" in result.output_tail
    assert took < 15
    assert os.listdir(tmp_path) == []  # the workspace is gone


async def test_a_fork_bomb_hits_the_process_limit_and_is_stopped(tmp_path: Path) -> None:
    sandbox = Sandbox.find(limits=SandboxLimits(processes=64))
    async with sandbox.workspace(parent=tmp_path) as ws:
        uid = ws.uid
        result = await run_python(
            sandbox,
            ws,
            """
            import os, time
            refused = 0
            children = 0
            for _ in range(500):
                try:
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                    children += 1
                except OSError:
                    refused += 1
            print(f"children={children} refused={refused}", flush=True)
            """,
            wall_s=30,
        )
        if os.geteuid() == 0:
            assert processes_of_uid(uid) == []  # the sleeping children went with the sandbox
    assert result.exit_code == 0, result.output_tail
    line = next(x for x in result.output_tail.splitlines() if x.startswith("children="))
    children = int(line.split()[0].split("=")[1])
    assert children < 64
    assert int(line.split()[1].split("=")[1]) > 400
    assert os.listdir(tmp_path) == []


async def test_a_command_that_floods_its_output_is_stopped(tmp_path: Path) -> None:
    sandbox = Sandbox.find(limits=SandboxLimits(output_bytes=2 * 1024 * 1024))
    async with sandbox.workspace(parent=tmp_path) as ws:
        result = await sandbox.run(ws, ["/usr/bin/yes", "flood"], wall_s=60)
    assert result.output_exceeded
    assert result.exit_code is None
    assert "output limit" in (result.reason or "")
    assert result.output_tail.endswith("flood\n") or "flood" in result.output_tail[-20:]
    assert os.listdir(tmp_path) == []


async def test_memory_is_limited_per_process(tmp_path: Path) -> None:
    sandbox = Sandbox.find(limits=SandboxLimits(memory_bytes=256 * 1024 * 1024))
    async with sandbox.workspace(parent=tmp_path) as ws:
        result = await run_python(
            sandbox,
            ws,
            """
            try:
                block = bytearray(1024 * 1024 * 1024)
                print("allocated 1 GiB")
            except MemoryError:
                print("MemoryError")
            """,
        )
    assert "MemoryError" in result.output_tail


async def test_only_the_workspace_and_a_private_tmp_are_writable(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "ws").mkdir()
    sandbox = Sandbox.find()
    async with sandbox.workspace(parent=tmp_path / "ws") as ws:
        result = await run_python(
            sandbox,
            ws,
            f"""
            import os
            paths = ["workspace.txt", "/tmp/tmp.txt", {str(shared / "x.txt")!r}, "/usr/x.txt", "/etc/x.txt", "/x.txt"]
            for path in paths:
                try:
                    open(path, "w").write("x")
                    print("WROTE", path)
                except OSError as exc:
                    print("refused", path, type(exc).__name__)
            """,
            binds=[Bind(shared)],
        )
        assert (ws.path / "workspace.txt").exists()
    assert "WROTE workspace.txt" in result.output_tail
    assert "WROTE /tmp/tmp.txt" in result.output_tail
    assert result.output_tail.count("WROTE") == 2, result.output_tail
    assert not (tmp_path / "shared" / "x.txt").exists()
    assert os.listdir(tmp_path / "ws") == []


async def test_cancelling_the_caller_kills_everything(tmp_path: Path) -> None:
    sandbox = Sandbox.find()
    uids: list[int] = []
    with anyio.move_on_after(3):
        async with sandbox.workspace(parent=tmp_path) as ws:
            uids.append(ws.uid)
            await run_python(sandbox, ws, "import time\ntime.sleep(600)\n", wall_s=600)
    if os.geteuid() == 0:
        assert processes_of_uid(uids[0]) == []
    assert os.listdir(tmp_path) == []
