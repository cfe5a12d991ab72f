"""GET /v1/traces over the real app: the seed 000 shape, every filter, and every refused parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from molar_mcp.store import LOCAL_ORG_ID, SqliteTraceStore
from molar_mcp.store.sqlite import scenario_id_for
from tests.bundles import checkout_events
from tests.store.factory import event, minutes, new_trace

from .support import assert_error

pytestmark = pytest.mark.anyio

SEED_ITEM_FIELDS = {
    "id",
    "short_id",
    "scenario_id",
    "scenario_title",
    "status",
    "tier",
    "pinned",
    "duration_ms",
    "code_sha",
    "failure_signature",
    "created_at",
}


@dataclass(frozen=True)
class Three:
    upgrade: str
    cart: str
    sso: str


@pytest.fixture
def three(store: SqliteTraceStore) -> Three:
    def add(**fields: Any) -> str:
        return store.add_trace(LOCAL_ORG_ID, new_trace(**fields), {})[0]

    upgrade = add(created_at=minutes(1))
    cart = add(
        events=checkout_events(fail=False),
        scenario_slug="cart-basic",
        status="passed",
        source="schedule",
        code_sha="ffff0000",
        failure_signature=None,
        created_at=minutes(2),
    )
    sso = add(
        events=[event(0, "error", "login", message="TimeoutError: waiting for selector .sso-button")],
        scenario_slug="login-sso",
        status="error",
        source="manual",
        code_sha="a1b2ffff",
        failure_signature="timeout",
        created_at=minutes(3),
    )
    return Three(upgrade, cart, sso)


def fill(store: SqliteTraceStore, n: int) -> None:
    for i in range(n):
        store.add_trace(LOCAL_ORG_ID, new_trace(events=[event(0, "log")], created_at=minutes(i)), {})


async def test_the_list_has_the_trace_list_response_shape_of_seed_000(client: httpx2.AsyncClient, three: Three) -> None:
    resp = await client.get("/v1/traces")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"items", "next_cursor"}
    assert body["next_cursor"] is None
    assert [item["id"] for item in body["items"]] == [three.sso, three.cart, three.upgrade]
    # Asked for, the cursor after each row too: the one after the first row gives the other two.
    asked = (await client.get("/v1/traces", params={"row_cursors": "true"})).json()
    assert set(asked) == {"items", "next_cursor", "row_cursors"}
    rest = (await client.get("/v1/traces", params={"cursor": asked["row_cursors"][0]})).json()
    assert [item["id"] for item in rest["items"]] == [three.cart, three.upgrade]
    assert (await client.get("/v1/traces", params={"row_cursors": "maybe"})).status_code == 400
    sso = body["items"][0]
    assert set(sso) >= SEED_ITEM_FIELDS
    assert sso["created_at"] == "2026-05-31T10:03:00Z"
    assert (sso["status"], sso["tier"], sso["pinned"], sso["code_sha"]) == ("error", "hot", False, "a1b2ffff")
    assert sso["scenario_id"] == scenario_id_for("login-sso")
    assert sso["failure_signature"] == "timeout"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "failed"}, ["upgrade"]),
        ({"status": "passed"}, ["cart"]),
        ({"source": "manual"}, ["sso"]),
        ({"signature": "webhook-404"}, ["upgrade"]),
        ({"tier": "hot"}, ["sso", "cart", "upgrade"]),
        ({"tier": "cold"}, []),
        ({"scenario_id": scenario_id_for("cart-basic")}, ["cart"]),
        ({"scenario_id": scenario_id_for("cart-basic").upper()}, ["cart"]),
        ({"scenario": "login-sso"}, ["sso"]),
        ({"commit": "a1b2"}, ["sso", "upgrade"]),
        ({"q": "TimeoutError"}, ["sso"]),
        ({"q": "billing upgr"}, ["upgrade"]),
        ({"from": "2026-05-31T10:02:00Z"}, ["sso", "cart"]),
        ({"to": "2026-05-31T10:02:00Z"}, ["upgrade"]),
        ({"from": "2026-05-31T10:01:30+00:00", "to": "2026-05-31T10:02:30"}, ["cart"]),
        ({"from": "2026-05-31", "to": "2026-06-01T00:00:00Z"}, ["sso", "cart", "upgrade"]),
        ({"status": ""}, ["sso", "cart", "upgrade"]),
    ],
)
async def test_each_filter_keeps_only_the_matching_traces(
    client: httpx2.AsyncClient, three: Three, params: dict[str, str], expected: list[str]
) -> None:
    resp = await client.get("/v1/traces", params=params)
    assert resp.status_code == 200, resp.text
    assert [item["id"] for item in resp.json()["items"]] == [getattr(three, n) for n in expected]


async def test_the_limit_defaults_to_50_and_a_cursor_gives_the_rest(
    client: httpx2.AsyncClient, store: SqliteTraceStore
) -> None:
    fill(store, 55)
    first = (await client.get("/v1/traces")).json()
    assert len(first["items"]) == 50
    assert first["next_cursor"]
    rest = (await client.get("/v1/traces", params={"cursor": first["next_cursor"]})).json()
    assert len(rest["items"]) == 5
    assert rest["next_cursor"] is None
    assert len({i["id"] for i in first["items"] + rest["items"]}) == 55


async def test_a_limit_of_200_is_allowed(client: httpx2.AsyncClient, store: SqliteTraceStore) -> None:
    fill(store, 3)
    resp = await client.get("/v1/traces", params={"limit": 200})
    assert resp.status_code == 200
    assert len(resp.json()["items"]) == 3


async def test_a_limit_of_1_pages_one_trace_at_a_time_to_the_end(client: httpx2.AsyncClient, three: Three) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    while True:
        page = (await client.get("/v1/traces", params=params)).json()
        assert len(page["items"]) == 1
        seen.append(page["items"][0]["id"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [three.sso, three.cart, three.upgrade]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"limit": "201"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"status": "broken"}, "status"),
        ({"source": "carrier-pigeon"}, "source"),
        ({"tier": "lukewarm"}, "tier"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-45"}, "to"),
        ({"from": "2026-06-02T00:00:00Z", "to": "2026-06-01T00:00:00Z"}, "from"),
        ({"scenario_id": "not-a-uuid"}, "scenario_id"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "x" * 201}, "cursor"),
        ({"q": "x" * 501}, "q"),
        ({"flaky": "maybe"}, "flaky"),
        ({"newly_failing": "2"}, "newly_failing"),
    ],
)
async def test_a_malformed_parameter_is_a_400_that_names_it(
    client: httpx2.AsyncClient, three: Three, params: dict[str, str], says: str
) -> None:
    body = assert_error(await client.get("/v1/traces", params=params), 400, "bad_request")
    assert says in body["message"]


async def test_a_search_with_fts_syntax_is_answered_not_failed(client: httpx2.AsyncClient, three: Three) -> None:
    for q in ['"; DROP TABLE traces; --', "a*b(", "NEAR(", '"']:
        resp = await client.get("/v1/traces", params={"q": q})
        assert resp.status_code == 200, (q, resp.text)
    assert len((await client.get("/v1/traces")).json()["items"]) == 3


async def test_flaky_and_newly_failing_filters_over_rest(client: httpx2.AsyncClient, store: SqliteTraceStore) -> None:
    for minute, status in enumerate(["passed", "failed", "passed", "failed"]):
        store.add_trace(LOCAL_ORG_ID, new_trace(scenario_slug="wobbly", status=status, created_at=minutes(minute)), {})
    store.add_trace(LOCAL_ORG_ID, new_trace(scenario_slug="regressed", status="passed", created_at=minutes(1)), {})
    regressed, _ = store.add_trace(
        LOCAL_ORG_ID, new_trace(scenario_slug="regressed", status="failed", created_at=minutes(2)), {}
    )
    flaky = (await client.get("/v1/traces", params={"flaky": "true"})).json()["items"]
    assert {i["scenario_slug"] for i in flaky} == {"wobbly"}
    assert len(flaky) == 4
    newly = (await client.get("/v1/traces", params={"newly_failing": "true"})).json()["items"]
    assert [i["id"] for i in newly] == [regressed]
    detail = (await client.get(f"/v1/traces/{regressed}")).json()
    assert detail["history"]["newly_failing"] is True
    assert detail["history"]["recent"] == "fp"


async def test_the_list_is_utf8_json_with_text_as_stored(client: httpx2.AsyncClient, store: SqliteTraceStore) -> None:
    # The body is written in one call (pydantic's JSON): UTF-8 as it is (not \u-escaped), quotes,
    # backslashes and control characters escaped, the JSON media type.
    title = 'Überweisung ✓ "quoted" back\\slash\ttab 𝄞'
    store.add_trace(LOCAL_ORG_ID, new_trace(scenario_title=title, created_at=minutes(1)), {})
    resp = await client.get("/v1/traces")
    assert resp.headers["content-type"] == "application/json"
    assert "Überweisung ✓".encode() in resp.content
    assert b'\\"quoted\\" back\\\\slash\\ttab' in resp.content
    assert resp.json()["items"][0]["scenario_title"] == title
