"""Trace format versions 3 to 8, recorded by real older Playwright releases (playwright-core 1.25 to 1.55
driving Debian's Chromium against the ticket shop; `python -m tests.apps.record_versions` re-records them):
each is read as the viewer reads it, with the same calls, selectors, errors and call logs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import httpx2
import pytest

pytestmark = pytest.mark.anyio

VERSIONS = Path(__file__).resolve().parent / "versions"
RECORDED = sorted(VERSIONS.glob("pw-*-v*.zip"))
DATA = {p.name: p.read_bytes() for p in RECORDED}


def test_a_recording_of_each_older_format_version_is_checked_in() -> None:
    versions = set()
    for path in RECORDED:
        with zipfile.ZipFile(path) as zf:
            versions.add(json.loads(zf.read("trace.trace").decode().splitlines()[0])["version"])
    assert versions == {3, 4, 5, 6, 7, 8}


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_an_older_release_trace_reads_like_a_new_one(pw_client: httpx2.AsyncClient, path: Path) -> None:
    answer = await pw_client.post("/v1/traces/ingest", files={"file": (path.name, DATA[path.name])})
    assert answer.status_code == 201, answer.text
    ref = answer.json()["short_id"]
    detail = (await pw_client.get(f"/v1/traces/{ref}")).json()
    assert detail["scenario_slug"] == "old-release"  # the title given to tracing.start
    assert detail["status"] == "failed"
    assert "Timeout 1200ms exceeded" in detail["failure_signature"]
    found = (await pw_client.get(f"/v1/traces/{ref}/events", params={"kind": "action", "limit": "100"})).json()
    actions: list[dict[str, Any]] = found["events"]
    # The test's calls only (format 3 also logged the recording's own tracing.stop: left out).
    calls = [(a["payload"]["action"], a["payload"].get("selector"), a["ok"]) for a in actions]
    assert calls == [
        ("newPage", None, True),
        ("goto", None, True),
        ("fill", "#qty", True),
        ("waitForSelector", '#stock:has-text("In stock")', False),
        ("click", "#add-to-cart", False),
    ]
    goto, fill, wait, click = actions[1:]
    assert goto["payload"]["url"].endswith("/event/sold-out")
    assert fill["payload"]["value"] == "2"
    for failed in (wait, click):
        assert "Timeout 1200ms exceeded" in json.dumps(failed["payload"]["error"])
        assert failed["payload"]["log"], "the call log says what was awaited"
    assert any("waiting for" in line for line in click["payload"]["log"])
    # The page's requests came through the HAR entries of every version.
    requests = (await pw_client.get(f"/v1/traces/{ref}/events", params={"kind": "network.response"})).json()
    assert any(r["payload"].get("url", "").endswith("/event/sold-out") for r in requests["events"])
