"""The trace viewer as people see it, in headless Chromium driven by Playwright (Debian's /usr/bin/chromium):
the share page `/r/{id}` of real demo failures, and the MCP App viewer (`ui://molar/viewer`) read over the
real `mcp` client and loaded in a host page that plays the host's side of the MCP Apps postMessage protocol.

One `molar-mcp serve --demo` for the folder's browser tests (`demo_server`, conftest.py). Screenshots
are read as pixels (Pillow): the causal step's row is the failure colour, an ordinary step's is not.
A missing Chromium fails these tests (CI installs it).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.extension import advertise
from PIL import Image
from playwright.sync_api import Browser, FrameLocator, Page, sync_playwright

from molar_mcp.mcp.viewer_app import RESULT_META_KEY, VIEWER_URI
from molar_mcp.models.masking import mask
from tests.bundles import make_bundle, summary
from tests.servers import Served
from tests.sharing.conftest import SECRET, XSS, failing_events

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("MOLAR_CHROMIUM", "/usr/bin/chromium")
APP_MIME = "text/html;profile=mcp-app"
APPS = advertise("io.modelcontextprotocol/ui", {"mimeTypes": [APP_MIME]})
# The share page's colours (reports/html.py): a failed or causal row, its red bar, a plain row.
FAILURE_BG = (0xFF, 0xEB, 0xE9)
FAILURE_RED = (0xCF, 0x22, 0x2E)
WHITE = (0xFF, 0xFF, 0xFF)


@dataclass(frozen=True)
class Demo:
    served: Served
    billing: dict[str, Any]  # the scenario run whose webhook 404 makes step 7 fail
    coupon: dict[str, Any]  # the scenario run with the coupon bug (a long checkout body)
    browser_billing: dict[str, Any]  # the Playwright Test run of the same bug (a failure screenshot)


@pytest.fixture(scope="module")
def demo(demo_server: Served) -> Demo:
    with httpx2.Client(base_url=demo_server.base_url, timeout=30) as http:
        failed = http.get("/v1/traces", params={"status": "failed", "limit": 50}).json()["items"]
    by_slug = {t["scenario_slug"]: t for t in failed}
    browser = next(t for t in failed if t["scenario_slug"].startswith("chromium-") and "billing" in t["scenario_slug"])
    return Demo(demo_server, by_slug["billing-upgrade-webhook"], by_slug["checkout-coupon"], browser)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM} (install it: apt-get install -y chromium, or set MOLAR_CHROMIUM)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield launched
        launched.close()


@pytest.fixture
def tab(chromium: Browser) -> Iterator[Page]:
    """A fresh page (our own fixture: pytest-playwright's `page` would download its own browser)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def share(base_url: str, trace: dict[str, Any]) -> str:
    with httpx2.Client(base_url=base_url, timeout=30) as http:
        resp = http.post(f"/v1/traces/{trace['id']}/share", json={"visibility": "public-read", "expires_days": 1})
    assert resp.status_code == 200, resp.text
    url: str = resp.json()["url"]
    return url


def colours(png: bytes) -> Counter[tuple[int, int, int]]:
    raw = Image.open(BytesIO(png)).convert("RGB").tobytes()
    return Counter(zip(raw[0::3], raw[1::3], raw[2::3], strict=True))


def share_of(counts: Counter[tuple[int, int, int]], colour: tuple[int, int, int], tolerance: int = 3) -> float:
    """How much of the picture is `colour` (within `tolerance` per channel)."""
    near = sum(n for c, n in counts.items() if all(abs(a - b) <= tolerance for a, b in zip(c, colour, strict=True)))
    return near / sum(counts.values())


def keep(name: str, png: bytes) -> None:
    where = os.environ.get("MOLAR_KEEP_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        (Path(where) / name).write_bytes(png)


# ---- the share page --------------------------------------------------------------------------------


def test_the_share_page_shows_the_findings_and_marks_the_causal_step_in_the_failure_colour(
    demo: Demo, tab: Page
) -> None:
    tab.goto(share(demo.served.base_url, demo.billing))
    findings = tab.locator("#findings")
    top = findings.locator("li.top")
    assert top.get_attribute("data-label") == "http_error"
    assert "POST /webhooks/billing answered 404 at step 5" in top.inner_text()
    # Step 5 let the 404 through (its own result is "passed"): it is the cause, marked, not green.
    causal = tab.locator('ol.timeline > li[data-step="5"]')
    assert causal.get_attribute("class") == "causal"
    assert causal.locator(".tag").inner_text() == "cause"
    assert causal.locator(".mark").inner_text() == "!"
    assert tab.locator('ol.timeline > li[data-step="7"]').get_attribute("class") == "failed"
    assert tab.locator("#failure h2").inner_text() == "Failing step 7: Return from the provider"
    # The request that caused it, with its body shown (a short body starts open).
    request = tab.locator("#causal-request")
    assert "POST" in request.inner_text()
    assert "/webhooks/billing" in request.inner_text()
    assert request.locator("strong").inner_text() == "404"
    assert request.locator("details.body").nth(1).locator("pre").inner_text() == "Not Found"

    # The pixels: the causal row is the failure colour with the red bar at its left edge; a plain
    # step's row has none of it.
    shot = causal.screenshot()
    keep("share-causal-step.png", shot)
    counts = colours(shot)
    assert share_of(counts, FAILURE_BG) > 0.6, counts.most_common(5)
    left_edge = Image.open(BytesIO(shot)).convert("RGB").getpixel((1, 6))
    assert all(abs(a - b) <= 24 for a, b in zip(left_edge, FAILURE_RED, strict=True)), left_edge
    plain = colours(tab.locator('ol.timeline > li[data-step="4"]').screenshot())
    assert share_of(plain, FAILURE_BG, tolerance=6) == 0
    assert share_of(plain, WHITE) > 0.6
    keep("share-page.png", tab.screenshot(full_page=True))


def test_a_long_body_on_the_share_page_is_shown_whole_when_expanded(demo: Demo, tab: Page) -> None:
    tab.goto(share(demo.served.base_url, demo.coupon))
    with httpx2.Client(base_url=demo.served.base_url, timeout=30) as http:
        responses = http.get(
            f"/v1/traces/{demo.coupon['id']}/events", params={"kind": "network.response", "limit": 100}
        ).json()["events"]
    # The longest body: the checkout's, where the coupon's discount shows (longer than any one-line cut).
    longest = max(responses, key=lambda e: len(e["payload"].get("body") or ""))
    whole = json.dumps(mask(json.loads(longest["payload"]["body"])), ensure_ascii=False, indent=2)
    assert len(whole) > 300
    row = tab.locator("#network tr", has_text=longest["payload"]["url"]).filter(has=tab.locator("details"))
    details = row.locator("details.body", has_text="response body")
    pre = details.locator("pre")
    assert not pre.is_visible()
    assert details.locator("summary").inner_text() == f"response body · {len(whole):,} chars"
    details.locator("summary").click()
    assert pre.is_visible()
    assert pre.inner_text() == whole
    assert "discount_cents" in pre.inner_text()
    keep("share-body-expanded.png", row.screenshot())


# ---- the MCP App -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppRun:
    html: str
    resource_meta: dict[str, Any] | None
    tool_meta: dict[str, dict[str, Any] | None]
    capabilities: dict[str, Any]
    debug_billing: dict[str, Any]  # debug_run's CallToolResult for the webhook 404, as the wire has it
    trace_browser: dict[str, Any]  # get_trace's for the Playwright run (with its screenshot)
    trace_plain: dict[str, Any]  # get_trace's for a client that did not declare MCP Apps


@pytest.fixture(scope="module")
def app_run(demo: Demo) -> AppRun:
    """What the real `mcp` client reads over streamable HTTP: the app resource, the tools, three results."""

    async def read() -> AppRun:
        url = demo.served.base_url + "/mcp"
        async with Client(url, extensions=[APPS]) as client:
            resource = (await client.read_resource(VIEWER_URI)).contents[0]
            tools = {t.name: t.meta for t in (await client.list_tools()).tools}
            debug = await client.call_tool("debug_run", {"trace_id": demo.billing["short_id"]})
            browser_trace = await client.call_tool("get_trace", {"trace_id": demo.browser_billing["short_id"]})
            caps = client.server_capabilities.model_dump(mode="json", by_alias=True, exclude_none=True)
        async with Client(url) as plain:
            plain_trace = await plain.call_tool("get_trace", {"trace_id": demo.billing["short_id"]})
        assert resource.mime_type == APP_MIME
        text = getattr(resource, "text", None)
        assert isinstance(text, str)

        def wire(result: Any) -> dict[str, Any]:
            dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
            return dumped

        return AppRun(
            html=text,
            resource_meta=resource.meta,
            tool_meta=tools,
            capabilities=caps,
            debug_billing=wire(debug),
            trace_browser=wire(browser_trace),
            trace_plain=wire(plain_trace),
        )

    # Playwright's sync API keeps an event loop running in this thread: the async client runs in its own.
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(anyio.run, read).result()


def test_the_app_is_a_ui_resource_linked_from_get_trace_and_debug_run(app_run: AppRun) -> None:
    assert app_run.tool_meta["get_trace"] == {"scope": "mcp:trace:read", "ui": {"resourceUri": VIEWER_URI}}
    assert app_run.tool_meta["debug_run"] == {"scope": "mcp:debug", "ui": {"resourceUri": VIEWER_URI}}
    assert "ui" not in (app_run.tool_meta["list_traces"] or {})
    assert "io.modelcontextprotocol/ui" in app_run.capabilities.get("extensions", {})
    # A strict CSP: no external origin declared, and the document's own policy forbids any fetch.
    assert app_run.resource_meta == {"ui": {"csp": {}, "prefersBorder": True}}
    assert "default-src 'none'" in app_run.html
    assert "connect-src 'none'" in app_run.html
    assert "http://" not in app_run.html
    assert "https://" not in app_run.html
    # The answers keep their text for clients that ignore apps; only an apps client gets the viewer's facts.
    assert app_run.debug_billing["content"][0]["text"]
    assert RESULT_META_KEY in app_run.debug_billing["_meta"]
    assert RESULT_META_KEY not in (app_run.trace_plain.get("_meta") or {})


HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>test host</title></head>
<body style="margin:0;background:#eee"><iframe id="view" sandbox="allow-scripts" style="width:1100px;height:400px;
border:0;background:#fff"></iframe></body></html>"""

# The host's side of the protocol (MCP Apps 2026-01-26): answer ui/initialize, wait for initialized,
# then send the tool's arguments and its CallToolResult; follow the view's size.
HOST_SCRIPT = """([html, args, result]) => new Promise((resolve) => {
  const frame = document.getElementById("view");
  window.fromView = [];
  window.addEventListener("message", (event) => {
    if (event.source !== frame.contentWindow) return;
    const m = event.data;
    window.fromView.push(m);
    const post = (msg) => frame.contentWindow.postMessage(msg, "*");
    if (m.method === "ui/initialize") {
      post({ jsonrpc: "2.0", id: m.id, result: { protocolVersion: "2026-01-26",
        hostInfo: { name: "test-host", version: "1.0.0" }, hostCapabilities: {},
        hostContext: { theme: "light", displayMode: "inline", containerDimensions: { width: 1100 } } } });
    } else if (m.method === "ui/notifications/initialized") {
      post({ jsonrpc: "2.0", method: "ui/notifications/tool-input", params: { arguments: args } });
      post({ jsonrpc: "2.0", method: "ui/notifications/tool-result", params: result });
    } else if (m.method === "ui/notifications/size-changed" && m.params.height) {
      frame.style.height = m.params.height + "px";
      resolve(true);
    }
  });
  frame.srcdoc = html;
})"""


def host(page: Page, html: str, arguments: dict[str, Any], result: dict[str, Any]) -> FrameLocator:
    """Load the app in a sandboxed iframe of a host page and hand it one tool result."""
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.set_content(HOST_PAGE)
    page.evaluate(HOST_SCRIPT, [html, arguments, result])
    view = page.frame_locator("#view")
    view.locator("body[data-rendered]").wait_for(timeout=15_000)
    view.locator("body").evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_function("() => window.fromView.some(m => m.method === 'ui/notifications/size-changed')")
    messages = page.evaluate("window.fromView")
    assert messages[0]["method"] == "ui/initialize"
    assert messages[0]["params"]["protocolVersion"] == "2026-01-26"
    assert messages[1]["method"] == "ui/notifications/initialized"
    assert [r for r in requests if r.startswith(("http:", "https:"))] == [], "the app fetched something"
    return view


def test_the_app_renders_debug_run_steps_failure_findings_and_the_causal_request(app_run: AppRun, tab: Page) -> None:
    view = host(tab, app_run.html, {"trace_id": "billing"}, app_run.debug_billing)
    assert view.locator("body").get_attribute("data-rendered") == "facts"
    assert view.locator("#failure h2").inner_text() == "Failing step 7: Return from the provider"
    assert view.locator(".expected code").inner_text() == "/billing?upgraded=true"
    assert view.locator(".actual code").inner_text() == "/billing?upgraded=false"
    top = view.locator("#findings li.top")
    assert top.get_attribute("data-label") == "http_error"
    assert "answered 404 at step 5" in top.inner_text()
    assert view.locator("ol.timeline > li[data-step]").count() == 7
    causal = view.locator('ol.timeline > li[data-step="5"]')
    assert causal.get_attribute("class") == "causal"
    assert view.locator('ol.timeline > li[data-step="7"]').get_attribute("class") == "failed"
    request = view.locator("#causal-request")
    assert "/webhooks/billing" in request.inner_text()
    assert request.locator("strong").inner_text() == "404"
    response_body = request.locator("details.body", has_text="response body")
    assert response_body.locator("pre").inner_text() == "Not Found"
    assert view.locator("#failing-step-events tr.failed").count() >= 2
    # The same look as the share page: the causal row is the failure colour, a plain one is not.
    shot = causal.screenshot()
    keep("app-causal-step.png", shot)
    assert share_of(colours(shot), FAILURE_BG) > 0.6
    plain = colours(view.locator('ol.timeline > li[data-step="4"]').screenshot())
    assert share_of(plain, FAILURE_BG, tolerance=6) == 0
    keep("app-debug-run.png", tab.screenshot(full_page=True))


def test_the_app_shows_a_playwright_runs_failure_screenshot(app_run: AppRun, tab: Page) -> None:
    view = host(tab, app_run.html, {"trace_id": "browser"}, app_run.trace_browser)
    image = view.locator("#screenshot img")
    assert image.get_attribute("src", timeout=5000).startswith("data:image/png;base64,")  # type: ignore[union-attr]
    size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size[0] > 100
    assert size[1] > 100
    shot = image.screenshot()
    # A real page was captured: many colours, not a blank box.
    assert len(colours(shot)) > 50
    assert view.locator("ol.timeline > li[data-step]").count() >= 1
    assert view.locator("#failure").count() == 1
    keep("app-screenshot.png", tab.screenshot(full_page=True))


def test_without_the_facts_the_app_draws_the_structured_content(app_run: AppRun, tab: Page) -> None:
    """A host that renders apps without declaring the extension: the answer's structured content."""
    view = host(tab, app_run.html, {"trace_id": "billing"}, app_run.trace_plain)
    assert view.locator("body").get_attribute("data-rendered") == "structured"
    assert view.locator("#failure h2").inner_text() == "Failing step 7: Return from the provider"
    assert view.locator('ol.timeline > li[data-step="7"]').get_attribute("class") == "failed"
    assert view.locator("ol.timeline > li[data-step]").count() == 7


def test_trace_text_in_the_app_is_text_and_secrets_stay_masked(demo: Demo, app_run: AppRun, tab: Page) -> None:
    """A trace whose console line carries a script tag and a live key, through the real server and client."""
    with httpx2.Client(base_url=demo.served.base_url, timeout=30) as http:
        made = http.post(
            "/v1/traces/ingest",
            files={"file": ("xss.tar.gz", make_bundle(summary(), failing_events()), "application/gzip")},
        )
    assert made.status_code == 201, made.text
    short = made.json()["short_id"]

    async def call() -> dict[str, Any]:
        async with Client(demo.served.base_url + "/mcp", extensions=[APPS]) as client:
            result = await client.call_tool("debug_run", {"trace_id": short})
        dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped

    with ThreadPoolExecutor(max_workers=1) as worker:
        result = worker.submit(anyio.run, call).result()
    assert SECRET not in json.dumps(result)
    view = host(tab, app_run.html, {"trace_id": short}, result)
    # The causal step's events hold the console line: shown as text, no element made of it.
    events = view.locator("#causal-step-events")
    assert XSS in events.inner_text()
    assert view.locator("script").count() == 1  # ours
    assert SECRET not in view.locator("html").inner_html()
