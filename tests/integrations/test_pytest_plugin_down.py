"""The molar pytest plugin is off unless asked for, and a Molar that is not there never fails or
holds up a pytest session: a warning in the summary, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integrations.conftest import Molar, clean_env, run_pytest

pytestmark = pytest.mark.e2e


def test_without_a_molar_url_the_plugin_does_nothing(ticketshop: str, tmp_path: Path) -> None:
    run = run_pytest(tmp_path / "out", ticketshop, "-k", "failure_outside", env=clean_env())

    assert run.returncode == 1, run.output
    assert "1 failed" in run.stdout
    assert "Molar" not in run.output


def test_a_molar_that_refuses_connections_changes_nothing_but_a_warning(
    ticketshop: str, closed_port: int, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    run = run_pytest(tmp_path / "out", ticketshop, env=clean_env(MOLAR_URL=url))

    assert run.returncode == 1, run.output  # the tests' own failures
    assert "3 failed, 1 passed" in run.stdout
    assert "0 result(s) uploaded" in run.stdout
    assert (
        f"molar: 3 result(s) were not uploaded: Molar at {url} did not answer ([Errno 111] Connection refused). "
        "The tests themselves are unaffected." in run.stdout
    ), run.output
    assert run.stdout.count("Connection refused") == 1  # one cause, said once
    # pytest-playwright kept the failing browser tests' traces as usual.
    assert len(list((tmp_path / "out").glob("*/trace.zip"))) == 2


def test_the_command_line_option_turns_it_on_and_a_refused_key_is_named(
    ticketshop: str, molar: Molar, tmp_path: Path
) -> None:
    run = run_pytest(
        tmp_path / "out",
        ticketshop,
        "-k",
        "failure_outside",
        "--molar-url",
        molar.url,
        "--molar-api-key",
        "molar_sk_not-a-real-key",
        env=clean_env(),
    )

    assert run.returncode == 1, run.output
    assert "molar: 1 result(s) were not uploaded: Molar refused the API key (HTTP 401" in run.stdout, run.output
    assert "set MOLAR_API_KEY to a key with the mcp:trace:write scope" in run.stdout
