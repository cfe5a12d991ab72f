"""The security catalogue's server: `molar-mcp serve` with authentication, as a real process on a free
127.0.0.1 port (one a module), with a user and API keys of two orgs made by the real CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.auth.conftest import EMAIL, PASSWORD
from tests.servers import EVERY_SCOPE, Served, start_auth_server, stop_server


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


def start_secured(data: Path, *extra: str, demo: bool = True) -> Secured:
    keys: dict[str, str | tuple[str, str]] = {
        "all": EVERY_SCOPE,
        "read": "mcp:trace:read",
        "other": (EVERY_SCOPE, "org_other"),
    }
    started = start_auth_server(data, *(["--demo"] if demo else []), *extra, keys=keys, user=(EMAIL, PASSWORD))
    return Secured(started.served, started.keys["all"], started.keys["read"], started.keys["other"])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = start_secured(tmp_path_factory.mktemp("secured") / "data")
    try:
        yield s
    finally:
        stop_server(s.served)
