"""Replays of registered projects through the command driver: a real git repository under a replay root
with a molar.toml, a real agent script run in the sandbox at the recorded commit with the caller's edits,
and every way a careless or hostile request is refused before anything runs."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from molar_mcp.mcp.render import list_text, row_array, trace_row
from molar_mcp.mcp.views import TraceList
from molar_mcp.models import Event
from molar_mcp.models.replays import ReplayOrigin, ReplayRequest, ReplayStatus
from molar_mcp.replay.apps import DiffDoesNotApply
from molar_mcp.replay.projects import HOW_TO_TURN_ON, ReplayRoots
from molar_mcp.replay.service import InvalidReplay, NotReplayable, ReplayService
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.port import NewTrace
from molar_mcp.store.replays import ReplayStore

pytestmark = pytest.mark.e2e

AGENT = '''\
"""A tiny agent: answers with the tool result its prompt asks for; fails on a wrong one."""
import json, os, pathlib, sys

prompt = pathlib.Path("prompt.txt").read_text().strip()
print("replay:", os.environ.get("MOLAR_REPLAY_ID", "-"), "from step", os.environ.get("MOLAR_FROM_STEP", "-"))
edits = os.environ.get("MOLAR_EDITS_FILE")
if edits:
    print("edits:", [d["path"] for d in json.loads(pathlib.Path(edits).read_text())["source_diffs"]])
print("otlp:", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"), os.environ.get("OTEL_RESOURCE_ATTRIBUTES"))
print("prompt:", prompt)
if "refund 100" in prompt:
    print("tool refund(amount=100) -> error: over the limit", file=sys.stderr)
    sys.exit(1)
print("tool refund(amount=10) -> ok")
'''


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def make_repo(path: Path, *, manifest: str, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "molar.toml").write_text(manifest)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "init")
    return git(path, "rev-parse", "HEAD")


def manifest(command: str, **extra: object) -> str:
    lines = ["[replay]", 'kind = "command"', f"command = {json.dumps(command)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def file_diff(path: str, before: str, after: str) -> str:
    lines = before.splitlines(keepends=True), after.splitlines(keepends=True)
    return "".join(difflib.unified_diff(*lines, f"a/{path}", f"b/{path}"))


@dataclass
class World:
    store: SqliteTraceStore
    service: ReplayService
    root: Path
    repo: Path
    commit: str
    work: Path
    tmp: Path

    def recorded(self, *, repo: Path | None = None, **origin: object) -> str:
        """A trace of the agent's real run at the commit (its output as events), with its origin."""
        target = repo or self.repo
        done = subprocess.run([sys.executable, "agent.py"], cwd=target, capture_output=True, text=True)
        events = [
            Event(seq=0, ts=1, kind="step.start", step_id="1", message="ask"),
            *(
                Event(seq=i + 1, ts=2, kind="log", step_id="1", message=line, payload={"text": line})
                for i, line in enumerate((done.stdout + done.stderr).splitlines())
            ),
        ]
        events.append(Event(seq=len(events), ts=3, kind="step.end", step_id="1", ok=done.returncode == 0))
        status = "passed" if done.returncode == 0 else "failed"
        trace_id, _ = self.store.add_trace(
            LOCAL_ORG_ID, NewTrace(scenario_slug="refund-agent", status=status, events=events), {}
        )
        fields: dict[str, object] = {"kind": "command", "repo_path": str(target), "commit": self.commit, **origin}
        ReplayStore(self.store.db).record_origin(LOCAL_ORG_ID, trace_id, ReplayOrigin.model_validate(fields))
        return trace_id

    def replay(self, trace_id: str, diffs: list[tuple[str, str]], from_step: int = 1) -> ReplayStatus:
        request = ReplayRequest.model_validate(
            {"from_step": from_step, "edits": {"source_diffs": [{"path": p, "diff": d} for p, d in diffs]}}
        )
        queued = self.service.enqueue(LOCAL_ORG_ID, trace_id, request)
        return self.service.wait(LOCAL_ORG_ID, queued.id, timeout_s=120)


