"""ReplayService with the demo shop in process: edits, step numbering, state restoration, the per-org
queue, refusals before anything is queued, shutdown."""

from __future__ import annotations

import difflib
import itertools
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from molar_mcp.demo import fix_diff
from molar_mcp.demo.shop.app import create_app
from molar_mcp.ingest import ingest_bundle
from molar_mcp.models import Event
from molar_mcp.models.replays import ReplayRequest, ReplayStatus
from molar_mcp.replay.apps import AppConfig, DiffDoesNotApply
from molar_mcp.replay.runner import variables_before
from molar_mcp.replay.service import InvalidReplay, NotReplayable, QueueFull, ReplaySettings, TraceNotHot
from molar_mcp.store import LOCAL_ORG_ID, TraceNotFound
from molar_mcp.store.live import LiveTraces
from molar_mcp.store.replays import ReplayNotFound, ReplayStore
from molar_mcp.store.tiers import RetentionPolicy, SqliteTiers
from tests.bundles import make_bundle, summary
from tests.replays.conftest import Gate, World, make_world, record

ORG = LOCAL_ORG_ID


def scenario_text(world: World, slug: str) -> str:
    recorded = ReplayStore(world.store.db).scenario_of(ORG, world.runs[slug].trace_id)
    assert recorded is not None
    return recorded.scenario_text


def edit(text: str, *replacements: tuple[str, str]) -> str:
    """A unified diff of `text` with each `old` line replaced by `new`."""
    edited = text
    for old, new in replacements:
        assert old in edited
        edited = edited.replace(old, new, 1)
    lines = difflib.unified_diff(
        text.splitlines(keepends=True), edited.splitlines(keepends=True), "a/scenario.molar.md", "b/scenario.molar.md"
    )
    return "".join(lines)


# The coupon bug documented in the scenario instead of fixed in the app: the test now expects what it gets.
EXPECT_THE_BUG = (
    ("- expect json $.total_cents == 4500", "- expect json $.total_cents == 500"),
    ("- expect json $.discount_cents == 500", "- expect json $.discount_cents == 4500"),
)


def request(
    from_step: int, *, scenario_diff: str | None = None, source: Sequence[tuple[str, str]] = ()
) -> ReplayRequest:
    return ReplayRequest.model_validate(
        {
            "from_step": from_step,
            "edits": {"scenario_diff": scenario_diff, "source_diffs": [{"path": p, "diff": d} for p, d in source]},
        }
    )


def run(world: World, slug: str, req: ReplayRequest, org: str = ORG) -> ReplayStatus:
    queued = world.service.enqueue(org, world.runs[slug].short_id, req)
    return world.service.wait(org, queued.id, timeout_s=30)


def events_of(world: World, trace_id: str) -> list[Event]:
    return world.store.list_events(ORG, trace_id, limit=1000).events


def test_the_recorded_demo_has_passing_and_failing_traces_with_their_scenarios(world: World) -> None:
    statuses = {slug: r.status for slug, r in world.runs.items()}
    signatures = {slug: r.failure_signature for slug, r in world.runs.items()}

    assert statuses == {
        "billing-upgrade-webhook": "failed",
        "cart-basic": "passed",
        "checkout-coupon": "failed",
        "checkout-plain": "passed",
        "login-sso": "failed",
    }
    assert signatures["checkout-coupon"] == "step-6: expect json $.total_cents == 4500"
    assert signatures["login-sso"] == "step-2: expect status 200"  # the callback's 504: the provider timed out
    detail = world.store.get_trace(ORG, world.runs["checkout-coupon"].trace_id)
    assert [a.name for a in detail.artifacts] == ["scenario.molar.md"]
    assert scenario_text(world, "checkout-coupon").startswith("---\nslug: checkout-coupon")


def test_a_scenario_diff_replay_from_the_failing_step_passes_and_the_assertion_now_passes(world: World) -> None:
    text = scenario_text(world, "checkout-coupon")
    status = run(world, "checkout-coupon", request(6, scenario_diff=edit(text, *EXPECT_THE_BUG)))

    assert status.status == "succeeded", status.message
    assert status.trace_status == "passed"
    assert status.scenario_edited
    assert status.replay_trace_id is not None
    diff = world.service.diff(ORG, world.runs["checkout-coupon"].trace_id, status.id, "overview")
    step6 = next(a for a in diff.assertions if a.step == 6)
    assert (step6.change, step6.expected_a, step6.expected_b, step6.actual_b) == ("now_passes", 4500, 500, 500)
    assert diff.status_changed
    assert diff.b.replay_from_step == 6
    assert "1 now pass" in diff.summary


