"""Answers on recorded Playwright tests (the demo's Playwright Test run, recorded from a real
`npx playwright test`), over the real SDK client:

- screenshots a model can see: `get_trace` and `get_event` return the failure screenshot as `ImageContent`,
  downscaled to a bounded size, with a resource link that reads the full image; the image's cost counts
  against the answer's budget;
- pages worth a call: `get_trace(events=true)` and `get_trace(step=N)` carry at least 20 events a page at
  the default budget, and the pages join back to every event."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import BlobResourceContents, ImageContent, ResourceLink, TextContent
from PIL import Image, ImageChops, ImageStat

from molar_mcp.compose import load_playwright_demo, open_embedded
from molar_mcp.mcp.images import IMAGE_MAX_BYTES, image_tokens, vision_tokens
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.state import AppState
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.store import LOCAL_ORG_ID, TraceQuery
from molar_mcp.store.runs import SqliteRunStore

pytestmark = pytest.mark.anyio

COUPON = "storefront › takes 10% off with SAVE10"


@dataclass
class PlaywrightDemo:
    server: MCPServer[AppState]
    coupon: str  # short id of the failing coupon test's trace
    screenshot_seq: int  # its screenshot event
    traces: dict[str, list[int]]  # every trace of the run: short id → its top-level step of each event


@pytest.fixture(scope="module")
def pw_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaywrightDemo]:
    with open_embedded(tmp_path_factory.mktemp("pw") / "data") as embedded:
        load_playwright_demo(embedded.store)
        [run] = SqliteRunStore(embedded.store.db).list_runs(LOCAL_ORG_ID).items
        coupon = embedded.store.get_trace(LOCAL_ORG_ID, {t.title: t.trace_id for t in run.failing}[COUPON])
        events = embedded.store.list_events(LOCAL_ORG_ID, coupon.id, kind="screenshot", limit=10).events
        traces = {}
        for row in embedded.store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=50, run_id=run.id)).items:
            all_events = embedded.store.list_events(LOCAL_ORG_ID, row.id, limit=10_000).events
            traces[row.short_id] = [e.step or 0 for e in all_events]
        server = create_mcp_server(embedded.client_factory())
        yield PlaywrightDemo(server, coupon.short_id, events[0].seq, traces)


def _image(block: ImageContent) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(block.data)))


def _answer_cost(result: Any) -> int:
    """What the answer puts before a model: the larger of its text and its structured content (a client
    shows one of them), its links, and the image as a vision model counts it."""
    text = total = 0
    for block in result.content:
        if isinstance(block, TextContent):
            text += estimate_tokens(block.text)
        elif isinstance(block, ImageContent):
            total += vision_tokens(*_image(block).size)
        else:
            total += estimate_tokens(block.model_dump_json(by_alias=True, exclude_none=True))
    return total + max(text, estimate_tokens(json.dumps(result.structured_content, ensure_ascii=False)))


async def test_get_trace_shows_the_failure_screenshot_downscaled_with_a_link_to_the_full_one(
    pw_demo: PlaywrightDemo, mode: str
) -> None:
    async with Client(pw_demo.server, mode=mode) as client:
        # 2,400 tokens: the image's share (600) is below what the 800×600 screenshot costs (640).
        result = await client.call_tool("get_trace", {"trace_id": pw_demo.coupon, "max_tokens": 2400})
        images = [b for b in result.content if isinstance(b, ImageContent)]
        assert len(images) == 1
        # The full image's link: the screenshot's own, or its place in the artifact list when that is kept.
        links = [b for b in result.content if isinstance(b, ResourceLink) and b.name == "screenshot.png"]
        full_read = await client.read_resource(str(links[0].uri))
    assert not result.is_error
    (shown_block,) = images
    assert shown_block.mime_type == "image/jpeg"
    assert len(base64.b64decode(shown_block.data)) <= IMAGE_MAX_BYTES
    shown = _image(shown_block)
    (full_contents,) = full_read.contents
    assert isinstance(full_contents, BlobResourceContents)
    full = Image.open(io.BytesIO(base64.b64decode(full_contents.blob)))
    assert full.size == (800, 600)  # the recorded failure screenshot
    assert vision_tokens(*shown.size) <= image_tokens(2400)
    assert shown.width < full.width
    assert abs(shown.width / shown.height - full.width / full.height) < 0.01
    # The same picture: the full one scaled to the shown size differs little, pixel by pixel.
    diff = ImageChops.difference(full.convert("RGB").resize(shown.size), shown.convert("RGB"))
    assert max(ImageStat.Stat(diff).mean) < 8
    text = result.content[0]
    assert isinstance(text, TextContent)
    how = f"shown downscaled from 800×600 to {shown.width}×{shown.height} JPEG"
    # The text does not repeat the file's recorded name (shown only inside the artifacts fence).
    assert f"The failure screenshot {how}; the full image is its resource link." in text.text
    omitted = result.structured_content["omitted"]  # type: ignore[index]
    assert any(o.endswith(f"screenshot.png {how}; full size: the resource link screenshot.png") for o in omitted)
    assert _answer_cost(result) <= 2400


async def test_a_busy_trace_whose_summary_needs_most_of_the_budget_says_its_screenshot_was_not_shown(
    pw_demo: PlaywrightDemo,
) -> None:
    """At 1,200 tokens the coupon trace's summary needs most of the budget (failure, steps, the trace.zip
    link): the screenshot does not push those out; the answer says it was not shown and how to see it. At
    the default 2,000 (an answer counted as the larger of its text and its structured content) it is shown."""
    async with Client(pw_demo.server) as client:
        result = await client.call_tool("get_trace", {"trace_id": pw_demo.coupon, "max_tokens": 1200})
        default = await client.call_tool("get_trace", {"trace_id": pw_demo.coupon})
    assert not any(isinstance(b, ImageContent) for b in result.content)
    text = result.content[0]
    assert isinstance(text, TextContent)
    assert "The failure screenshot not shown: no room at max_tokens=1200 (raise it to see it)" in text.text
    assert result.structured_content["artifacts"][0]["kind"] == "playwright"  # type: ignore[index]
    assert _answer_cost(result) <= 1200
    assert any(isinstance(b, ImageContent) for b in default.content)
    assert default.structured_content["artifacts"][0]["kind"] == "playwright"  # type: ignore[index]
    assert _answer_cost(default) <= 2000


async def _summaries_by_budget(pw_demo: PlaywrightDemo) -> list[tuple[int, Any, str]]:
    """The coupon trace's summary at every budget from the least a tool takes up to one showing two
    failed events: (budget, structured content, text)."""
    answers = []
    async with Client(pw_demo.server) as client:
        for budget in range(800, 4100, 100):
            result = await client.call_tool("get_trace", {"trace_id": pw_demo.coupon, "max_tokens": budget})
            assert not result.is_error, budget
            text = result.content[0]
            assert isinstance(text, TextContent)
            answers.append((budget, result.structured_content, text.text))
    return answers


async def test_the_failed_event_the_failure_names_is_the_last_failed_event_cut(pw_demo: PlaywrightDemo) -> None:
    """The coupon test fails at an assertion (the failure names it) followed by its step's failed step.end
    (a long call log): as the budget shrinks, the step.end goes first and the assertion is kept longest."""
    answers = await _summaries_by_budget(pw_demo)
    decisive = {view["failure"]["seq"] for _, view, _ in answers}
    assert len(decisive) == 1
    (seq,) = decisive
    shown = {budget: [e["seq"] for e in view.get("notable", [])] for budget, view, _ in answers}
    assert [] in shown.values()  # budgets that show none
    assert [seq] in shown.values()  # ... only the decisive one
    assert any(len(seqs) > 1 for seqs in shown.values())  # ... and more
    for budget, seqs in shown.items():
        assert not seqs or seq in seqs, (budget, seqs)
    # The smallest budget that shows a failed event shows the failure's.
    assert next(seqs for seqs in shown.values() if seqs) == [seq]


async def test_the_note_on_the_failing_steps_events_is_true_of_the_answer_it_is_in(pw_demo: PlaywrightDemo) -> None:
    """An answer that shows failed events leaves out their details; one that shows none leaves out the
    failing step's events themselves: each says so, and both name the call that shows them."""
    answers = await _summaries_by_budget(pw_demo)
    step = answers[0][1]["failure"]["step"]
    call = f'get_trace(trace_id="{pw_demo.coupon}", step={step})'
    details = f"event details; {call} shows the failing step's events"
    events = f"the failing step's events; {call} shows them"
    assert {bool(view.get("notable")) for _, view, _ in answers} == {True, False}  # both kinds of answer
    for budget, view, text in answers:
        note = details if view.get("notable") else events
        assert note in view["omitted"], (budget, view["omitted"])
        assert [details, events].count(note) == 1
        other = events if note == details else details
        assert other not in view["omitted"], budget
        assert f"Left out: {note}" in text.splitlines(), budget
        assert f"Left out: {other}" not in text.splitlines(), budget


