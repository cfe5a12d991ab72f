"""A real @playwright/test project registered under a replay root, end to end through the REST API: its
failing test runs for real and is uploaded as a Playwright trace (trace.zip + result, the upload contract),
then replayed in the sandbox with the fixing diff. The whole test re-runs in Debian's Chromium, passes,
and the diff against the recorded run shows the failing step now passing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.replay.apps import free_port
from molar_mcp.replay.drivers.playwright import report_result
from molar_mcp.store import SqliteTraceStore
from tests.replays.pw_project import FIX, git, make_project, run_test, trace_zip

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx2.AsyncClient, Path, str, dict[str, Any]]]:
    root = tmp_path / "roots"
    repo = root / "cart"
    commit = make_project(repo)
    result = report_result(json.dumps(run_test(repo, free_port())).encode())
    assert result is not None
    assert result["status"] == "failed", result
    store = SqliteTraceStore(tmp_path / "data")
    ctx = ApiContext.embedded(store, replay_roots=[root])
    transport = httpx2.ASGITransport(app=create_api_app(ctx), raise_app_exceptions=False)
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
            upload = {**result, "commit": commit, "repo": {"path": str(repo)}}
            resp = await client.post(
                "/v1/traces/ingest",
                files={"file": ("trace.zip", trace_zip(repo), "application/zip")},
                data={"result": json.dumps(upload)},
            )
            assert resp.status_code == 201, resp.text
            yield client, repo, resp.json()["trace_id"], result
    finally:
        assert ctx.replays is not None
        ctx.replays.close()
        store.close()


async def test_the_fixing_diff_makes_the_recorded_playwright_test_pass(
    api: tuple[httpx2.AsyncClient, Path, str, dict[str, Any]],
) -> None:
    client, repo, parent, result = api
    detail = (await client.get(f"/v1/traces/{parent}")).json()
    assert detail["status"] == "failed"
    # The test's source the trace carries is readable, named by its path in the repository.
    [source] = [a for a in detail["artifacts"] if a["kind"] == "source" and a["name"] == "specs/cart.spec.js"]
    blob = await client.get(f"/v1/traces/{parent}/blob/{source['sha256']}", follow_redirects=True)
    assert blob.status_code == 200, blob.text
    assert "shows the total" in blob.text
    failing = next(s["step"] for s in detail["steps"] if s["ok"] is False and not s.get("depth"))

    resp = await client.post(
        f"/v1/traces/{parent}/replay",
        json={"from_step": failing, "edits": {"source_diffs": [{"path": FIX[0], "diff": FIX[1]}]}},
    )
    assert resp.status_code == 202, resp.text
    status = resp.json()
    for _ in range(20):
        if status["status"] in ("succeeded", "failed"):
            break
        status = (await client.get(f"/v1/replays/{status['id']}", params={"wait": "30"})).json()

    assert (status["status"], status["trace_status"]) == ("succeeded", "passed"), status
    message = status["message"]
    assert f"--project=chromium {result['file']} --grep=cart" in message
    assert "with edits applied to server.js" in message
    assert "the whole test re-ran" in message
    assert f"from_step {failing}" in message
    child = (await client.get(f"/v1/traces/{status['replay_trace_id']}")).json()
    assert (child["parent_trace_id"], child["replay_from_step"]) == (detail["id"], failing)
    assert {"source.diff", "output.log"} <= {a["name"] for a in child["artifacts"]}

    diff = (await client.get("/v1/traces/diff", params={"a": parent, "b": child["id"], "dimension": "steps"})).json()
    step = next(s for s in diff["steps"] if s["step"] == failing)
    assert (step["ok_a"], step["ok_b"], step["changed"]) == (False, True, True), step
    assert "Total: 24.00" in json.dumps(diff) or "toHaveText" in (step["title"] or ""), step

    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1  # the replay's is gone
    assert git(repo, "status", "--porcelain") == ""
