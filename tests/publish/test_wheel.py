"""The package as a user gets it: `python -m build` makes a wheel and an sdist with complete metadata,
and `uvx --from <wheel> molar-mcp stdio --demo` (here `uv tool run`, which `uvx` is) serves the demo traces
to the SDK's stdio client from the installed wheel, not from this source tree.

Built once per test session; `uv` installs the wheel's dependencies from the package index into its
cache (the first run on a machine downloads them, later runs reuse them)."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from tests.listing import rows_of

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


def _tool(name: str) -> str:
    """A command the dev extra installs beside this Python; missing means the test environment is broken."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed beside {sys.executable}: pip install -e '.[dev]'"
    return str(path)


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the dev extra has the backend (hatchling), so no build env is made per session.
    # Default mode: the sdist first, then the wheel built from the unpacked sdist, so a file the sdist
    # forgets breaks the wheel too.
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist)


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project


def _wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


def test_the_wheel_and_sdist_carry_complete_metadata(dist: Dist) -> None:
    project = _project()
    assert dist.wheel.name == f"molar_mcp-{project['version']}-py3-none-any.whl"
    assert dist.sdist.name == f"molar_mcp-{project['version']}.tar.gz"
    meta = _wheel_metadata(dist.wheel)
    assert meta["Name"] == "molar-mcp"
    assert meta["Version"] == project["version"]
    assert meta["Summary"] == project["description"]
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Description-Content-Type"] == "text/markdown"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Homepage", "Repository", "Issues", "Documentation"}
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(c.startswith("Topic :: Software Development") for c in classifiers)
    assert meta["Author"] or meta["Author-email"]
    assert meta["Keywords"]
    body = meta.get_payload()
    assert isinstance(body, str)
    assert "mcp-name: io.github.molar/molar-mcp" in body  # the registry reads the marker from PyPI's description
    runtime = {r.split(";")[0] for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r}
    assert len(runtime) == len(project["dependencies"])


def test_the_wheel_holds_the_demo_data_and_the_sdist_the_sources(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as zf:
        names = set(zf.namelist())
    for needed in (
        "molar_mcp/py.typed",
        "molar_mcp/demo/refund-agent-run.otlp.json",
        "molar_mcp/demo/scenario_runs/checkout-coupon.tar.gz",
    ):
        assert needed in names, needed
    assert any(n.startswith("molar_mcp/demo/playwright_run/") for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", ".venv")) for n in names)
    with tarfile.open(dist.sdist) as tf:
        top = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "src/molar_mcp/cli.py", "manifests/server.json"} <= top
    assert not any(n.startswith((".venv", "node_modules")) or "/node_modules/" in n for n in top)


def _uv_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLAR_", "PYTHON", "VIRTUAL_ENV", "UV_"))}
    env["MOLAR_DATA_DIR"] = str(tmp / "data")
    env["UV_TOOL_DIR"] = str(tmp / "uv-tools")  # tool environments of this test only; the download cache is shared
    env["UV_NO_PROGRESS"] = "1"
    return env


def _uvx(wheel: Path, *args: str) -> list[str]:
    """`uvx --from <wheel> …`, on this Python (uv would otherwise look for, or download, another)."""
    return ["tool", "run", "--python", sys.executable, "--from", str(wheel), *args]


def test_the_installed_wheel_is_what_runs_not_this_checkout(dist: Dist, tmp_path: Path) -> None:
    done = subprocess.run(
        [_tool("uv"), *_uvx(dist.wheel, "python", "-c", "import molar_mcp; print(molar_mcp.__file__)")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_uv_env(tmp_path),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    where = Path(done.stdout.strip()).resolve()
    assert "site-packages" in where.parts
    assert ROOT not in where.parents


@pytest.mark.anyio
@pytest.mark.e2e
async def test_uvx_from_the_built_wheel_serves_the_demo_over_stdio(dist: Dist, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=_tool("uv"),
        args=_uvx(dist.wheel, "molar-mcp", "stdio", "--demo"),
        env=_uv_env(tmp_path),
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        listed = await client.call_tool("list_traces", {"status": "failed", "limit": 10})
    rows: Any = listed.structured_content
    assert not listed.is_error
    assert {"list_traces", "get_trace", "get_event", "debug_run", "replay_trace"} <= tools
    scenarios = {row["scenario"] for row in rows_of(rows)}
    assert len(rows_of(rows)) >= 2
    assert any("coupon" in s for s in scenarios), scenarios
    assert (tmp_path / "data").is_dir()  # the demo went into the data dir named by MOLAR_DATA_DIR
