"""The molar pytest plugin in a real pytest run (tests/pytest_project: pytest-playwright on Debian's
Chromium against the ticket shop) uploading to a real `molar-mcp serve` with authentication."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.integrations.conftest import Molar, clean_env, run_pytest

pytestmark = pytest.mark.e2e

SHA = "fedcba9876543210fedcba9876543210fedcba98"


def api(molar: Molar) -> httpx2.Client:
    return httpx2.Client(base_url=molar.url, headers={"authorization": f"Bearer {molar.key}"}, timeout=30)


def run_id_of(stdout: str, count: int) -> str:
    found = re.search(rf"{count} result\(s\) uploaded to run \w+ \(\S+/v1/runs/([\w-]+)\)", stdout)
    assert found is not None, stdout
    return found.group(1)


def test_each_failed_test_goes_up_with_its_trace_in_a_run_of_the_session(
    ticketshop: str, molar: Molar, tmp_path: Path
) -> None:
    env = clean_env(
        MOLAR_URL=molar.url,
        MOLAR_API_KEY=molar.key,
        CI_COMMIT_SHA=SHA,
        CI_COMMIT_BRANCH="fix/payments",
        CI_MERGE_REQUEST_IID="7",
        CI_JOB_URL="https://gitlab.example.com/acme/tickets/-/jobs/99",
    )
    run = run_pytest(tmp_path / "out", ticketshop, env=env)

    assert run.returncode == 1, run.output  # the tests' own failures
    assert "3 failed, 1 passed" in run.stdout
    run_id = run_id_of(run.stdout, 3)
    assert "molar:" not in run.stdout, run.stdout  # no warning
    http = api(molar)
    got: dict[str, Any] = http.get(f"/v1/runs/{run_id}").json()
    assert got["kind"] == "pytest"
    assert got["status"] == "failed"
    assert (got["commit"], got["branch"], got["pr_number"]) == (SHA, "fix/payments", 7)
    assert got["ci_url"] == "https://gitlab.example.com/acme/tickets/-/jobs/99"
    assert (got["counts"]["tests"], got["counts"]["failed"], got["counts"]["passed"]) == (3, 3, 0)
    titles = {t["title"] for t in got["failing"]}
    assert titles == {
        "test_a_sold_out_event_shows_tickets_in_stock[chromium]",
        "TestCheckout › test_pays_for_the_tickets[chromium]",
        "test_a_failure_outside_the_browser",
    }

    # Each failure's link was printed; the browser tests' traces are Playwright traces with their steps.
    links = re.findall(r"^  (checks_ticketshop\.py::\S+) failed → (\S+)$", run.stdout, flags=re.M)
    assert len(links) == 3, run.stdout
    by_title = {t["title"]: t for t in got["failing"]}
    sold_out = http.get(f"/v1/traces/{by_title['test_a_sold_out_event_shows_tickets_in_stock[chromium]']['trace_id']}")
    detail = sold_out.json()
    assert detail["status"] == "failed"
    assert detail["code_sha"] == SHA
    assert {"playwright", "screenshot"} <= {a["kind"] for a in detail["artifacts"]}  # the zip as kept, the failure
    events = http.get(f"/v1/traces/{detail['id']}/events", params={"limit": 1000}).json()["events"]
    assert any("Sold out" in str(e) for e in events)
    assert any("chose 2 tickets" in str(e) for e in events)  # the captured stdout
    outside = http.get(f"/v1/traces/{by_title['test_a_failure_outside_the_browser']['trace_id']}").json()
    outside_events = http.get(f"/v1/traces/{outside['id']}/events", params={"limit": 1000}).json()["events"]
    assert any("arithmetic is broken" in str(e) for e in outside_events)


def test_upload_all_sends_the_passing_tests_too(ticketshop: str, molar: Molar, tmp_path: Path) -> None:
    env = clean_env(MOLAR_URL=molar.url, MOLAR_API_KEY=molar.key)
    run = run_pytest(
        tmp_path / "out", ticketshop, "-k", "lists_every_event or outside", "--molar-upload", "all", env=env
    )

    assert run.returncode == 1, run.output
    run_id = run_id_of(run.stdout, 2)
    got = api(molar).get(f"/v1/runs/{run_id}").json()
    assert (got["counts"]["tests"], got["counts"]["passed"], got["counts"]["failed"]) == (2, 1, 1)
