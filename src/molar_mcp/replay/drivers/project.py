"""Replays of registered projects (docs/replay.md "Projects"): check the edits against the recorded
commit, check out that commit in a fresh `git worktree`, apply the edits, run the driver's command in the
sandbox, and turn what it left into the child trace. The drivers (`playwright.py`, `command.py`) say what
command runs and how its trace is found; everything else is here, shared.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.to_thread

from molar_mcp.models import ArtifactRef, Event, TraceDetail
from molar_mcp.models.replays import ReplayOrigin
from molar_mcp.replay.apps import AppError, DiffDoesNotApply, apply_unified_diff
from molar_mcp.replay.edits import touched_paths
from molar_mcp.replay.projects import Project, git_env
from molar_mcp.replay.sandbox import Bind, Sandbox, SandboxResult, Workspace
from molar_mcp.store.port import NewTrace

MAX_EDIT_BYTES = 1024 * 1024  # all source diffs of one replay together
LOG_TAIL_LINES = 60


class WorktreeError(AppError):
    """The recorded commit could not be checked out for the replay."""


@dataclass
class ProjectRun:
    """What ran in the sandbox, for the answer and the child trace."""

    command: list[str]
    commit: str
    edits: list[str]
    result: SandboxResult
    tree: Path
    outputs: dict[str, bytes] = field(default_factory=dict)  # files the driver collected from the tree


def check_edits(project: Project, commit: str, diffs: Sequence[tuple[str, str]]) -> None:
    """Every diff is text, stays inside the repository (no `..`, no absolute path, no symlink on the way)
    and applies, in order, to the files at `commit`. Raises DiffDoesNotApply naming the file and hunk."""
    total = sum(len(d.encode()) for _, d in diffs)
    if total > MAX_EDIT_BYTES:
        raise DiffDoesNotApply(
            "source_diffs", reason=f"are {total} bytes together; the limit is {MAX_EDIT_BYTES} bytes"
        )
    wanted: list[PurePosixPath] = []
    for label, diff in diffs:
        if not diff.strip():
            raise DiffDoesNotApply(label, reason="is empty")
        if "\0" in diff or "GIT binary patch" in diff or "\nBinary files " in "\n" + diff:
            raise DiffDoesNotApply(label, reason="is a binary diff; only text diffs are applied")
        for path in touched_paths(diff, label=label):
            for depth in range(1, len(path.parts) + 1):
                prefix = PurePosixPath(*path.parts[:depth])
                if _mode_at(project.root, commit, prefix) == "120000":
                    raise DiffDoesNotApply(
                        label, reason="goes through a symbolic link, which may point outside", file=str(path)
                    )
            if path not in wanted:
                wanted.append(path)
    with tempfile.TemporaryDirectory(prefix="molar-check-") as tmp:
        root = Path(tmp)
        for rel in wanted:
            data = _show(project.root, commit, rel)
            if data is not None:
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
        for label, diff in diffs:
            apply_unified_diff(root, diff, label=label)


def _mode_at(root: Path, commit: str, path: PurePosixPath) -> str | None:
    done = _git(root, "ls-tree", commit, "--", str(path))
    return done.split(" ", 1)[0] if done else None


def _show(root: Path, commit: str, path: PurePosixPath) -> bytes | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git argv
            ["git", "show", f"{commit}:{path}"],  # noqa: S607
            cwd=root,
            capture_output=True,
            timeout=30,
            env=git_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _git(cwd: Path, *args: str, check: bool = False) -> str:
    done = subprocess.run(  # noqa: S603 - fixed git argv
        ["git", *args],  # noqa: S607
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=git_env(),
    )
    if check and done.returncode != 0:
        raise WorktreeError(f"git {args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout.strip() if done.returncode == 0 else ""


@asynccontextmanager
async def checked_out(project: Project, commit: str, workspace: Workspace) -> AsyncIterator[Path]:
    """A fresh `git worktree` of `commit` inside the workspace; removed (and pruned) on exit, always."""
    tree = workspace.path / "tree"
    run = functools.partial(_git, project.root, check=True)
    await anyio.to_thread.run_sync(run, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield tree
    finally:
        with anyio.CancelScope(shield=True):
            with suppress(WorktreeError, OSError, subprocess.TimeoutExpired):
                await anyio.to_thread.run_sync(run, "worktree", "remove", "--force", str(tree))
            with suppress(WorktreeError, OSError, subprocess.TimeoutExpired):
                await anyio.to_thread.run_sync(run, "worktree", "prune")


def shared_binds(project: Project, tree: Path) -> list[Bind]:
    """The registered checkout's `shared` paths (installed dependencies), read-only in the replay's tree."""
    binds: list[Bind] = []
    for rel in project.replay.shared:
        source = (project.root / rel).resolve()
        if source.exists() and project.root in source.parents:
            binds.append(Bind(source, tree / rel))
    return binds


def with_app(project: Project, command: list[str]) -> list[str]:
    """`command`, preceded by the project's app start command and a wait for its URL, when it has one."""
    app = project.replay.app_command
    if not app:
        return command
    url = project.replay.app_url or ""
    host_port = url.split("://", 1)[-1].split("/", 1)[0]
    port = host_port.rsplit(":", 1)[1] if ":" in host_port else "80"
    tries = int(project.replay.app_startup_timeout_s * 10)
    script = (
        f"{shlex.join(app)} > .molar-app.log 2>&1 &\n"
        f"for i in $(seq {tries}); do (exec 3<>/dev/tcp/127.0.0.1/{int(port)}) 2>/dev/null && break; sleep 0.1; done\n"
        f'exec {shlex.join(command)} "$@"\n'
    )
    return ["/bin/bash", "-c", script, "molar-replay"]


