"""The shipped recordings of the demo shop's scenario runs (src/molar_mcp/demo/scenario_runs/) are what their
generator records now (scripts/record_demo_runs.py → `record_scenario_runs`, real shop processes), compared
by structure — scenarios, statuses, signatures, steps, requests, checks — not by bytes (times, ports and
durations differ from run to run); and the docs say how to record every piece of demo data again."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from molar_mcp.demo import scenario_paths
from molar_mcp.demo.recorded import record_scenario_runs, shipped_runs
from molar_mcp.ingest import read_bundle
from molar_mcp.models import Event

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
RERECORD = "the shipped demo runs are stale: run `.venv/bin/python scripts/record_demo_runs.py` and commit them"


def shape(event: Event) -> tuple[Any, ...]:
    """What a run did at this event, without what changes between two runs of it (times, port, headers)."""
    p = event.payload
    if event.kind == "step.start":
        return (event.kind, event.step_id, p["title"])
    if event.kind in ("network.request", "network.response"):
        url = urlsplit(p["url"])
        return (event.kind, event.step_id, event.ok, p["method"], url.path, url.query, p.get("status"), p.get("body"))
    if event.kind == "assertion":
        return (event.kind, event.step_id, event.ok, p["matcher"], p.get("path"), p["expected"], p["actual"])
    if event.kind == "step.end":
        return (event.kind, event.step_id, event.ok, p.get("captures"))
    if event.kind == "log":
        return (event.kind, event.step_id, p["level"], p.get("scenario"), p.get("from_step"))
    return (event.kind, event.step_id, event.ok, p.get("name"))


def run_shape(bundle: bytes) -> dict[str, Any]:
    parsed = read_bundle(bundle)
    trace = parsed.trace
    return {
        "scenario": (trace.scenario_slug, trace.scenario_title, trace.source),
        "outcome": (trace.status, trace.failure_signature),
        "artifacts": [(a.kind, a.name, a.content_type) for a in trace.artifacts],
        "scenario_text": [parsed.blobs[a.sha256].decode() for a in trace.artifacts if a.kind == "scenario"],
        "events": [shape(e) for e in trace.events],
    }


async def test_the_shipped_scenario_runs_are_what_the_generator_records_now() -> None:
    shipped = shipped_runs()
    fresh = await record_scenario_runs()

    every_scenario = sorted(p.name.removesuffix(".molar.md") + ".tar.gz" for p in scenario_paths())
    assert [name for name, _ in shipped] == every_scenario, RERECORD
    assert [name for name, _ in shipped] == sorted(name for name, _ in fresh), RERECORD
    fresh_by_name = dict(fresh)
    for name, bundle in shipped:
        assert run_shape(bundle) == run_shape(fresh_by_name[name]), f"{name}: {RERECORD}"


def test_the_demo_runs_hold_the_failures_the_demo_is_for() -> None:
    runs = {name.removesuffix(".tar.gz"): read_bundle(data) for name, data in shipped_runs()}
    outcomes = {slug: (p.trace.status, p.trace.failure_signature) for slug, p in runs.items()}
    assert outcomes == {
        "billing-upgrade-webhook": ("failed", "step-7: expect url /billing?upgraded=true"),
        "cart-basic": ("passed", None),
        "checkout-coupon": ("failed", "step-6: expect json $.total_cents == 4500"),
        "checkout-plain": ("passed", None),
        "login-sso": ("failed", "step-2: expect status 200"),
    }

    def responses(slug: str) -> list[dict[str, Any]]:
        return [e.payload for e in runs[slug].trace.events if e.kind == "network.response"]

    # The coupon bug's clue is on a response body: the checkout took $45.00 off a $50.00 cart.
    checkout = next(r for r in responses("checkout-coupon") if urlsplit(r["url"]).path == "/api/checkout")
    assert '"discount_cents":4500' in checkout["body"].replace(" ", "")
    # The billing webhook answers 404; the run goes on and fails where the customer lands.
    webhook = next(r for r in responses("billing-upgrade-webhook") if urlsplit(r["url"]).path == "/webhooks/billing")
    assert webhook["status"] == 404
    # SSO: the provider's redirect comes back to the callback, which times out waiting for the token.
    callback = next(r for r in responses("login-sso") if urlsplit(r["url"]).path == "/auth/callback")
    assert callback["status"] == 504
    assert "timed out after 1000 ms" in callback["body"]
    assert callback["duration_ms"] >= 1000


def test_the_docs_say_how_to_record_every_piece_of_demo_data_again() -> None:
    doc = (ROOT / "docs" / "demo.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"`\.venv/bin/python (scripts/[\w.-]+)`", doc)
    generators = {"scripts/record_demo_runs.py", "scripts/record_playwright_demo.py", "scripts/record-agent-demo"}
    assert set(commands) == generators
    for script in commands:
        assert (ROOT / script).is_file(), script
    assert "docs/demo.md" in readme
    for gone in ("make_demo_bundles", "demo_bundles", "builder.py", "fixture bundles"):
        assert gone not in doc + readme
