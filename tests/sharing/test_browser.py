"""The shared-trace viewer as a real page: `molar-mcp serve --demo`, a failing demo trace shared
public-read over the API, and `/r/{short_id}` rendered by headless Chromium (DOM and screenshot).

CI installs the browser with `apt-get install -y chromium` (Debian); without one the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
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


def share_failing_demo_trace(base_url: str) -> str:
    with httpx2.Client(base_url=base_url, timeout=30) as http:
        listed = http.get("/v1/traces", params={"signature": "webhook-404"}).json()
        trace = listed["items"][0]
        shared = http.post(f"/v1/traces/{trace['id']}/share", json={"visibility": "public-read", "expires_days": 1})
    assert shared.status_code == 200, shared.text
    url: str = shared.json()["url"]
    assert url == f"{base_url}/r/{trace['short_id']}"
    return url


def test_a_public_share_renders_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium found (install it: apt-get install -y chromium, or set MOLAR_CHROMIUM)")
    url = share_failing_demo_trace(served.base_url)

    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "Failing step 7: Check the upgrade landed" in page
    assert 'class="failed" data-step="7"' in page
    assert "expected url /billing?upgraded=true; got /billing?upgraded=false" in page
    # The 404 webhook is in the network table, highlighted as failed.
    webhook_row = next(row for row in page.split("<tr") if "/api/webhooks/stripe" in row and "<td" in row)
    assert 'class="failed"' in webhook_row
    assert '<td class="status">404</td>' in webhook_row
    assert "Failed to load resource: the server responded with a status of 404" in page
    assert 'id="artifacts"' in page
    assert "failure.png" in page

    shot = tmp_path / "viewer.png"
    screenshot = headless(
        binary, tmp_path / "profile-shot", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url
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


def test_the_embed_renders_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium found (install it: apt-get install -y chromium, or set MOLAR_CHROMIUM)")
    url = share_failing_demo_trace(served.base_url) + "/embed"
    shot = tmp_path / "embed.png"
    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", url)
    screenshot = headless(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=640,480", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Failing step 7: Check the upgrade landed" in dom.stdout
    assert "1 failed requests" in dom.stdout
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    assert png_size(shot.read_bytes()) == (640, 480)
    keep = os.environ.get("MOLAR_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "embed.png")
