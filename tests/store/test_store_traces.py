"""SqliteTraceStore: a stored trace read back — by id, per org, its steps, counts and event slices."""

from __future__ import annotations

import pytest

from molar_mcp.models import Event
from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore, TraceNotFound, TraceQuery
from molar_mcp.store.live import IncomingEvent, LiveTraces
from tests.bundles import BASE_TS, checkout_events
from tests.store.factory import AddTrace, event

ORG_A, ORG_B = "org_a", "org_b"
N_EVENTS = len(checkout_events())  # 30: 7 steps of 4 events, plus a console error and an assertion


def test_a_stored_trace_is_found_by_its_uuid_its_short_id_and_its_uppercase_uuid(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    trace_id, short_id = add()
    by_id = store.get_trace(LOCAL_ORG_ID, trace_id)
    assert by_id.id == trace_id
    assert by_id.short_id == short_id
    assert store.get_trace(LOCAL_ORG_ID, short_id) == by_id
    assert store.get_trace(LOCAL_ORG_ID, trace_id.upper()) == by_id
    assert len(short_id) == 9
    assert short_id.isalnum()


def test_the_detail_holds_what_was_stored(store: SqliteTraceStore, add: AddTrace) -> None:
    parent_id, _ = add()
    trace_id, _ = add(pr_number=4521, parent_trace_id=parent_id, replay_from_step=6, duration_ms=30100)
    d = store.get_trace(LOCAL_ORG_ID, trace_id)
    assert (d.status, d.source, d.tier, d.pinned) == ("failed", "pr", "hot", False)
    assert (d.scenario_slug, d.scenario_title) == ("stripe-subscription-upgrade", "Upgrade a subscription")
    assert (d.code_sha, d.failure_signature, d.pr_number) == ("a1b2c3d4e5", "webhook-404", 4521)
    assert (d.parent_trace_id, d.replay_from_step, d.duration_ms) == (parent_id, 6, 30100)
    assert d.org_id == LOCAL_ORG_ID
    assert d.s3_prefix == f"traces/runs/{LOCAL_ORG_ID}/{d.created_at:%Y/%m/%d}/{trace_id}/"
    assert d.event_count == N_EVENTS
    assert d.signed_urls == {}


@pytest.mark.parametrize(
    "ref", ["nope", "", "00000000-0000-4000-8000-000000000000", "0" * 32, "x" * 500, "' OR 1=1 --"]
)
def test_an_unknown_reference_is_trace_not_found(store: SqliteTraceStore, add: AddTrace, ref: str) -> None:
    add()
    with pytest.raises(TraceNotFound):
        store.get_trace(LOCAL_ORG_ID, ref)


def test_a_trace_of_one_org_is_not_found_and_not_listed_in_another(store: SqliteTraceStore, add: AddTrace) -> None:
    a_id, a_short = add(org_id=ORG_A)
    b_id, _ = add(org_id=ORG_B)
    for ref in (a_id, a_short, a_id.upper()):
        with pytest.raises(TraceNotFound):
            store.get_trace(ORG_B, ref)
        with pytest.raises(TraceNotFound):
            store.list_events(ORG_B, ref)
    assert [t.id for t in store.list_traces(ORG_B, TraceQuery()).items] == [b_id]
    assert [t.id for t in store.list_traces(ORG_A, TraceQuery()).items] == [a_id]
    assert store.list_traces(ORG_B, TraceQuery(q="webhook")).items[0].id == b_id
    assert store.get_trace(ORG_A, a_short).org_id == ORG_A


def test_steps_are_numbered_in_the_order_their_ids_first_appear(store: SqliteTraceStore, add: AddTrace) -> None:
    events = [
        event(0, "step.start", "login", message="Log in"),
        event(1, "step.start", "cart", message="Fill the cart"),
        event(2, "log", "login", payload={"text": "late"}),
        event(3, "step.end", "cart", ok=True),
        event(4, "log"),
    ]
    _, short_id = add(events=events)
    steps = store.get_trace(LOCAL_ORG_ID, short_id).steps
    assert [(s.step, s.step_id, s.title) for s in steps] == [
        (1, "login", "Log in"),
        (2, "cart", "Fill the cart"),
    ]
    assert [(s.first_seq, s.last_seq, s.event_count) for s in steps] == [(0, 2, 2), (1, 3, 2)]
    page = store.list_events(LOCAL_ORG_ID, short_id)
    assert [e.step for e in page.events] == [1, 2, 1, 2, None]


def test_the_steps_summary_gives_titles_outcomes_and_counts(store: SqliteTraceStore, add: AddTrace) -> None:
    _, short_id = add()
    steps = store.get_trace(LOCAL_ORG_ID, short_id).steps
    assert [s.title for s in steps] == [
        "Open shop",
        "Add to cart",
        "Apply coupon",
        "Checkout",
        "Stripe webhook",
        "Upgrade plan",
        "Verify",
    ]
    assert [s.ok for s in steps] == [True] * 6 + [False]
    assert [s.event_count for s in steps] == [4, 4, 4, 4, 5, 4, 5]
    assert (steps[4].first_seq, steps[4].last_seq) == (16, 20)
    assert sum(s.event_count for s in steps) == N_EVENTS


def test_a_step_without_an_end_fails_when_its_assertion_fails(store: SqliteTraceStore, add: AddTrace) -> None:
    events = [
        event(0, "step.start", "a", payload={"title": "From the payload"}),
        event(1, "assertion", "a", ok=False),
    ]
    _, short_id = add(events=events)
    (step,) = store.get_trace(LOCAL_ORG_ID, short_id).steps
    assert (step.title, step.ok) == ("From the payload", False)


def test_kind_counts_count_every_event_by_kind(store: SqliteTraceStore, add: AddTrace) -> None:
    _, short_id = add()
    assert store.get_trace(LOCAL_ORG_ID, short_id).event_counts == {
        "assertion": 1,
        "console": 1,
        "network.request": 7,
        "network.response": 7,
        "step.end": 7,
        "step.start": 7,
    }


def test_ok_is_derived_from_an_http_status_a_console_level_and_a_page_error(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    events = [
        event(0, "network.response", payload={"status": 404}),
        event(1, "network.response", payload={"status": 200}),
        event(2, "console", payload={"level": "error", "text": "boom"}),
        event(3, "console", payload={"level": "warning", "text": "meh"}),
        event(4, "error", payload={"name": "TypeError", "message": "x is undefined"}),
        event(5, "network.response", ok=True, payload={"status": 500}),
        event(6, "log", payload={"text": "hello"}),
    ]
    _, short_id = add(events=events)
    page = store.list_events(LOCAL_ORG_ID, short_id)
    assert [e.ok for e in page.events] == [False, True, False, None, False, True, None]
    assert [e.seq for e in store.list_events(LOCAL_ORG_ID, short_id, ok=False).events] == [0, 2, 4]


def test_events_come_back_in_seq_order_with_their_fields(store: SqliteTraceStore, add: AddTrace) -> None:
    _, short_id = add()
    page = store.list_events(LOCAL_ORG_ID, short_id)
    assert page.total == N_EVENTS
    assert [e.seq for e in page.events] == list(range(N_EVENTS))
    assertion = page.events[28]
    assert (assertion.kind, assertion.step_id, assertion.step, assertion.ok) == ("assertion", "s7", 7, False)
    assert assertion.message is not None
    assert assertion.message.startswith("expected url /billing?upgraded=true")
    assert assertion.payload == {"expected": "/billing?upgraded=true", "actual": "/billing?upgraded=false"}


def test_stored_events_are_the_events_with_their_payloads_parsed_when_read(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    _, short_id = add()
    events = store.list_events(LOCAL_ORG_ID, short_id, limit=N_EVENTS).events
    stored = store.stored_events(LOCAL_ORG_ID, short_id)
    assert [s.to_event() for s in stored] == events
    assert [s.to_event().model_dump() for s in stored] == [e.model_dump() for e in events]
    # Built without validating, yet the same models validation gives (fields set, JSON, copies).
    for e in events:
        validated = Event.model_validate(e.model_dump())
        assert (e, e.model_fields_set, e.model_dump_json()) == (
            validated,
            validated.model_fields_set,
            validated.model_dump_json(),
        )
        assert e.model_copy(update={"step": 99}).step == 99
    assertion = store.stored_events(LOCAL_ORG_ID, short_id)[28]
    assert assertion._payload is None  # not parsed until read
    assert (assertion.may_have("expected"), assertion.may_have("request_id")) == (True, False)
    assert assertion.payload == {"expected": "/billing?upgraded=true", "actual": "/billing?upgraded=false"}
    assert [e.seq for e in store.stored_events(LOCAL_ORG_ID, short_id, limit=3)] == [0, 1, 2]
    with pytest.raises(TraceNotFound):
        store.stored_events(ORG_B, short_id)


@pytest.mark.parametrize("step", ["5", "s5"])
def test_events_are_sliced_by_step_number_or_step_id(store: SqliteTraceStore, add: AddTrace, step: str) -> None:
    _, short_id = add()
    page = store.list_events(LOCAL_ORG_ID, short_id, step=step)
    assert [e.seq for e in page.events] == [16, 17, 18, 19, 20]
    assert page.total == 5


@pytest.mark.parametrize("step", ["0", "99", "²", "9" * 40, "no-such-step"])
def test_a_step_that_names_no_step_gives_an_empty_slice(store: SqliteTraceStore, add: AddTrace, step: str) -> None:
    _, short_id = add()
    page = store.list_events(LOCAL_ORG_ID, short_id, step=step)
    assert (page.events, page.total) == ([], 0)


@pytest.mark.parametrize(
    ("kind", "count"),
    [("network", 14), ("network.response", 7), ("step", 14), ("net", 0), ("console", 1), ("%", 0), ("_", 0)],
)
def test_a_kind_matches_itself_and_its_dotted_family(
    store: SqliteTraceStore, add: AddTrace, kind: str, count: int
) -> None:
    _, short_id = add()
    page = store.list_events(LOCAL_ORG_ID, short_id, kind=kind)
    assert page.total == count
    assert all(e.kind == kind or e.kind.startswith(kind + ".") for e in page.events)


def test_failed_events_are_one_filter_and_filters_combine(store: SqliteTraceStore, add: AddTrace) -> None:
    _, short_id = add()
    failed = store.list_events(LOCAL_ORG_ID, short_id, ok=False)
    assert [(e.seq, e.kind) for e in failed.events] == [
        (18, "network.response"),
        (19, "console"),
        (28, "assertion"),
        (29, "step.end"),
    ]
    both = store.list_events(LOCAL_ORG_ID, short_id, kind="network", ok=False, step="5")
    assert [e.seq for e in both.events] == [18]
    assert store.list_events(LOCAL_ORG_ID, short_id, ok=True).total == 12


def test_the_detail_with_its_failed_events_is_one_read_of_both(store: SqliteTraceStore, add: AddTrace) -> None:
    # `GET /v1/traces/{id}?failed_events=N` reads both at once: the same detail and the same page as the
    # two reads alone; nothing in place of the events while they are archived (a cold trace).
    _, short_id = add()
    detail, failing = store.get_trace_with_failures(LOCAL_ORG_ID, short_id, 3)
    assert detail == store.get_trace(LOCAL_ORG_ID, short_id)
    assert failing == store.list_events(LOCAL_ORG_ID, short_id, ok=False, limit=3)
    assert failing is not None
    assert ([e.seq for e in failing.events], failing.total) == ([18, 19, 28], 4)
    with pytest.raises(TraceNotFound):
        store.get_trace_with_failures(ORG_B, short_id, 3)
    with store.db.tx() as conn:
        conn.execute("UPDATE traces SET tier = 'cold' WHERE short_id = ?", (short_id,))
    detail, failing = store.get_trace_with_failures(LOCAL_ORG_ID, short_id, 3)
    assert (detail.tier, failing) == ("cold", None)


def test_limit_and_offset_page_through_events_and_total_counts_all_matches(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    _, short_id = add()
    page = store.list_events(LOCAL_ORG_ID, short_id, limit=10, offset=25)
    assert [e.seq for e in page.events] == [25, 26, 27, 28, 29]
    assert (page.total, page.offset, page.limit) == (N_EVENTS, 25, 10)
    network = store.list_events(LOCAL_ORG_ID, short_id, kind="network", limit=3, offset=3)
    assert [e.seq for e in network.events] == [6, 9, 10]
    assert network.total == 14
    past_the_end = store.list_events(LOCAL_ORG_ID, short_id, offset=1000)
    assert (past_the_end.events, past_the_end.total) == ([], N_EVENTS)


def test_a_kind_family_ignores_ascii_case_below_the_dot_and_finds_kinds_appended_later(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    # The family is looked up among the trace's kinds (its `kind_counts`), so kinds that arrive with a
    # live append must be found as well as those of the first batch, on either engine alike.
    _, short_id = add(events=[event(0, "Tool.Call"), event(1, "tool"), event(2, "toolbox"), event(3, "TOOL")])
    live = LiveTraces(store.db)
    trace_id, _ = live.create_trace(LOCAL_ORG_ID, scenario_slug="agent-run")
    live.append_events(LOCAL_ORG_ID, trace_id, [IncomingEvent(0, Event(seq=0, ts=BASE_TS, kind="log"))])
    live.append_events(LOCAL_ORG_ID, trace_id, [IncomingEvent(0, Event(seq=1, ts=BASE_TS, kind="tool.result"))])
    tools = store.list_events(LOCAL_ORG_ID, short_id, kind="tool")
    assert ([e.kind for e in tools.events], tools.total) == (["Tool.Call", "tool"], 2)
    assert [e.kind for e in store.list_events(LOCAL_ORG_ID, short_id, kind="TOOL").events] == ["Tool.Call", "TOOL"]
    appended = store.list_events(LOCAL_ORG_ID, trace_id, kind="tool")
    assert ([e.seq for e in appended.events], appended.total) == ([1], 1)
    assert store.list_events(LOCAL_ORG_ID, trace_id, kind="llm").total == 0