def test_the_child_trace_keeps_the_step_numbering_and_marks_the_restored_steps(world: World) -> None:
    parent = world.store.get_trace(ORG, world.runs["checkout-coupon"].trace_id)
    text = scenario_text(world, "checkout-coupon")
    status = run(world, "checkout-coupon", request(6, scenario_diff=edit(text, *EXPECT_THE_BUG)))
    assert status.replay_trace_id is not None
    child = world.store.get_trace(ORG, status.replay_trace_id)
    events = events_of(world, child.id)

    assert (child.parent_trace_id, child.replay_from_step) == (parent.id, 6)
    assert [(s.step, s.title) for s in child.steps][:6] == [(s.step, s.title) for s in parent.steps]
    assert [(s.step, s.title) for s in child.steps][6:] == [(7, "The order is paid")]
    restored = {e.step for e in events if e.step is not None and e.payload.get("restored")}
    fresh = {e.step for e in events if e.step is not None and not e.payload.get("restored")}
    assert (restored, fresh) == ({1, 2, 3, 4, 5}, {6, 7})
    assert [e.seq for e in events] == list(range(len(events)))
    # The state before step 6 can be rebuilt from the child alone: it is replayable too.
    assert variables_before(events, 6) == variables_before(events_of(world, parent.id), 6) == {"cart_id": "cart_1"}
    assert [a.name for a in child.artifacts] == ["scenario.molar.md"]


def test_a_replay_of_a_replay_restores_from_an_earlier_step(world: World) -> None:
    text = scenario_text(world, "checkout-coupon")
    first = run(world, "checkout-coupon", request(6, scenario_diff=edit(text, *EXPECT_THE_BUG)))
    assert first.replay_short_id is not None
    queued = world.service.enqueue(ORG, first.replay_short_id, request(3))
    second = world.service.wait(ORG, queued.id)

    assert second.status == "succeeded"
    assert second.trace_status == "passed"  # the edited scenario came along with the child
    assert second.trace_id == first.replay_trace_id


def test_captures_that_differ_from_the_recording_are_logged_and_the_fresh_values_used(tmp_path: Path) -> None:
    @asynccontextmanager
    async def busy_shop(config: AppConfig, diffs: Sequence[tuple[str, str]]) -> AsyncIterator[httpx2.AsyncClient]:
        transport = httpx2.ASGITransport(app=create_app())
        async with httpx2.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            await client.post("/api/carts")  # someone else's cart: the recorded run gets cart_2
            yield client

    w = make_world(tmp_path / "data")
    try:
        busy = record(w.store, launcher=busy_shop)["checkout-coupon"]
        queued = w.service.enqueue(ORG, busy.short_id, request(6))
        status = w.service.wait(ORG, queued.id)
        assert status.replay_trace_id is not None
        events = events_of(w, status.replay_trace_id)
    finally:
        w.close()
    restored_log = next(e for e in events if e.kind == "log" and "restored" in (e.message or ""))
    checkout = next(e for e in events if e.kind == "network.request" and e.step == 6)
    assert restored_log.payload["level"] == "warning"
    assert "cart_id 'cart_2' → 'cart_1'" in (restored_log.message or "")
    assert '"cart_1"' in checkout.payload["body"]


def test_a_step_that_fails_while_restoring_ends_the_replay_there(world: World) -> None:
    text = scenario_text(world, "checkout-coupon")
    broken = edit(text, ("- expect json $.subtotal_cents == 2500", "- expect json $.subtotal_cents == 1"))
    status = run(world, "checkout-coupon", request(6, scenario_diff=broken))

    assert status.status == "succeeded"
    assert status.trace_status == "failed"
    assert status.failure_signature == "step-2: expect json $.subtotal_cents == 1"
    assert "while restoring the state before step 6" in (status.message or "")


def test_replays_beyond_the_per_org_limit_wait_in_a_fifo_queue(tmp_path: Path) -> None:
    gate = Gate()
    w = make_world(tmp_path / "data", launcher=gate.launcher(), settings=ReplaySettings(per_org_limit=2))
    try:
        other_org = record(w.store, "org_other")["checkout-coupon"]
        ids = [w.service.enqueue(ORG, w.runs["checkout-coupon"].short_id, request(6)).id for _ in range(4)]
        other = w.service.enqueue("org_other", other_org.short_id, request(6)).id
        gate.wait_arrivals(3)  # two of this org's, and the other org's: its slots are its own
        waiting = [w.service.status(ORG, i) for i in ids]
        assert [s.status for s in waiting] == ["running", "running", "queued", "queued"]
        assert [s.queue_position for s in waiting] == [None, None, 1, 2]
        assert w.service.status("org_other", other).status == "running"
        assert not gate.arrived.acquire(timeout=0.2)  # no third replay of this org started
        gate.opened.set()
        done = [w.service.wait(ORG, i) for i in ids]
    finally:
        gate.opened.set()
        w.close()
    assert [s.status for s in done] == ["succeeded"] * 4


def test_queued_replays_start_in_the_order_they_were_queued(tmp_path: Path) -> None:
    gate = Gate()
    w = make_world(tmp_path / "data", launcher=gate.launcher(), settings=ReplaySettings(per_org_limit=1))
    try:
        ids = [w.service.enqueue(ORG, w.runs["checkout-coupon"].short_id, request(6)).id for _ in range(3)]
        gate.wait_arrivals(1)
        assert [w.service.status(ORG, i).queue_position for i in ids] == [None, 1, 2]
        gate.opened.set()
        done = [w.service.wait(ORG, i) for i in ids]
    finally:
        gate.opened.set()
        w.close()
    # One at a time, first queued first: each started once the one before it had finished.
    for before, after in itertools.pairwise(done):
        assert before.finished_at is not None
        assert after.started_at is not None
        assert before.finished_at <= after.started_at


