"""Real processes on 127.0.0.1 for end-to-end tests: `molar-mcp serve` on a free port; the env of a child."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def start_server(data_dir: Path, *extra: str, auth: bool = False, timeout: float = 90) -> Served:
    """`molar-mcp serve` on a free 127.0.0.1 port: `--no-auth` unless `auth`; waits for /healthz."""
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
