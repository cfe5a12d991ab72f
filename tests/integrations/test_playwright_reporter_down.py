"""molar-playwright-reporter when Molar is not there: the test run neither fails because of it nor
waits on it past the bounds, and says once, at the end, what was not uploaded and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integrations.conftest import Molar, clean_env, run_playwright

pytestmark = pytest.mark.e2e

# Two tests of the project: one passes, one fails (the sold-out page's wrong text).
SUBSET = ("specs/events.spec.js", "-g", "lists every event|tickets in stock")


def test_a_molar_that_refuses_connections_changes_nothing_but_a_warning(
    ticketshop: str, closed_port: int, tmp_path: Path
) -> None:
    env = clean_env(APP_URL=ticketshop, MOLAR_URL=f"http://127.0.0.1:{closed_port}")
    run = run_playwright(tmp_path / "out", *SUBSET, env=env)

    assert run.returncode == 1, run.output  # the failing test's exit code, not the reporter's
    assert "1 failed" in run.stdout
    assert "1 passed" in run.stdout
    assert (
        f"molar-playwright-reporter: 2 result(s) were not uploaded: Molar at http://127.0.0.1:{closed_port} "
        "did not answer (ECONNREFUSED). The test run itself is unaffected." in run.stderr
    ), run.output
    assert run.stderr.count("molar-playwright-reporter") == 1  # one cause, said once
    assert "Molar:" not in run.stdout  # no link to a trace that does not exist


def test_a_molar_that_never_answers_holds_the_run_up_at_most_the_flush_bound(
    ticketshop: str, silent_port: int, tmp_path: Path
) -> None:
    env = clean_env(
        APP_URL=ticketshop,
        MOLAR_URL=f"http://127.0.0.1:{silent_port}",
        MOLAR_TIMEOUT_MS="1000",
        MOLAR_FLUSH_TIMEOUT_MS="2000",
    )
    run = run_playwright(tmp_path / "out", *SUBSET, env=env)

    assert run.returncode == 1, run.output
    assert "1 failed" in run.stdout
    assert "1 passed" in run.stdout
    assert "result(s) were not uploaded" in run.stderr, run.output
    assert "The test run itself is unaffected." in run.stderr
    # Three requests without an answer in a row (1 s each) and the reporter stops trying.
    assert "did not answer (no answer in 1000 ms)" in run.stderr or "still under way after 2000 ms" in run.stderr


def test_a_refused_api_key_is_named_once_and_nothing_else_is_tried(
    ticketshop: str, molar: Molar, tmp_path: Path
) -> None:
    env = clean_env(APP_URL=ticketshop, MOLAR_URL=molar.url, MOLAR_API_KEY="molar_sk_not-a-real-key")
    run = run_playwright(tmp_path / "out", *SUBSET, env=env)

    assert run.returncode == 1, run.output
    assert "2 result(s) were not uploaded: Molar refused the API key (HTTP 401" in run.stderr, run.output
    assert "set MOLAR_API_KEY to a key with the mcp:trace:write scope" in run.stderr
    assert run.stderr.count("molar-playwright-reporter") == 1
