"""The replay loop with real processes: `molar-mcp demo` records the shop's runs, debug_run points at the
step, replay_trace runs the patched shop from there, and the diff shows the failing assertion passing."""

from __future__ import annotations

import difflib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

from molar_mcp.compose import load_demo_data, open_embedded
from molar_mcp.demo import SHOP_DIR, fix_diff
from molar_mcp.demo.config import DEMO_APP_NAME, demo_app_config
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.models.replays import ReplayRequest
from molar_mcp.replay.apps import AppConfig
from molar_mcp.replay.service import ReplayService
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceQuery
from molar_mcp.store.replays import ReplayStore
from tests.listing import rows_of
from tests.replays.test_service import EXPECT_THE_BUG, edit
from tests.servers import child_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def record_demo_cli(data_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "molar_mcp", "demo", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(data_dir),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


async def failing_trace(client: Client, scenario: str) -> str:
    listed: Any = (await client.call_tool("list_traces", {"status": "failed", "scenario": scenario})).structured_content
    assert len(rows_of(listed)) == 1
    return str(rows_of(listed)[0]["short_id"])


async def suggested_step(client: Client, trace: str) -> int:
    debugged: Any = (await client.call_tool("debug_run", {"trace_id": trace})).structured_content
    return int(debugged["suggested_replay"]["from_step"])


async def test_demo_then_debug_then_replay_with_the_fix_makes_the_failing_assertion_pass(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    printed = record_demo_cli(data_dir)
    assert "recorded 5 demo traces" in printed
    assert "(2 passed, 3 failed)" in printed

    with open_embedded(data_dir) as embedded:
        async with Client(create_mcp_server(embedded.client_factory())) as client:
            coupon = await failing_trace(client, "checkout-coupon")
            coupon_step = await suggested_step(client, coupon)
            fixed = await client.call_tool(
                "replay_trace",
                {
                    "trace_id": coupon,
                    "from_step": coupon_step,
                    "source_diffs": [{"path": "app.py", "diff": fix_diff("coupon-multiplier")}],
                },
            )
            recorded = ReplayStore(embedded.store.db).scenario_of(
                LOCAL_ORG_ID, embedded.store.get_trace(LOCAL_ORG_ID, coupon).id
            )
            assert recorded is not None
            edited = await client.call_tool(
                "replay_trace",
                {
                    "trace_id": coupon,
                    "from_step": coupon_step,
                    "scenario_diff": edit(recorded.scenario_text, *EXPECT_THE_BUG),
                },
            )
            webhook = await failing_trace(client, "billing-upgrade-webhook")
            webhook_step = await suggested_step(client, webhook)
            routed = await client.call_tool(
                "replay_trace",
                {
                    "trace_id": webhook,
                    "from_step": webhook_step,
                    "source_diffs": [{"path": "app.py", "diff": fix_diff("webhook-route")}],
                },
            )

    assert coupon_step == 6  # debug_run: the assertion at step 6
    view: Any = fixed.structured_content
    assert not fixed.is_error, fixed.content
    assert (view["replay"]["status"], view["replay"]["trace_status"]) == ("succeeded", "passed")
    assert [(a["step"], a["target"], a["change"]) for a in view["diff"]["assertions"]] == [
        (6, "$.total_cents", "now_passes")
    ]
    # The fix shows first where the bug does: the coupon's response at step 4, re-run to restore state.
    assert view["diff"]["first_divergence_step"] == 4
    scenario_view: Any = edited.structured_content
    assert (scenario_view["replay"]["status"], scenario_view["replay"]["trace_status"]) == ("succeeded", "passed")
    assert [(a["step"], a["change"]) for a in scenario_view["diff"]["assertions"]] == [(6, "now_passes")]
    assert webhook_step == 5  # debug_run: the webhook's 404 at step 5 explains step 7's failure
    routed_view: Any = routed.structured_content
    assert routed_view["replay"]["trace_status"] == "passed"
    assert (7, "now_passes") in [(a["step"], a["change"]) for a in routed_view["diff"]["assertions"]]


def breaking_diff() -> str:
    """A patch after which the shop raises at import: it never answers its health check."""
    source = (SHOP_DIR / "app.py").read_text()
    broken = source.replace(
        "import argparse\n", 'import argparse\n\nraise RuntimeError("boom: the shop cannot start")\n', 1
    )
    return "".join(
        difflib.unified_diff(source.splitlines(keepends=True), broken.splitlines(keepends=True), "a/app.py", "b/app.py")
    )


def processes_under(directory: Path) -> list[int]:
    """Live processes whose working directory or command line is inside `directory`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(directory)) or str(directory) in cmdline:
            found.append(int(entry.name))
    return found


def test_an_app_that_does_not_start_fails_the_replay_with_its_log_tail_and_leaves_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    store = SqliteTraceStore(tmp_path / "data")
    try:
        service = ReplayService(store, ReplayStore(store.db), {DEMO_APP_NAME: demo_app_config()}, workdir=work)
        load_demo_data(store)
        trace = next(
            t
            for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=50)).items
            if t.scenario_slug == "checkout-coupon"
        )
        request = ReplayRequest.model_validate(
            {"from_step": 6, "edits": {"source_diffs": [{"path": "app.py", "diff": breaking_diff()}]}}
        )
        status = service.wait(LOCAL_ORG_ID, service.enqueue(LOCAL_ORG_ID, trace.short_id, request).id, timeout_s=60)
        service.close()
    finally:
        store.close()

    assert (status.status, status.error) == ("failed", "app_start_failed")
    assert status.replay_trace_id is None
    assert "demo-shop exited with code 1" in (status.message or "")
    assert "RuntimeError: boom: the shop cannot start" in (status.log_tail or "")
    assert list(work.iterdir()) == []  # the patched copy is gone
    assert processes_under(work) == []  # and nothing it started is alive


def test_demo_falls_back_to_the_shipped_recordings_when_recording_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = AppConfig(
        name=DEMO_APP_NAME,
        source_dir=SHOP_DIR,
        start_command=[sys.executable, "-c", "raise SystemExit(3)", "{port}"],
    )
    with caplog.at_level(logging.WARNING, logger="molar_mcp"), open_embedded(tmp_path / "data") as embedded:
        said = load_demo_data(embedded.store, app=broken)
        again = load_demo_data(embedded.store)
        listed = embedded.store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=50))
        runs = {t.scenario_slug: t for t in listed.items if t.scenario_slug in SCENARIO_OUTCOMES}
        replayable = {slug: ReplayStore(embedded.store.db).scenario_of(LOCAL_ORG_ID, t.id) for slug, t in runs.items()}

    assert said.startswith("loaded 5 shipped recordings of the demo runs (recording now failed)")
    assert again == "already loaded"
    assert "recording the demo traces failed" in caplog.text
    # The same runs a live recording makes (their shipped recordings), each replayable against the shop.
    assert {slug: (t.status, t.failure_signature) for slug, t in runs.items()} == SCENARIO_OUTCOMES
    assert all(r is not None and r.app == DEMO_APP_NAME for r in replayable.values())


SCENARIO_OUTCOMES = {
    "billing-upgrade-webhook": ("failed", "step-7: expect url /billing?upgraded=true"),
    "cart-basic": ("passed", None),
    "checkout-coupon": ("failed", "step-6: expect json $.total_cents == 4500"),
    "checkout-plain": ("passed", None),
    "login-sso": ("failed", "step-2: expect status 200"),
}