def test_a_full_queue_refuses_more_replays(tmp_path: Path) -> None:
    gate = Gate()
    w = make_world(
        tmp_path / "data", launcher=gate.launcher(), settings=ReplaySettings(per_org_limit=1, max_queued_per_org=1)
    )
    try:
        trace = w.runs["checkout-coupon"].short_id
        w.service.enqueue(ORG, trace, request(6))
        w.service.enqueue(ORG, trace, request(6))
        with pytest.raises(QueueFull, match="already queued"):
            w.service.enqueue(ORG, trace, request(6))
    finally:
        gate.opened.set()
        w.close()


def test_closing_fails_queued_replays_and_interrupts_running_ones(tmp_path: Path) -> None:
    gate = Gate()
    w = make_world(tmp_path / "data", launcher=gate.launcher(), settings=ReplaySettings(per_org_limit=1))
    trace = w.runs["checkout-coupon"].short_id
    running = w.service.enqueue(ORG, trace, request(6)).id
    queued = w.service.enqueue(ORG, trace, request(6)).id
    gate.wait_arrivals(1)
    w.service.close()
    try:
        statuses = [w.service.status(ORG, i) for i in (running, queued)]
    finally:
        w.store.close()
    assert [(s.status, s.error) for s in statuses] == [("failed", "interrupted"), ("failed", "interrupted")]
    assert not [t for t in threading.enumerate() if t.name.startswith("molar-replay-")]


def test_cold_and_warm_traces_are_refused_with_a_conflict(world: World) -> None:
    LiveTraces(world.store.db)  # archived events carry live ingest's columns (as ApiContext builds them)
    tiers = SqliteTiers(world.store.db, world.store.blobs)
    later = datetime.now(UTC) + timedelta(days=3)
    tiers.apply(RetentionPolicy(warm_after_days=1, cold_after_days=1000), now=later)
    with pytest.raises(TraceNotHot, match="warm tier"):
        world.service.enqueue(ORG, world.runs["checkout-coupon"].short_id, request(6))
    tiers.apply(RetentionPolicy(warm_after_days=1, cold_after_days=2), now=later)
    with pytest.raises(TraceNotHot, match=r"cold tier.*restore"):
        world.service.enqueue(ORG, world.runs["checkout-coupon"].short_id, request(6))
    assert world.service.list_for_trace(ORG, world.runs["checkout-coupon"].short_id).items == []


def test_requests_that_cannot_run_are_refused_before_anything_is_queued(world: World) -> None:
    coupon = world.runs["checkout-coupon"].short_id
    text = scenario_text(world, "checkout-coupon")
    bundle_id, _ = ingest_bundle(world.store, ORG, make_bundle(summary()))

    with pytest.raises(TraceNotFound):
        world.service.enqueue(ORG, "nope12345", request(1))
    with pytest.raises(NotReplayable, match="not recorded from a scenario"):
        world.service.enqueue(ORG, bundle_id, request(1))
    with pytest.raises(InvalidReplay, match="past the last step"):
        world.service.enqueue(ORG, coupon, request(8))
    with pytest.raises(InvalidReplay, match="step 6 did not pass"):
        world.service.enqueue(ORG, coupon, request(7))
    stale = text.replace("== 4500", "== 4400")  # a diff made against another version of the scenario
    stale_diff = edit(stale, ("- expect json $.total_cents == 4400", "- expect json $.total_cents == 500"))
    with pytest.raises(DiffDoesNotApply) as scenario_error:
        world.service.enqueue(ORG, coupon, request(6, scenario_diff=stale_diff))
    assert scenario_error.value.hunk is not None
    assert scenario_error.value.hunk.startswith("@@ -")
    stale_fix = fix_diff("coupon-multiplier").replace(
        "total = round(subtotal * COUPONS", "total = round(subtotal*COUPONS"
    )
    with pytest.raises(DiffDoesNotApply) as source_error:
        world.service.enqueue(ORG, coupon, request(6, source=[("app.py", stale_fix)]))
    assert (source_error.value.file, source_error.value.hunk) == ("app.py", "@@ -67,7 +67,7 @@")
    with pytest.raises(DiffDoesNotApply, match="outside the app's source"):
        world.service.enqueue(ORG, coupon, request(6, source=[("x", "--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n")]))
    assert world.service.list_for_trace(ORG, coupon).items == []


def test_one_org_cannot_see_or_replay_another_orgs_traces(world: World) -> None:
    status = run(world, "checkout-plain", request(3))

    with pytest.raises(ReplayNotFound):
        world.service.status("org_other", status.id)
    with pytest.raises(TraceNotFound):
        world.service.enqueue("org_other", world.runs["checkout-plain"].short_id, request(1))
    with pytest.raises(TraceNotFound):
        world.service.diff("org_other", world.runs["checkout-plain"].trace_id, status.id, "overview")
