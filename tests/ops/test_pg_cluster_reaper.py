"""A test run killed before its fixtures end (a timeout's SIGKILL) leaves its PostgreSQL cluster running;
the next cluster started on the machine stops and removes it, and leaves a live run's cluster alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engines import reap_orphan_clusters

ROOT = Path(__file__).resolve().parents[2]

_HOLDER = """
import sys, time
from tests.engines import pg_cluster
with pg_cluster() as cluster:
    print(cluster.root, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A temp dir of the test's own (other runs on this machine may have clusters in /tmp), which the
    `postgres` user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="molar-reap-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_killed_runs_cluster_is_stopped_and_removed_and_a_live_one_is_kept(own_tmp: Path) -> None:
    tmp_path = own_tmp
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    root = Path(holder.stdout.readline().strip())
    postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
    assert _alive(postmaster)

    assert root.parent == tmp_path
    # While its owner lives, nobody reaps it.
    assert reap_orphan_clusters(tmp_path) == []
    assert root.exists()

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert _alive(postmaster), "SIGKILL skips the fixture's own stop: the cluster outlives its test process"

    assert reap_orphan_clusters(tmp_path) == [root]
    assert not root.exists()
    assert not _alive(postmaster)


def test_dirs_without_an_owner_are_left_alone(tmp_path: Path) -> None:
    stray = Path(tempfile.mkdtemp(prefix="molar-pg-", dir=tmp_path))
    assert reap_orphan_clusters(tmp_path) == []
    assert stray.exists()
