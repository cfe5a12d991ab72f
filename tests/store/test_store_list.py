"""SqliteTraceStore.list_traces: every filter, newest first, cursor pages, full-text search."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest

from molar_mcp.store import LOCAL_ORG_ID, InvalidCursor, SqliteTraceStore, TraceQuery
from molar_mcp.store.sqlite import scenario_id_for
from tests.bundles import checkout_events
from tests.store.factory import AddTrace, event, minutes

COUPON_SCENARIO = "9a4c0000-0000-4000-8000-00000000c0de"


@dataclass(frozen=True)
class Four:
    """Four traces, one a minute, each different in every filtered field."""

    upgrade: str
    cart: str
    sso: str
    coupon: str


@pytest.fixture
def four(add: AddTrace) -> Four:
    upgrade, _ = add(created_at=minutes(1))
    cart, _ = add(
        events=checkout_events(fail=False),
        scenario_slug="cart-basic",
        scenario_title="Cart basics",
        status="passed",
        source="schedule",
        code_sha="ffff0000",
        failure_signature=None,
        created_at=minutes(2),
    )
    sso, _ = add(
        events=[
            event(0, "step.start", "login", message="Sign in with SSO"),
            event(1, "error", "login", message="TimeoutError: waiting for selector .sso-button"),
        ],
        scenario_slug="login-sso",
        scenario_title="Single sign-on",
        status="error",
        source="manual",
        code_sha="a1b2ffff",
        failure_signature="timeout",
        created_at=minutes(3),
    )
    coupon, _ = add(
        scenario_slug="checkout-coupon",
        scenario_title="Checkout with a coupon",
        scenario_id=COUPON_SCENARIO,
        source="shadow_diff",
        failure_signature="coupon-multiplier",
        created_at=minutes(4),
    )
    return Four(upgrade, cart, sso, coupon)


def ids(store: SqliteTraceStore, **filters: object) -> list[str]:
    return [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(**filters)).items]  # type: ignore[arg-type]


def test_traces_are_listed_newest_first(store: SqliteTraceStore, four: Four) -> None:
    assert ids(store) == [four.coupon, four.sso, four.cart, four.upgrade]


def test_traces_created_at_the_same_instant_are_listed_last_stored_first(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    first, _ = add(created_at=minutes(0))
    second, _ = add(created_at=minutes(0))
    assert ids(store) == [second, first]


def test_a_list_item_carries_the_fields_of_seed_000(store: SqliteTraceStore, four: Four) -> None:
    item = store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=1)).items[0]
    assert item.id == four.coupon
    assert (item.scenario_id, item.scenario_title, item.status) == (
        COUPON_SCENARIO,
        "Checkout with a coupon",
        "failed",
    )
    assert (item.tier, item.pinned, item.code_sha, item.failure_signature) == (
        "hot",
        False,
        "a1b2c3d4e5",
        "coupon-multiplier",
    )
    assert item.created_at == minutes(4)
    assert item.duration_ms == checkout_events()[-1]["ts"] - checkout_events()[0]["ts"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": "failed"}, ["coupon", "upgrade"]),
        ({"status": "passed"}, ["cart"]),
        ({"status": "aborted"}, []),
        ({"scenario_id": COUPON_SCENARIO}, ["coupon"]),
        ({"scenario_id": scenario_id_for("login-sso")}, ["sso"]),
        ({"scenario_slug": "cart-basic"}, ["cart"]),
        ({"scenario_slug": "cart"}, []),
        ({"source": "schedule"}, ["cart"]),
        ({"source": "shadow_diff"}, ["coupon"]),
        ({"signature": "webhook-404"}, ["upgrade"]),
        ({"signature": "webhook"}, []),
        ({"tier": "hot"}, ["coupon", "sso", "cart", "upgrade"]),
        ({"tier": "cold"}, []),
        ({"code_sha": "a1b2"}, ["coupon", "sso", "upgrade"]),
        ({"code_sha": "a1b2c3d4e5"}, ["coupon", "upgrade"]),
        ({"code_sha": "a1b_"}, []),
        ({"code_sha": "%"}, []),
        ({"created_from": minutes(2)}, ["coupon", "sso", "cart"]),
        ({"created_to": minutes(3)}, ["cart", "upgrade"]),
        ({"created_from": minutes(2), "created_to": minutes(4)}, ["sso", "cart"]),
        ({"status": "failed", "source": "pr"}, ["upgrade"]),
    ],
    ids=lambda v: json.dumps(v, default=str) if isinstance(v, dict) else None,
)
def test_each_filter_keeps_only_the_matching_traces(
    store: SqliteTraceStore, four: Four, filters: dict[str, object], expected: list[str]
) -> None:
    assert ids(store, **filters) == [getattr(four, name) for name in expected]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("webhook-404", ["upgrade"]),
        ("WEBHOOK-404", ["upgrade"]),
        ("TimeoutError", ["sso"]),
        ("sso-button", ["sso"]),
        ("upgraded", ["coupon", "upgrade"]),
        ("got /billing?upgraded=false", ["coupon", "upgrade"]),
        ("billing", ["coupon", "upgrade"]),
        ("404", ["upgrade"]),
        ("sing", ["sso"]),
        ("webhook-4", ["upgrade"]),
        ("Timeout", ["sso"]),
        ("single sign", ["sso"]),
        ("webhook-404 TimeoutError", []),
        ("nothing-like-this", []),
    ],
)
def test_q_searches_the_trace_fields_and_the_failure_messages_with_a_prefix_on_the_last_word(
    store: SqliteTraceStore, four: Four, q: str, expected: list[str]
) -> None:
    assert ids(store, q=q) == [getattr(four, name) for name in expected]


def test_the_search_text_holds_each_message_once_so_later_messages_still_fit(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    # A check repeated 3,000 times (~130,000 characters) is one line of the search text: the messages after
    # it still fit in the text's 64,000 characters and are found; the repeated one is found too.
    repeated = "expect json $.subtotal_cents == 5000 (cart)"
    events = [event(i, "assertion", message=repeated, ok=True) for i in range(3_000)]
    events.append(event(3_000, "assertion", message="expect json $.coupon == zanzibar", ok=False))
    trace_id, _ = add(events=events)
    for q in ("zanzibar", "subtotal_cents 5000", "coupon"):
        assert [t.id for t in store.list_traces(LOCAL_ORG_ID, TraceQuery(q=q)).items] == [trace_id], q
    with store.db.read() as conn:
        body = conn.execute("SELECT body FROM traces_fts").fetchone()[0]
    assert body.count(repeated) == 1


def test_q_combines_with_the_other_filters(store: SqliteTraceStore, four: Four) -> None:
    assert ids(store, q="upgraded", source="pr") == [four.upgrade]


@pytest.mark.parametrize(
    "q",
    ['"; DROP TABLE traces; --', "a*b(", '"', "NEAR(", "AND", "OR NOT", "^x", "col:val", "'", "a\x00b", "*"],
)
def test_a_search_with_quotes_or_fts_syntax_does_not_error(store: SqliteTraceStore, four: Four, q: str) -> None:
    store.list_traces(LOCAL_ORG_ID, TraceQuery(q=q))
    assert len(ids(store)) == 4


def test_cursor_pages_over_120_traces_yield_each_trace_exactly_once_newest_first(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    # Three traces per minute: the cursor must break ties without skipping or repeating.
    stored = [add(events=[event(0, "log")], created_at=minutes(i // 3))[0] for i in range(120)]
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        page = store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=50, cursor=cursor))
        seen.extend(t.id for t in page.items)
        sizes.append(len(page.items))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sizes == [50, 50, 20]
    assert seen == list(reversed(stored))


def test_a_row_cursor_resumes_the_list_right_after_its_row(store: SqliteTraceStore, add: AddTrace) -> None:
    # Ties in time included: each row's cursor continues after exactly that row, filters kept, and the
    # last row's cursor is the page's next_cursor. Without asking, there are none.
    failed = [add(events=[], created_at=minutes(i // 2), status="failed")[0] for i in range(7)]
    add(events=[], created_at=minutes(1), status="passed")
    newest_first = list(reversed(failed))
    page = store.list_traces(LOCAL_ORG_ID, TraceQuery(status="failed", limit=5, row_cursors=True))
    assert page.row_cursors is not None
    assert len(page.row_cursors) == 5
    assert page.row_cursors[-1] == page.next_cursor
    for i, after in enumerate(page.row_cursors):
        rest = store.list_traces(LOCAL_ORG_ID, TraceQuery(status="failed", limit=50, cursor=after))
        assert [t.id for t in rest.items] == newest_first[i + 1 :]
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery(status="failed", limit=5)).row_cursors is None


def test_cursor_pages_keep_the_filter(store: SqliteTraceStore, add: AddTrace) -> None:
    failed = [add(events=[], created_at=minutes(i), status="failed")[0] for i in range(5)]
    for i in range(5):
        add(events=[], created_at=minutes(i), status="passed")
    first = store.list_traces(LOCAL_ORG_ID, TraceQuery(status="failed", limit=3))
    second = store.list_traces(LOCAL_ORG_ID, TraceQuery(status="failed", limit=3, cursor=first.next_cursor))
    assert [t.id for t in first.items + second.items] == list(reversed(failed))
    assert second.next_cursor is None


def test_a_page_that_holds_the_last_trace_has_no_next_cursor(store: SqliteTraceStore, four: Four) -> None:
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=4)).next_cursor is None
    assert store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=3)).next_cursor is not None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!!",
        _b64(b"[1]"),
        _b64(b'["a", 1]'),
        _b64(b"{}"),
        _b64(b"\xff\xfe"),
        _b64(b"[1.5, 2]"),
        _b64(json.dumps([10**30, 1]).encode()),
    ],
)
def test_a_cursor_this_store_did_not_issue_is_invalid_cursor(store: SqliteTraceStore, four: Four, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        store.list_traces(LOCAL_ORG_ID, TraceQuery(cursor=cursor))


def test_traces_with_null_fields_list_in_the_same_order_on_either_engine(
    store: SqliteTraceStore, add: AddTrace
) -> None:
    # SQLite sorts NULL first going up and PostgreSQL last: no ordering the store answers with may hang
    # on a field that can be NULL. Traces with every optional field NULL, beside full ones, some created
    # at the same instant: newest first, ties last stored first, on every path (plain, filtered, searched,
    # paged), and a filter on a field never keeps a trace where that field is NULL.
    bare = {
        "scenario_title": None,
        "source": None,
        "code_sha": None,
        "pr_number": None,
        "failure_signature": None,
        "duration_ms": None,
    }
    a, _ = add(created_at=minutes(1), **bare)
    b, _ = add(created_at=minutes(2))
    c, _ = add(created_at=minutes(2), **bare)
    d, _ = add(created_at=minutes(2), pr_number=7, duration_ms=0)
    e, _ = add(created_at=minutes(3), **bare)
    newest_first = [e, d, c, b, a]
    assert ids(store) == newest_first
    assert ids(store, status="failed") == newest_first
    assert ids(store, q="subscription") == newest_first  # every trace's slug
    paged: list[str] = []
    cursor = None
    while True:
        page = store.list_traces(LOCAL_ORG_ID, TraceQuery(limit=2, cursor=cursor))
        paged += [t.id for t in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert paged == newest_first
    assert ids(store, source="pr") == [d, b]
    assert ids(store, signature="webhook-404") == [d, b]
    assert ids(store, code_sha="a1b2") == [d, b]
    items = {t.id: t for t in store.list_traces(LOCAL_ORG_ID, TraceQuery()).items}
    assert (items[c].source, items[c].failure_signature, items[c].code_sha) == (None, None, None)
