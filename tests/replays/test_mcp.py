"""replay_trace, get_replay, diff_traces and molar://replays/{id} through the SDK's in-memory client, in
both protocol eras, the demo shop in process."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.context import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult, TextContent

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.compose import Embedded, manifest_document
from molar_mcp.demo import fix_diff
from molar_mcp.mcp.server import create_mcp_server
from molar_mcp.mcp.tokens import estimate_tokens
from molar_mcp.replay.service import ReplaySettings
from molar_mcp.store import LOCAL_ORG_ID
from tests.replays.conftest import Gate, World, make_world
from tests.replays.test_service import EXPECT_THE_BUG, edit, scenario_text

pytestmark = pytest.mark.anyio


def embedded(world: World) -> Embedded:
    ctx = dataclasses.replace(ApiContext.embedded(world.store), replays=world.service)
    return Embedded(store=world.store, api_app=create_api_app(ctx), context=ctx)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path / "data")
    yield w
    w.close()


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[World, Gate]]:
    gate = Gate()
    w = make_world(tmp_path / "data", launcher=gate.launcher(), settings=ReplaySettings(per_org_limit=1))
    yield w, gate
    gate.opened.set()
    w.close()


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def tokens(result: CallToolResult) -> int:
    """What a model is shown: the larger of the text and the structured content."""
    return max(
        estimate_tokens(text_of(result)), estimate_tokens(json.dumps(result.structured_content, ensure_ascii=False))
    )


def expect_the_bug(world: World) -> str:
    return edit(scenario_text(world, "checkout-coupon"), *EXPECT_THE_BUG)


async def test_replay_trace_runs_and_reports_the_assertion_that_now_passes(world: World, mode: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    trace = world.runs["checkout-coupon"].short_id
    async with Client(create_mcp_server(embedded(world).client_factory()), mode=mode) as client:
        result = await client.call_tool(
            "replay_trace",
            {"trace_id": trace, "from_step": 6, "scenario_diff": expect_the_bug(world)},
            progress_callback=on_progress,
        )
    view: Any = result.structured_content

    assert not result.is_error, text_of(result)
    assert (view["replay"]["status"], view["replay"]["trace_status"]) == ("succeeded", "passed")
    assert view["replay"]["resource"] == f"molar://replays/{view['replay']['replay_id']}"
    assert [(a["step"], a["change"]) for a in view["diff"]["assertions"]] == [(6, "now_passes")]
    assert "the replayed run PASSED" in text_of(result)
    assert "get_trace(trace_id=" in view["next"]
    values = [p[0] for p in progress]
    assert values == sorted(set(values))  # progress only grows
    assert values[-1] == progress[-1][1] == 5
    assert tokens(result) <= 2000


async def test_a_replay_outlasting_the_wait_returns_its_id_to_poll(gated: tuple[World, Gate], mode: str) -> None:
    world, gate = gated
    trace = world.runs["checkout-coupon"].short_id
    async with Client(create_mcp_server(embedded(world).client_factory()), mode=mode) as client:
        started = await client.call_tool("replay_trace", {"trace_id": trace, "from_step": 6, "wait_seconds": 0})
        replay_id = started.structured_content["replay"]["replay_id"]  # type: ignore[index]
        gate.wait_arrivals(1)
        still = await client.call_tool("get_replay", {"replay_id": replay_id})
        resource = await client.read_resource(f"molar://replays/{replay_id}")
        gate.opened.set()
        done = await client.call_tool("get_replay", {"replay_id": replay_id, "wait_seconds": 30})
        finished = await client.read_resource(f"molar://replays/{replay_id}")

    assert started.structured_content["replay"]["status"] in ("queued", "running")  # type: ignore[index]
    assert f'get_replay(replay_id="{replay_id}", wait_seconds=30)' in text_of(started)
    assert still.structured_content["replay"]["phase"] == "starting_app"  # type: ignore[index]
    assert json.loads(resource.contents[0].text)["replay"]["status"] == "running"  # type: ignore[union-attr]
    done_view: Any = done.structured_content
    assert (done_view["replay"]["status"], done_view["replay"]["trace_status"]) == ("succeeded", "failed")
    assert done_view["replay"]["failure_signature"] == "step-6: expect json $.total_cents == 4500"  # no fix given
    assert json.loads(finished.contents[0].text)["diff"]["b_status"] == "failed"  # type: ignore[union-attr]


async def test_the_user_is_asked_before_code_runs_when_the_client_can_ask(world: World, mode: str) -> None:
    asked: list[str] = []

    def answering(action: str) -> Any:
        async def callback(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
            asked.append(params.message)
            return ElicitResult(action=action, content={"run": True} if action == "accept" else None)  # type: ignore[arg-type]

        return callback

    trace = world.runs["checkout-coupon"].short_id
    args = {"trace_id": trace, "from_step": 6, "scenario_diff": expect_the_bug(world)}
    server = create_mcp_server(embedded(world).client_factory())
    async with Client(server, mode=mode, elicitation_callback=answering("decline")) as client:
        declined = await client.call_tool("replay_trace", args)
    nothing = world.service.list_for_trace(LOCAL_ORG_ID, trace).items
    async with Client(server, mode=mode, elicitation_callback=answering("accept")) as client:
        accepted = await client.call_tool("replay_trace", args)

    assert declined.is_error
    assert "Not run" in text_of(declined)
    assert nothing == []
    assert not accepted.is_error
    assert accepted.structured_content["replay"]["trace_status"] == "passed"  # type: ignore[index]
    assert len(asked) == 2
    assert f"Replay trace {trace} from step 6?" in asked[0]
    assert "runs its code" in asked[0]


async def test_refused_replays_are_tool_errors_that_say_what_to_fix(world: World) -> None:
    trace = world.runs["checkout-coupon"].short_id
    stale = fix_diff("coupon-multiplier").replace("total = round(subtotal * COUPONS", "total = round(subtotal*COUPONS")
    async with Client(create_mcp_server(embedded(world).client_factory())) as client:
        bad_diff = await client.call_tool(
            "replay_trace", {"trace_id": trace, "from_step": 6, "source_diffs": [{"path": "app.py", "diff": stale}]}
        )
        bad_step = await client.call_tool("replay_trace", {"trace_id": trace, "from_step": 7})
        missing = await client.call_tool("replay_trace", {"trace_id": "nope12345", "from_step": 1})
        unknown_replay = await client.call_tool("get_replay", {"replay_id": "nope"})
        with pytest.raises(MCPError) as info:
            await client.read_resource("molar://replays/nope")

    assert bad_diff.is_error
    assert "hunk @@ -67,7 +67,7 @@ of app.py does not apply" in text_of(bad_diff)
    assert "nothing ran" in text_of(bad_diff)
    assert bad_step.is_error
    assert "step 6 did not pass" in text_of(bad_step)
    assert missing.is_error
    assert "No trace 'nope12345'" in text_of(missing)
    assert unknown_replay.is_error
    assert "replay_trace returns replay ids" in text_of(unknown_replay)
    assert info.value.error.code == -32602
    assert world.service.list_for_trace(LOCAL_ORG_ID, trace).items == []


async def test_diff_traces_fits_a_small_budget_and_says_what_it_left_out(world: World, mode: str) -> None:
    # Two different journeys: nearly every exchange differs.
    a, b = world.runs["checkout-coupon"].short_id, world.runs["checkout-plain"].short_id
    async with Client(create_mcp_server(embedded(world).client_factory()), mode=mode) as client:
        full = await client.call_tool("diff_traces", {"a": a, "b": b, "dimension": "network", "max_tokens": 20000})
        small = await client.call_tool("diff_traces", {"a": a, "b": b, "dimension": "network", "max_tokens": 500})

    assert not full.is_error
    assert not small.is_error
    assert tokens(small) <= 500
    assert tokens(full) > 500
    assert small.structured_content["omitted"]  # type: ignore[index]


async def test_diff_traces_pages_on_from_the_offset_an_answer_gives(world: World, mode: str) -> None:
    a, b = world.runs["checkout-coupon"].short_id, world.runs["checkout-plain"].short_id
    args = {"a": a, "b": b, "dimension": "network", "max_tokens": 1000}
    async with Client(create_mcp_server(embedded(world).client_factory()), mode=mode) as client:
        first = (await client.call_tool("diff_traces", args)).structured_content
        assert first is not None
        offset = first["next_offset"]
        assert offset > 0
        assert f'dimension="network", offset={offset})' in " ".join(first["omitted"])
        second = (await client.call_tool("diff_traces", {**args, "offset": offset})).structured_content
        negative = await client.call_tool("diff_traces", {**args, "offset": -1})
    assert negative.is_error
    assert second is not None
    assert second["network"]
    assert [r["request"] for r in second["network"]] != [r["request"] for r in first["network"]]


async def test_the_replay_tools_are_listed_with_honest_annotations_and_scopes(world: World) -> None:
    async with Client(create_mcp_server(embedded(world).client_factory())) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    doc = await manifest_document()
    scopes = {t["name"]: t["scope"] for t in doc["tools"]}

    replay = tools["replay_trace"]
    assert replay.annotations is not None
    assert (replay.annotations.read_only_hint, replay.annotations.destructive_hint) == (False, False)
    assert replay.annotations.idempotent_hint is False
    assert "EXECUTES CODE" in (replay.description or "")
    assert "confirmation" not in replay.input_schema["properties"]
    for name in ("get_replay", "diff_traces"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.read_only_hint is True
    assert all(tools[n].output_schema is not None for n in ("replay_trace", "get_replay", "diff_traces"))
    assert (scopes["replay_trace"], scopes["get_replay"], scopes["diff_traces"]) == (
        "mcp:run",
        "mcp:trace:read",
        "mcp:trace:read",
    )
    assert "molar://replays/{replay_id}" in templates


async def test_replay_trace_takes_the_rest_bodys_edits_shape_and_uses_the_edits(world: World) -> None:
    trace = world.runs["checkout-coupon"].short_id
    async with Client(create_mcp_server(embedded(world).client_factory())) as client:
        result = await client.call_tool(
            "replay_trace", {"trace_id": trace, "from_step": 6, "edits": {"scenario_diff": expect_the_bug(world)}}
        )
        twice = await client.call_tool(
            "replay_trace",
            {"trace_id": trace, "from_step": 6, "scenario_diff": "x", "edits": {"scenario_diff": "y"}},
        )
        unknown = await client.call_tool("replay_trace", {"trace_id": trace, "from_step": 6, "patch": "x"})
        nested = await client.call_tool("replay_trace", {"trace_id": trace, "from_step": 6, "edits": {"diffs": []}})
    view: Any = result.structured_content
    assert not result.is_error, text_of(result)
    assert view["replay"]["trace_status"] == "passed"  # the edits were applied, not dropped
    assert twice.is_error
    assert "Give the edits once" in text_of(twice)
    assert unknown.is_error
    assert "unknown argument 'patch'" in text_of(unknown)
    assert "source_diffs" in text_of(unknown)
    assert nested.is_error  # an unknown key inside edits is refused too
    assert "diffs" in text_of(nested)
