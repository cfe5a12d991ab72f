"""promote-fix: a succeeded replay's source diffs committed on a new branch, the checkout untouched."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.demo import SHOP_DIR, fix_diff
from molar_mcp.demo.config import DEMO_APP_NAME, demo_app_config
from molar_mcp.models.replays import PromoteFixRequest
from molar_mcp.replay.apps import AppConfig
from molar_mcp.replay.service import ReplayNotDone
from molar_mcp.store import LOCAL_ORG_ID
from molar_mcp.store.replays import ReplayNotFound
from tests.replays.conftest import World, make_world
from tests.replays.test_service import EXPECT_THE_BUG, edit, request, run, scenario_text

ORG = LOCAL_ORG_ID


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def shop_config(source_dir: Path) -> AppConfig:
    return AppConfig(
        name=DEMO_APP_NAME,
        source_dir=source_dir,
        start_command=[sys.executable, "app.py", "--port", "{port}"],
        promote=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding the shop in a sub-folder, as an app inside a monorepo would be."""
    root = tmp_path / "repo"
    shutil.copytree(SHOP_DIR, root / "shop", ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "the shop")
    return root


@pytest.fixture
def world(tmp_path: Path, repo: Path) -> Iterator[World]:
    w = make_world(tmp_path / "data", apps={DEMO_APP_NAME: shop_config(repo / "shop")})
    yield w
    w.close()


def fixed(world: World) -> str:
    status = run(world, "checkout-coupon", request(6, source=[("app.py", fix_diff("coupon-multiplier"))]))
    assert status.status == "succeeded"
    return status.id


def test_the_fix_is_committed_on_a_new_branch_and_the_checkout_is_untouched(world: World, repo: Path) -> None:
    replay_id = fixed(world)
    before = (repo / "shop/app.py").read_text()
    trace = world.runs["checkout-coupon"].short_id
    result = world.service.promote(ORG, trace, PromoteFixRequest(replay_id=replay_id, summary="Fix the coupon"))
    again = world.service.promote(ORG, trace, PromoteFixRequest(replay_id=replay_id, summary="Fix the coupon"))

    assert result.status == "committed"
    assert result.branch == f"molar/fix-{replay_id[:8]}"
    assert result.pr_url is None
    assert "no forge is configured" in result.message
    assert git(repo, "log", "-1", "--format=%s", result.branch) == "Fix the coupon"
    assert git(repo, "rev-parse", result.branch) == result.commit_sha
    assert "(1 - COUPONS[cart.coupon])" in git(repo, "show", f"{result.branch}:shop/app.py")
    assert (repo / "shop/app.py").read_text() == before
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "status", "--porcelain") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert again == result  # promoted once; asking again says what was done
    assert world.service.status(ORG, replay_id).promotion == result


def test_a_replay_without_a_source_fix_or_of_another_trace_cannot_be_promoted(world: World) -> None:
    text = scenario_text(world, "checkout-coupon")
    scenario_only = run(world, "checkout-coupon", request(6, scenario_diff=edit(text, *EXPECT_THE_BUG)))
    trace = world.runs["checkout-coupon"].short_id

    with pytest.raises(ReplayNotDone, match="changed only the scenario"):
        world.service.promote(ORG, trace, PromoteFixRequest(replay_id=scenario_only.id, summary="x"))
    with pytest.raises(ReplayNotFound):
        world.service.promote(
            ORG, world.runs["cart-basic"].short_id, PromoteFixRequest(replay_id=scenario_only.id, summary="x")
        )


def test_an_app_outside_git_or_not_configured_for_it_is_skipped_with_a_reason(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(SHOP_DIR, plain, ignore=shutil.ignore_patterns("__pycache__"))
    for config, reason in ((shop_config(plain), "not in a git repository"), (demo_app_config(), "promote: false")):
        w = make_world(tmp_path / f"data-{reason[:3]}", apps={DEMO_APP_NAME: config})
        try:
            result = w.service.promote(
                ORG, w.runs["checkout-coupon"].short_id, PromoteFixRequest(replay_id=fixed(w), summary="Fix")
            )
        finally:
            w.close()
        assert (result.status, result.branch, result.pr_url) == ("skipped", None, None)
        assert reason in result.message


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx2.AsyncClient]:
    ctx = dataclasses.replace(ApiContext.embedded(world.store), replays=world.service)
    transport = httpx2.ASGITransport(app=create_api_app(ctx), raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


@pytest.mark.anyio
async def test_promote_fix_over_http_reports_what_happened(world: World, http: httpx2.AsyncClient) -> None:
    replay_id = fixed(world)
    trace = world.runs["checkout-coupon"].short_id
    response = await http.post(f"/v1/traces/{trace}/promote-fix", json={"replay_id": replay_id, "summary": "Fix"})
    missing = await http.post(f"/v1/traces/{trace}/promote-fix", json={"replay_id": "nope", "summary": "Fix"})

    assert response.status_code == 200
    assert {"mender_attempt_id", "pr_url", "status"} <= set(response.json())
    assert response.json()["status"] == "committed"
    assert missing.status_code == 404