async def test_a_larger_budget_shows_the_screenshot_at_its_recorded_size(pw_demo: PlaywrightDemo) -> None:
    async with Client(pw_demo.server) as client:
        result = await client.call_tool("get_trace", {"trace_id": pw_demo.coupon, "max_tokens": 4000})
    (image,) = [b for b in result.content if isinstance(b, ImageContent)]
    assert _image(image).size == (800, 600)
    assert _answer_cost(result) <= 4000


async def test_get_event_of_a_screenshot_event_returns_the_image(pw_demo: PlaywrightDemo, mode: str) -> None:
    async with Client(pw_demo.server, mode=mode) as client:
        result = await client.call_tool("get_event", {"trace_id": pw_demo.coupon, "seq": pw_demo.screenshot_seq})
        narrowed = await client.call_tool(
            "get_event", {"trace_id": pw_demo.coupon, "seq": pw_demo.screenshot_seq, "path": "sha256"}
        )
    assert not result.is_error
    (image,) = [b for b in result.content if isinstance(b, ImageContent)]
    (link,) = [b for b in result.content if isinstance(b, ResourceLink)]
    text = result.content[0]
    assert isinstance(text, TextContent)
    assert str(link.uri).split("/blobs/")[1] in text.text  # the event's payload names the blob shown
    assert vision_tokens(*_image(image).size) <= image_tokens(2000)
    assert _answer_cost(result) <= 2000
    assert not any(isinstance(b, ImageContent) for b in narrowed.content)  # asked for a field, not the image


