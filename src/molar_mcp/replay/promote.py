"""Promote a replay's fix: commit its source diffs on a new branch of the git repository holding the app.

The commit is made in a temporary `git worktree` on the new branch, so the developer's checkout, index
and current branch are never touched; the worktree is removed afterwards (the branch stays). No push,
no pull request: `pr_url` stays null until a forge is configured, and the message says what to run.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from molar_mcp.models.replays import PromoteFixResult
from molar_mcp.replay.apps import AppConfig, AppError, DiffDoesNotApply, apply_unified_diff

BRANCH_PREFIX = "molar/fix-"
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
_FALLBACK_IDENTITY = ("-c", "user.name=Molar MCP", "-c", "user.email=molar-mcp@localhost")


class _GitFailed(Exception):
    pass


def _git(args: Sequence[str], cwd: Path, *, check: bool = True) -> str:
    env = {key: value for key, value in os.environ.items() if key not in _GIT_ENV_DROP}
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, git from PATH as apps.py runs it
            ["git", *args],  # noqa: S607
            cwd=cwd,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    except FileNotFoundError:
        raise _GitFailed("git is not on PATH") from None
    if check and done.returncode != 0:
        raise _GitFailed(f"git {args[0]}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def promote_fix(
    app: AppConfig,
    source_diffs: Sequence[tuple[str, str]],
    *,
    summary: str,
    replay_id: str,
    trace_short_id: str,
) -> PromoteFixResult:
    """Commit `source_diffs` on branch `molar/fix-<replay>` of `app.source_dir`'s repository.

    Never raises for an expected outcome: the result's `status` (`committed`, `skipped`, `failed`)
    and `message` say what happened and what to do next.
    """
    attempt = str(uuid.uuid4())

    def result(status: str, message: str, **extra: str | None) -> PromoteFixResult:
        return PromoteFixResult.model_validate(
            {"mender_attempt_id": attempt, "status": status, "message": message, **extra}
        )

    if not app.promote:
        return result(
            "skipped",
            f"the {app.name} app is not configured for promote-fix (promote: false); apply the replay's "
            "source diffs to your checkout yourself",
        )
    source = app.source_dir.resolve()
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], source)).resolve()
    except _GitFailed:
        return result(
            "skipped",
            f"{source} is not in a git repository, so there is no branch to commit to; apply the replay's "
            "source diffs there yourself",
        )
    relative = source.relative_to(top)
    branch = f"{BRANCH_PREFIX}{replay_id[:8]}"
    if _git(["branch", "--list", branch], top):
        return result(
            "failed", f"branch {branch} already exists in {top}; delete it to promote again", repository=str(top)
        )
    body = f"Replay {replay_id} of trace {trace_short_id} passed with this change.\n\nPromoted by molar-mcp."
    with tempfile.TemporaryDirectory(prefix="molar-promote-") as tmp:
        worktree = Path(tmp) / "worktree"
        try:
            _git(["worktree", "add", "--quiet", "-b", branch, str(worktree), "HEAD"], top)
        except _GitFailed as exc:
            return result("failed", f"could not create branch {branch}: {exc}", repository=str(top))
        committed = False
        try:
            for label, diff in source_diffs:
                apply_unified_diff(worktree / relative, diff, label=label)
            identity: tuple[str, ...] = (
                () if _git(["config", "user.email"], worktree, check=False) else _FALLBACK_IDENTITY
            )
            _git(["add", "--all", "."], worktree)
            _git([*identity, "commit", "--quiet", "--no-verify", "-m", summary, "-m", body], worktree)
            sha = _git(["rev-parse", "HEAD"], worktree)
            committed = True
        except (DiffDoesNotApply, AppError, _GitFailed) as exc:
            return result("failed", f"could not commit the fix on {branch}: {exc}", repository=str(top))
        finally:
            _git(["worktree", "remove", "--force", str(worktree)], top, check=False)
            if not committed:
                _git(["branch", "-D", branch], top, check=False)
    return result(
        "committed",
        f"committed on branch {branch} in {top}; no forge is configured, so no pull request was opened: "
        f"push it with `git push -u origin {branch}` and open one",
        branch=branch,
        commit_sha=sha,
        repository=str(top),
    )
