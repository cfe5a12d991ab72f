"""The shared-trace viewer as a real page: `molar-mcp serve --demo`, a failing demo trace shared
public-read over the API, and `/r/{short_id}` rendered by headless Chromium (DOM and screenshot).

CI installs the browser with `apt-get install -y chromium` (Debian); without one the tests fail.
"""

from __future__ import annotations

import html
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.servers import Served

pytestmark = pytest.mark.e2e

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1280, 900


def chromium_binary() -> str | None:
    """`MOLAR_CHROMIUM`, else the first Chromium on PATH."""
    explicit = os.environ.get("MOLAR_CHROMIUM")
    if explicit:
        return explicit
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


@dataclass(frozen=True)
class SharedDemo:
    url: str
    failing_step: str  # "Failing step 7: <title>", as the page heads it
    failed_request_url: str
    failed_status: int


def share_failing_demo_trace(base_url: str) -> SharedDemo:
    """Share, public-read, the failing demo trace that has a failed HTTP response (the webhook 404, in
    the demo recorded at start and in its shipped recordings alike), and say what its page must show."""
    with httpx2.Client(base_url=base_url, timeout=30) as http:
        failed = http.get("/v1/traces", params={"status": "failed"}).json()["items"]
        for trace in failed:
            responses = http.get(
                f"/v1/traces/{trace['id']}/events", params={"kind": "network.response", "ok": "false"}
            ).json()["events"]
            if responses:
                break
        else:
            pytest.fail(f"no failing demo trace has a failed HTTP response: {failed}")
        detail = http.get(f"/v1/traces/{trace['id']}").json()
        shared = http.post(f"/v1/traces/{trace['id']}/share", json={"visibility": "public-read", "expires_days": 1})
    assert shared.status_code == 200, shared.text
    url: str = shared.json()["url"]
    assert url == f"{base_url}/r/{trace['short_id']}"
    step = next(s for s in detail["steps"] if s["ok"] is False)
    return SharedDemo(
        url=url,
        failing_step=html.escape(f"Failing step {step['step']}: {step['title']}", quote=False),
        failed_request_url=html.escape(responses[0]["payload"]["url"], quote=False),
        failed_status=int(responses[0]["payload"]["status"]),
    )


def test_a_public_share_renders_in_headless_chromium(demo_server: Served, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.fail("no Chromium found (install it: apt-get install -y chromium, or set MOLAR_CHROMIUM)")
    demo = share_failing_demo_trace(demo_server.base_url)

    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", demo.url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert demo.failing_step in page
    assert 'id="failed-assertion"' in page or 'id="failure"' in page
    # The failed request is in the network table, highlighted, with its status.
    row = next(r for r in page.split("<tr") if demo.failed_request_url in r and 'class="status"' in r)
    assert row.startswith(' class="failed"')
    assert f'<td class="status">{demo.failed_status}</td>' in row
    assert 'id="console"' in page
    assert 'id="artifacts"' in page

    shot = tmp_path / "viewer.png"
    screenshot = headless(
        binary, tmp_path / "profile-shot", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", demo.url
    )
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    # A blank or error page compresses to a few KB; the viewer, with its text and tables, does not.
    assert len(data) > 40_000, f"the screenshot is suspiciously small ({len(data)} bytes)"
    keep = os.environ.get("MOLAR_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "viewer.png")


def test_the_embed_renders_in_headless_chromium(demo_server: Served, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.fail("no Chromium found (install it: apt-get install -y chromium, or set MOLAR_CHROMIUM)")
    demo = share_failing_demo_trace(demo_server.base_url)
    url = demo.url + "/embed"
    shot = tmp_path / "embed.png"
    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", url)
    screenshot = headless(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=640,480", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert demo.failing_step in dom.stdout
    assert 'id="counts"' in dom.stdout
    assert 'id="network"' not in dom.stdout
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    assert png_size(shot.read_bytes()) == (640, 480)
    keep = os.environ.get("MOLAR_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "embed.png")
