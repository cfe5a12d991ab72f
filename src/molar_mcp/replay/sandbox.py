"""Run a replay's code in a sandbox: Debian's bubblewrap (`bwrap`), never hand-made chroot code.

What a sandboxed command gets (docs/replay.md "The sandbox"):

- **Its own unprivileged uid.** When the server runs as root, each replay gets a uid of its own from a
  dedicated range (`UID_BASE`…): bwrap sets up the mounts as root, then `setpriv` drops to that uid with
  no capabilities, no supplementary groups and `no_new_privs` before the command runs. (Dropping inside
  lets bwrap bind an interpreter that lives under a private directory such as `/root/.pyenv`.) Not root:
  bwrap runs unprivileged in a user namespace as the server's own uid.
- **A filesystem of only what it needs.** A new root: `/usr` (and the merged-`/usr` links), a short list
  of `/etc` files, the interpreter and libraries the command needs (read-only), its workspace
  (read-write, owned by its uid), a private `/tmp` (tmpfs, size-limited), a minimal `/dev` and a `/proc`
  of its own pid namespace. The server's data dir, keys and tokens are simply not in it, and `hide`
  lays an empty tmpfs over any of them that lies inside a bound directory.
- **No environment of the server's** (`--clearenv`; only what the caller sets).
- **Loopback-only network** (`--unshare-net`: a namespace with its own `lo` and nothing else), new pid,
  IPC and UTS namespaces, `--die-with-parent`, `--new-session` (no TIOCSTI on the server's terminal).
- **Limits**: wall time (the process group is killed), a memory limit per process (RLIMIT_DATA: unlike
  RLIMIT_AS it leaves V8's and Chromium's address-space reservations alone), a process/thread limit
  (RLIMIT_NPROC, counted per uid, hence a uid per replay), file size, open files, no core dumps, and
  a cap on output (a command that floods stdout is stopped).
- **Nothing left behind**: bwrap's process group is killed at the end; its pid namespace takes every
  descendant with it, and as root every process still running as the replay's uid is killed too.

When `bwrap` is missing, `Sandbox.find()` raises SandboxUnavailable naming the package to install; the
server then refuses replays. There is no unsandboxed fallback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread

INSTALL_HINT = (
    "replays run in a bubblewrap sandbox and `bwrap` is not installed: install it "
    "(Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`) and restart the server"
)
UID_BASE = 200_000  # the replay uids: UID_BASE … UID_BASE + UID_COUNT - 1 (no user owns them)
UID_COUNT = 10_000
SETPRIV = "/usr/bin/setpriv"
PRLIMIT = "/usr/bin/prlimit"
PATH_INSIDE = "/usr/local/bin:/usr/bin:/bin"
TMP = "/tmp"  # noqa: S108 - the sandbox's own private tmpfs, not the host's
SHM = "/dev/shm"  # noqa: S108 - likewise
OUTPUT_TAIL_BYTES = 16 * 1024
# /etc entries a program may need (the dynamic linker, TLS roots, fonts for a browser, name lookups);
# nothing else of /etc is visible.
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "chromium",
    "chromium.d",
    "fonts",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "passwd",
    "ssl",
)
ROOT_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")


class SandboxUnavailable(Exception):
    """The sandbox tool is missing or does not work here; replays are refused."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 300.0
    memory_bytes: int = 4 * 1024**3  # per process (RLIMIT_DATA)
    processes: int = 2048  # processes and threads of the replay's uid (RLIMIT_NPROC)
    file_bytes: int = 1024**3  # the largest file it may write (RLIMIT_FSIZE)
    open_files: int = 4096
    tmp_bytes: int = 1024**3  # the private /tmp
    output_bytes: int = 8 * 1024 * 1024  # stdout + stderr; more is a flood and stops the command


@dataclass(frozen=True)
class Bind:
    """`source` on the host, visible at `dest` (default: the same path) inside; read-only unless `writable`."""

    source: Path
    dest: Path | None = None
    writable: bool = False


@dataclass
class SandboxResult:
    exit_code: int | None
    duration_ms: int
    output_tail: str
    output_bytes: int
    timed_out: bool = False
    output_exceeded: bool = False

    @property
    def reason(self) -> str | None:
        """Why the command was stopped, or None when it ended by itself."""
        if self.timed_out:
            return "it ran past its wall-time limit and was stopped"
        if self.output_exceeded:
            return "it wrote more than the output limit to stdout/stderr and was stopped"
        return None


@dataclass
class Workspace:
    """A replay's own directory (`path`, writable inside) and uid; see `Sandbox.workspace`."""

    path: Path
    uid: int
    gid: int
    _host_tmp: Path = field(repr=False)


