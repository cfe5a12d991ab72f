"""The security catalogue's server: `molar-mcp serve` with authentication, as a real process on a free
127.0.0.1 port (one a module), with a user and API keys of two orgs made by the real CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.auth.conftest import EMAIL, PASSWORD
from tests.servers import Served, child_env, start_server

EVERY_SCOPE = "mcp:trace:read mcp:trace:write mcp:debug mcp:run"


def cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "molar_mcp", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=child_env(data_dir),
    )
    return done.stdout.strip()


@dataclass
class Secured:
    served: Served
    key_all: str  # org_local, every scope
    key_read: str  # org_local, read only
    key_other: str  # org_other, every scope
    email: str = EMAIL
    password: str = PASSWORD

    @property
    def base(self) -> str:
        return self.served.base_url

    @property
    def mcp_url(self) -> str:
        return self.served.base_url + "/mcp"

    @property
    def log(self) -> Path:
        port = self.base.rsplit(":", 1)[1]
        return self.served.data_dir.parent / f"serve-{port}.log"

    def http(self, key: str | None = None, **kwargs: object) -> httpx2.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx2.AsyncClient(base_url=self.base, headers=headers, timeout=30.0, **kwargs)  # type: ignore[arg-type]


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait(timeout=10)


def start_secured(data: Path, *extra: str, demo: bool = True) -> Secured:
    cli(data, "users", "create", "--email", EMAIL, "--password", PASSWORD)
    key_all = cli(data, "keys", "create", "--scopes", EVERY_SCOPE)
    key_read = cli(data, "keys", "create", "--scopes", "mcp:trace:read")
    key_other = cli(data, "keys", "create", "--scopes", EVERY_SCOPE, "--org", "org_other")
    served = start_server(data, *(["--demo"] if demo else []), *extra, auth=True)
    return Secured(served, key_all, key_read, key_other)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = start_secured(tmp_path_factory.mktemp("secured") / "data")
    try:
        yield s
    finally:
        stop(s.served)