OnLine = Callable[[str], Awaitable[None]]


async def run_in_tree(
    sandbox: Sandbox,
    workspace: Workspace,
    project: Project,
    origin: ReplayOrigin,
    commit: str,
    diffs: Sequence[tuple[str, str]],
    command: list[str],
    env: dict[str, str],
    *,
    collect: Callable[[Path], dict[str, bytes]] | None = None,
    on_line: OnLine | None = None,
    extra_binds: Sequence[Bind] = (),
) -> ProjectRun:
    """Check out `commit`, apply `diffs`, run `command` in the sandbox in that tree; collect its outputs."""
    async with checked_out(project, commit, workspace) as tree:
        for label, diff in diffs:
            await anyio.to_thread.run_sync(functools.partial(apply_unified_diff, tree, diff, label=label))
        await anyio.to_thread.run_sync(sandbox.give, workspace, tree)
        result = await sandbox.run(
            workspace,
            with_app(project, command),
            binds=[*extra_binds, *shared_binds(project, tree)],
            env={**project.replay.env, **env},
            cwd=tree,
            wall_s=project.replay.timeout_s,
            on_line=on_line,
        )
        outputs = await anyio.to_thread.run_sync(collect, tree) if collect is not None else {}
    return ProjectRun(
        command=command, commit=commit, edits=[label for label, _ in diffs], result=result, tree=tree, outputs=outputs
    )


def log_tail(result: SandboxResult, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(result.output_tail.strip().splitlines()[-lines:])


def read_inside(tree: Path, rel: str, limit: int) -> bytes | None:
    """A regular file the sandboxed run left in `tree`, or None: never through a symlink out of the tree,
    never more than `limit` bytes (what the run wrote is untrusted)."""
    base = tree.resolve()
    path = (tree / rel).resolve()
    if base not in path.parents:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return fh.read(limit + 1)[:limit]


def run_trace(
    parent: TraceDetail,
    origin: ReplayOrigin,
    run: ProjectRun,
    *,
    from_step: int,
    what: str,
    status: str | None = None,
    failure: str | None = None,
    steps: Sequence[Event] = (),
) -> tuple[NewTrace, dict[str, bytes]]:
    """The child trace of a project run when no richer trace of it was recorded: what ran, its output's
    tail, and its outcome (exit code 0 = passed). Artifacts: the edits as `source.diff`, the output."""
    now = int(time.time() * 1000)
    result = run.result
    if status is None:
        status = "passed" if result.exit_code == 0 else "failed"
    if failure is None and status != "passed":
        failure = result.reason or f"{what} exited with code {result.exit_code}"
    events: list[Event] = []

    def add(kind: str, message: str, **payload: Any) -> None:
        events.append(Event(seq=len(events), ts=now, kind=kind, message=message[:400], payload=payload))

    add(
        "log",
        f"replay of {parent.short_id} from step {from_step}: {what} at {run.commit[:12]}",
        level="info",
        replay_of=parent.id,
        from_step=from_step,
        command=run.command,
        commit=run.commit,
        source_diffs=run.edits,
    )
    for ev in steps:  # the run's own steps, when the driver read them (a Playwright test's)
        events.append(ev.model_copy(update={"seq": len(events)}))
    for line in log_tail(result, 200).splitlines() if not steps else ():
        add("log", line, level="stdout", text=line[:4000])
    if status != "passed":
        add("error", failure or "failed", name="ReplayFailed", text=failure or "failed", exit_code=result.exit_code)
    blobs: dict[str, bytes] = {}
    artifacts: list[ArtifactRef] = []
    output = result.output_tail.encode()
    for kind, name, content_type, data in (("log", "output.log", "text/plain; charset=utf-8", output),):
        sha = hashlib.sha256(data).hexdigest()
        blobs[sha] = data
        artifacts.append(ArtifactRef(kind=kind, sha256=sha, name=name, content_type=content_type, size=len(data)))
    trace = NewTrace(
        scenario_slug=parent.scenario_slug or "replay",
        scenario_title=parent.scenario_title,
        status=status,
        source="manual",
        code_sha=run.commit if not run.edits else None,
        failure_signature=(failure or None) if status != "passed" else None,
        duration_ms=result.duration_ms,
        parent_trace_id=parent.id,
        replay_from_step=from_step,
        artifacts=artifacts,
        events=events,
    )
    return trace, blobs


def with_edits(trace: NewTrace, blobs: dict[str, bytes], diffs: Sequence[tuple[str, str]]) -> None:
    """Attach the replay's source diffs to its child trace as `source.diff`."""
    if not diffs:
        return
    data = "".join(d if d.endswith("\n") else d + "\n" for _, d in diffs).encode()
    sha = hashlib.sha256(data).hexdigest()
    blobs[sha] = data
    trace.artifacts.append(
        ArtifactRef(
            kind="patch", sha256=sha, name="source.diff", content_type="text/x-diff; charset=utf-8", size=len(data)
        )
    )
