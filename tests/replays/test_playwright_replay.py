"""A real @playwright/test project registered under a replay root: its failing test is recorded by running
it for real, then replayed in the sandbox with the fixing diff. The whole test re-runs, passes, and the
diff against the recorded run shows the failing step now passing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from molar_mcp.models.replays import ReplayOrigin, ReplayRequest
from molar_mcp.replay.apps import free_port
from molar_mcp.replay.drivers.playwright import failure_line, report_events, report_result
from molar_mcp.replay.projects import ReplayRoots
from molar_mcp.replay.service import ReplayService
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.port import NewTrace
from molar_mcp.store.replays import ReplayStore
from tests.replays.pw_project import FIX, git, make_project, run_test

pytestmark = pytest.mark.e2e


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[ReplayService, SqliteTraceStore, str, Path, Path]]:
    root = tmp_path / "roots"
    repo = root / "cart"
    commit = make_project(repo)
    report = run_test(repo, free_port())
    result = report_result(json.dumps(report).encode())
    assert result is not None
    assert result["status"] == "failed", result
    store = SqliteTraceStore(tmp_path / "data")
    trace_id, _ = store.add_trace(
        LOCAL_ORG_ID,
        NewTrace(
            scenario_slug="chromium-specs-cart-spec-js-cart-shows-the-total",
            scenario_title="cart › shows the total",
            status="failed",
            failure_signature=failure_line(result),
            code_sha=commit,
            events=report_events(result, ts=1),
        ),
        {},
    )
    origin = ReplayOrigin(
        kind="playwright",
        repo_path=str(repo),
        commit=commit,
        project=result["project"],
        file="specs/cart.spec.js",
        title_path=result["title_path"],
    )
    ReplayStore(store.db).record_origin(LOCAL_ORG_ID, trace_id, origin)
    work = tmp_path / "work"
    work.mkdir()
    service = ReplayService(store, ReplayStore(store.db), {}, roots=ReplayRoots([root]), workdir=work)
    yield service, store, trace_id, repo, work
    service.close()
    store.close()


def test_the_fixing_diff_makes_the_recorded_playwright_test_pass(
    recorded: tuple[ReplayService, SqliteTraceStore, str, Path, Path],
) -> None:
    service, store, parent, repo, work = recorded
    parent_detail = store.get_trace(LOCAL_ORG_ID, parent)
    failing = next(s.step for s in parent_detail.steps if s.ok is False)
    request = ReplayRequest.model_validate(
        {"from_step": failing, "edits": {"source_diffs": [{"path": FIX[0], "diff": FIX[1]}]}}
    )

    status = service.wait(LOCAL_ORG_ID, service.enqueue(LOCAL_ORG_ID, parent, request).id, timeout_s=240)

    assert (status.status, status.trace_status) == ("succeeded", "passed"), f"{status.message}\n{status.log_tail}"
    message = status.message or ""
    assert "--project=chromium specs/cart.spec.js --grep=cart" in message
    assert "with edits applied to server.js" in message
    assert "the whole test re-ran" in message
    assert f"from_step {failing}" in message
    child = store.get_trace(LOCAL_ORG_ID, status.replay_trace_id or "")
    assert (child.parent_trace_id, child.replay_from_step) == (parent_detail.id, failing)
    assert {"trace.zip", "source.diff"} <= {a.name for a in child.artifacts}

    diff: Any = service.diff(LOCAL_ORG_ID, parent, child.id, "steps").model_dump()
    changed = {s["step"]: s for s in diff["steps"]}
    step = changed[failing]
    assert (step["ok_a"], step["ok_b"], step["changed"]) == (False, True, True), step
    assert "toHaveText" in (step["title"] or ""), step  # the failing expect, now passing
    overview: Any = service.diff(LOCAL_ORG_ID, parent, child.id, "overview").model_dump()
    assert overview["first_divergence"]["step"] == failing, overview["first_divergence"]

    assert os.listdir(work) == []
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "status", "--porcelain") == ""
