"""The trace diff as pure functions: runs of the demo scenarios (in process) stored, then compared."""

from __future__ import annotations

from typing import Any

import anyio
import httpx2

from molar_mcp.demo import SCENARIOS_DIR, demo_scenario
from molar_mcp.demo.shop.app import create_app
from molar_mcp.ingest import ingest_bundle
from molar_mcp.mcp.render import cost
from molar_mcp.mcp.replay_render import build_diff_view, diff_text
from molar_mcp.models import Event, TraceDetail
from molar_mcp.models.diffs import AssertionChange, TraceDiff
from molar_mcp.replay.diff import DIFF_ROWS, body_changes, diff_traces
from molar_mcp.replay.recording import new_trace
from molar_mcp.replay.runner import run_scenario
from molar_mcp.replay.scenario import Scenario, parse_scenario
from molar_mcp.replay.service import ReplayService, ReplaySettings
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.replays import ReplayStore
from tests.long_run import record_long_run

ORG = LOCAL_ORG_ID


def recorded(
    store: SqliteTraceStore, scenario: Scenario, extra: list[Event] | None = None
) -> tuple[TraceDetail, list[Event]]:
    async def go() -> Any:
        transport = httpx2.ASGITransport(app=create_app())
        async with httpx2.AsyncClient(transport=transport, base_url="http://shop.test") as client:
            return await run_scenario(scenario, client)

    result = anyio.run(go)
    events = list(result.events)
    for ev in extra or []:
        events.insert(-1, ev.model_copy(update={"seq": 0}))
    events = [e.model_copy(update={"seq": i}) for i, e in enumerate(events)]
    trace, blobs = new_trace(
        scenario,
        status=result.status,
        events=events,
        failure_signature=result.failure_signature,
        duration_ms=result.duration_ms,
    )
    trace_id, _ = store.add_trace(ORG, trace, blobs)
    return store.get_trace(ORG, trace_id), store.list_events(ORG, trace_id, limit=1000).events


def scenario_source(slug: str) -> str:
    return (SCENARIOS_DIR / f"{slug}.molar.md").read_text(encoding="utf-8")


def test_two_runs_of_the_same_scenario_do_not_diverge(store: SqliteTraceStore) -> None:
    a, a_events = recorded(store, demo_scenario("checkout-plain"))
    b, b_events = recorded(store, demo_scenario("checkout-plain"))
    diff = diff_traces(a, a_events, b, b_events, "steps")

    assert diff.first_divergence is None
    assert not diff.status_changed
    assert [s.changed for s in diff.steps] == [False] * 8
    assert diff.assertions == []
    assert "No step differs" in diff.summary
    assert diff_traces(a, a_events, b, b_events, "overview").steps == []


def test_a_changed_expectation_shows_as_that_assertion_changing(store: SqliteTraceStore) -> None:
    original = demo_scenario("checkout-coupon")
    edited = parse_scenario(scenario_source("checkout-coupon").replace("$.total_cents == 4500", "$.total_cents == 500"))
    a, a_events = recorded(store, original)
    b, b_events = recorded(store, edited)
    diff = diff_traces(a, a_events, b, b_events)

    [change] = [c for c in diff.assertions if c.step == 6]
    assert (change.change, change.target, change.expected_a, change.expected_b) == (
        "now_passes",
        "$.total_cents",
        4500,
        500,
    )
    assert (change.actual_a, change.actual_b, change.matcher) == (500, 500, "json")
    assert diff.first_divergence is not None
    assert (diff.first_divergence.step, diff.first_divergence.kind) == (6, "assertion")
    # a stopped at step 6, b went on: step 7 is in b only, and says so.
    step7 = next(s for s in diff.steps if s.step == 7)
    assert (step7.in_a, step7.in_b, step7.ok_b) == (False, True, False)  # the discount is still wrong
    assert "Steps only in b: 7" in diff.summary
    assert (diff.counts.assertions_now_pass, diff.counts.assertions_now_fail) == (1, 0)


def test_different_responses_are_reported_by_status_and_body_fields(store: SqliteTraceStore) -> None:
    text = scenario_source("cart-basic")
    a, a_events = recorded(store, parse_scenario(text))
    socks = text.replace('{"sku": "socks", "qty": 1}', '{"sku": "socks", "qty": 2}')
    b, b_events = recorded(store, parse_scenario(socks))
    unknown = text.replace('{"sku": "socks", "qty": 1}', '{"sku": "hat", "qty": 1}')
    c, c_events = recorded(store, parse_scenario(unknown))

    body = diff_traces(a, a_events, b, b_events, "network")
    status = diff_traces(a, a_events, c, c_events, "network")

    assert body.first_divergence is not None
    assert (body.first_divergence.step, body.first_divergence.kind) == (3, "request")
    step3 = next(e for e in body.network if e.step == 3)
    assert (step3.status_a, step3.status_b, step3.changed) == (200, 200, True)
    assert {c.path for c in step3.body_changes} >= {"$.item_count", "$.total_cents", "$.items[1].qty"}
    assert next(c for c in step3.body_changes if c.path == "$.item_count").model_dump() == {
        "path": "$.item_count",
        "a": "3",
        "b": "4",
    }
    step3c = next(e for e in status.network if e.step == 3)
    assert (step3c.status_a, step3c.status_b) == (200, 422)
    assert status.steps == []  # the network dimension carries exchanges only
    assert all(e.url is not None and e.url.startswith("/api/") for e in status.network)  # no host:port


