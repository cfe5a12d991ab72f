"""Where a test run comes from: commit, branch, pull request and CI job URL from the CI's own
variables (GitHub Actions, GitLab CI, Buildkite, CircleCI, Jenkins, Azure Pipelines), else from git;
the repository's path and remote (credentials removed) from git.

The same rules as `integrations/playwright-reporter/lib/source.js`, so a pytest run and a Playwright
run of one CI job describe their origin alike.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_PR = re.compile(r"(?:^|/)(\d+)(?:/(?:merge|head))?$")


def git(cwd: Path, *args: str) -> str | None:
    """`git ARGS` in `cwd`, stripped; `None` when git is missing, slow or fails."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


def _first(*values: str | None) -> str | None:
    for value in values:
        if value and value.strip() and value.strip() != "false":
            return value.strip()
    return None


def pr_number(*values: str | None) -> int | None:
    """A positive PR number from text such as `123`, `refs/pull/123/merge`, `…/pull/123`."""
    for value in values:
        if not value:
            continue
        match = _PR.search(value.strip())
        if match and int(match.group(1)) > 0:
            return int(match.group(1))
    return None


def redact_remote(remote: str | None) -> str | None:
    """The remote URL without user or password: `https://x-access-token:…@github.com/a/b` must not reach
    the store. scp-like `git@host:path` remotes carry no secret and stay as they are."""
    if not remote:
        return None
    parts = urlsplit(remote)
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return remote


def ci_url(env: Mapping[str, str]) -> str | None:
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        attempt = f"/attempts/{env['GITHUB_RUN_ATTEMPT']}" if env.get("GITHUB_RUN_ATTEMPT") else ""
        return f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}{attempt}"
    if env.get("SYSTEM_COLLECTIONURI") and env.get("SYSTEM_TEAMPROJECT") and env.get("BUILD_BUILDID"):
        return f"{env['SYSTEM_COLLECTIONURI']}{env['SYSTEM_TEAMPROJECT']}/_build/results?buildId={env['BUILD_BUILDID']}"
    return _first(
        env.get("CI_JOB_URL"), env.get("BUILDKITE_BUILD_URL"), env.get("CIRCLE_BUILD_URL"), env.get("BUILD_URL")
    )


def run_source(env: Mapping[str, str], cwd: Path) -> dict[str, Any]:
    """`{commit?, branch?, pr_number?, ci_url?, repo: {path?, remote?}}` for `POST /v1/runs`."""
    ref = env.get("GITHUB_REF", "")
    github_pr = ref if ref.startswith("refs/pull/") else None
    commit = _first(
        env.get("MOLAR_COMMIT"),
        env.get("GITHUB_SHA"),
        env.get("CI_COMMIT_SHA"),
        env.get("BUILDKITE_COMMIT"),
        env.get("CIRCLE_SHA1"),
        env.get("BUILD_SOURCEVERSION"),
        env.get("GIT_COMMIT"),
    ) or git(cwd, "rev-parse", "HEAD")
    branch = _first(
        env.get("MOLAR_BRANCH"),
        env.get("GITHUB_HEAD_REF"),  # set on pull_request events: the PR's branch
        None if github_pr else env.get("GITHUB_REF_NAME"),
        env.get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME"),
        env.get("CI_COMMIT_BRANCH"),
        env.get("CI_COMMIT_REF_NAME"),
        env.get("BUILDKITE_BRANCH"),
        env.get("CIRCLE_BRANCH"),
        env.get("SYSTEM_PULLREQUEST_SOURCEBRANCH"),
        env.get("BUILD_SOURCEBRANCHNAME"),
        env.get("CHANGE_BRANCH"),
        env.get("GIT_BRANCH"),
    )
    if branch is None:
        name = git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
        branch = None if name == "HEAD" else name  # a detached HEAD has no branch
    pr = pr_number(
        env.get("MOLAR_PR_NUMBER"),
        github_pr,
        env.get("CI_MERGE_REQUEST_IID"),
        _first(env.get("BUILDKITE_PULL_REQUEST")),
        env.get("CIRCLE_PULL_REQUEST"),
        env.get("SYSTEM_PULLREQUEST_PULLREQUESTNUMBER"),
        env.get("CHANGE_ID"),
    )
    repo: dict[str, str] = {}
    source: dict[str, Any] = {"repo": repo}
    if commit:
        source["commit"] = commit
    if branch:
        source["branch"] = branch
    if pr:
        source["pr_number"] = pr
    job = ci_url(env)
    if job:
        source["ci_url"] = job
    top = git(cwd, "rev-parse", "--show-toplevel")
    if top:
        repo["path"] = top
    remote = redact_remote(_first(env.get("MOLAR_REPO_REMOTE")) or git(cwd, "remote", "get-url", "origin"))
    if remote:
        repo["remote"] = remote
    return source
