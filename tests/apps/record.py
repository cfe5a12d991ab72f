"""Record real Playwright traces (trace.zip) of scenarios against the ticket shop.

The Python `playwright` package drives Debian's Chromium (`/usr/bin/chromium`, or `MOLAR_CHROMIUM`)
with tracing on (screenshots, DOM snapshots, sources), exactly as a user's library test would. Tests
record what they need at test time:

    with serve_ticketshop() as base, Recorder() as rec:
        shot = rec.record("wrong-text", base, tmp_path / "wrong-text.zip")

`python -m tests.apps.record OUT_DIR` records every scenario into OUT_DIR (to look at, or for the demo);
`--chunks` records them as chunks of one traced context (`start_chunk`/`stop_chunk`).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

_T = TypeVar("_T")

CHROMIUM = os.environ.get("MOLAR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Short waits: a failing scenario fails in about a second, not after Playwright's default 30 s.
QUICK_MS = 1_200
# A click on an element that is there but covered or disabled: Playwright says why ("… intercepts
# pointer events", "element is not enabled") only once it has retried the click, which a busy machine may
# not reach within QUICK_MS: these waits are longer, so the recorded reason does not depend on the load.
RETRIED_MS = 4_000


def _passing(page: Page, base: str, key: str) -> None:
    page.goto(base + "/")
    expect(page.locator("#events li")).to_have_count(3)
    page.get_by_role("link", name="Jazz night").click()
    expect(page.locator("#stock")).to_have_text("In stock")


def _wrong_text(page: Page, base: str, key: str) -> None:
    page.goto(base + "/event/sold-out")
    page.locator("#qty").fill("2")
    expect(page.locator("#stock")).to_have_text("In stock", timeout=QUICK_MS)


def _http_500(page: Page, base: str, key: str) -> None:
    page.goto(base + "/checkout")
    page.locator("#pay").click()
    expect(page.locator("#status")).to_have_text("Paid", timeout=QUICK_MS)


def _missing_selector(page: Page, base: str, key: str) -> None:
    page.goto(base + "/event/jazz-night")
    page.locator("#add-to-cart").click(timeout=QUICK_MS)


def _js_exception(page: Page, base: str, key: str) -> None:
    page.goto(base + "/crash")
    page.locator("#go").click()
    expect(page.locator("#seats")).to_have_text(re.compile(r"\d+"), timeout=QUICK_MS)


def _flaky(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/flaky?key={key}")
    expect(page.locator("#result")).to_have_text("Ready", timeout=QUICK_MS)


def _slow(page: Page, base: str, key: str) -> None:
    page.goto(base + "/slow?ms=700")
    expect(page.locator("#data")).to_have_text("Loaded", timeout=5_000)


def _overlay(page: Page, base: str, key: str) -> None:
    page.goto(base + "/overlay")
    page.locator("#continue").click(timeout=RETRIED_MS)


def _disabled(page: Page, base: str, key: str) -> None:
    page.goto(base + "/disabled")
    page.locator("#email").fill("ada@example.com")
    page.locator("#submit").click(timeout=RETRIED_MS)


def _login(page: Page, base: str, key: str) -> None:
    page.goto(base + "/login")
    page.locator("#user").fill("ada")
    page.locator("#password").fill("hunter2-very-secret")
    page.locator("#login").click()
    expect(page.locator("#who")).to_have_text("ada")


def _grouped(page: Page, base: str, key: str) -> None:
    """Nested `tracing.group`s around actions: the step tree of a library trace."""
    tracing = page.context.tracing
    tracing.group("open the event")
    page.goto(base + "/event/sold-out")
    tracing.group("choose tickets")
    page.locator("#qty").fill("3")
    tracing.group_end()
    tracing.group_end()
    tracing.group("check availability")
    try:
        expect(page.locator("#stock")).to_have_text("In stock", timeout=QUICK_MS)
    finally:
        tracing.group_end()


SCENARIOS: dict[str, Callable[[Page, str, str], None]] = {
    "passing": _passing,
    "wrong-text": _wrong_text,
    "http-500": _http_500,
    "missing-selector": _missing_selector,
    "js-exception": _js_exception,
    "flaky": _flaky,
    "slow": _slow,
    "overlay": _overlay,
    "disabled": _disabled,
    "login": _login,
    "grouped": _grouped,
}


@dataclass
class Recorded:
    scenario: str
    path: Path
    status: Literal["passed", "failed"]
    error: str | None = None


class Recorder:
    """One Chromium for many recordings; each recording is a fresh context with tracing on.

    Playwright's sync API keeps an event loop in the thread that started it, and a test session is
    long: every call runs on one worker thread of its own, so the main thread stays free for the
    async tests that follow (asyncio refuses to start a loop where another one is running)."""

    def __init__(self) -> None:
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")

    def _on_worker(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return self._worker.submit(fn, *args, **kwargs).result()

    def __enter__(self) -> Recorder:
        self._on_worker(self._start)
        return self

    def _start(self) -> None:
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)

    def __exit__(self, *exc: object | type[BaseException] | TracebackType | None) -> None:
        try:
            self._on_worker(self._stop)
        finally:
            self._worker.shutdown(wait=True)

    def _stop(self) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._pw is not None:
            self._pw.stop()

    @property
    def browser(self) -> Browser:
        assert self._browser is not None, "use Recorder as a context manager"
        return self._browser

    def _context(self) -> BrowserContext:
        return self.browser.new_context(viewport={"width": 800, "height": 600})

    def record(self, scenario: str, base_url: str, out: Path, *, key: str | None = None) -> Recorded:
        """Run one scenario with tracing on; write its trace.zip to `out` whether it passes or fails."""
        return self._on_worker(self._record, scenario, base_url, out, key=key)

    def _record(self, scenario: str, base_url: str, out: Path, *, key: str | None = None) -> Recorded:
        run = SCENARIOS[scenario]
        out.parent.mkdir(parents=True, exist_ok=True)
        context = self._context()
        context.tracing.start(screenshots=True, snapshots=True, sources=True, title=scenario)
        status: Literal["passed", "failed"] = "passed"
        error = None
        try:
            page = context.new_page()
            run(page, base_url, key or uuid.uuid4().hex)
        except Exception as exc:  # the scenario's failure is what the trace records
            status, error = "failed", str(exc)
        finally:
            context.tracing.stop(path=str(out))
            context.close()
        return Recorded(scenario, out, status, error)

    def record_chunks(self, scenarios: list[str], base_url: str, out_dir: Path) -> list[Recorded]:
        """One context, tracing started once, a chunk a scenario (`start_chunk`/`stop_chunk`)."""
        return self._on_worker(self._record_chunks, scenarios, base_url, out_dir)

    def _record_chunks(self, scenarios: list[str], base_url: str, out_dir: Path) -> list[Recorded]:
        out_dir.mkdir(parents=True, exist_ok=True)
        context = self._context()
        context.tracing.start(screenshots=True, snapshots=True, sources=True)
        page = context.new_page()
        results: list[Recorded] = []
        try:
            for i, scenario in enumerate(scenarios):
                context.tracing.start_chunk(title=scenario)
                status: Literal["passed", "failed"] = "passed"
                error = None
                try:
                    SCENARIOS[scenario](page, base_url, uuid.uuid4().hex)
                except Exception as exc:
                    status, error = "failed", str(exc)
                path = out_dir / f"chunk-{i}-{scenario}.zip"
                context.tracing.stop_chunk(path=str(path))
                results.append(Recorded(scenario, path, status, error))
        finally:
            context.tracing.stop()
            context.close()
        return results

    def record_many(self, base_url: str, out_dir: Path, scenarios: list[str] | None = None) -> dict[str, Recorded]:
        return {s: self.record(s, base_url, out_dir / f"{s}.zip") for s in scenarios or list(SCENARIOS)}


class RecordedTraces:
    """Scenarios recorded on first use and kept for the session (a recording takes about a second)."""

    def __init__(self, recorder: Recorder, base_url: str, out_dir: Path) -> None:
        self.recorder = recorder
        self.base_url = base_url
        self.out_dir = out_dir
        self._done: dict[str, Recorded] = {}

    def __call__(self, scenario: str) -> Recorded:
        if scenario not in self._done:
            self._done[scenario] = self.recorder.record(scenario, self.base_url, self.out_dir / f"{scenario}.zip")
        return self._done[scenario]

    def bytes(self, scenario: str) -> bytes:
        return self(scenario).path.read_bytes()


def main(argv: list[str] | None = None) -> Any:
    import argparse

    from tests.apps.server import serve_ticketshop

    parser = argparse.ArgumentParser(description="Record Playwright traces of the ticket shop scenarios")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("scenarios", nargs="*")
    parser.add_argument("--chunks", action="store_true", help="one traced context, a chunk a scenario")
    args = parser.parse_args(argv)
    with serve_ticketshop() as base, Recorder() as rec:
        if args.chunks:
            for shot in rec.record_chunks(args.scenarios or list(SCENARIOS), base, args.out_dir):
                print(f"{shot.scenario}: {shot.status} -> {shot.path}")
            return
        for name, shot in rec.record_many(base, args.out_dir, args.scenarios or None).items():
            print(f"{name}: {shot.status} -> {shot.path}")


if __name__ == "__main__":
    main()