def test_console_lines_present_in_one_run_only_are_listed(store: SqliteTraceStore) -> None:
    scenario = demo_scenario("cart-basic")
    warning = Event(seq=0, ts=1, kind="console", step_id="2", message="cart is slow", payload={"level": "warning"})
    a, a_events = recorded(store, scenario)
    b, b_events = recorded(store, scenario, extra=[warning])
    diff = diff_traces(a, a_events, b, b_events, "console")

    assert [(c.step, c.kind, c.text, c.only_in, c.level) for c in diff.console] == [
        (2, "console", "cart is slow", "b", "warning")
    ]
    assert diff.counts.console_only_in_b == 1


def test_body_changes_walk_nested_json_and_name_missing_members() -> None:
    changes = body_changes({"a": 1, "b": {"c": [1, 2]}, "gone": True}, {"a": 1.0, "b": {"c": [1, 3, 4]}, "new": None})
    assert [(c.path, c.a, c.b) for c in changes] == [
        ("$.b.c[1]", "2", "3"),
        ("$.b.c[2]", None, "4"),
        ("$.gone", "true", None),
        ("$.new", None, "null"),
    ]
    assert body_changes("same text", "same text") == []
    assert [c.path for c in body_changes("<html>", "<html/>")] == ["$"]


def test_a_diff_over_stored_rows_is_the_diff_over_models(store: SqliteTraceStore) -> None:
    original = demo_scenario("checkout-coupon")
    edited = parse_scenario(scenario_source("checkout-coupon").replace("$.total_cents == 4500", "$.total_cents == 500"))
    restored = Event(seq=0, ts=1, kind="action", step_id="2", payload={"restored": True, "action": "replay"})
    warning = Event(seq=0, ts=1, kind="log", step_id="3", message="cart is slow", payload={"level": "warning"})
    a, a_events = recorded(store, original)
    b, b_events = recorded(store, edited, extra=[restored, warning])
    a_rows, b_rows = store.stored_events(ORG, a.id), store.stored_events(ORG, b.id)
    for dimension in ("overview", "steps", "network", "console"):
        from_rows = diff_traces(a, a_rows, b, b_rows, dimension)
        from_models = diff_traces(a, a_events, b, b_events, dimension)
        assert from_rows == from_models
        assert from_rows.model_dump_json() == from_models.model_dump_json()
    steps = diff_traces(a, a_rows, b, b_rows, "steps")
    assert next(s for s in steps.steps if s.step == 2).restored_b
    # The rows built without validating are what validation gives.
    assert steps.assertions
    for change in steps.assertions:
        validated = AssertionChange.model_validate(change.model_dump())
        assert (change, change.model_fields_set) == (validated, validated.model_fields_set)


def test_a_long_diff_holds_one_page_of_rows_and_the_answer_counts_the_rest(store: SqliteTraceStore) -> None:
    a_id = ingest_bundle(store, ORG, record_long_run(1_500))[0]
    b_id = ingest_bundle(store, ORG, record_long_run(3_500))[0]
    a, b = store.get_trace(ORG, a_id), store.get_trace(ORG, b_id)
    a_rows, b_rows = store.stored_events(ORG, a_id), store.stored_events(ORG, b_id)
    diff = diff_traces(a, a_rows, b, b_rows)
    assert diff.rows_total > DIFF_ROWS
    assert (len(diff.assertions), diff.next_offset) == (DIFF_ROWS, DIFF_ROWS)
    assert diff.counts.assertions_changed == diff.rows_total  # every one only in b
    view, text = build_diff_view(diff, 2000)
    shown = len(view.assertions)
    assert f"{diff.rows_total - shown} more assertions that differ" in text
    last = diff_traces(a, a_rows, b, b_rows, offset=diff.rows_total - 1)
    assert (len(last.assertions), last.next_offset, last.offset) == (1, None, diff.rows_total - 1)


