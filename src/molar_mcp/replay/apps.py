"""Run an app under test for a replay: copy its source, apply diffs, start it, wait for health, clean up.

`running_app` is the only way a replay starts a process, so its guarantee is the whole story: when the
`async with` block exits — normally, by an exception, or by cancellation — the process group is killed
and the temporary copy is gone. POSIX only (process groups).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import anyio
import anyio.abc
import httpx2
from pydantic import BaseModel, ConfigDict, Field, field_validator

LOG_TAIL_LINES = 40
_PATCH_FAILED_RE = re.compile(r"patch failed: (?P<file>.+):(?P<line>\d+)$", re.MULTILINE)
_NO_FILE_RE = re.compile(r"error: (?P<file>.+): (?:No such file or directory|does not exist in index)$", re.M)
_HUNK_RE = re.compile(r"@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")
# An enclosing repository must never be taken for ours: `git apply` inside a work tree resolves paths
# from the work tree's root and silently skips files outside the current directory.
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")


class AppConfig(BaseModel):
    """How to run one app under test. `{port}` in `start_command` becomes the chosen free port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source_dir: Path = Field(description="copied afresh for every run; diffs apply to the copy")
    start_command: list[str] = Field(min_length=1, description="argv, run in the copy; `{port}` is replaced")
    health_path: str = Field(default="/healthz", pattern=r"^/")
    startup_timeout_s: float = Field(default=15.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict, description="added to the inherited environment")
    promote: bool = Field(
        default=True, description="promote-fix may commit a replay's source diffs on a new branch of source_dir's repo"
    )

    @field_validator("start_command")
    @classmethod
    def _has_port(cls, value: list[str]) -> list[str]:
        if not any("{port}" in arg for arg in value):
            raise ValueError("start_command must contain {port}: the app listens where the runner says")
        return value


class AppError(Exception):
    """A replay could not get the app running."""


class DiffDoesNotApply(AppError):
    """A source (or scenario) diff that does not apply; `file` and `hunk` name where, when git says."""

    def __init__(
        self,
        label: str,
        *,
        reason: str,
        file: str | None = None,
        hunk: str | None = None,
        detail: str = "",
    ) -> None:
        self.label, self.reason, self.file, self.hunk, self.detail = label, reason, file, hunk, detail
        where = f"hunk {hunk} of {file}" if hunk and file else file or "the diff"
        message = f"{label}: {where} {reason}"
        super().__init__(f"{message}\n{detail}".rstrip())


class AppStartError(AppError):
    """The app exited or never answered its health check; `log_tail` is the end of its output."""

    def __init__(self, message: str, *, log_tail: str, exit_code: int | None = None) -> None:
        self.log_tail, self.exit_code = log_tail, exit_code
        super().__init__(f"{message}\n--- app log (tail) ---\n{log_tail}" if log_tail else message)


# ---------------------------------------------------------------------------------------------------------
# Diffs


def apply_unified_diff(root: Path, diff: str, *, label: str) -> None:
    """Apply a unified diff to the files under `root` with `git apply` (checked first, no fuzz).

    Paths in the diff are relative to `root`; `a/` and `b/` prefixes are stripped when both are present.
    Hunk line counts are recounted (hand-edited diffs often miscount) but context must match exactly.
    Raises DiffDoesNotApply naming the file and the hunk git rejected; nothing is changed then.
    """
    if not diff.strip():
        raise DiffDoesNotApply(label, reason="is empty")
    args = ["git", "apply", "--recount", "--whitespace=nowarn", f"-p{_strip_level(diff)}"]
    env = {key: value for key, value in os.environ.items() if key not in _GIT_ENV_DROP}
    env["GIT_CEILING_DIRECTORIES"] = str(root.resolve().parent)
    text = diff if diff.endswith("\n") else diff + "\n"
    for extra in (["--check"], []):
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, the diff goes through stdin
                [*args, *extra], cwd=root, input=text, capture_output=True, text=True, env=env, timeout=60
            )
        except FileNotFoundError:
            raise AppError("git is needed to apply diffs and is not on PATH") from None
        if done.returncode != 0:
            raise _does_not_apply(label, diff, done.stderr)


def _strip_level(diff: str) -> int:
    olds = [line[4:] for line in diff.splitlines() if line.startswith("--- ") and "/dev/null" not in line]
    news = [line[4:] for line in diff.splitlines() if line.startswith("+++ ") and "/dev/null" not in line]
    prefixed = all(p.startswith("a/") for p in olds) and all(p.startswith("b/") for p in news)
    return 1 if prefixed and (olds or news) else 0


