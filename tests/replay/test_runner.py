"""The runner against the demo shop in process (ASGI transport), plus a few real-socket failures."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Callable

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from molar_mcp.demo import demo_scenario
from molar_mcp.demo.shop.app import create_app
from molar_mcp.models.traces import KNOWN_EVENT_KINDS, Event
from molar_mcp.replay.apps import free_port
from molar_mcp.replay.runner import BODY_LIMIT, RunResult, TraceStateError, run_scenario, variables_before
from molar_mcp.replay.scenario import parse_scenario

pytestmark = pytest.mark.anyio

T0 = 1_763_629_200_000


def ticking_clock() -> Callable[[], int]:
    """A deterministic clock: every reading is 5 ms after the previous one."""
    ticks = itertools.count()
    return lambda: T0 + 5 * next(ticks)


@pytest.fixture
async def shop() -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=create_app())
    async with httpx2.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        yield client


def of_kind(result: RunResult, kind: str, step: int | None = None) -> list[Event]:
    return [e for e in result.events if e.kind == kind and (step is None or e.step_id == str(step))]


async def test_cart_basic_passes_and_records_each_step_from_start_to_end(shop: httpx2.AsyncClient) -> None:
    result = await run_scenario(demo_scenario("cart-basic"), shop, clock=ticking_clock())

    assert result.status == "passed"
    assert result.failure_signature is None
    assert result.failed_step is None
    assert [e.seq for e in result.events] == list(range(len(result.events)))
    assert all(e.kind in KNOWN_EVENT_KINDS for e in result.events)
    assert [e.ts for e in result.events] == sorted(e.ts for e in result.events)
    assert result.events[0].ts == T0 + 5  # the run's start is the first reading
    step_ids = [e.step_id for e in result.events if e.kind == "step.start"]
    assert step_ids == ["1", "2", "3", "4", "5", "6"]
    assert all(e.ok for e in of_kind(result, "step.end"))
    assert len(of_kind(result, "assertion")) == 14
    assert result.duration_ms == result.events[-1].ts - T0 - 5


async def test_checkout_plain_passes(shop: httpx2.AsyncClient) -> None:
    result = await run_scenario(demo_scenario("checkout-plain"), shop)
    assert result.status == "passed", result.failure_signature
    assert result.variables["order_id"].startswith("ord_")


async def test_requests_and_responses_are_recorded_with_their_bodies(shop: httpx2.AsyncClient) -> None:
    result = await run_scenario(demo_scenario("checkout-coupon"), shop)

    (request,) = of_kind(result, "network.request", step=2)
    assert request.payload["method"] == "POST"
    assert request.payload["url"] == "http://shop.test/api/carts/cart_1/items"
    assert request.payload["body"] == '{"sku": "mug", "qty": 2}'
    assert request.payload["headers"]["content-type"] == "application/json"
    (response,) = of_kind(result, "network.response", step=2)
    assert response.payload["request_id"] == request.payload["request_id"] == "2.1"
    assert response.payload["status"] == 200
    assert '"subtotal_cents":2500' in response.payload["body"]
    assert response.message == "POST http://shop.test/api/carts/cart_1/items → 200"


async def test_checkout_coupon_fails_at_step_6_because_the_coupon_charges_10_percent(
    shop: httpx2.AsyncClient,
) -> None:
    result = await run_scenario(demo_scenario("checkout-coupon"), shop)

    assert result.status == "failed"
    assert result.failed_step == 6
    assert result.failure_signature == "step-6: expect json $.total_cents == 4500"
    failed = [e for e in of_kind(result, "assertion") if not e.ok]
    assert len(failed) == 1
    assert failed[0].step_id == "6"
    assert failed[0].payload == {
        "expected": 4500,
        "actual": 500,
        "matcher": "json",
        "line": 81,
        "path": "$.total_cents",
    }
    assert failed[0].message == "expect json $.total_cents == 4500: got 500"
    assert of_kind(result, "step.start", step=7) == []  # the failing step ends the run
    assert of_kind(result, "step.end", step=6)[0].ok is False
    assert "step-6" in (result.events[-1].message or "")


async def test_billing_upgrade_webhook_gets_a_404_at_step_5_and_fails_at_step_7(
    shop: httpx2.AsyncClient,
) -> None:
    result = await run_scenario(demo_scenario("billing-upgrade-webhook"), shop)

    (webhook,) = of_kind(result, "network.response", step=5)
    assert webhook.payload["status"] == 404
    assert webhook.payload["url"] == "http://shop.test/webhooks/billing"
    assert of_kind(result, "step.end", step=5)[0].ok is True  # nothing checked the webhook's answer

    assert result.status == "failed"
    assert result.failure_signature == "step-7: expect url /billing?upgraded=true"
    hops = of_kind(result, "network.response", step=7)
    assert [(e.payload["request_id"], e.payload["status"]) for e in hops] == [("7.1", 303), ("7.2", 200)]
    url_check = next(e for e in of_kind(result, "assertion", step=7) if e.payload["matcher"] == "url")
    assert url_check.ok is False
    assert url_check.payload["actual"] == "/billing?upgraded=false"
    assert url_check.message == "expect url /billing?upgraded=true: got /billing?upgraded=false"


async def test_captures_are_recorded_in_step_end_and_rebuilt_by_variables_before(
    shop: httpx2.AsyncClient,
) -> None:
    result = await run_scenario(demo_scenario("billing-upgrade-webhook"), shop)

    assert of_kind(result, "step.end", step=1)[0].payload["captures"] == {"account_id": "acc_1"}
    assert of_kind(result, "step.end", step=2)[0].payload["captures"] == {}
    assert result.captures == {
        1: {"account_id": "acc_1"},
        2: {},
        3: {"session_id": "cs_2"},
        4: {},
        5: {},
        6: {},
    }
    assert variables_before(result.events, 1) == {}
    assert variables_before(result.events, 3) == {"account_id": "acc_1"}
    assert variables_before(result.events, 7) == {"account_id": "acc_1", "session_id": "cs_2"}


async def test_variables_before_refuses_a_step_whose_earlier_steps_did_not_pass(
    shop: httpx2.AsyncClient,
) -> None:
    result = await run_scenario(demo_scenario("checkout-coupon"), shop)
    assert variables_before(result.events, 6) == {"cart_id": "cart_1"}
    with pytest.raises(TraceStateError, match="step 6 did not pass"):
        variables_before(result.events, 7)


async def test_from_step_with_restored_variables_runs_only_the_later_steps(shop: httpx2.AsyncClient) -> None:
    scenario = demo_scenario("checkout-plain")
    first = await run_scenario(scenario, shop)
    restored = variables_before(first.events, 7)
    assert restored == {"first_sku": "mug", "cart_id": "cart_1", "order_id": "ord_2"}

    replay = await run_scenario(scenario, shop, from_step=7, variables=restored)

    assert replay.status == "passed"
    assert sorted({e.step_id for e in replay.events if e.step_id}) == ["7", "8"]
    opening = replay.events[0]
    assert opening.kind == "log"
    assert opening.step_id is None
    assert opening.payload["from_step"] == 7
    assert opening.payload["restored_variables"] == restored
    (lookup,) = of_kind(replay, "network.request", step=7)
    assert lookup.payload["url"] == "http://shop.test/api/orders/ord_2"
    # The replay's own trace restores state too: from its restored variables onwards.
    assert variables_before(replay.events, 8) == restored
    with pytest.raises(TraceStateError, match="starts at step 7"):
        variables_before(replay.events, 3)


async def test_a_later_step_without_its_variables_ends_the_run_with_error(shop: httpx2.AsyncClient) -> None:
    result = await run_scenario(demo_scenario("cart-basic"), shop, from_step=2)

    assert result.status == "error"
    assert result.failure_signature == "step-2: undefined variable cart_id"
    (error,) = of_kind(result, "error")
    assert error.payload == {"name": "UndefinedVariable", "message": "undefined variable {{cart_id}}"}
    assert of_kind(result, "network.request") == []


async def test_a_refused_connection_ends_the_run_with_an_error_event() -> None:
    scenario = demo_scenario("cart-basic")
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}", timeout=5) as client:
        result = await run_scenario(scenario, client)

    assert result.status == "error"
    assert result.failure_signature == "step-1: ConnectError"
    (error,) = of_kind(result, "error")
    assert error.step_id == "1"
    assert error.payload["name"] == "ConnectError"
    (response,) = of_kind(result, "network.response")
    assert response.payload["status"] == 0
    assert response.ok is False
    assert of_kind(result, "step.end")[0].ok is False


async def test_a_server_that_never_answers_ends_the_run_with_a_timeout_error() -> None:
    scenario = demo_scenario("cart-basic")
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=0.2) as client:
            result = await run_scenario(scenario, client)

    assert result.status == "error"
    assert result.failure_signature == "step-1: ReadTimeout"


async def test_relative_targets_use_the_scenario_base_url_when_the_client_has_none() -> None:
    scenario = parse_scenario(
        "---\nslug: s\ntitle: S\nbase_url: http://shop.test/\n---\n## 1. Health\n```http\nGET /healthz\n```\n"
        "- expect json $.ok == true\n"
    )
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app())) as client:
        result = await run_scenario(scenario, client)
    assert result.status == "passed"
    assert of_kind(result, "network.request")[0].payload["url"] == "http://shop.test/healthz"


async def test_large_bodies_are_truncated_and_secrets_redacted() -> None:
    async def big(request: Request) -> Response:
        return JSONResponse({"blob": "x" * (BODY_LIMIT + 10)}, headers={"Set-Cookie": "session=s3cret"})

    scenario = parse_scenario(
        "---\nslug: s\ntitle: S\n---\n## 1. Big\n```http\nGET /big\nAuthorization: Bearer molar_sk_abc\n```\n"
        "- expect status 200\n"
        "- capture size = $.blob\n"
    )
    app = Starlette(routes=[Route("/big", big)])
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        result = await run_scenario(scenario, client)

    (request,) = of_kind(result, "network.request")
    assert request.payload["headers"]["authorization"] == "[redacted]"
    (response,) = of_kind(result, "network.response")
    assert len(response.payload["body"]) == BODY_LIMIT
    assert response.payload["body_truncated"] is True
    assert response.payload["body_size"] == len('{"blob":""}') + BODY_LIMIT + 10
    assert response.payload["headers"]["set-cookie"] == "[redacted]"
    assert "molar_sk_abc" not in str([e.payload for e in result.events])


async def test_a_missing_capture_path_fails_the_step(shop: httpx2.AsyncClient) -> None:
    scenario = parse_scenario(
        "---\nslug: s\ntitle: S\n---\n## 1. Cart\n```http\nPOST /api/carts\n```\n"
        "- expect status 201\n- capture cart = $.cart.id\n"
    )
    result = await run_scenario(scenario, shop)
    assert result.status == "failed"
    assert result.failure_signature == "step-1: capture cart = $.cart.id"
    (check,) = of_kind(result, "assertion", step=1)[1:]
    assert check.ok is False
    assert check.payload["matcher"] == "capture"
    assert of_kind(result, "step.end")[0].payload["captures"] == {}


async def test_json_equality_does_not_take_true_for_1(shop: httpx2.AsyncClient) -> None:
    scenario = parse_scenario(
        "---\nslug: s\ntitle: S\n---\n## 1. Health\n```http\nGET /healthz\n```\n"
        "- expect json $.ok != 1\n- expect json $.ok == true\n- expect json $.missing exists\n"
    )
    result = await run_scenario(scenario, shop)
    assert [e.ok for e in of_kind(result, "assertion")] == [True, True, False]
    assert result.failure_signature == "step-1: expect json $.missing exists"


async def test_from_step_outside_the_scenario_is_refused(shop: httpx2.AsyncClient) -> None:
    with pytest.raises(ValueError, match="from_step must be 1–6"):
        await run_scenario(demo_scenario("cart-basic"), shop, from_step=7)
