"""A replay's source diff runs in the sandbox: the attack from the security review, replayed. A caller
with `mcp:run` patches the demo shop to read the server's signing key, data dir and environment and to
phone home; the patched code runs as the replay's own uid and sees none of it."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from molar_mcp.compose import load_demo_data
from molar_mcp.demo import SHOP_DIR
from molar_mcp.demo.config import DEMO_APP_NAME, demo_app_config
from molar_mcp.models.replays import ReplayRequest
from molar_mcp.replay.sandbox import UID_BASE, UID_COUNT, processes_of_uid
from molar_mcp.replay.service import ReplayService
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.replays import ReplayStore

pytestmark = pytest.mark.e2e

PROBE = """
import json as _json, os as _os, socket as _socket
def _try(fn):
    try:
        return "READ " + repr(fn())[:60]
    except Exception as exc:
        return "denied " + type(exc).__name__
def _net():
    _socket.create_connection(("8.8.8.8", 53), timeout=2).close()
    return "connected"
_seen = {
    "signing_key": _try(lambda: open(DATA + "/signing-keys.json").read()),
    "data_dir": _try(lambda: _os.listdir(DATA)),
    "server_environ": _try(lambda: open("/proc/" + SERVER_PID + "/environ", "rb").read()),
    "env_secret": _try(lambda: _os.environ["MOLAR_TEST_SECRET"]),
    "network": _try(_net),
    "uid": _os.getuid(),
}
raise RuntimeError("PROBE " + _json.dumps(_seen, sort_keys=True))
"""


def probing_diff(data_dir: Path) -> str:
    source = (SHOP_DIR / "app.py").read_text()
    probe = PROBE.replace("DATA", repr(str(data_dir))).replace("SERVER_PID", repr(str(os.getpid())))
    patched = source.replace("import argparse\n", "import argparse\n" + probe, 1)
    lines = source.splitlines(keepends=True), patched.splitlines(keepends=True)
    return "".join(difflib.unified_diff(*lines, "a/app.py", "b/app.py"))


def test_a_replays_source_diff_cannot_read_the_servers_secrets_or_reach_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLAR_TEST_SECRET", "the-server-environment")
    data_dir = tmp_path / "data"
    work = tmp_path / "work"
    work.mkdir()
    store = SqliteTraceStore(data_dir)
    (data_dir / "signing-keys.json").write_text('{"keys": "the-signing-key"}')
    try:
        service = ReplayService(
            store, ReplayStore(store.db), {DEMO_APP_NAME: demo_app_config()}, workdir=work, hide=[data_dir]
        )
        load_demo_data(store)
        trace = next(
            t
            for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=50)).items
            if t.scenario_slug == "checkout-coupon"
        )
        request = ReplayRequest.model_validate(
            {"from_step": 6, "edits": {"source_diffs": [{"path": "app.py", "diff": probing_diff(data_dir)}]}}
        )
        status = service.wait(LOCAL_ORG_ID, service.enqueue(LOCAL_ORG_ID, trace.short_id, request).id, timeout_s=120)
        service.close()
    finally:
        store.close()

    assert (status.status, status.error) == ("failed", "app_start_failed")
    tail = status.log_tail or ""
    assert "PROBE" in tail, tail
    assert "the-signing-key" not in tail
    assert "the-server-environment" not in tail
    for probe in ("signing_key", "data_dir", "server_environ", "env_secret", "network"):
        assert f'"{probe}": "denied' in tail, (probe, tail)
    if os.geteuid() == 0:
        uid = int(tail.split('"uid": ', 1)[1].split("}", 1)[0])
        assert UID_BASE <= uid < UID_BASE + UID_COUNT
        assert processes_of_uid(uid) == []
    assert list(work.iterdir()) == []  # the workspace is gone
