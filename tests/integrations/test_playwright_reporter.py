"""molar-playwright-reporter in a real `npx playwright test` run (tests/playwright_project: Debian's
Chromium against the ticket shop) uploading to a real `molar-mcp serve` with authentication: every
attempt lands as it finishes, in one run with the CI's commit, branch and PR, retries linked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.integrations.conftest import Molar, clean_env, run_playwright

pytestmark = pytest.mark.e2e

SHA = "0123456789abcdef0123456789abcdef01234567"
FAILING = {
    "shows tickets in stock",  # wrong text
    "adds tickets to the cart",  # missing selector
    "pays for the tickets",  # HTTP 500
    "shows the seat map",  # JS exception
}
FLAKY = "the page loads once the cache is warm"


def repo_root() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    ).stdout.strip()


def test_every_attempt_lands_in_one_run_with_the_ci_origin_and_a_link_per_failure(
    ticketshop: str, molar: Molar, tmp_path: Path
) -> None:
    env = clean_env(
        APP_URL=ticketshop,
        MOLAR_URL=molar.url,
        MOLAR_API_KEY=molar.key,
        MOLAR_RUN_NAME="ticket shop e2e",
        GITHUB_SHA=SHA,
        GITHUB_REF="refs/pull/42/merge",
        GITHUB_REF_NAME="42/merge",
        GITHUB_HEAD_REF="feature/checkout",
        GITHUB_SERVER_URL="https://github.com",
        GITHUB_REPOSITORY="acme/tickets",
        GITHUB_RUN_ID="777",
    )
    run = run_playwright(tmp_path / "out", env=env)

    assert run.returncode == 1, run.output  # Playwright's own verdict: four tests failed
    assert "4 failed" in run.stdout
    assert "1 flaky" in run.stdout
    assert "molar-playwright-reporter" not in run.stderr, run.stderr  # no warning: everything went up
    summary = re.search(r"Molar: 7 result\(s\) uploaded to run (\w+) \((\S+)\)", run.stdout)
    assert summary is not None, run.stdout
    api = httpx2.Client(base_url=molar.url, headers={"authorization": f"Bearer {molar.key}"}, timeout=30)
    assert summary.group(2) == f"{molar.url}/v1/runs/{api.get(summary.group(2)).json()['id']}"

    got: dict[str, Any] = api.get(summary.group(2)).json()
    assert got["kind"] == "playwright"
    assert got["name"] == "ticket shop e2e"
    assert got["status"] == "failed"
    assert got["finished_at"] is not None
    assert (got["commit"], got["branch"], got["pr_number"]) == (SHA, "feature/checkout", 42)
    assert got["ci_url"] == "https://github.com/acme/tickets/actions/runs/777"
    assert got["repo"]["path"] == repo_root()
    counts = got["counts"]
    assert (counts["tests"], counts["attempts"]) == (6, 7)
    assert (counts["passed"], counts["failed"], counts["flaky"]) == (1, 4, 1)
    assert {t["title"].split(" › ")[-1] for t in got["failing"]} == FAILING
    [flaky] = got["flaky"]
    assert flaky["title"].endswith(FLAKY)
    assert flaky["attempts"] == 2

    # Each failure printed its link while the run went on: the flaky test's first attempt too.
    links = re.findall(r"^\s+Molar: (.+?) (failed|timedOut) → (\S+)", run.stdout, flags=re.M)
    assert len(links) == 5, run.stdout
    failing_traces = {tid for t in got["failing"] for tid in t["trace_ids"]} | {flaky["trace_ids"][0]}
    for _title, _status, link in links:
        assert link.startswith(f"{molar.url}/v1/traces/")
        trace_id = link.removeprefix(f"{molar.url}/v1/traces/").split("/")[0]
        assert trace_id in failing_traces
        report = api.get(link)
        assert report.status_code == 200, report.text

    # The run's traces: one per attempt, with the test's identity, the commit and the origin.
    items = api.get("/v1/traces", params={"run": got["id"], "limit": 50}).json()["items"]
    assert len(items) == 7
    first, retry = (api.get(f"/v1/traces/{tid}").json() for tid in flaky["trace_ids"])
    assert first["status"] == "failed"
    assert retry["status"] == "passed"
    assert first["scenario_slug"] == retry["scenario_slug"]
    assert "flaky-spec-js" in first["scenario_slug"]
    [sold_out] = [t for t in got["failing"] if t["title"].endswith("shows tickets in stock")]
    detail = api.get(f"/v1/traces/{sold_out['trace_id']}").json()
    assert detail["code_sha"] == SHA
    events = api.get(f"/v1/traces/{sold_out['trace_id']}/events", params={"limit": 1000}).json()["events"]
    assert any("Sold out" in str(e) for e in events)  # the assertion's received value, from the trace
    # The failure screenshot and error-context.md came as attachments; the zip is kept as it was uploaded.
    artifacts = {(a["kind"], a["name"]) for a in detail["artifacts"]}
    assert any(kind == "screenshot" and name.endswith(".png") for kind, name in artifacts), artifacts
    assert any(name == "error-context.md" for _kind, name in artifacts), artifacts
    assert any(kind == "playwright" for kind, _name in artifacts), artifacts
