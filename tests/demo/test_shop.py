"""The demo shop's API, its deliberate bugs, and the shipped fixes applied to a copy of its source."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from molar_mcp.demo import SHOP_DIR, fix_diff, fix_names
from molar_mcp.demo.config import demo_app_config
from molar_mcp.demo.shop.app import create_app
from molar_mcp.replay.apps import apply_unified_diff

pytestmark = pytest.mark.anyio


@pytest.fixture
async def shop() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app()), base_url="http://t") as c:
        yield c


def patched_create_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *fixes: str) -> Callable[[], Starlette]:
    """`create_app` of a copy of the shop with the named fixes applied (as a replay applies them)."""
    source = tmp_path / "shop"
    shutil.copytree(SHOP_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    for name in fixes:
        apply_unified_diff(source, fix_diff(name), label="app.py")
    spec = importlib.util.spec_from_file_location(f"patched_shop_{'_'.join(fixes)}", source / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    factory: Callable[[], Starlette] = module.create_app
    return factory


async def post(client: httpx2.AsyncClient, path: str, body: dict[str, Any]) -> httpx2.Response:
    return await client.post(path, json=body)


async def cart_with_coupon(client: httpx2.AsyncClient) -> dict[str, Any]:
    cart_id = (await client.post("/api/carts")).json()["id"]
    await post(client, f"/api/carts/{cart_id}/items", {"sku": "mug", "qty": 2})
    await post(client, f"/api/carts/{cart_id}/items", {"sku": "tee"})
    response = await post(client, f"/api/carts/{cart_id}/coupon", {"code": "SAVE10"})
    assert response.status_code == 200
    cart: dict[str, Any] = response.json()
    return cart


async def paid_upgrade(client: httpx2.AsyncClient) -> tuple[httpx2.Response, httpx2.Response]:
    account = (await post(client, "/api/accounts", {"email": "grace@example.com"})).json()
    upgrade = {"account_id": account["id"], "plan": "pro"}
    session = (await post(client, "/api/billing/upgrade", upgrade)).json()
    event = {"type": "checkout.session.completed", "session_id": session["id"]}
    webhook = await post(client, "/webhooks/billing", event)
    back = await client.get(session["return_url"], follow_redirects=True)
    return webhook, back


async def test_the_shop_answers_its_health_check_and_lists_products(shop: httpx2.AsyncClient) -> None:
    assert (await shop.get("/healthz")).json() == {"ok": True}
    products = (await shop.get("/api/products")).json()
    assert products["count"] == 3
    assert [p["sku"] for p in products["products"]] == ["mug", "tee", "socks"]


async def test_the_shipped_shop_charges_10_percent_instead_of_taking_10_percent_off(
    shop: httpx2.AsyncClient,
) -> None:
    cart = await cart_with_coupon(shop)
    assert cart["subtotal_cents"] == 5000
    assert cart["total_cents"] == 500  # the deliberate bug: the multiplier is inverted


async def test_the_shipped_shop_has_no_billing_webhook_route(shop: httpx2.AsyncClient) -> None:
    webhook, back = await paid_upgrade(shop)
    assert webhook.status_code == 404
    assert str(back.url) == "http://t/billing?upgraded=false"
    assert back.json()["message"] == "Your upgrade is still pending"


async def test_the_coupon_fix_takes_10_percent_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = patched_create_app(tmp_path, monkeypatch, "coupon-multiplier")()
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        cart = await cart_with_coupon(client)
    assert (cart["discount_cents"], cart["total_cents"]) == (500, 4500)


async def test_the_webhook_fix_completes_the_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = patched_create_app(tmp_path, monkeypatch, "webhook-route")()
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        webhook, back = await paid_upgrade(client)
        account = (await client.get("/api/accounts/acc_1")).json()
    assert webhook.json() == {"received": True}
    assert str(back.url) == "http://t/billing?upgraded=true"
    assert account["plan"] == "pro"


async def test_the_shop_refuses_bad_input_with_json_errors(shop: httpx2.AsyncClient) -> None:
    cart_id = (await shop.post("/api/carts")).json()["id"]
    bad_qty = await post(shop, f"/api/carts/{cart_id}/items", {"sku": "mug", "qty": 0})
    assert (bad_qty.status_code, bad_qty.json()["error"]) == (422, "bad_quantity")
    empty = await post(shop, "/api/checkout", {"cart_id": cart_id})
    assert (empty.status_code, empty.json()["error"]) == (409, "empty_cart")
    missing = await shop.get("/api/orders/ord_404")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    not_json = await shop.post("/api/accounts", content=b"not json")
    assert (not_json.status_code, not_json.json()["error"]) == (422, "bad_email")


async def test_sso_sign_in_times_out_waiting_for_the_identity_provider(shop: httpx2.AsyncClient) -> None:
    started = (await shop.get("/api/sso/start", params={"email": "lin@example.com"})).json()
    clock = time.monotonic()
    back = await shop.get(started["authorize_url"], follow_redirects=True)
    waited = time.monotonic() - clock
    assert [r.status_code for r in back.history] == [303]
    assert back.url.path == "/auth/callback"
    assert back.status_code == 504
    assert back.json()["error"] == "sso_timeout"
    assert "timed out after 1000 ms" in back.json()["message"]
    assert waited >= 1.0  # the shop waited its whole timeout for the provider
    bad_email = await shop.get("/api/sso/start", params={"email": "nobody"})
    assert (bad_email.status_code, bad_email.json()["error"]) == (422, "bad_email")
    forged = await shop.get("/auth/callback", params={"state": started["state"], "code": "code_st_999"})
    assert (forged.status_code, forged.json()["error"]) == (400, "bad_state")
    unknown = await shop.get("/sso/authorize", params={"state": "st_404"})
    assert (unknown.status_code, unknown.json()["error"]) == (400, "bad_state")


def test_the_demo_ships_a_fix_per_bug_relative_to_the_shop_folder() -> None:
    assert fix_names() == ["coupon-multiplier", "webhook-route"]
    for name in fix_names():
        diff = fix_diff(name)
        assert diff.startswith("--- a/app.py\n+++ b/app.py\n@@ ")


def test_the_demo_app_config_runs_the_shop_folder() -> None:
    config = demo_app_config()
    assert config.source_dir == SHOP_DIR
    assert (config.source_dir / "app.py").is_file()
    assert config.start_command[1:] == ["app.py", "--port", "{port}"]
    assert config.health_path == "/healthz"