def open_world(tmp_path: Path, command: str | None = None, **extra: object) -> World:
    root = tmp_path / "roots"
    repo = root / "agent"
    commit = make_repo(
        repo,
        manifest=manifest(command or f"{sys.executable} agent.py", **extra),
        files={"agent.py": AGENT, "prompt.txt": "refund 100 to the customer\n"},
    )
    work = tmp_path / "work"
    work.mkdir()
    store = SqliteTraceStore(tmp_path / "data")
    service = ReplayService(
        store, ReplayStore(store.db), {}, roots=ReplayRoots([root]), workdir=work, hide=[tmp_path / "data"]
    )
    return World(store, service, root, repo, commit, work, tmp_path)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = open_world(tmp_path)
    yield w
    w.service.close()
    w.store.close()


FIX = ("prompt.txt", file_diff("prompt.txt", "refund 100 to the customer\n", "refund 10 to the customer\n"))


def assert_nothing_left(world: World) -> None:
    assert os.listdir(world.work) == []
    worktrees = git(world.repo, "worktree", "list", "--porcelain")
    assert worktrees.count("worktree ") == 1, worktrees  # only the checkout itself
    assert git(world.repo, "status", "--porcelain") == ""  # the developer's checkout is untouched


def test_a_command_replay_runs_the_agent_at_the_commit_with_the_edit_and_passes(world: World) -> None:
    parent = world.recorded()
    assert world.store.get_trace(LOCAL_ORG_ID, parent).status == "failed"

    status = world.replay(parent, [FIX])

    assert (status.status, status.trace_status, status.error) == ("succeeded", "passed", None), status
    message = status.message or ""
    assert "agent.py" in message
    assert f"at commit {world.commit[:12]}" in message
    assert "with edits applied to prompt.txt" in message
    child = world.store.get_trace(LOCAL_ORG_ID, status.replay_trace_id or "")
    assert (child.parent_trace_id, child.replay_from_step) == (parent, 1)
    assert {a.name for a in child.artifacts} >= {"source.diff", "output.log"}
    events = world.store.list_events(LOCAL_ORG_ID, child.id, limit=200, offset=0).events
    text = "\n".join(e.message or "" for e in events)
    assert f"replay: {status.id} from step 1" in text  # MOLAR_REPLAY_ID, MOLAR_FROM_STEP
    assert "edits: ['prompt.txt']" in text  # MOLAR_EDITS_FILE
    assert f"otlp: http://127.0.0.1:4318 molar.replay_id={status.id}" in text
    assert "tool refund(amount=10) -> ok" in text
    # Listed as a replay of its parent, never as an ordinary passing run of the test.
    rows = {t.id: t for t in world.store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=50)).items}
    assert rows[child.id].replay_of == parent
    assert rows[parent].replay_of is None
    view = TraceList(rows=[row_array(trace_row(t)) for t in rows.values()])
    assert f"PASSED [REPLAY of {parent}: not an ordinary run]" in list_text(view, "all traces")
    assert_nothing_left(world)


def test_without_the_fix_the_replay_succeeds_and_its_trace_fails_with_the_log_tail(world: World) -> None:
    status = world.replay(world.recorded(), [])
    assert (status.status, status.trace_status) == ("succeeded", "failed")
    assert "over the limit" in (status.log_tail or "")
    assert_nothing_left(world)


def refused(world: World, trace_id: str, diffs: list[tuple[str, str]]) -> Exception:
    request = ReplayRequest.model_validate(
        {"from_step": 1, "edits": {"source_diffs": [{"path": p, "diff": d} for p, d in diffs]}}
    )
    with pytest.raises((NotReplayable, DiffDoesNotApply, InvalidReplay)) as caught:
        world.service.enqueue(LOCAL_ORG_ID, trace_id, request)
    assert world.service.replays.list_for_trace(LOCAL_ORG_ID, trace_id) == []  # nothing queued
    assert os.listdir(world.work) == []
    return caught.value


def test_a_project_outside_the_replay_roots_is_refused(world: World) -> None:
    elsewhere = world.tmp / "elsewhere"
    make_repo(elsewhere, manifest=manifest("true"), files={"agent.py": AGENT, "prompt.txt": "x\n"})
    err = refused(world, world.recorded(repo=world.repo, repo_path=str(elsewhere)), [FIX])
    assert isinstance(err, NotReplayable)
    assert "not inside a replay root" in str(err)


def test_with_no_replay_roots_the_error_says_how_to_turn_replays_on(world: World) -> None:
    world.service.roots = ReplayRoots()
    err = refused(world, world.recorded(), [FIX])
    assert HOW_TO_TURN_ON in str(err)
    assert "--replay-root" in str(err)