def test_a_long_diff_fills_its_budget_and_the_steps_view_keeps_its_steps(store: SqliteTraceStore) -> None:
    """The answer is cut to the budget by arithmetic on each row's tokens, measured once: it fits, it is
    not left half empty, one more row would not have fitted; and the steps view cuts assertions first."""
    a_id = ingest_bundle(store, ORG, record_long_run(1_500))[0]
    b_id = ingest_bundle(store, ORG, record_long_run(3_500))[0]
    a, b = store.get_trace(ORG, a_id), store.get_trace(ORG, b_id)
    a_rows, b_rows = store.stored_events(ORG, a_id), store.stored_events(ORG, b_id)
    overview = TraceDiff.model_validate_json(diff_traces(a, a_rows, b, b_rows).model_dump_json())
    for budget in (1_000, 2_000, 8_000):
        view, text = build_diff_view(overview, budget)
        spent = cost(view, text)
        assert spent <= budget
        assert 0 < len(view.assertions) < len(overview.assertions)
        assert spent >= 0.9 * budget, (budget, spent, len(view.assertions))
        one_more = build_diff_view(overview, budget * 2)[0].assertions[len(view.assertions)]
        wider = view.model_copy(update={"assertions": [*view.assertions, one_more]})
        assert cost(wider, diff_text(wider)) > budget
    steps = TraceDiff.model_validate_json(diff_traces(a, a_rows, b, b_rows, "steps").model_dump_json())
    assert len(steps.steps) >= 40
    assert steps.assertions
    view, text = build_diff_view(steps, 5_000)
    assert cost(view, text) <= 5_000
    assert len(view.steps) == len(steps.steps)  # the steps asked for come whole; the assertions were cut
    assert len(view.assertions) < len(steps.assertions)
    view, text = build_diff_view(steps, 600)
    assert 0 < len(view.steps) < len(steps.steps)
    assert not view.assertions
    # Asking again would give the same cut: the answer says how to get the rest instead.
    assert f"{len(steps.steps) - len(view.steps)} more steps; raise max_tokens" in text
    assert f"{steps.rows_total} more assertions that differ; no room in this answer: raise max_tokens" in text
    assert "dimension=" not in text


def test_the_rows_of_a_long_diff_are_all_reached_by_next_offset(store: SqliteTraceStore) -> None:
    """Each answer shows what fits and the offset of the first row it left out; calling again from there
    walks every row of the dimension once, in order, across the store's pages."""
    a_id = ingest_bundle(store, ORG, record_long_run(1_500))[0]
    b_id = ingest_bundle(store, ORG, record_long_run(3_500))[0]
    a, b = store.get_trace(ORG, a_id), store.get_trace(ORG, b_id)
    a_rows, b_rows = store.stored_events(ORG, a_id), store.stored_events(ORG, b_id)
    whole = [(c.step, c.target, c.change) for c in diff_traces(a, a_rows, b, b_rows).assertions]
    offset, seen, calls = 0, [], 0
    while True:
        page = diff_traces(a, a_rows, b, b_rows, offset=offset)
        if offset == 0:
            whole += [
                (c.step, c.target, c.change)
                for start in range(DIFF_ROWS, page.rows_total, DIFF_ROWS)
                for c in diff_traces(a, a_rows, b, b_rows, offset=start).assertions
            ]
        view, text = build_diff_view(page, 8_000)
        calls += 1
        seen += [(r.step, r.target, r.change) for r in view.assertions]
        if view.next_offset is None:
            assert "more assertions that differ" not in text
            break
        assert view.next_offset == offset + len(view.assertions)
        assert f'dimension="overview", offset={view.next_offset})' in text
        offset = view.next_offset
    assert len(seen) == page.rows_total > DIFF_ROWS
    assert seen == whole
    assert calls > page.rows_total // DIFF_ROWS + 1  # more than the store's pages: each answer is a part of one


def test_a_diff_of_long_runs_past_the_event_cap_compares_the_first_events_and_says_so(
    store: SqliteTraceStore,
) -> None:
    """The service reads both traces as stored rows, cuts each at `diff_max_events`, and compares them
    without building an event per row: the same answer, page by page, as the comparison of the first
    events read as models (`list_events`), in every dimension and both directions."""
    cap = 1_000
    service = ReplayService(store, ReplayStore(store.db), {}, settings=ReplaySettings(diff_max_events=cap))
    short_id = ingest_bundle(store, ORG, record_long_run(800))[0]
    long_id = ingest_bundle(store, ORG, record_long_run(2_500))[0]
    models = {t: store.list_events(ORG, t, limit=cap).events for t in (short_id, long_id)}
    details = {t: store.get_trace(ORG, t) for t in (short_id, long_id)}
    for a, b in ((short_id, long_id), (long_id, short_id), (short_id, short_id)):
        for dimension in ("overview", "steps", "network", "console"):
            first = service.diff(ORG, a, b, dimension)
            assert first.truncated is (long_id in (a, b))
            offsets = [0, *([first.next_offset, first.rows_total - 1] if first.next_offset else [])]
            for offset in offsets:
                served = service.diff(ORG, a, b, dimension, offset=offset)
                expected = diff_traces(
                    details[a], models[a], details[b], models[b], dimension, truncated=served.truncated, offset=offset
                )
                assert served.model_dump_json() == expected.model_dump_json()
    whole = diff_traces(
        details[short_id], store.stored_events(ORG, short_id), details[long_id], store.stored_events(ORG, long_id)
    )
    cut = service.diff(ORG, short_id, long_id, "overview")
    assert cut.counts.assertions_changed < whole.counts.assertions_changed  # only the first `cap` events
