"""Molar demo shop: a small JSON API (catalogue, cart, coupons, checkout, billing upgrade, webhook, SSO
sign-in) and two pages over it (`/` the storefront, `/account` sign-up and upgrade) for browser tests.

Self-contained on purpose: a replay copies this folder, patches it and runs `python app.py --port N`, so it
imports nothing from molar_mcp. State is in memory; a fresh process is a fresh shop. The shop ships with
deliberate bugs; `../fixes/*.diff` are the patches that fix them."""

from __future__ import annotations

import argparse
import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

PRODUCTS: dict[str, dict[str, Any]] = {
    "mug": {"sku": "mug", "name": "Molar mug", "price_cents": 1250},
    "tee": {"sku": "tee", "name": "Molar tee", "price_cents": 2500},
    "socks": {"sku": "socks", "name": "Molar socks", "price_cents": 800},
}
# The fraction of the subtotal a coupon takes off.
COUPONS: dict[str, float] = {"SAVE10": 0.10, "HALF": 0.50}
PLANS: list[dict[str, Any]] = [
    {"id": "free", "name": "Free", "price_cents": 0},
    {"id": "pro", "name": "Pro", "price_cents": 2900},
]


@dataclass
class Cart:
    id: str
    items: dict[str, int] = field(default_factory=dict)  # sku -> quantity
    coupon: str | None = None


@dataclass
class Shop:
    carts: dict[str, Cart] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids)}"


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def cart_json(cart: Cart) -> dict[str, Any]:
    lines = [
        {
            "sku": sku,
            "name": PRODUCTS[sku]["name"],
            "qty": qty,
            "unit_price_cents": PRODUCTS[sku]["price_cents"],
            "line_total_cents": PRODUCTS[sku]["price_cents"] * qty,
        }
        for sku, qty in cart.items.items()
    ]
    subtotal = sum(line["line_total_cents"] for line in lines)
    total = subtotal
    if cart.coupon is not None:
        total = round(subtotal * COUPONS[cart.coupon])
    return {
        "id": cart.id,
        "items": lines,
        "item_count": sum(cart.items.values()),
        "coupon": cart.coupon,
        "subtotal_cents": subtotal,
        "discount_cents": subtotal - total,
        "total_cents": total,
    }


async def json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


# The storefront: the same API behind two small pages, for browser tests (Playwright) of the shop.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Molar shop</title>
<style>body {{ font-family: sans-serif; margin: 2rem; max-width: 40rem; }} li {{ margin: .3rem 0; }}</style>
</head><body><h1>{title}</h1>{body}<script>
const money = (cents) => '$' + (cents / 100).toFixed(2);
const call = async (method, path, body) => {{
  const r = await fetch(path, {{method, headers: {{'content-type': 'application/json'}},
    body: body === undefined ? undefined : JSON.stringify(body)}});
  const data = await r.json();
  if (!r.ok) {{ console.error(method + ' ' + path + ' answered ' + r.status + ': ' + data.message); }}
  return {{ok: r.ok, status: r.status, data}};
}};
{script}
</script></body></html>"""

STOREFRONT = _PAGE.format(
    title="Shop",
    body="""<ul id="products"></ul>
<section id="cart"><h2>Cart (<span id="count">0</span>)</h2><ul id="lines"></ul>
<p>Subtotal: <span id="subtotal">$0.00</span></p>
<label>Coupon <input id="coupon" autocomplete="off"></label> <button id="apply">Apply</button>
<p id="coupon-status"></p>
<p>Total: <strong id="total">$0.00</strong></p>
<label>Email <input id="email" value="shopper@example.com"></label> <button id="checkout">Pay</button>
<p id="order" role="status"></p></section>""",
    script="""let cart = null;
