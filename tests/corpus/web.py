"""The corpus's browser scenarios for the Python `playwright` package (source `web`), one function per
case of tests/corpus/cases.py. Each drives Debian's Chromium against one app (tests/apps: the task
board, the clinic, the ticket shop) and fails the way its label says — the label was written from
what the function does. Short waits: a failing case fails in about a second.

`record_web(out_dir)` records every case into `<out_dir>/<app>/<name>.zip` with tracing on (actions,
network and console; snapshots on, since Playwright records the network only with them; no screenshots
or sources, to keep the recordings small)."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.apps import board, clinic, ticketshop
from tests.apps.record import CHROMIUM, SCENARIOS
from tests.apps.server import serve_app

QUICK = 1_500  # the wait of an action or assertion meant to fail
LONG = 6_000  # a response or page slower than any QUICK wait

Scenario = Callable[[Page, str], None]


def _key() -> str:
    return uuid.uuid4().hex[:12]


BOARD: dict[str, Scenario] = {
    "passing": lambda p, b: (p.goto(b + "/"), expect(p.locator("#tasks li")).to_have_count(3)),
    "retry-passing": lambda p, b: (
        p.goto(f"{b}/retry?key={_key()}"),
        expect(p.locator("#status")).to_have_text("Synced"),
    ),
    "slow-passing": lambda p, b: (
        p.goto(b + "/report?ms=400"),
        expect(p.locator("#total")).to_have_text("3", timeout=LONG),
    ),
    "wrong-count": lambda p, b: (
        p.goto(b + "/stats"),
        expect(p.locator("#count")).to_have_text("4 open tasks", timeout=QUICK),
    ),
    "avatar-404-then-assert": lambda p, b: (
        p.goto(b + "/", wait_until="networkidle"),
        expect(p.locator("#tasks li")).to_have_count(4, timeout=QUICK),
    ),
    "task-404": lambda p, b: (
        p.goto(b + "/task/t404", wait_until="networkidle"),
        expect(p.locator("#title")).to_have_text("Write the release notes", timeout=QUICK),
    ),
    "close-409": lambda p, b: (
        p.goto(b + "/task/locked", wait_until="networkidle"),
        p.locator("#close").click(),
        expect(p.locator("#state")).to_have_text("closed", timeout=QUICK),
    ),
    "create-500": lambda p, b: (
        p.goto(b + "/new"),
        p.locator("#title").fill("boom: ship it"),
        p.locator("#create").click(),
        expect(p.locator("#msg")).to_have_text("Created", timeout=QUICK),
    ),
    "avatar-404-then-409": lambda p, b: (
        p.goto(b + "/", wait_until="networkidle"),
        p.goto(b + "/task/locked", wait_until="networkidle"),
        p.locator("#close").click(),
        expect(p.locator("#state")).to_have_text("closed", timeout=QUICK),
    ),
    "modal-overlay": lambda p, b: (p.goto(b + "/archive"), p.locator("#archive").click(timeout=QUICK)),
    "save-disabled": lambda p, b: (p.goto(b + "/settings"), p.locator("#save").click(timeout=QUICK)),
    "advanced-hidden": lambda p, b: (p.goto(b + "/settings"), p.locator("#advanced").click(timeout=QUICK)),
    "missing-selector": lambda p, b: (
        p.goto(b + "/task/t1", wait_until="networkidle"),
        p.locator("#assign").click(timeout=QUICK),
    ),
    "report-pending": lambda p, b: (
        p.goto(b + f"/report?ms={LONG}"),
        expect(p.locator("#total")).to_have_text("3", timeout=QUICK),
    ),
    "slow-navigation": lambda p, b: p.goto(b + f"/slowpage?ms={LONG}", timeout=QUICK),
    "wait-response": lambda p, b: (
        p.goto(b + f"/report?ms={LONG}"),
        p.wait_for_selector("#total >> text=3", timeout=QUICK),
    ),
    "sync-refused": lambda p, b: (
        p.goto(b + "/sync"),
        p.locator("#sync").click(),
        expect(p.locator("#sync-state")).to_have_text("Synced", timeout=QUICK),
    ),
    "chart-js": lambda p, b: (
        p.goto(b + "/chart"),
        p.locator("#draw").click(),
        expect(p.locator("#points")).to_have_text(re.compile(r"\d"), timeout=QUICK),
    ),
    "retry-then-wrong": lambda p, b: (
        p.goto(f"{b}/retry?key={_key()}"),
        expect(p.locator("#status")).to_have_text("Synced"),
        p.goto(b + "/stats"),
        expect(p.locator("#count")).to_have_text("5 open tasks", timeout=QUICK),
    ),
}

CLINIC: dict[str, Scenario] = {
    "passing": lambda p, b: (p.goto(b + "/"), expect(p.locator("#doctors li")).to_have_count(2)),
    "queue-passing": lambda p, b: (
        p.goto(f"{b}/queue?key={_key()}"),
        expect(p.locator("#ahead")).to_have_text("3 ahead of you"),
    ),
    "slow-passing": lambda p, b: (
        p.goto(b + "/results?ms=400"),
        expect(p.locator("#result")).to_have_text("All values normal", timeout=LONG),
    ),
    "banner-404-then-assert": lambda p, b: (
        p.goto(b + "/", wait_until="networkidle"),
        expect(p.locator("#doctors li")).to_have_count(3, timeout=QUICK),
    ),
    "patient-404": lambda p, b: (
        p.goto(b + "/patient/p-999", wait_until="networkidle"),
        expect(p.locator("#patient-name")).to_have_text("Ada Lovelace", timeout=QUICK),
    ),
    "booking-422": lambda p, b: (
        p.goto(b + "/book?slot=past"),
        p.locator("#confirm").click(),
        expect(p.locator("#outcome")).to_have_text("Booked", timeout=QUICK),
    ),
    "booking-503": lambda p, b: (
        p.goto(b + "/book?slot=full"),
        p.locator("#confirm").click(),
        expect(p.locator("#outcome")).to_have_text("Booked", timeout=QUICK),
    ),
    "banner-404-then-422": lambda p, b: (
        p.goto(b + "/", wait_until="networkidle"),
        p.goto(b + "/book?slot=past"),
        p.locator("#confirm").click(),
        expect(p.locator("#outcome")).to_have_text("Booked", timeout=QUICK),
    ),
    "spinner-overlay": lambda p, b: (p.goto(b + "/loading"), p.locator("#start").click(timeout=QUICK)),
    "next-disabled": lambda p, b: (p.goto(b + "/consent"), p.locator("#next").click(timeout=QUICK)),
    "book-hidden": lambda p, b: (
        p.goto(b + "/doctor/lind", wait_until="networkidle"),
        p.locator("#book").click(timeout=QUICK),
    ),
    "missing-selector": lambda p, b: (
        p.goto(b + "/doctor/okafor", wait_until="networkidle"),
        p.locator("#cancel").click(timeout=QUICK),
    ),
    "results-pending": lambda p, b: (
        p.goto(b + f"/results?ms={LONG}"),
        expect(p.locator("#result")).to_have_text("All values normal", timeout=QUICK),
    ),
    "slow-navigation": lambda p, b: p.goto(b + f"/waiting?ms={LONG}", timeout=QUICK),
    "reminder-refused": lambda p, b: (
        p.goto(b + "/reminders"),
        p.locator("#send").click(),
        expect(p.locator("#sent")).to_have_text("Sent", timeout=QUICK),
    ),
    "invoice-js": lambda p, b: (
        p.goto(b + "/invoice"),
        p.locator("#print").click(),
        expect(p.locator("#lines")).to_have_text(re.compile(r"\w"), timeout=QUICK),
    ),
    "queue-then-wrong": lambda p, b: (
        p.goto(f"{b}/queue?key={_key()}"),
        expect(p.locator("#ahead")).to_have_text("3 ahead of you"),
        p.goto(b + "/doctor/okafor", wait_until="networkidle"),
        expect(p.locator("#name")).to_have_text("Dr. Lind", timeout=QUICK),
    ),
}


def _ticketshop(name: str) -> Scenario:
    return lambda p, b: SCENARIOS[name](p, b, _key())


APPS: dict[str, tuple[Callable[[], object], dict[str, Scenario]]] = {
    "board": (board.create_app, BOARD),
    "clinic": (clinic.create_app, CLINIC),
    "ticketshop": (
        ticketshop.create_app,
        {
            n: _ticketshop(n)
            for n in (
                "passing",
                "slow",
                "wrong-text",
                "missing-selector",
                "overlay",
                "disabled",
                "http-500",
                "js-exception",
            )
        },
    ),
}


def record_web(out_dir: Path, only: set[str] | None = None) -> dict[str, str]:
    """Record every web case (or the ids in `only`); returns {case id: "passed" | "failed"}."""
    outcome: dict[str, str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            for app, (factory, scenarios) in APPS.items():
                with serve_app(factory) as base:
                    for name, run in scenarios.items():
                        case_id = f"web/{app}/{name}"
                        if only and case_id not in only:
                            continue
                        out = out_dir / app / f"{name}.zip"
                        out.parent.mkdir(parents=True, exist_ok=True)
                        context = browser.new_context(viewport={"width": 800, "height": 600})
                        context.tracing.start(screenshots=False, snapshots=True, sources=False, title=name)
                        status = "passed"
                        try:
                            run(context.new_page(), base)
                        except Exception:  # the failure is what the trace records
                            status = "failed"
                        finally:
                            context.tracing.stop(path=str(out))
                            context.close()
                        outcome[case_id] = status
        finally:
            browser.close()
    return outcome


__all__ = ["APPS", "CHROMIUM", "record_web", "shutil"]
