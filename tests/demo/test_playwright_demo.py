"""`--demo` shows a Playwright Test run: browser tests of the demo shop recorded from a real run
(scripts/record_playwright_demo.py), one run with a trace per attempt, two failing on the shop's bugs."""

from __future__ import annotations

import json
from pathlib import Path

from molar_mcp.compose import load_demo_data, load_playwright_demo, open_embedded
from molar_mcp.store import LOCAL_ORG_ID, TraceQuery
from molar_mcp.store.runs import SqliteRunStore


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