const show = (c) => {
  cart = c;
  document.getElementById('count').textContent = c.item_count;
  document.getElementById('lines').innerHTML = c.items.map((l) =>
    `<li>${l.qty} × ${l.name} <span>${money(l.line_total_cents)}</span></li>`).join('');
  document.getElementById('subtotal').textContent = money(c.subtotal_cents);
  document.getElementById('total').textContent = money(c.total_cents);
};
(async () => {
  show((await call('POST', '/api/carts')).data);
  const products = (await call('GET', '/api/products')).data.products;
  document.getElementById('products').innerHTML = products.map((p) =>
    `<li>${p.name} ${money(p.price_cents)} <button data-sku="${p.sku}">Add ${p.name}</button></li>`).join('');
  for (const b of document.querySelectorAll('#products button')) {
    b.addEventListener('click', async () => show((await call('POST', `/api/carts/${cart.id}/items`,
      {sku: b.dataset.sku, qty: 1})).data));
  }
})();
document.getElementById('apply').addEventListener('click', async () => {
  const r = await call('POST', `/api/carts/${cart.id}/coupon`, {code: document.getElementById('coupon').value});
  document.getElementById('coupon-status').textContent = r.ok ? `Coupon ${r.data.coupon} applied` : r.data.message;
  if (r.ok) show(r.data);
});
document.getElementById('checkout').addEventListener('click', async () => {
  const r = await call('POST', '/api/checkout', {cart_id: cart.id, email: document.getElementById('email').value});
  document.getElementById('order').textContent = r.ok
    ? `Order ${r.data.id} paid: ${money(r.data.total_cents)}` : `Payment failed: ${r.data.message}`;
});""",
)

ACCOUNT = _PAGE.format(
    title="Account",
    body="""<label>Email <input id="email" value="ada@example.com"></label> <button id="signup">Sign up</button>
<p>Plan: <strong id="plan">none</strong></p>
<button id="upgrade" disabled>Upgrade to Pro</button> <a id="return" hidden>Back from the payment page</a>""",
    script="""let account = null;
document.getElementById('signup').addEventListener('click', async () => {
  account = (await call('POST', '/api/accounts', {email: document.getElementById('email').value})).data;
  document.getElementById('plan').textContent = account.plan;
  document.getElementById('upgrade').disabled = false;
});
document.getElementById('upgrade').addEventListener('click', async () => {
  const session = (await call('POST', '/api/billing/upgrade', {account_id: account.id, plan: 'pro'})).data;
  const back = document.getElementById('return');
  back.href = session.return_url;
  back.dataset.session = session.id;
  back.hidden = false;
});""",
)


# Sign-in (SSO): the shop exchanges the identity provider's code for the user's identity and gives up after
# SSO_TIMEOUT_S. The demo's provider takes IDP_TOKEN_DELAY_S to answer, so every sign-in times out.
SSO_PROVIDER = "idp.demo-shop.test"
SSO_TIMEOUT_S = 1.0
IDP_TOKEN_DELAY_S = 5.0


async def exchange_code(email: str) -> dict[str, Any]:
    """The identity provider's token exchange (in process: the demo has no real provider)."""
    await asyncio.sleep(IDP_TOKEN_DELAY_S)
    return {"email": email, "provider": SSO_PROVIDER}