async def test_a_screenshot_that_is_no_image_is_named_not_shown(tmp_path: Path) -> None:
    from molar_mcp.ingest import ingest_bundle
    from tests.bundles import artifact_for, make_bundle, summary

    junk = b"\x89PNG\r\n\x1a\nnot-really-a-png"
    with open_embedded(tmp_path / "data") as embedded:
        _, short = ingest_bundle(
            embedded.store, LOCAL_ORG_ID, make_bundle(summary(artifacts=[artifact_for(junk)]), blobs={"png": junk})
        )
        async with Client(create_mcp_server(embedded.client_factory())) as client:
            result = await client.call_tool("get_trace", {"trace_id": short})
    assert not result.is_error
    assert not any(isinstance(b, ImageContent) for b in result.content)
    assert any(isinstance(b, ResourceLink) for b in result.content)  # the file is still one read away
    text = result.content[0]
    assert isinstance(text, TextContent)
    assert "The failure screenshot not shown (not a readable image" in text.text


async def test_event_pages_of_a_playwright_trace_carry_at_least_twenty_events(
    pw_demo: PlaywrightDemo, mode: str
) -> None:
    sizes: list[int] = []
    async with Client(pw_demo.server, mode=mode) as client:
        for short, steps in pw_demo.traces.items():
            seqs: list[int] = []
            offset: int | None = 0
            while offset is not None:
                page = await client.call_tool("get_trace", {"trace_id": short, "events": True, "offset": offset})
                view: Any = page.structured_content
                assert _answer_cost(page) <= 2000
                rows = view["step_events"]
                if view.get("next_offset") is not None:  # every page but the last is a full one
                    assert len(rows) >= 20, (short, offset, len(rows))
                    sizes.append(len(rows))
                seqs += [row[0] for row in rows]
                offset = view.get("next_offset")
            assert seqs == list(range(len(steps)))  # the pages join back to every event, in order
            # The step with the most events, read by step=N: a page of at least 20 (or all of it).
            biggest = max(set(steps), key=steps.count)
            page = await client.call_tool("get_trace", {"trace_id": short, "step": biggest})
            rows = page.structured_content["step_events"]  # type: ignore[index]
            assert len(rows) >= min(20, steps.count(biggest)), (short, biggest, len(rows))
            assert {row[1] for row in rows} == {biggest}
            assert _answer_cost(page) <= 2000
    assert sizes
    assert max(steps.count(s) for steps in pw_demo.traces.values() for s in set(steps)) >= 20  # a step that tests it