def _does_not_apply(label: str, diff: str, stderr: str) -> DiffDoesNotApply:
    detail = "\n".join(line for line in stderr.strip().splitlines() if not line.startswith("Checking patch"))
    if (failed := _PATCH_FAILED_RE.search(stderr)) is not None:
        file, line = failed["file"], int(failed["line"])
        hunk = _find_hunk(diff, file, line)
        reason = "does not apply: its context lines are not in the source"
        return DiffDoesNotApply(label, reason=reason, file=file, hunk=hunk or f"at line {line}", detail=detail)
    if (missing := _NO_FILE_RE.search(stderr)) is not None:
        file = missing["file"]
        return DiffDoesNotApply(label, reason="does not apply: the file is not in the source", file=file)
    return DiffDoesNotApply(label, reason="is not a valid unified diff", detail=detail)


def _find_hunk(diff: str, file: str, old_start: int) -> str | None:
    """The `@@ … @@` header of the hunk of `file` starting at old line `old_start` (git's report)."""
    current: str | None = None
    for line in diff.splitlines():
        if line.startswith(("--- ", "+++ ")):
            path = line[4:].split("\t", 1)[0].strip()
            if path != "/dev/null":
                current = path
        elif line.startswith("@@") and current is not None:
            header = _HUNK_RE.match(line)
            if header and int(header[1]) == old_start and (current == file or current.endswith("/" + file)):
                return line[: header.end()]
    return None


# ---------------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 free at the time of asking (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_app(
    config: AppConfig,
    source_diffs: Sequence[tuple[str, str]] = (),
    *,
    workdir: Path | None = None,
    startup_timeout_s: float | None = None,
) -> AsyncIterator[str]:
    """Run `config`'s app from a patched fresh copy of its source; yields its base URL.

    `source_diffs` are `(label, unified diff)` pairs applied in order to the copy (the label, usually
    the file the diff changes, names the diff in errors). Raises DiffDoesNotApply or AppStartError
    (with the app's log tail). On exit, always: the process group is killed, the copy is removed.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"molar-{config.name}-", dir=workdir))
    process: anyio.abc.Process | None = None
    try:
        source = tmp / "src"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")
        await anyio.to_thread.run_sync(functools.partial(shutil.copytree, config.source_dir, source, ignore=ignore))
        for label, diff in source_diffs:
            await anyio.to_thread.run_sync(functools.partial(apply_unified_diff, source, diff, label=label))
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        command = [arg.replace("{port}", str(port)) for arg in config.start_command]
        log_path = tmp / "app.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **config.env}
        with log_path.open("wb") as log:
            try:
                process = await anyio.open_process(
                    command,
                    cwd=source,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, so we can kill all it spawns
                )
            except OSError as exc:
                raise AppStartError(f"{config.name}: cannot run {command[0]!r}: {exc}", log_tail="") from None
        timeout = startup_timeout_s if startup_timeout_s is not None else config.startup_timeout_s
        await _wait_healthy(config.name, process, base_url + config.health_path, timeout, log_path)
        yield base_url
    finally:
        with anyio.CancelScope(shield=True):
            if process is not None:
                await _stop(process)
            await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, tmp, ignore_errors=True))


async def _wait_healthy(name: str, process: anyio.abc.Process, url: str, within_s: float, log_path: Path) -> None:
    deadline = anyio.current_time() + within_s
    async with httpx2.AsyncClient(timeout=2.0) as client:
        while True:
            if process.returncode is not None:
                raise AppStartError(
                    f"{name} exited with code {process.returncode} before answering {url}",
                    log_tail=_log_tail(log_path),
                    exit_code=process.returncode,
                )
            with suppress(httpx2.TransportError):
                if (await client.get(url)).is_success:
                    return
            if anyio.current_time() >= deadline:
                raise AppStartError(
                    f"{name} did not answer {url} with 2xx within {within_s:g} s",
                    log_tail=_log_tail(log_path),
                )
            await anyio.sleep(0.05)  # health polling


async def _stop(process: anyio.abc.Process) -> None:
    """SIGTERM the process group, SIGKILL it after 5 s, and reap the leader."""
    group = process.pid  # a session leader: its pid is its process group id
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with anyio.move_on_after(5):
        await process.wait()
    # Kill whatever is left in the group, stragglers included; the group id cannot be reused while a
    # member lives, so this never reaches an unrelated process.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    await process.wait()
    await process.aclose()
    # A signal is delivered when its target next runs: on a busy machine the group's members may still
    # be running for a while after kill returns. Return only once none of them is left (zombies waiting
    # for init to reap them have ended), so "stopped" means stopped.
    for _ in range(500):  # at most ~5 s
        if not _group_members(group):
            break
        await anyio.sleep(0.01)


def _group_members(group: int) -> list[int]:
    """The live (not zombie) processes whose process group is `group`, from /proc."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name: state, ppid, pgrp, …
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])