def create_app() -> Starlette:
    """A fresh shop with empty state."""
    shop = Shop()
    sso_states: dict[str, str] = {}  # sign-in state -> email

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def storefront(request: Request) -> Response:
        return HTMLResponse(STOREFRONT)

    async def account_page(request: Request) -> Response:
        return HTMLResponse(ACCOUNT)

    async def list_products(request: Request) -> Response:
        return JSONResponse({"products": list(PRODUCTS.values()), "count": len(PRODUCTS)})

    async def get_product(request: Request) -> Response:
        product = PRODUCTS.get(request.path_params["sku"])
        return JSONResponse(product) if product else error(404, "not_found", "no such product")

    async def create_cart(request: Request) -> Response:
        cart = Cart(id=shop.new_id("cart"))
        shop.carts[cart.id] = cart
        return JSONResponse(cart_json(cart), status_code=201)

    async def get_cart(request: Request) -> Response:
        cart = shop.carts.get(request.path_params["cart_id"])
        return JSONResponse(cart_json(cart)) if cart else error(404, "not_found", "no such cart")

    async def add_item(request: Request) -> Response:
        cart = shop.carts.get(request.path_params["cart_id"])
        if cart is None:
            return error(404, "not_found", "no such cart")
        body = await json_body(request) or {}
        sku, qty = body.get("sku"), body.get("qty", 1)
        if sku not in PRODUCTS:
            return error(422, "unknown_sku", f"no product {sku!r}")
        if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
            return error(422, "bad_quantity", "qty must be a positive integer")
        cart.items[sku] = cart.items.get(sku, 0) + qty
        return JSONResponse(cart_json(cart))

    async def remove_item(request: Request) -> Response:
        cart = shop.carts.get(request.path_params["cart_id"])
        if cart is None or request.path_params["sku"] not in cart.items:
            return error(404, "not_found", "no such cart item")
        del cart.items[request.path_params["sku"]]
        return JSONResponse(cart_json(cart))

    async def apply_coupon(request: Request) -> Response:
        cart = shop.carts.get(request.path_params["cart_id"])
        if cart is None:
            return error(404, "not_found", "no such cart")
        code = (await json_body(request) or {}).get("code")
        if code not in COUPONS:
            return error(422, "invalid_coupon", f"coupon {code!r} does not exist")
        cart.coupon = code
        return JSONResponse(cart_json(cart))

    async def checkout(request: Request) -> Response:
        body = await json_body(request) or {}
        cart = shop.carts.get(str(body.get("cart_id")))
        if cart is None:
            return error(404, "not_found", "no such cart")
        if not cart.items:
            return error(409, "empty_cart", "the cart is empty")
        priced = cart_json(cart)
        amounts = {key: priced[key] for key in ("items", "subtotal_cents", "discount_cents", "total_cents")}
        order = {"id": shop.new_id("ord"), "cart_id": cart.id, "email": body.get("email"), **amounts}
        order["status"] = "paid"
        shop.orders[order["id"]] = order
        del shop.carts[cart.id]
        return JSONResponse(order, status_code=201)

    async def get_order(request: Request) -> Response:
        order = shop.orders.get(request.path_params["order_id"])
        return JSONResponse(order) if order else error(404, "not_found", "no such order")

    async def create_account(request: Request) -> Response:
        email = (await json_body(request) or {}).get("email")
        if not isinstance(email, str) or "@" not in email:
            return error(422, "bad_email", "email must be an address")
        account = {"id": shop.new_id("acc"), "email": email, "plan": "free"}
        shop.accounts[account["id"]] = account
        return JSONResponse(account, status_code=201)

    async def get_account(request: Request) -> Response:
        account = shop.accounts.get(request.path_params["account_id"])
        return JSONResponse(account) if account else error(404, "not_found", "no such account")

    async def list_plans(request: Request) -> Response:
        return JSONResponse({"plans": PLANS})

    async def start_upgrade(request: Request) -> Response:
        body = await json_body(request) or {}
        account = shop.accounts.get(str(body.get("account_id")))
        if account is None:
            return error(404, "not_found", "no such account")
        if body.get("plan") not in {plan["id"] for plan in PLANS}:
            return error(422, "unknown_plan", "no such plan")
        session_id = shop.new_id("cs")
        session = {"id": session_id, "account_id": account["id"], "plan": body["plan"], "status": "pending"}
        session["return_url"] = f"/billing/return?session_id={session_id}"
        shop.sessions[session_id] = session
        return JSONResponse(session, status_code=201)

    async def get_session(request: Request) -> Response:
        session = shop.sessions.get(request.path_params["session_id"])
        return JSONResponse(session) if session else error(404, "not_found", "no such session")

    async def billing_webhook(request: Request) -> Response:
        """The payment provider tells us a checkout session completed."""
        body = await json_body(request) or {}
        session = shop.sessions.get(str(body.get("session_id")))
        if body.get("type") != "checkout.session.completed" or session is None:
            return error(422, "bad_event", "unknown event or session")
        session["status"] = "completed"
        shop.accounts[session["account_id"]]["plan"] = session["plan"]
        return JSONResponse({"received": True})

    async def billing_return(request: Request) -> Response:
        session = shop.sessions.get(request.query_params.get("session_id", ""))
        upgraded = session is not None and session["status"] == "completed"
        return RedirectResponse(f"/billing?upgraded={'true' if upgraded else 'false'}", status_code=303)

    async def billing_page(request: Request) -> Response:
        upgraded = request.query_params.get("upgraded") == "true"
        message = "Welcome to Pro" if upgraded else "Your upgrade is still pending"
        return JSONResponse({"page": "billing", "upgraded": upgraded, "message": message})

    async def sso_start(request: Request) -> Response:
        """Start signing in through the identity provider."""
        email = request.query_params.get("email", "")
        if "@" not in email:
            return error(422, "bad_email", "email must be an address")
        state = shop.new_id("st")
        sso_states[state] = email
        authorize = f"/sso/authorize?state={state}"
        return JSONResponse({"provider": SSO_PROVIDER, "state": state, "authorize_url": authorize})

    async def sso_authorize(request: Request) -> Response:
        """The provider's sign-in page: it signs the user in and sends them back with a code."""
        state = request.query_params.get("state", "")
        if state not in sso_states:
            return error(400, "bad_state", "unknown sign-in state")
        return RedirectResponse(f"/auth/callback?code=code_{state}&state={state}", status_code=303)

    async def sso_callback(request: Request) -> Response:
        """Exchange the provider's code for the user's identity, within SSO_TIMEOUT_S."""
        state = request.query_params.get("state", "")
        email = sso_states.get(state)
        if email is None or request.query_params.get("code") != f"code_{state}":
            return error(400, "bad_state", "unknown sign-in state or code")
        try:
            identity = await asyncio.wait_for(exchange_code(email), timeout=SSO_TIMEOUT_S)
        except TimeoutError:
            waited = round(SSO_TIMEOUT_S * 1000)
            message = f"{SSO_PROVIDER} did not answer the token exchange: timed out after {waited} ms"
            return error(504, "sso_timeout", message)
        return JSONResponse({"signed_in": True, **identity})

    routes = [
        Route("/", storefront),
        Route("/account", account_page),
        Route("/healthz", healthz),
        Route("/api/products", list_products),
        Route("/api/products/{sku}", get_product),
        Route("/api/carts", create_cart, methods=["POST"]),
        Route("/api/carts/{cart_id}", get_cart),
        Route("/api/carts/{cart_id}/items", add_item, methods=["POST"]),
        Route("/api/carts/{cart_id}/items/{sku}", remove_item, methods=["DELETE"]),
        Route("/api/carts/{cart_id}/coupon", apply_coupon, methods=["POST"]),
        Route("/api/checkout", checkout, methods=["POST"]),
        Route("/api/orders/{order_id}", get_order),
        Route("/api/accounts", create_account, methods=["POST"]),
        Route("/api/accounts/{account_id}", get_account),
        Route("/api/sso/start", sso_start),
        Route("/sso/authorize", sso_authorize),
        Route("/auth/callback", sso_callback),
        Route("/api/billing/plans", list_plans),
        Route("/api/billing/upgrade", start_upgrade, methods=["POST"]),
        Route("/api/billing/sessions/{session_id}", get_session),
        Route("/webhooks/biling", billing_webhook, methods=["POST"]),
        Route("/billing/return", billing_return),
        Route("/billing", billing_page),
    ]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Molar demo shop.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    import uvicorn

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
