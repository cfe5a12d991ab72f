"""The Layer 2 replay routes of /v1 (seed 000), in process, the demo shop in process too."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from molar_mcp.api.app import create_api_app
from molar_mcp.api.context import ApiContext
from molar_mcp.demo import fix_diff
from molar_mcp.ingest import ingest_bundle
from molar_mcp.replay.diff import DIFF_ROWS
from molar_mcp.replay.service import ReplaySettings
from molar_mcp.store import LOCAL_ORG_ID
from molar_mcp.store.tiers import RetentionPolicy
from tests.api.support import assert_error
from tests.long_run import record_long_run
from tests.replays.conftest import Gate, World, make_world
from tests.replays.test_service import EXPECT_THE_BUG, edit, scenario_text

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class Api:
    world: World
    ctx: ApiContext
    http: httpx2.AsyncClient

    @property
    def coupon(self) -> str:
        return self.world.runs["checkout-coupon"].short_id


@pytest.fixture
def api_world(tmp_path: Path) -> Iterator[tuple[World, ApiContext]]:
    world = make_world(tmp_path / "data")
    ctx = dataclasses.replace(ApiContext.embedded(world.store), replays=world.service)
    yield world, ctx
    world.close()


@pytest.fixture
async def api(api_world: tuple[World, ApiContext]) -> AsyncIterator[Api]:
    world, ctx = api_world
    transport = httpx2.ASGITransport(app=create_api_app(ctx), raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
        yield Api(world, ctx, http)


async def replay(api: Api, trace: str, body: dict[str, Any]) -> httpx2.Response:
    return await api.http.post(f"/v1/traces/{trace}/replay", json=body)


async def finished(api: Api, replay_id: str) -> dict[str, Any]:
    response = await api.http.get(f"/v1/replays/{replay_id}", params={"wait": "20"})
    body: dict[str, Any] = response.json()
    while body["status"] not in ("succeeded", "failed"):  # each round is a long poll, not a sleep
        body = (await api.http.get(f"/v1/replays/{replay_id}", params={"wait": "20", "phase": body["phase"]})).json()
    return body


async def test_a_replay_is_accepted_then_polled_to_its_outcome(api: Api) -> None:
    text = scenario_text(api.world, "checkout-coupon")
    accepted = await replay(api, api.coupon, {"from_step": 6, "edits": {"scenario_diff": edit(text, *EXPECT_THE_BUG)}})
    status = accepted.json()
    done = await finished(api, status["id"])
    listed = (await api.http.get(f"/v1/traces/{api.coupon}/replays")).json()

    assert accepted.status_code == 202
    assert {"id", "status", "from_step", "triggered_via", "replay_trace_id"} <= set(status)
    assert (status["from_step"], status["triggered_via"], status["scenario_edited"]) == (6, "api", True)
    assert (done["status"], done["trace_status"], done["phase"]) == ("succeeded", "passed", "done")
    assert done["replay_trace_id"]
    assert [r["id"] for r in listed["items"]] == [status["id"]]
    child = (await api.http.get(f"/v1/traces/{done['replay_trace_id']}")).json()
    assert (child["parent_trace_id"], child["replay_from_step"]) == (api.world.runs["checkout-coupon"].trace_id, 6)


async def test_the_diff_compares_a_replay_with_its_source_by_dimension(api: Api) -> None:
    text = scenario_text(api.world, "checkout-coupon")
    accepted = await replay(api, api.coupon, {"from_step": 6, "edits": {"scenario_diff": edit(text, *EXPECT_THE_BUG)}})
    done = await finished(api, accepted.json()["id"])
    source = api.world.runs["checkout-coupon"].trace_id

    overview = (await api.http.get("/v1/traces/diff", params={"a": source, "b": done["id"]})).json()
    steps = (
        await api.http.get(
            "/v1/traces/diff", params={"a": api.coupon, "b": done["replay_short_id"], "dimension": "steps"}
        )
    ).json()
    network = (
        await api.http.get(
            "/v1/traces/diff", params={"a": source, "b": done["replay_trace_id"], "dimension": "network"}
        )
    ).json()
    console = (
        await api.http.get(
            "/v1/traces/diff", params={"a": source, "b": done["replay_trace_id"], "dimension": "console"}
        )
    ).json()

    assert overview["b"]["id"] == done["replay_trace_id"]  # b given as the replay id
    assert [(a["step"], a["change"]) for a in overview["assertions"]] == [(6, "now_passes")]
    assert overview["first_divergence"]["kind"] == "assertion"
    assert [s["step"] for s in steps["steps"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [s["restored_b"] for s in steps["steps"]] == [True] * 5 + [False] * 2
    assert all(s["delta_ms"] is not None for s in steps["steps"][:6])
    assert [e["step"] for e in network["network"]] == [1, 2, 3, 4, 5, 6, 7]
    assert network["network"][-1]["only_in"] == "b"
    assert console["console"] == []
    assert overview["first_divergence"]["step"] == 6


async def test_a_trace_that_is_not_hot_is_a_409(api: Api) -> None:
    api.ctx.tiers.apply(
        RetentionPolicy(warm_after_days=1, cold_after_days=2), now=datetime.now(UTC) + timedelta(days=3)
    )
    response = await replay(api, api.coupon, {"from_step": 6})
    body = assert_error(response, 409, "conflict")
    assert "cold tier" in body["message"]


async def test_a_diff_that_does_not_apply_is_a_422_naming_the_hunk(api: Api) -> None:
    stale = fix_diff("coupon-multiplier").replace("total = round(subtotal * COUPONS", "total = round(subtotal*COUPONS")
    response = await replay(
        api, api.coupon, {"from_step": 6, "edits": {"source_diffs": [{"path": "app.py", "diff": stale}]}}
    )
    body = assert_error(response, 422, "diff_does_not_apply")
    assert "hunk @@ -67,7 +67,7 @@ of app.py does not apply" in body["message"]
    assert (await api.http.get(f"/v1/traces/{api.coupon}/replays")).json()["items"] == []


async def test_bad_requests_get_the_error_shape(api: Api) -> None:
    assert_error(await replay(api, "nope12345", {"from_step": 1}), 404, "not_found")
    assert_error(await replay(api, api.coupon, {"from_step": 0}), 422, "validation_error")
    assert_error(await replay(api, api.coupon, {"from_step": 1, "surprise": True}), 422, "validation_error")
    assert_error(await replay(api, api.coupon, {"from_step": 9}), 422, "validation_error")
    not_json = await api.http.post(
        f"/v1/traces/{api.coupon}/replay", content=b"{", headers={"content-type": "application/json"}
    )
    assert_error(not_json, 400, "bad_request")
    form = await api.http.post(f"/v1/traces/{api.coupon}/replay", data={"from_step": "1"})
    assert_error(form, 415, "unsupported_media_type")
    assert_error(await api.http.get("/v1/replays/nope"), 404, "not_found")
    assert_error(await api.http.get("/v1/replays/nope", params={"wait": "99"}), 400, "bad_request")
    assert_error(await api.http.get("/v1/traces/diff", params={"a": api.coupon}), 400, "bad_request")
    bad_dimension = await api.http.get("/v1/traces/diff", params={"a": api.coupon, "b": api.coupon, "dimension": "dom"})
    assert "dom and clone are not recorded" in assert_error(bad_dimension, 400, "bad_request")["message"]
    assert_error(await api.http.get("/v1/traces/diff", params={"a": api.coupon, "b": "nope12345"}), 404, "not_found")


@pytest.fixture(scope="module")
def long_runs() -> tuple[bytes, bytes]:
    """Two runs of one long scenario, ~30 and ~70 checks a step: thousands of assertions only in b."""
    return record_long_run(1_500), record_long_run(3_500)


async def test_a_long_diff_pages_its_rows_and_its_counts_hold_them_all(
    api: Api, long_runs: tuple[bytes, bytes]
) -> None:
    a = ingest_bundle(api.world.store, LOCAL_ORG_ID, long_runs[0])[1]
    b = ingest_bundle(api.world.store, LOCAL_ORG_ID, long_runs[1])[1]
    first = (await api.http.get("/v1/traces/diff", params={"a": a, "b": b})).json()
    counts = first["counts"]
    total = counts["assertions_now_pass"] + counts["assertions_now_fail"] + counts["assertions_changed"]
    assert first["rows_total"] == total > 2 * DIFF_ROWS
    assert (len(first["assertions"]), first["offset"], first["next_offset"]) == (DIFF_ROWS, 0, DIFF_ROWS)
    rows = list(first["assertions"])
    page = first
    while page["next_offset"] is not None:
        params = {"a": a, "b": b, "offset": str(page["next_offset"])}
        page = (await api.http.get("/v1/traces/diff", params=params)).json()
        assert (page["counts"], page["rows_total"]) == (counts, total)
        rows.extend(page["assertions"])
    assert len(rows) == total  # every row once, in order
    assert len({(r["step"], r["target"], r["seq_a"], r["seq_b"]) for r in rows}) == total
    assert all(r["change"] == "only_in_b" for r in rows)
    past = (await api.http.get("/v1/traces/diff", params={"a": a, "b": b, "offset": str(total)})).json()
    assert (past["assertions"], past["next_offset"], past["rows_total"]) == ([], None, total)
    for bad in ("-1", "x", "1e3", "99999999999"):
        bad_offset = await api.http.get("/v1/traces/diff", params={"a": a, "b": b, "offset": bad})
        assert "offset must be an integer" in assert_error(bad_offset, 400, "bad_request")["message"]


async def test_another_org_sees_none_of_it(api: Api) -> None:
    accepted = (await replay(api, api.world.runs["cart-basic"].short_id, {"from_step": 2})).json()
    await finished(api, accepted["id"])
    other = {"x-molar-org": "org_other"}

    assert (await api.http.get(f"/v1/replays/{accepted['id']}", headers=other)).status_code == 404
    assert (
        await api.http.post(f"/v1/traces/{api.coupon}/replay", json={"from_step": 1}, headers=other)
    ).status_code == 404
    assert (await api.http.get(f"/v1/traces/{api.coupon}/replays", headers=other)).status_code == 404


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[World, Gate]]:
    gate = Gate()
    settings = ReplaySettings(per_org_limit=1, max_queued_per_org=1)
    world = make_world(tmp_path / "data", launcher=gate.launcher(), settings=settings)
    yield world, gate
    gate.opened.set()
    world.close()


async def test_a_full_queue_is_a_429_with_retry_after(gated: tuple[World, Gate]) -> None:
    world, gate = gated
    ctx = dataclasses.replace(ApiContext.embedded(world.store), replays=world.service)
    transport = httpx2.ASGITransport(app=create_api_app(ctx), raise_app_exceptions=False)
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
            trace = world.runs["checkout-coupon"].short_id
            first = await http.post(f"/v1/traces/{trace}/replay", json={"from_step": 6})
            second = await http.post(f"/v1/traces/{trace}/replay", json={"from_step": 6})
            third = await http.post(f"/v1/traces/{trace}/replay", json={"from_step": 6})
            waited = await http.get(f"/v1/replays/{second.json()['id']}", params={"wait": "0.2"})
    finally:
        gate.opened.set()
    assert (first.status_code, second.status_code) == (202, 202)
    assert_error(third, 429, "rate_limited")
    assert third.headers["retry-after"] == "30"
    assert (waited.json()["status"], waited.json()["queue_position"]) == ("queued", 1)  # the long poll timed out


async def test_the_routes_are_in_the_openapi_document(api: Api) -> None:
    doc = (await api.http.get("/openapi.json")).json()
    assert doc["paths"]["/v1/traces/{trace_id}/replay"]["post"]["responses"]["202"]
    assert "409" in doc["paths"]["/v1/traces/{trace_id}/replay"]["post"]["responses"]
    assert doc["paths"]["/v1/traces/diff"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TraceDiff"
    }
    assert {"/v1/replays/{replay_id}", "/v1/traces/{trace_id}/replays", "/v1/traces/{trace_id}/promote-fix"} <= set(
        doc["paths"]
    )
