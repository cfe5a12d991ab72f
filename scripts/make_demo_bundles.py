"""Generate the demo trace bundles in src/molar_mcp/demo_bundles/ (deterministic bytes).

    python scripts/make_demo_bundles.py                 # (re)write the 7 demo bundles, check them
    python scripts/make_demo_bundles.py --check         # fail if the checked-in bundles are stale
    python scripts/make_demo_bundles.py --out DIR       # write them somewhere else
    python scripts/make_demo_bundles.py --big 10000 /tmp/big.tar.gz   # one synthetic big bundle

Each demo is a run of "Brew & Co.", a small shop app at http://localhost:3000, recorded the way a
Playwright-style runner (or, for the last one, an agent harness) would. Running the script twice
gives byte-identical files: fixed clocks, uuid5 ids, tar mtimes 0, gzip mtime 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from molar_mcp.demo_bundles.builder import (  # noqa: E402
    Blob,
    BundleError,
    TraceRecorder,
    build_big_bundle,
    check_bundle,
    epoch_ms,
    har_blob,
    page_screenshot,
    playwright_trace_blob,
    write_bundle,
)

DEMO_DIR = ROOT / "src" / "molar_mcp" / "demo_bundles"
MIN_EVENTS, MAX_EVENTS = 25, 120

PRODUCTS: dict[str, dict[str, Any]] = {
    "pour-over-set": {"sku": "pour-over-set", "name": "Ceramic pour-over set", "price": 6400},
    "house-blend-1kg": {"sku": "house-blend-1kg", "name": "House blend beans, 1 kg", "price": 2500},
    "paper-filters-100": {"sku": "paper-filters-100", "name": "Paper filters ×100", "price": 600},
    "hand-grinder-c2": {"sku": "hand-grinder-c2", "name": "Hand grinder C2", "price": 8900},
}


def money(cents: int) -> str:
    return f"${cents / 100:.2f}"


def start_log(rec: TraceRecorder, spec: str, title: str) -> None:
    rec.log(f"Running 1 test using 1 worker · [chromium] › {spec} › {title}", after_ms=0)


def end_log(rec: TraceRecorder, passed: bool, spec: str) -> None:
    seconds = (rec.now - rec.start_ms + 40) / 1000
    if passed:
        rec.log(f"1 passed ({seconds:.1f}s)", after_ms=40)
    else:
        rec.log(f"1 failed · [chromium] › {spec} ({seconds:.1f}s)", level="error", after_ms=40)


def sign_in(rec: TraceRecorder, email: str) -> None:
    rec.goto("/login")
    rec.console("info", "[vite] connected.")
    rec.fill("[name=email]", email)
    rec.fill("[name=password]", "********")
    rec.click("button[type=submit]")
    user_id = rec.uid(f"user/{email}")
    rec.request(
        "POST",
        "/api/auth/login",
        status=200,
        body={"email": email},
        response_body={"user_id": user_id, "email": email, "session": "set-cookie"},
    )
    rec.navigated("/dashboard", status=None)


def add_to_cart(rec: TraceRecorder, sku: str, cart: list[str], *, open_page: bool = True) -> None:
    product = PRODUCTS[sku]
    if open_page:
        rec.goto(f"/products/{sku}")
    rec.request("GET", f"/api/products/{sku}", status=200, response_body={**product, "in_stock": True})
    rec.click("[data-test=add-to-cart]")
    cart.append(sku)
    subtotal = sum(PRODUCTS[item]["price"] for item in cart)
    rec.request(
        "POST",
        "/api/cart/items",
        status=201,
        body={"sku": sku, "qty": 1},
        response_body={"cart_id": rec.uid("cart"), "items": len(cart), "subtotal": subtotal},
    )
    rec.expect("toHaveText", str(len(cart)), str(len(cart)), selector="[data-test=cart-badge]")


def failed_url_assertion(rec: TraceRecorder, spec_line: str, expected: str, actual: str) -> None:
    rec.advance(5000)  # toHaveURL polls until its 5 s timeout
    rec.expect(
        "toHaveURL",
        expected,
        actual,
        message=f"expected url {expected}; got {actual}",
    )
    rec.error(
        "Error",
        "expect(page).toHaveURL(expected) failed\n\n"
        f'Expected: "{rec.url(expected)}"\nReceived: "{rec.url(actual)}"\nTimeout: 5000ms',
        stack=f"Error: expect(page).toHaveURL(expected) failed\n    at {spec_line}",
    )


def failure_artifacts(rec: TraceRecorder, shot_name: str, seed: str, *, trace: bool = True) -> None:
    with rec.step("After hooks: capture artifacts"):
        rec.screenshot(shot_name, page_screenshot(seed, banner="error"))
        rec.log("attached " + ", ".join([shot_name, "network.har"] + (["trace.zip"] if trace else [])))


# --------------------------------------------------------------------------------------------
# the scenarios


def checkout_coupon(rec: TraceRecorder, *, broken: bool) -> bool:
    """Checkout with coupon SAVE20. Broken: the coupon multiplies by 1.2 instead of 0.8."""
    spec = "checkout/coupon.spec.ts:14:5"
    start_log(rec, spec, "checkout › applies a coupon and places the order")
    cart: list[str] = []
    with rec.step("Open the storefront"):
        rec.goto("/")
        rec.console("info", "[vite] connected.")
        featured = [PRODUCTS["pour-over-set"], PRODUCTS["house-blend-1kg"], PRODUCTS["hand-grinder-c2"]]
        rec.request("GET", "/api/products?featured=true", status=200, response_body={"items": featured})
        rec.expect("toHaveTitle", "Brew & Co. — Coffee gear", "Brew & Co. — Coffee gear")
    with rec.step("Add the pour-over set to the cart"):
        rec.click("[data-test=product-card-pour-over-set]")
        rec.navigated("/products/pour-over-set", status=None)
        add_to_cart(rec, "pour-over-set", cart, open_page=False)
    with rec.step("Add the house blend beans"):
        add_to_cart(rec, "house-blend-1kg", cart)
    subtotal = sum(PRODUCTS[sku]["price"] for sku in cart)
    with rec.step("Go to checkout and enter the address"):
        rec.click("[data-test=cart-link]")
        rec.navigated("/cart", status=None)
        items = [{"sku": sku, "qty": 1, "price": PRODUCTS[sku]["price"]} for sku in cart]
        rec.request(
            "GET",
            "/api/cart",
            status=200,
            response_body={"items": items, "subtotal": subtotal, "discount": 0, "total": subtotal},
        )
        rec.click("[data-test=checkout]")
        rec.navigated("/checkout", status=None)
        rec.fill("#email", "e2e+checkout@brew.test")
        rec.fill("#address", "12 Roastery Lane, Portland OR 97201")
        rec.click("[data-test=save-address]")
        rec.request(
            "POST",
            "/api/checkout/address",
            status=200,
            body={"line1": "12 Roastery Lane", "city": "Portland", "postal_code": "97201"},
            response_body={"shipping": 0, "free_shipping_over": 5000},
        )
    discount = subtotal * 20 // 100
    total = subtotal + discount if broken else subtotal - discount
    with rec.step("Apply coupon SAVE20"):
        rec.fill("[data-test=coupon-input]", "SAVE20")
        rec.click("[data-test=apply-coupon]")
        rec.request(
            "POST",
            "/api/cart/coupon",
            status=200,
            body={"code": "SAVE20"},
            response_body={
                "code": "SAVE20",
                "percent_off": 20,
                "subtotal": subtotal,
                "discount": discount,
                "total": total,
                "currency": "USD",
            },
        )
        rec.expect("toHaveText", "SAVE20 applied", "SAVE20 applied", selector="[data-test=coupon-badge]")
    with rec.step("Review the order"):
        rec.click("[data-test=review-order]")
        rec.navigated("/checkout/review", status=None)
        rec.request(
            "GET",
            "/api/checkout/summary",
            status=200,
            response_body={"subtotal": subtotal, "discount": discount, "shipping": 0, "total": total},
        )
        rec.expect("toBeVisible", True, True, selector="[data-test=order-summary]")
    order_id = "ORD-010521"
    with rec.step("Place the order"):
        rec.click("[data-test=place-order]")
        if broken:
            rec.request(
                "POST",
                "/api/orders",
                status=422,
                duration_ms=184,
                body={"cart_id": rec.uid("cart"), "payment_method": "pm_card_visa", "amount": total},
                response_body={
                    "error": "amount_mismatch",
                    "message": f"charge amount {total} exceeds the cart subtotal {subtotal}",
                },
            )
            rec.console("error", "[checkout] place order failed: amount_mismatch")
            failed_url_assertion(rec, "e2e/checkout/coupon.spec.ts:58:24", "/checkout/success", "/checkout/review")
        else:
            rec.request(
                "POST",
                "/api/orders",
                status=201,
                duration_ms=231,
                body={"cart_id": rec.uid("cart"), "payment_method": "pm_card_visa", "amount": total},
                response_body={"order_id": order_id, "status": "paid", "total": total},
            )
            rec.navigated("/checkout/success", status=None)
            rec.expect("toHaveURL", "/checkout/success", "/checkout/success")
    if broken:
        failure_artifacts(rec, "failure.png", "checkout-coupon")
    else:
        with rec.step("Check the confirmation"):
            rec.request(
                "GET",
                f"/api/orders/{order_id}",
                status=200,
                response_body={"order_id": order_id, "status": "paid", "total": total, "items": len(cart)},
            )
            rec.expect("toHaveText", order_id, order_id, selector="[data-test=order-number]")
            rec.expect("toHaveText", money(total), money(total), selector="[data-test=order-total]")
            rec.screenshot("confirmation.png", page_screenshot("checkout-coupon", banner="ok"))
    end_log(rec, not broken, spec)
    rec.attach(har_blob(rec.events))
    if broken:
        rec.attach(playwright_trace_blob(rec.events))
    return not broken


def stripe_subscription_upgrade(rec: TraceRecorder) -> bool:
    """The Stripe webhook route is missing (404), so the upgrade never lands."""
    spec = "billing/upgrade.spec.ts:9:5"
    start_log(rec, spec, "billing › upgrades starter to pro")
    session_id = "cs_test_" + rec.uid("checkout-session").replace("-", "")[:24]
    intent_id = "pi_" + rec.uid("payment-intent").replace("-", "")[:24]
    subscription_id = "sub_" + rec.uid("subscription").replace("-", "")[:14]
    customer_id = "cus_" + rec.uid("customer").replace("-", "")[:14]
    starter = {"id": subscription_id, "plan": "starter", "status": "active", "amount": 900}
    with rec.step("Sign in as the test customer"):
        sign_in(rec, "e2e+billing@brew.test")
        rec.request("GET", "/api/me", status=200, response_body={"customer_id": customer_id, "plan": "starter"})
        rec.expect("toBeVisible", True, True, selector="[data-test=dashboard]")
    with rec.step("Open billing"):
        rec.click("[data-test=nav-billing]")
        rec.navigated("/billing", status=None)
        rec.request("GET", "/api/billing/subscription", status=200, response_body=starter)
        rec.expect("toHaveText", "Starter", "Starter", selector=".subscription-status")
    with rec.step("Choose the Pro plan"):
        rec.click("[data-test=plan-pro]")
        plans = [
            {"id": "price_starter_monthly", "plan": "starter", "amount": 900},
            {"id": "price_pro_monthly", "plan": "pro", "amount": 2900},
            {"id": "price_team_monthly", "plan": "team", "amount": 9900},
        ]
        rec.request("GET", "/api/billing/plans", status=200, response_body={"plans": plans})
        rec.click("[data-test=upgrade-to-pro]")
        rec.console("info", "[billing] creating checkout session for price_pro_monthly")
    with rec.step("Start Stripe checkout"):
        checkout_path = f"/stripe-mock/checkout/{session_id}"
        rec.request(
            "POST",
            "/api/billing/checkout-session",
            status=200,
            body={"price": "price_pro_monthly", "customer": customer_id},
            response_body={"id": session_id, "url": rec.url(checkout_path)},
        )
        rec.goto(checkout_path, via="")
        rec.expect("toBeVisible", True, True, selector="#card-number")
    with rec.step("Pay with the test card"):
        rec.fill("#card-number", "4242 4242 4242 4242")
        rec.fill("#card-expiry", "12/34")
        rec.fill("#card-cvc", "123")
        rec.click("[data-test=pay]")
        rec.request(
            "POST",
            f"/stripe-mock/v1/payment_intents/{intent_id}/confirm",
            status=200,
            duration_ms=412,
            body={"payment_method": "pm_card_visa"},
            response_body={"id": intent_id, "status": "succeeded", "amount": 2900, "currency": "usd"},
        )
        rec.log("[stripe-mock] delivering checkout.session.completed → http://localhost:3000/api/webhooks/stripe")
        rec.request(
            "POST",
            "/api/webhooks/stripe",
            status=404,
            duration_ms=9,
            body={
                "id": "evt_" + rec.uid("event").replace("-", "")[:24],
                "type": "checkout.session.completed",
                "data": {
                    "object": {
                        "id": session_id,
                        "customer": customer_id,
                        "subscription": subscription_id,
                        "metadata": {"plan": "pro"},
                    }
                },
            },
            response_body={"error": "not_found", "message": "Cannot POST /api/webhooks/stripe"},
        )
        rec.console("warning", "[stripe-mock] webhook delivery failed with 404; not retrying in test mode")
    with rec.step("Return to the app"):
        rec.request(
            "GET",
            f"/billing/return?session_id={session_id}",
            status=302,
            resource_type="document",
            response_headers={"location": "/billing?upgraded=false"},
        )
        rec.request("GET", "/billing?upgraded=false", status=200, resource_type="document")
        rec.navigated("/billing?upgraded=false")
        rec.request("GET", "/api/billing/subscription", status=200, response_body=starter)
        rec.console("info", "[billing] upgrade not confirmed yet (plan=starter)")
    with rec.step("Check the upgrade landed"):
        failed_url_assertion(
            rec, "e2e/billing/upgrade.spec.ts:41:22", "/billing?upgraded=true", "/billing?upgraded=false"
        )
    failure_artifacts(rec, "failure.png", "stripe-subscription-upgrade")
    with rec.step("Teardown: delete the test customer"):
        rec.request("DELETE", f"/api/test/customers/{customer_id}", status=204, browser=False)
        rec.log(f"test data cleaned up ({customer_id})")
    end_log(rec, False, spec)
    rec.attach(har_blob(rec.events))
    rec.attach(playwright_trace_blob(rec.events))
    return False


def login_sso(rec: TraceRecorder) -> bool:
    """The SSO callback rejects the state, so the dashboard never shows: a 30 s timeout."""
    spec = "auth/sso.spec.ts:7:5"
    start_log(rec, spec, "auth › signs in with SSO")
    state = rec.uid("sso-state").replace("-", "")[:16]
    code = rec.uid("sso-code").replace("-", "")[:20]
    authorize = f"/sso/mock-idp/authorize?client_id=shop-web&state={state}"
    callback = f"/api/auth/sso/callback?code={code}&state={state}"
    with rec.step("Open the login page"):
        rec.goto("/login")
        rec.console("info", "[vite] connected.")
        rec.request("GET", "/api/auth/providers", status=200, response_body={"providers": ["password", "sso"]})
        rec.expect("toBeVisible", True, True, selector="[data-test=sso-button]")
    with rec.step("Start SSO"):
        rec.fill("[name=email]", "e2e@acme-corp.test")
        rec.click("[data-test=sso-button]")
        rec.request(
            "POST",
            "/api/auth/sso/start",
            status=200,
            body={"email": "e2e@acme-corp.test"},
            response_body={"connection": "acme-corp-okta", "redirect": rec.url(authorize)},
        )
        rec.goto(authorize, via="")
        rec.expect("toBeVisible", True, True, selector="#idp-username")
    with rec.step("Sign in at the identity provider"):
        rec.fill("#idp-username", "e2e@acme-corp.test")
        rec.fill("#idp-password", "********")
        rec.click("#idp-submit")
        rec.request(
            "POST",
            "/sso/mock-idp/login",
            status=302,
            resource_type="document",
            response_headers={"location": rec.url(callback)},
        )
        rec.request(
            "GET",
            callback,
            status=400,
            resource_type="document",
            response_headers={"content-type": "application/json; charset=utf-8"},
            response_body={
                "error": "invalid_state",
                "message": "state does not match the session (cookie sso_state missing)",
            },
        )
        rec.navigated(callback, status=400)
    with rec.step("Wait for the dashboard"):
        rec.action(
            "waitForSelector",
            selector="[data-test=dashboard]",
            message="page.waitForSelector('[data-test=dashboard]', { timeout: 30000 })",
        )
        rec.log("waiting for locator('[data-test=dashboard]') to be visible", level="debug")
        rec.advance(30000)
        rec.error(
            "TimeoutError",
            "page.waitForSelector: Timeout 30000ms exceeded.\nCall log:\n"
            "  - waiting for locator('[data-test=dashboard]') to be visible",
            stack="TimeoutError: page.waitForSelector: Timeout 30000ms exceeded.\n    at e2e/auth/sso.spec.ts:31:16",
        )
    failure_artifacts(rec, "timeout.png", "login-sso")
    end_log(rec, False, spec)
    rec.attach(har_blob(rec.events))
    rec.attach(playwright_trace_blob(rec.events))
    return False


def search_catalog(rec: TraceRecorder) -> bool:
    spec = "catalog/search.spec.ts:5:5"
    start_log(rec, spec, "catalog › searches, filters and sorts")
    grinders = [
        {"sku": "hand-grinder-c2", "name": "Hand grinder C2", "price": 8900},
        {"sku": "burr-grinder-e65", "name": "Burr grinder E65", "price": 24900},
        {"sku": "flat-burr-grinder-64", "name": "Flat burr grinder 64", "price": 39900},
        {"sku": "travel-grinder-mini", "name": "Travel grinder mini", "price": 12900},
    ]
    with rec.step("Open the catalog"):
        rec.goto("/catalog")
        rec.console("info", "[vite] connected.")
        categories = ["brewers", "grinders", "beans", "accessories"]
        rec.request("GET", "/api/categories", status=200, response_body={"items": categories})
        rec.request("GET", "/api/products?page=1", status=200, response_body={"total": 148, "page": 1, "per_page": 24})
        rec.expect("toHaveCount", 24, 24, selector=".product-card")
    with rec.step("Search for espresso"):
        rec.fill("[data-test=search]", "esp")
        rec.request("GET", "/api/search?q=esp", status=200, response_body={"total": 19, "q": "esp"})
        rec.fill("[data-test=search]", "espresso")
        rec.request("GET", "/api/search?q=espresso", status=200, response_body={"total": 12, "q": "espresso"})
        rec.navigated("/catalog?q=espresso", status=None)
        rec.expect("toHaveText", "12 results", "12 results", selector="[data-test=result-count]")
    with rec.step("Filter by grinders"):
        rec.click("[data-test=filter-grinders]")
        rec.request(
            "GET",
            "/api/search?q=espresso&category=grinders",
            status=200,
            response_body={"total": 4, "items": grinders},
        )
        rec.expect("toHaveCount", 4, 4, selector=".product-card")
    with rec.step("Sort by price"):
        rec.action("selectOption", selector="[data-test=sort]", value="price-asc")
        rec.request(
            "GET",
            "/api/search?q=espresso&category=grinders&sort=price_asc",
            status=200,
            response_body={"total": 4, "items": sorted(grinders, key=lambda item: item["price"])},
        )
        rec.expect("toHaveText", "$89.00", "$89.00", selector=".product-card >> nth=0 >> .price")
    with rec.step("Open the cheapest grinder"):
        rec.click(".product-card >> nth=0")
        rec.navigated("/products/hand-grinder-c2", status=None)
        product = {**PRODUCTS["hand-grinder-c2"], "in_stock": True, "rating": 4.7}
        rec.request("GET", "/api/products/hand-grinder-c2", status=200, response_body=product)
        rec.request(
            "GET",
            "/api/products/hand-grinder-c2/reviews?page=1",
            status=200,
            response_body={"total": 38, "average": 4.7},
        )
        rec.expect("toHaveText", "Hand grinder C2", "Hand grinder C2", selector="h1")
        rec.screenshot("product.png", page_screenshot("search-catalog", cards=1))
    with rec.step("Check the empty state"):
        rec.goto("/catalog?q=zzzz-no-match")
        rec.request("GET", "/api/search?q=zzzz-no-match", status=200, response_body={"total": 0, "items": []})
        rec.expect("toBeVisible", True, True, selector="[data-test=empty-state]")
    end_log(rec, True, spec)
    rec.attach(har_blob(rec.events))
    return True


def cart_persistence(rec: TraceRecorder) -> bool:
    spec = "cart/persistence.spec.ts:6:5"
    start_log(rec, spec, "cart › survives a reload and signing in again")
    email = "e2e+cart@brew.test"
    cart: list[str] = []
    with rec.step("Sign in"):
        sign_in(rec, email)
        rec.expect("toBeVisible", True, True, selector="[data-test=dashboard]")
    with rec.step("Add two items"):
        add_to_cart(rec, "pour-over-set", cart)
        add_to_cart(rec, "paper-filters-100", cart)
    subtotal = sum(PRODUCTS[sku]["price"] for sku in cart)
    items = [{"sku": sku, "qty": 1, "price": PRODUCTS[sku]["price"]} for sku in cart]
    with rec.step("Reload the page"):
        rec.action("reload", message="page.reload()")
        rec.goto("/products/paper-filters-100", via="")
        rec.request("GET", "/api/cart", status=200, response_body={"items": items, "subtotal": subtotal})
        rec.console("info", "[cart] restored 2 items from localStorage")
        rec.expect("toHaveText", "2", "2", selector="[data-test=cart-badge]")
    with rec.step("Sign out and back in"):
        rec.click("[data-test=sign-out]")
        rec.request("POST", "/api/auth/logout", status=204)
        rec.navigated("/login", status=None)
        rec.fill("[name=email]", email)
        rec.fill("[name=password]", "********")
        rec.click("button[type=submit]")
        rec.request(
            "POST",
            "/api/auth/login",
            status=200,
            body={"email": email},
            response_body={"user_id": rec.uid(f"user/{email}"), "email": email, "session": "set-cookie"},
        )
        rec.request(
            "GET",
            "/api/cart",
            status=200,
            response_body={"items": items, "subtotal": subtotal, "merged_from_guest": False},
        )
        rec.expect("toHaveText", "2", "2", selector="[data-test=cart-badge]")
    with rec.step("Remove the filters"):
        rec.goto("/cart")
        rec.request("GET", "/api/cart", status=200, response_body={"items": items, "subtotal": subtotal})
        rec.click("[data-test=remove-paper-filters-100]")
        remaining = PRODUCTS["pour-over-set"]["price"]
        rec.request(
            "DELETE",
            "/api/cart/items/paper-filters-100",
            status=200,
            response_body={"items": 1, "subtotal": remaining},
        )
        rec.expect("toHaveText", money(remaining), money(remaining), selector="[data-test=cart-total]")
        rec.screenshot("cart.png", page_screenshot("cart-persistence", cards=1, banner="info"))
    end_log(rec, True, spec)
    return True


MODEL = "claude-sonnet-4-5"
AGENT_TOOLS = ("get_customer", "lookup_order", "issue_refund", "escalate_to_human")


def support_agent_refund(rec: TraceRecorder) -> bool:
    """The agent copies '#10482' from the ticket, lookup_order 404s, and it retries the same call."""
    rec.log("agent run: support-agent-refund · ticket T-2291 · model " + MODEL, after_ms=0)
    ticket = "Hi, I was charged twice for order #10482. Please refund one of the charges. — Dana"
    customer = {
        "customer_id": "cus_8812",
        "email": "dana@example.com",
        "orders": ["ORD-010482", "ORD-010377"],
    }
    transcript: list[dict[str, Any]] = [
        {"role": "system", "content": "You are Brew & Co.'s support agent. Use the tools."},
        {"role": "user", "content": ticket},
    ]
    messages = 2
    tokens_in = 1840
    with rec.step("Turn 1: triage the ticket"):
        rec.log("ticket T-2291 from dana@example.com: " + ticket)
        rec.llm_request(MODEL, messages=messages, tools=AGENT_TOOLS)
        rec.llm_response(
            MODEL,
            input_tokens=tokens_in,
            output_tokens=61,
            stop_reason="tool_use",
            text="I'll find the customer first.",
            tool_calls=[{"tool": "get_customer", "arguments": {"email": "dana@example.com"}}],
        )
        call = rec.tool_call("get_customer", {"email": "dana@example.com"})
        rec.request(
            "GET",
            "/api/support/customers?email=dana%40example.com",
            status=200,
            response_body=customer,
            browser=False,
        )
        rec.tool_result("get_customer", call, result=customer)
        transcript.append({"role": "tool", "tool": "get_customer", "content": customer})
        messages += 2
    error = {"type": "NotFound", "status": 404, "message": "no order with id '#10482'"}
    lookup_args = {"order_id": "#10482"}
    for attempt in range(1, 5):
        title = f"Turn {attempt + 1}: " + (
            "look up the order" if attempt == 1 else f"lookup_order again (repeat {attempt - 1})"
        )
        with rec.step(title):
            tokens_in += 240
            rec.llm_request(MODEL, messages=messages, tools=AGENT_TOOLS)
            if attempt == 3:
                rec.llm_response(
                    MODEL,
                    error={"status": 529, "type": "overloaded_error", "message": "Overloaded"},
                    duration_ms=620,
                )
                rec.retry(2, "overloaded_error", after_ms=1000)
                rec.llm_request(MODEL, messages=messages, tools=AGENT_TOOLS)
            text = (
                "The customer mentions order #10482; let me look it up."
                if attempt == 1
                else "Let me look that order up again."
            )
            rec.llm_response(
                MODEL,
                input_tokens=tokens_in,
                output_tokens=48,
                stop_reason="tool_use",
                text=text,
                tool_calls=[{"tool": "lookup_order", "arguments": lookup_args}],
            )
            call = rec.tool_call("lookup_order", lookup_args)
            rec.request(
                "GET",
                "/api/support/orders/%2310482",
                status=404,
                duration_ms=rec.jitter(35),
                response_body={"error": "not_found", "message": "no order with id '#10482'"},
                browser=False,
            )
            rec.tool_result("lookup_order", call, error=error)
            transcript.append({"role": "assistant", "content": text, "tool_call": lookup_args})
            transcript.append({"role": "tool", "tool": "lookup_order", "error": error})
            messages += 2
    with rec.step("Loop guard"):
        rec.error(
            "LoopDetected",
            "lookup_order was called 4 times with the same arguments "
            '{"order_id": "#10482"} and failed each time; stopping the run',
        )
        rec.log("run stopped by the loop guard; ticket T-2291 handed to a human", level="warning")
    rec.log(f"agent run failed after {messages} messages, {rec.step_count} steps", level="error", after_ms=20)
    document = {"ticket": "T-2291", "model": MODEL, "messages": transcript}
    data = (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()
    rec.attach(Blob(kind="transcript", name="transcript.json", content_type="application/json", data=data))
    return False


# --------------------------------------------------------------------------------------------
# the catalogue of demo bundles


@dataclass(frozen=True)
class Demo:
    filename: str
    slug: str
    title: str
    start: str
    source: str
    code_sha: str
    pr_number: int | None
    signature: str | None
    run: Callable[[TraceRecorder], bool]


DEMOS: tuple[Demo, ...] = (
    Demo(
        "01-checkout-coupon-passed.tar.gz",
        "checkout-coupon",
        "Checkout with a coupon",
        "2026-11-20T11:05:00Z",
        "pr",
        "e4f9a20",
        4522,
        None,
        lambda rec: checkout_coupon(rec, broken=False),
    ),
    Demo(
        "02-stripe-subscription-upgrade-failed.tar.gz",
        "stripe-subscription-upgrade",
        "Upgrade a subscription with Stripe",
        "2026-11-20T11:30:00Z",
        "pr",
        "7c81d3e",
        4530,
        "webhook-404",
        stripe_subscription_upgrade,
    ),
    Demo(
        "03-checkout-coupon-failed.tar.gz",
        "checkout-coupon",
        "Checkout with a coupon",
        "2026-11-20T09:45:00Z",
        "pr",
        "a1b2c3d",
        4521,
        "step-7: assertion url",
        lambda rec: checkout_coupon(rec, broken=True),
    ),
    Demo(
        "04-login-sso-timeout.tar.gz",
        "login-sso",
        "Sign in with SSO",
        "2026-11-20T10:10:00Z",
        "schedule",
        "5d0e6b1",
        None,
        "timeout-step-4",
        login_sso,
    ),
    Demo(
        "05-search-catalog-passed.tar.gz",
        "search-catalog",
        "Search the catalog",
        "2026-11-20T09:20:00Z",
        "schedule",
        "5d0e6b1",
        None,
        None,
        search_catalog,
    ),
    Demo(
        "06-cart-persistence-passed.tar.gz",
        "cart-persistence",
        "Cart survives a reload and signing in again",
        "2026-11-20T09:00:00Z",
        "manual",
        "9f3a7c2",
        None,
        None,
        cart_persistence,
    ),
    Demo(
        "07-support-agent-refund-failed.tar.gz",
        "support-agent-refund",
        "Support agent handles a refund request",
        "2026-11-20T10:35:00Z",
        "manual",
        "b08e41f",
        None,
        "tool_error:lookup_order",
        support_agent_refund,
    ),
)


def build_demo(demo: Demo) -> bytes:
    rec = TraceRecorder(name=demo.filename.removesuffix(".tar.gz"), start_ms=epoch_ms(demo.start))
    passed = demo.run(rec)
    return rec.bundle(
        scenario_slug=demo.slug,
        scenario_title=demo.title,
        status="passed" if passed else "failed",
        source=demo.source,
        code_sha=demo.code_sha,
        pr_number=demo.pr_number,
        failure_signature=demo.signature,
    )


def check_demo(demo: Demo, data: bytes) -> str:
    """Check one demo bundle strictly; return a one-line description."""
    contents = check_bundle(data)
    count = len(contents.events)
    if not MIN_EVENTS <= count <= MAX_EVENTS:
        raise BundleError(f"{demo.filename}: {count} events, outside {MIN_EVENTS}..{MAX_EVENTS}")
    if not 1 <= len(contents.blobs) <= 3:
        raise BundleError(f"{demo.filename}: {len(contents.blobs)} blobs, expected 1..3")
    expected = ["events.ndjson", "summary.json"] + [f"blobs/{sha}" for sha in contents.blobs]
    if sorted(contents.members) != sorted(expected):
        raise BundleError(f"{demo.filename}: members {contents.members}")
    summary = contents.summary
    return (
        f"{demo.filename:46} {summary['status']:7} {summary.get('failure_signature') or '-':24} "
        f"{count:4} events {len(data):6} bytes  sha256 {hashlib.sha256(data).hexdigest()[:12]}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="where to write the demo bundles")
    parser.add_argument("--check", action="store_true", help="only verify the bundles in --out are current")
    parser.add_argument(
        "--big", nargs=2, metavar=("N_EVENTS", "OUT_PATH"), help="write one synthetic bundle of N events"
    )
    args = parser.parse_args(argv)

    if args.big:
        n_events, out_path = int(args.big[0]), Path(args.big[1])
        data = build_big_bundle(n_events)
        contents = check_bundle(data)
        write_bundle(out_path, data)
        print(f"{out_path}: {len(contents.events)} events, {len(data)} bytes")
        return 0

    stale: list[str] = []
    for demo in DEMOS:
        data = build_demo(demo)
        line = check_demo(demo, data)
        target = args.out / demo.filename
        if args.check:
            if not target.is_file() or target.read_bytes() != data:
                stale.append(demo.filename)
        else:
            write_bundle(target, data)
        print(line)
    if args.check and stale:
        print("stale or missing (rerun scripts/make_demo_bundles.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
