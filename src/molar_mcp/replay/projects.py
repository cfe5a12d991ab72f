"""Which projects a replay may run: registered by an operator, never named by a caller.

A project is a git repository with a `molar.toml` at its root (docs/replay.md "Registering a project"),
inside one of the server's replay roots (`molar-mcp serve --replay-root DIR`, repeatable). A trace names
the repository it was recorded in (its path, or its remote URL); the replay runs what that repository's
`molar.toml` says, at the trace's commit. A caller supplies edits, never a command or a path.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST = "molar.toml"
HOW_TO_TURN_ON = (
    "replays of projects are off on this server: start it with `molar-mcp serve --replay-root DIR` (repeatable) "
    "where DIR holds the git repositories it may replay, each with a molar.toml (docs/replay.md)"
)
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


class NotRegistered(Exception):
    """The trace's project is not one this server may replay; the message says why and what to do."""


class ProjectReplay(BaseModel):
    """The `[replay]` table of a project's molar.toml."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["playwright", "command"]
    command: list[str] = Field(
        min_length=1,
        description="argv or a shell-style string. playwright: the Playwright CLI (`npx playwright test`), "
        "to which the replay adds --project, the file, -g and --trace on; command: what re-runs the agent",
    )
    app_command: list[str] | None = Field(
        default=None, description="starts the app under test first, when the test config does not"
    )
    app_url: str | None = Field(default=None, description="answers 2xx once the app is up (loopback)")
    app_startup_timeout_s: float = Field(default=60.0, gt=0, le=600)
    shared: list[str] = Field(
        default_factory=lambda: ["node_modules"],
        description="paths of the registered checkout made visible, read-only, in the replay's copy "
        "(installed dependencies that are not in git)",
    )
    timeout_s: float = Field(default=300.0, gt=0, le=3600)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("command", "app_command", mode="before")
    @classmethod
    def _argv(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("shared")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        for item in value:
            parts = Path(item).parts
            if not parts or Path(item).is_absolute() or ".." in parts:
                raise ValueError(f"shared path {item!r} must be relative to the repository and stay inside it")
        return value


@dataclass(frozen=True)
class Project:
    root: Path  # the git repository's top level (resolved)
    replay: ProjectReplay
    remote: str | None


def load_project(root: Path) -> Project:
    """Read `root/molar.toml`. Raises NotRegistered when it is missing or invalid."""
    manifest = root / MANIFEST
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotRegistered(f"{root} has no {MANIFEST}: it is not registered for replays") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NotRegistered(f"{manifest} cannot be read: {exc}") from None
    table = data.get("replay")
    if not isinstance(table, dict):
        raise NotRegistered(f"{manifest} has no [replay] table (kind, command)")
    try:
        replay = ProjectReplay.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "[replay]"
        raise NotRegistered(f"{manifest}: replay.{where}: {err['msg']}") from None
    return Project(root=root, replay=replay, remote=_git_out(root, "config", "--get", "remote.origin.url"))


def normalize_remote(url: str) -> str:
    """A remote URL reduced to host/path: `git@github.com:a/b.git`, `https://github.com/a/b` → `github.com/a/b`."""
    text = url.strip().lower()
    text = re.sub(r"^[a-z+]+://", "", text)
    text = re.sub(r"^[^@/]+@", "", text)
    text = text.replace(":", "/", 1) if re.match(r"^[^/]+:(?!\d)", text) else text
    return text.removesuffix("/").removesuffix(".git")


class ReplayRoots:
    """The directories whose git repositories this server may replay."""

    def __init__(self, roots: Sequence[Path] = ()) -> None:
        self.roots = [Path(r).resolve() for r in roots]

    def __bool__(self) -> bool:
        return bool(self.roots)

    def find(self, *, path: str | None, remote: str | None) -> Project:
        """The registered project a trace was recorded in. Raises NotRegistered saying why not."""
        if not self.roots:
            raise NotRegistered(HOW_TO_TURN_ON)
        if path:
            return self._by_path(path)
        if remote:
            return self._by_remote(remote)
        raise NotRegistered("the trace names no repository (path or remote), so no registered project matches it")

    def _inside(self, path: Path) -> bool:
        return any(path == root or root in path.parents for root in self.roots)

    def _by_path(self, raw: str) -> Project:
        given = Path(raw)
        if not given.is_absolute():
            raise NotRegistered(f"the trace's repository path {raw!r} is not absolute")
        resolved = given.resolve()
        if not self._inside(resolved):
            raise NotRegistered(f"{raw} is not inside a replay root of this server ({self._listed()})")
        if not resolved.is_dir():
            raise NotRegistered(f"{raw} does not exist on this server")
        top = _git_out(resolved, "rev-parse", "--show-toplevel")
        if top is None:
            raise NotRegistered(f"{raw} is not in a git repository")
        root = Path(top).resolve()
        if not self._inside(root):
            raise NotRegistered(f"the git repository of {raw} ({root}) is not inside a replay root")
        return load_project(root)

    def _by_remote(self, remote: str) -> Project:
        wanted = normalize_remote(remote)
        for candidate in self._repositories():
            project_remote = _git_out(candidate, "config", "--get", "remote.origin.url")
            if project_remote and normalize_remote(project_remote) == wanted:
                return load_project(candidate)
        raise NotRegistered(f"no repository under the replay roots ({self._listed()}) has the remote {remote}")

    def _repositories(self) -> list[Path]:
        """Each root that is a repository, and each directory directly inside a root that is one."""
        found: list[Path] = []
        for root in self.roots:
            for candidate in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
                if (candidate / ".git").exists() and (candidate / MANIFEST).is_file():
                    resolved = candidate.resolve()
                    if self._inside(resolved):
                        found.append(resolved)
        return found

    def _listed(self) -> str:
        return ", ".join(str(r) for r in self.roots)


def resolve_commit(root: Path, commit: str | None) -> str:
    """The full sha of `commit` in `root`'s repository. Raises NotRegistered when it is not there."""
    if not commit:
        raise NotRegistered("the trace does not say which commit it ran; a replay needs one")
    if not _SHA.match(commit.lower()):
        raise NotRegistered(f"the trace's commit {commit!r} is not a commit sha")
    full = _git_out(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    if full is None:
        raise NotRegistered(f"commit {commit} is not in {root}: fetch it there first (`git fetch`)")
    return full


def git_env() -> dict[str, str]:
    """The environment for our git calls: no repository or config of the caller's can leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _git_out(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git argv
            ["git", *args],  # noqa: S607
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            env=git_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None