class _Uids:
    """Hands out replay uids nobody in this process uses; another server's are skipped by a /proc check."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[int] = set()

    def take(self) -> int:
        with self._lock:
            for _ in range(200):
                uid = UID_BASE + random.randrange(UID_COUNT)
                if uid not in self._taken and not processes_of_uid(uid):
                    self._taken.add(uid)
                    return uid
        raise SandboxUnavailable("no free replay uid: too many replays running")

    def give_back(self, uid: int) -> None:
        with self._lock:
            self._taken.discard(uid)


_UIDS = _Uids()


def processes_of_uid(uid: int) -> list[int]:
    """Pids of the processes running as `uid` (the owner of /proc/<pid> is the process's effective uid;
    a replay's processes have no other: `setpriv` set real, effective and saved uid alike)."""
    found: list[int] = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid == uid:
                        found.append(int(entry.name))
    return found


def kill_uid(uid: int) -> int:
    """SIGKILL every process running as `uid` until none is left; how many were found the first time."""
    first = processes_of_uid(uid)
    pids = first
    for _ in range(50):
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
        pids = processes_of_uid(uid)
    return len(first)


def runtime_paths() -> list[Path]:
    """The directories this Python needs to run `python -m molar_mcp…` inside: its prefixes (the
    interpreter, a virtualenv) and the directory molar_mcp is imported from, minus what /usr covers."""
    package_root = Path(__file__).resolve().parents[2]  # …/site-packages or an editable install's src/
    wanted: list[Path] = []
    for path in (Path(sys.base_prefix), Path(sys.prefix), package_root):
        if not path.is_dir() or path.parts[:2] == ("/", "usr"):
            continue
        if not any(path == p or p in path.parents for p in wanted):
            wanted = [p for p in wanted if path not in p.parents]
            wanted.append(path)
    return wanted


class Sandbox:
    """Builds and runs bwrap command lines. `find()` checks the tool is there and works."""

    def __init__(self, bwrap: str, *, limits: SandboxLimits | None = None, hide: Iterable[Path] = ()) -> None:
        self.bwrap = bwrap
        self.limits = limits or SandboxLimits()
        self.hide = [Path(p).resolve() for p in hide]
        self.as_root = os.geteuid() == 0

    @classmethod
    def find(cls, *, limits: SandboxLimits | None = None, hide: Iterable[Path] = ()) -> Sandbox:
        """The sandbox, after one trial run. Raises SandboxUnavailable saying what to install or fix."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(INSTALL_HINT)
        sandbox = cls(bwrap, limits=limits, hide=hide)
        sandbox.check()
        return sandbox

    def check(self) -> None:
        """Run `true` in a sandbox like a replay's; raise SandboxUnavailable with bwrap's words if it fails."""
        if self.as_root and not (Path(SETPRIV).exists() and Path(PRLIMIT).exists()):
            raise SandboxUnavailable(f"{SETPRIV} and {PRLIMIT} (util-linux) are needed to drop to a replay uid")
        with tempfile.TemporaryDirectory(prefix="molar-sandbox-check-") as tmp:
            last = UID_BASE + UID_COUNT - 1
            argv = self.argv(["/usr/bin/true"], uid=last, gid=last, cwd=Path(tmp), binds=[Bind(Path(tmp))])
            try:
                done = subprocess.run(  # noqa: S603 - bwrap with a fixed argv
                    argv, capture_output=True, text=True, timeout=30, env={"PATH": PATH_INSIDE}
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise SandboxUnavailable(f"the bubblewrap sandbox does not start here: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()[-500:]
            raise SandboxUnavailable(
                f"the bubblewrap sandbox does not start here ({said or f'exit code {done.returncode}'}); "
                "bwrap needs user namespaces (kernel.unprivileged_userns_clone=1) or to run as root"
            )

    # ---- workspaces ---------------------------------------------------------------------------

    @asynccontextmanager
    async def workspace(self, *, prefix: str = "molar-replay-", parent: Path | None = None) -> AsyncIterator[Workspace]:
        """A fresh directory for one replay, writable by its own uid; on exit every process of that uid is
        killed (root) and the directory is removed, whatever happened."""
        uid = _UIDS.take() if self.as_root else os.getuid()
        gid = uid if self.as_root else os.getgid()
        host_tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        try:
            work = host_tmp / "work"
            work.mkdir()
            if self.as_root:
                os.chmod(host_tmp, 0o711)  # noqa: S103 - traversable, not listable: the uid reaches work/ only
                os.chown(work, uid, gid)
            yield Workspace(work, uid, gid, host_tmp)
        finally:
            with anyio.CancelScope(shield=True):
                if self.as_root:
                    await anyio.to_thread.run_sync(kill_uid, uid)
                await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, host_tmp, ignore_errors=True))
                if self.as_root:
                    _UIDS.give_back(uid)

    def give(self, workspace: Workspace, path: Path) -> None:
        """Make `path` (inside the workspace, created by the server) the replay uid's, recursively."""
        if not self.as_root:
            return
        for root, dirs, files in os.walk(path):
            os.lchown(root, workspace.uid, workspace.gid)
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), workspace.uid, workspace.gid)

    # ---- command lines ------------------------------------------------------------------------

    def argv(
        self,
        command: Sequence[str],
        *,
        uid: int,
        gid: int,
        cwd: Path,
        binds: Sequence[Bind] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The full command line: bwrap with its namespaces and mounts, limits, the uid drop, `command`."""
        limits = self.limits
        args = [self.bwrap]
        for name in ROOT_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                args += ["--ro-bind", str(host), str(host)]
        args += ["--ro-bind", "/usr", "/usr"]
        args += ["--perms", "0755", "--dir", "/etc"]  # bwrap would make it 0700, root's
        for name in ETC_ENTRIES:
            host = Path("/etc") / name
            if host.is_symlink() or host.exists():
                args += ["--ro-bind", str(host), str(host)]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", TMP]
        args += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", SHM]
        bound: list[Path] = []
        made = {Path("/"), Path(TMP), Path("/usr"), Path("/etc"), Path("/dev"), Path("/proc")}
        # Outer directories first, so a bind inside another one is not covered by it.
        for bind in sorted(binds, key=lambda b: len((b.dest or b.source).parts)):
            source = bind.source
            dest = bind.dest or source
            # bwrap would create missing parents 0700 (root's, when privileged): make them traversable.
            for parent in reversed(dest.parents):
                if parent not in made and Path("/usr") not in parent.parents:
                    args += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
            made.add(dest)
            args += ["--bind" if bind.writable else "--ro-bind", str(source), str(dest)]
            bound.append(source.resolve())
        for secret in self.hide:
            if secret.exists() and any(secret == b or b in secret.parents for b in bound):
                args += ["--tmpfs", str(secret)]
        args += [
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "molar-replay",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ]
        inside_env = {"PATH": PATH_INSIDE, "HOME": str(cwd), "TMPDIR": TMP, "LANG": "C.UTF-8", **(env or {})}
        for key, value in inside_env.items():
            args += ["--setenv", key, value]
        args += ["--chdir", str(cwd), "--"]
        args += [
            PRLIMIT,
            f"--nproc={limits.processes}",
            f"--data={limits.memory_bytes}",
            f"--fsize={limits.file_bytes}",
            f"--nofile={limits.open_files}",
            "--core=0",
            "--",
        ]
        if self.as_root:
            args += [
                SETPRIV,
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        return [*args, *command]

    async def run(
        self,
        workspace: Workspace,
        command: Sequence[str],
        *,
        binds: Sequence[Bind] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        wall_s: float | None = None,
        on_line: Callable[[str], Awaitable[None]] | None = None,
    ) -> SandboxResult:
        """Run `command` in the sandbox with `workspace.path` writable; its output's tail comes back.

        `on_line` sees each output line (untrusted text) as it comes. The whole process group is killed
        when the command ends, overruns `wall_s` (default: the limits'), floods its output, or the caller
        is cancelled.
        """
        binds = [Bind(workspace.path, writable=True), *binds]
        argv = self.argv(command, uid=workspace.uid, gid=workspace.gid, cwd=cwd or workspace.path, binds=binds, env=env)
        limit_s = wall_s if wall_s is not None else self.limits.wall_s
        started = time.monotonic()
        tail = bytearray()
        total = 0
        timed_out = exceeded = False
        process = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": PATH_INSIDE},  # bwrap itself sees none of the server's environment either
        )
        try:
            with anyio.move_on_after(limit_s) as scope:
                assert process.stdout is not None
                pending = b""
                async for chunk in process.stdout:
                    total += len(chunk)
                    tail += chunk
                    if len(tail) > OUTPUT_TAIL_BYTES:
                        del tail[: len(tail) - OUTPUT_TAIL_BYTES]
                    if on_line is not None:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        pending = pending[-OUTPUT_TAIL_BYTES:]
                        for line in lines:
                            await on_line(line.decode("utf-8", errors="replace"))
                    if total > self.limits.output_bytes:
                        exceeded = True
                        break
                if not exceeded:
                    await process.wait()
            timed_out = scope.cancelled_caught
        finally:
            with anyio.CancelScope(shield=True):
                await _kill_group(process)
                if self.as_root:
                    await anyio.to_thread.run_sync(kill_uid, workspace.uid)
        code = None if (timed_out or exceeded) else process.returncode
        return SandboxResult(
            exit_code=code,
            duration_ms=int((time.monotonic() - started) * 1000),
            output_tail=bytes(tail).decode("utf-8", errors="replace"),
            output_bytes=total,
            timed_out=timed_out,
            output_exceeded=exceeded,
        )


async def _kill_group(process: anyio.abc.Process) -> None:
    """SIGKILL bwrap's process group (its pid namespace goes with it) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with anyio.move_on_after(10):
        await process.wait()
    await process.aclose()