def test_a_repository_without_molar_toml_is_not_registered(world: World) -> None:
    bare = world.root / "bare"
    bare.mkdir()
    git(bare, "init", "-q")
    err = refused(world, world.recorded(repo_path=str(bare)), [FIX])
    assert "has no molar.toml" in str(err)


def test_a_missing_or_dirty_commit_is_refused(world: World) -> None:
    assert "is not in" in str(refused(world, world.recorded(commit="0" * 40), [FIX]))
    assert "uncommitted changes" in str(refused(world, world.recorded(dirty=True), [FIX]))


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.txt", "outside"),
        ("/etc/passwd", "outside"),
        ("link/secret.txt", "symbolic link"),
    ],
)
def test_diffs_that_leave_the_repository_are_refused(world: World, path: str, reason: str) -> None:
    os.symlink("/etc", world.repo / "link")
    git(world.repo, "add", "link")
    git(world.repo, "commit", "-qm", "a link out")
    world.commit = git(world.repo, "rev-parse", "HEAD")
    diff = f"--- {path}\n+++ {path}\n@@ -0,0 +1 @@\n+owned\n"
    err = refused(world, world.recorded(), [(path, diff)])
    assert isinstance(err, DiffDoesNotApply)
    assert reason in str(err)


def test_binary_and_oversized_diffs_are_refused(world: World) -> None:
    trace = world.recorded()
    binary = "diff --git a/x.bin b/x.bin\nnew file mode 100644\nGIT binary patch\nliteral 3\nKcmZQzfB*mh00031\n"
    assert "binary diff" in str(refused(world, trace, [("x.bin", binary)]))
    # Each diff is within the request's per-diff limit; together they are more than a replay takes.
    big = "--- /dev/null\n+++ b/notes{n}.txt\n@@ -0,0 +1,400 @@\n" + ("+" + "x" * 1000 + "\n") * 400
    diffs = [(f"notes{n}.txt", big.format(n=n)) for n in range(3)]
    assert "the limit is" in str(refused(world, trace, diffs))


def test_a_hunk_that_does_not_apply_is_named(world: World) -> None:
    stale = file_diff("prompt.txt", "refund 5 to the customer\n", "refund 10 to the customer\n")
    err = refused(world, world.recorded(), [("prompt.txt", stale)])
    assert isinstance(err, DiffDoesNotApply)
    assert "prompt.txt" in str(err)
    assert "@@ -1 +1 @@" in str(err)


def test_a_scenario_diff_is_refused_for_a_project_trace(world: World) -> None:
    request = ReplayRequest.model_validate({"from_step": 1, "edits": {"scenario_diff": "--- a\n+++ b\n"}})
    with pytest.raises(InvalidReplay, match="source_diffs"):
        world.service.enqueue(LOCAL_ORG_ID, world.recorded(), request)


def test_a_command_that_never_ends_fails_with_the_reason_and_its_log_tail(tmp_path: Path) -> None:
    looping = "import time\nprint('thinking…', flush=True)\nwhile True: time.sleep(1)\n"
    w = open_world(tmp_path, f"{sys.executable} loop.py", timeout_s=3)
    try:
        (w.repo / "loop.py").write_text(looping)
        git(w.repo, "add", "loop.py")
        git(w.repo, "commit", "-qm", "loop")
        w.commit = git(w.repo, "rev-parse", "HEAD")
        status = w.replay(w.recorded(), [FIX])
        assert (status.status, status.error) == ("failed", "timeout"), status
        assert "wall-time limit" in (status.message or "")
        assert "thinking…" in (status.log_tail or "")
        assert_nothing_left(w)
    finally:
        w.service.close()
        w.store.close()


def test_a_command_that_floods_stdout_is_stopped(tmp_path: Path) -> None:
    w = open_world(tmp_path, "/usr/bin/yes molar")
    try:
        status = w.replay(w.recorded(), [FIX])
        assert (status.status, status.error) == ("failed", "output_limit"), status
        assert "molar" in (status.log_tail or "")
        assert_nothing_left(w)
    finally:
        w.service.close()
        w.store.close()


def test_molar_toml_documents_itself_when_wrong(tmp_path: Path) -> None:
    root = tmp_path / "roots"
    make_repo(root / "p", manifest='[replay]\nkind = "make"\ncommand = "x"\n', files={"a.txt": "a\n"})
    with pytest.raises(Exception, match=r"molar.toml: replay.kind"):
        ReplayRoots([root]).find(path=str(root / "p"), remote=None)
