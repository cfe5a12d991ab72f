"""Real processes on 127.0.0.1 for end-to-end tests: `molar-mcp serve` on a free port; the env of a child."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def served_in_loop(app: ASGIApp) -> AsyncIterator[str]:
    """`app` under uvicorn on a free 127.0.0.1 port, in the calling test's event loop; its base URL. The
    socket listens before uvicorn starts: a request that comes first waits in its backlog."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


def child_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MOLAR_DATA_DIR"] = str(data_dir)
    env.pop("MOLAR_API_URL", None)
    env.pop("MOLAR_API_KEY", None)
    return env


@dataclass
class Served:
    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]


# What `--demo` stores (the shop's scenario runs recorded, the Playwright Test run, the agent run), seeded once
# per test process (each xdist worker) and copied into each embedded data dir a test serves `--demo` from:
# seeding runs the demo shop five times (~3 s of CPU and ~4 s wall a start), copying takes milliseconds.
# Tests of the seeding itself (tests/demo, tests/otlp/test_demo.py, `stdio --demo`) seed their own.
_demo_template: list[Path] = []

SEED_DEMO = """
import sys
from pathlib import Path
from molar_mcp.compose import load_demo, open_embedded
with open_embedded(Path(sys.argv[1])) as embedded:
    print(load_demo(embedded))
"""


def seeded_demo_dir() -> Path:
    """A data dir holding the demo as `serve --demo` seeds it (made on first use in this process; read-only)."""
    if not _demo_template:
        root = Path(tempfile.mkdtemp(prefix="molar-demo-template-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        template = root / "data"
        subprocess.run(
            [sys.executable, "-c", SEED_DEMO, str(template)],
            capture_output=True,
            timeout=300,
            check=True,
            env=child_env(template),
        )
        _demo_template.append(template)
    return _demo_template[0]


def with_demo(data_dir: Path, extra: tuple[str, ...]) -> None:
    """Before `serve --demo` on an embedded data dir without a store yet: the seeded demo copied into it
    (the server then finds the demo loaded, as on any later start)."""
    other_engine = {"--database-url", "--blob-url"} & set(extra) or {"MOLAR_DATABASE_URL", "MOLAR_BLOB_URL"} & set(
        os.environ
    )
    if "--demo" not in extra or other_engine or (data_dir / "molar.sqlite3").exists():
        return
    shutil.copytree(seeded_demo_dir(), data_dir, dirs_exist_ok=True)


def start_server(data_dir: Path, *extra: str, auth: bool = False, timeout: float = 90) -> Served:
    """`molar-mcp serve` on a free 127.0.0.1 port: `--no-auth` unless `auth`; waits for /healthz. With
    `--demo` on a fresh embedded data dir, the demo is copied in from `seeded_demo_dir()`."""
    with_demo(data_dir, extra)
    port = free_port()
    log = open(data_dir.parent / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "molar_mcp",
            "serve",
            *([] if auth else ["--no-auth"]),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(data_dir),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout  # a loaded CI machine can be slow to import
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((data_dir.parent / f"serve-{port}.log").read_text())
        try:
            if httpx2.get(base + "/healthz", timeout=1).status_code == 200:
                return Served(base, data_dir, process)
        except httpx2.TransportError:
            time.sleep(0.1)  # polling a starting process: the one wait an e2e test needs
    process.kill()
    raise RuntimeError(f"molar-mcp serve did not become healthy in {timeout:.0f} s")


EVERY_SCOPE = "mcp:trace:read mcp:trace:write mcp:debug mcp:run"


def molar_cli(data_dir: Path, *args: str) -> str:
    """`molar-mcp ARGS --data-dir DIR` through the real CLI, as a child process; its stdout, stripped."""
    done = subprocess.run(
        [sys.executable, "-m", "molar_mcp", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=180,  # a CLI takes ~3 s of CPU to import; on a loaded machine (load 11 seen) over 60 s
        check=True,
        env=child_env(data_dir),
    )
    return done.stdout.strip()


def stop_server(served: Served) -> None:
    """Stop a server `start_server` started (killed if it does not stop in 10 s)."""
    served.process.terminate()
    try:
        served.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait(timeout=10)


@dataclass
class AuthServed:
    """`molar-mcp serve` with authentication, and the API keys made for it before it started, by name."""

    served: Served
    keys: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.served.base_url


def start_auth_server(
    data_dir: Path,
    *extra: str,
    keys: dict[str, str | tuple[str, str]],
    user: tuple[str, str] | None = None,
) -> AuthServed:
    """Make, with the real CLI, an account (`user`: email and password) and an API key per entry of `keys`
    (name → scopes, or (scopes, org) for another org than the local one), then start `molar-mcp serve`
    with authentication (`extra`: more flags)."""
    if user is not None:
        molar_cli(data_dir, "users", "create", "--email", user[0], "--password", user[1])
    made: dict[str, str] = {}
    for name, spec in keys.items():
        scopes, org = (spec, None) if isinstance(spec, str) else spec
        made[name] = molar_cli(data_dir, "keys", "create", "--scopes", scopes, *(["--org", org] if org else []))
    return AuthServed(start_server(data_dir, *extra, auth=True), made)
