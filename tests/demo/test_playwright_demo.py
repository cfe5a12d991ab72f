"""`--demo` shows a Playwright Test run: browser tests of the demo shop recorded from a real run
(scripts/record_playwright_demo.py), one run with a trace per attempt, two failing on the shop's bugs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from molar_mcp.compose import load_demo_data, load_playwright_demo, open_embedded
from molar_mcp.ingest.playwright import read_playwright_trace
from molar_mcp.ingest.results import TestResultInfo as ResultInfo
from molar_mcp.store import LOCAL_ORG_ID, TraceQuery
from molar_mcp.store.runs import SqliteRunStore

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = Path(str(resources.files("molar_mcp.demo") / "playwright_run"))


def test_the_recorded_playwright_run_is_one_run_with_its_failures_readable(tmp_path: Path) -> None:
    with open_embedded(tmp_path / "data") as embedded:
        store = embedded.store
        stored = load_playwright_demo(store)
        again = load_playwright_demo(store)
        [run] = SqliteRunStore(store.db).list_runs(LOCAL_ORG_ID).items
        traces = store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=50, run_id=run.id)).items
        failing = {t.title: t.trace_id for t in run.failing}
        coupon = store.list_events(LOCAL_ORG_ID, failing["storefront › takes 10% off with SAVE10"], limit=1000)
        webhook = store.list_events(
            LOCAL_ORG_ID, failing["billing › upgrades to Pro once the provider confirms the payment"], limit=1000
        )
        coupon_detail = store.get_trace(LOCAL_ORG_ID, failing["storefront › takes 10% off with SAVE10"])

    assert (stored, again) == (4, 0)  # once per data dir
    assert (run.kind, run.status, run.name) == ("playwright", "failed", "Demo shop · Playwright Test")
    assert (run.counts.tests, run.counts.passed, run.counts.failed) == (4, 2, 2)
    assert len(traces) == 4
    # Expected vs received, and the request behind the webhook failure, are in the traces.
    coupon_text = json.dumps([e.model_dump(mode="json") for e in coupon.events])
    assert "$33.75" in coupon_text
    assert "$3.75" in coupon_text
    webhook_text = json.dumps([e.model_dump(mode="json") for e in webhook.events])
    assert "/webhooks/billing" in webhook_text
    assert "404" in webhook_text
    assert {"playwright", "screenshot"} <= {a.kind for a in coupon_detail.artifacts}
    assert coupon_detail.code_sha  # the commit the run was recorded at


def test_demo_data_adds_the_playwright_run_to_a_data_dir_that_has_the_rest(tmp_path: Path) -> None:
    with open_embedded(tmp_path / "data") as embedded:
        (embedded.store.data_dir / "demo-recorded-v1").write_text("4\n")  # the scenario runs, recorded before
        said = load_demo_data(embedded.store)
        again = load_demo_data(embedded.store)

    assert said == "a Playwright Test run of 4 test attempts"
    assert again == "already loaded"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def attempt_shape(folder: Path) -> dict[str, Any]:
    """What a recorded test attempt says, without what changes between two runs of it (times, ids, commit,
    the call log's count of retries, screenshot pixels)."""
    recorded = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    r = recorded["result"]
    trace = read_playwright_trace((folder / recorded["trace"]).read_bytes(), result=ResultInfo.model_validate(r))
    events = trace.trace.events
    return {
        "test": (r["project"], r["file"], r["line"], r["title_path"], r["status"], r["expected_status"], r["retry"]),
        "errors": [ANSI.sub("", e["message"]).split("Call log:")[0].strip() for e in r["errors"]],
        "attachments": [(a["name"], a["content_type"]) for a in recorded["attachments"]],
        "outcome": (trace.trace.status, trace.trace.failure_signature),
        "steps": [(e.payload.get("title"), e.payload.get("category")) for e in events if e.kind == "step.start"],
        "requests": sorted(
            {
                (e.payload.get("method"), urlsplit(e.payload["url"]).path, e.payload.get("status"))
                for e in events
                if e.kind == "network.response"
                and urlsplit(e.payload.get("url", "")).path.startswith(("/api/", "/webhooks/"))
            }
        ),
    }


def run_shape(folder: Path) -> dict[str, Any]:
    meta = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    attempts = sorted(p for p in folder.iterdir() if p.is_dir())
    return {
        "run": (meta["kind"], meta["name"], meta["status"]),
        "attempts": [attempt_shape(p) for p in attempts],
    }


def test_the_shipped_playwright_run_is_what_its_generator_records_now(tmp_path: Path) -> None:
    out = tmp_path / "playwright_run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "record_playwright_demo.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = run_shape(SHIPPED)
    assert [a["test"][3] for a in shipped["attempts"]] == [
        ["storefront", "adds products to the cart"],
        ["storefront", "pays without a coupon"],
        ["storefront", "takes 10% off with SAVE10"],
        ["billing", "upgrades to Pro once the provider confirms the payment"],
    ]
    assert run_shape(out) == shipped, "stale: run `.venv/bin/python scripts/record_playwright_demo.py` and commit"
