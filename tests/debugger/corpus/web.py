"""Labelled browser-test traces: checkout, billing and catalogue flows of the demo shop."""

from __future__ import annotations

from .builder import ORIGIN, Case, Run


def _signed_in(run: Run) -> None:
    with run.step("Open the shop"):
        run.goto("/")
        run.fetch("GET", "/api/me", 200)


def checkout_webhook_404() -> Case:
    run = Run()
    with run.step("Open pricing"):
        run.goto("/pricing")
    with run.step("Choose the Pro plan"):
        run.click("[data-plan=pro]")
        run.fetch("POST", "/api/checkout/sessions", 200)
    with run.step("Fill card details"):
        run.fill("#card-number", "4242 4242 4242 4242")
        run.fill("#card-expiry", "12/34")
    with run.step("Submit payment"):
        run.click("button[type=submit]")
        run.fetch("POST", "/api/payments", 200)
        run.emit("navigation", url=f"{ORIGIN}/billing/processing", status=200)
    with run.step("Stripe sends the webhook"):
        run.fetch("POST", "/api/webhooks/stripe", 404)
    with run.step("Wait for confirmation"):
        run.fetch("GET", "/api/subscriptions/sub_1NqT8xLkd2", 200, body={"status": "pending"})
    with run.step("Land on the success page", ok=False):
        run.expect("toHaveURL", f"{ORIGIN}/billing/success", f"{ORIGIN}/billing/pending")
    return run.case("webhook-404-at-step-5-breaks-the-final-url-assertion-at-step-7", "http_error", 5)


def coupon_total_wrong() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Add a mug to the cart"):
        run.click("[data-sku=mug-01] >> text=Add")
        run.fetch("POST", "/api/cart", 200)
    with run.step("Apply SAVE10"):
        run.fill("#coupon", "SAVE10")
        run.fetch("POST", "/api/coupons/apply", 200, body={"discount": 0})
    with run.step("Check the total", ok=False):
        run.expect("toHaveText", "$90.00", "$100.00", ".order-total")
    return run.case("coupon-total-mismatch-is-an-assertion-failure", "assertion_failed", 4)


def favicon_noise() -> Case:
    run = Run()
    with run.step("Open the shop"):
        run.goto("/")
        run.fetch("GET", "/favicon.ico", 404, resource_type="image")
    with run.step("Search for mugs"):
        run.fill("#search", "mug")
        run.fetch("GET", "/api/products?q=mug", 200)
    with run.step("Check the result count", ok=False):
        run.expect("toHaveCount", 4, 3, ".product-card")
    return run.case("a-favicon-404-is-not-blamed-for-an-assertion", "assertion_failed", 3)


def tolerated_api_404() -> Case:
    """An optional API the page tolerates answers 404 two steps before an unrelated assertion."""
    run = Run()
    with run.step("Open the shop"):
        run.goto("/")
        run.fetch("GET", "/api/recommendations", 404)
    with run.step("Add a mug"):
        run.click("[data-sku=mug-01]")
        run.fetch("POST", "/api/cart", 200)
    with run.step("Check the cart badge", ok=False):
        run.expect("toHaveText", "2", "1", ".cart-badge")
    return run.case("a-tolerated-api-404-is-a-side-finding-not-the-cause", "assertion_failed", 3)


def cart_500_same_step() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open a product"):
        run.goto("/products/mug-01")
    with run.step("Add to cart", ok=False):
        run.click("text=Add to cart")
        run.fetch("POST", "/api/cart", 500)
        run.expect("toHaveText", "1", "0", ".cart-count")
    return run.case("cart-500-in-the-failing-step-is-the-cause", "http_error", 3)


def me_401_before_login() -> Case:
    run = Run()
    with run.step("Open the app"):
        run.goto("/")
        run.fetch("GET", "/api/me", 401)
    with run.step("Log in"):
        run.fill("#email", "ada@example.test")
        run.click("text=Sign in")
        run.fetch("POST", "/api/sessions", 200)
        run.fetch("GET", "/api/me", 200)
    with run.step("Open settings"):
        run.goto("/settings")
    with run.step("Check the plan", ok=False):
        run.expect("toHaveText", "Pro", "Free", ".plan-badge")
    return run.case("a-401-the-app-later-retried-successfully-is-not-the-cause", "assertion_failed", 4)


def plans_503_mentioned() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Load plans"):
        run.fetch("GET", "/api/plans", 503)
    with run.step("Load invoices"):
        run.fetch("GET", "/api/invoices/inv_8842", 404)
    with run.step("Check the plans grid", ok=False):
        run.expect(
            "toHaveCount",
            3,
            0,
            ".plans-grid .plan",
            message="plans grid empty: GET /api/plans returned no plans",
        )
    return run.case("a-503-the-assertion-mentions-beats-the-last-failing-response", "http_error", 2)


def connection_refused() -> Case:
    run = Run()
    with run.step("Open the shop", ok=False):
        run.emit("action", line="page.goto('/')", action="goto", url="http://localhost:3000/")
        run.fetch("GET", "http://localhost:3000/", None, resource_type="document")
        run.error("Error", "page.goto: net::ERR_CONNECTION_REFUSED at http://localhost:3000/")
    return run.case("dev-server-down-is-a-network-failure", "network_failure", 1)


def order_connection_reset() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Fill shipping"):
        run.fill("#address", "1 Analytical Way")
    with run.step("Place the order", ok=False):
        run.click("#place-order")
        run.fetch("POST", "/api/orders", 200, error="net::ERR_CONNECTION_RESET")
        run.expect("toBeVisible", True, False, ".order-confirmation")
    return run.case("a-reset-connection-on-place-order-is-a-network-failure", "network_failure", 3)


def payment_hangs() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Add to cart"):
        run.fetch("POST", "/api/cart", 200)
    with run.step("Fill card"):
        run.fill("#card-number", "4242 4242 4242 4242")
    with run.step("Pay", ok=False):
        run.click("#pay")
        run.fetch("GET", "https://www.google-analytics.com/g/collect?v=2", None)
        run.fetch("POST", "/api/payments", None)
        run.error("TimeoutError", "Test timeout of 30000ms exceeded.")
    return run.case("a-payment-request-that-never-answers-explains-the-test-timeout", "timeout", 4)


def dashboard_load_timeout() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open the dashboard", ok=False):
        run.emit("action", line="page.goto('/dashboard')", action="goto", url=f"{ORIGIN}/dashboard")
        run.fetch("GET", "/dashboard", 200, resource_type="document")
        run.fetch("POST", "https://o1.ingest.sentry.io/api/7/envelope/", None)
        run.error(
            "TimeoutError",
            "page.goto: Timeout 30000ms exceeded.\nCall log:\n"
            f'  - navigating to "{ORIGIN}/dashboard", waiting until "load"',
        )
    return run.case("a-page-that-never-fires-load-is-a-timeout", "timeout", 2)


def pay_button_missing() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open checkout"):
        run.goto("/checkout")
    with run.step("Pay", ok=False):
        run.error(
            "TimeoutError",
            "locator.click: Timeout 30000ms exceeded.\nCall log:\n  - waiting for locator('[data-test=pay]')",
        )
    return run.case("waiting-for-a-locator-that-never-appears-is-selector-not-found", "selector_not_found", 3)


def coupon_field_missing() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Apply a coupon", ok=False):
        run.fill("#coupon-code", "SAVE10", ok=False, message="No node found for selector: #coupon-code")
    return run.case("a-failed-fill-on-a-missing-node-is-selector-not-found", "selector_not_found", 2)


def cart_500_hides_checkout() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open a product"):
        run.goto("/products/mug-01")
    with run.step("Add to cart and check out", ok=False):
        run.click("text=Add to cart")
        run.fetch("POST", "/api/cart", 500)
        run.error(
            "TimeoutError",
            "locator.click: Timeout 30000ms exceeded.\nCall log:\n"
            "  - waiting for getByRole('button', { name: 'Checkout' })",
        )
    return run.case("a-500-explains-the-missing-checkout-button", "http_error", 3)


def coupon_script_typeerror() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Add to cart"):
        run.fetch("POST", "/api/cart", 200)
    with run.step("Apply the coupon"):
        run.fill("#coupon", "SAVE10")
        run.click("text=Apply")
        run.fetch("POST", "/api/coupons/apply", 200)
        run.error("TypeError", "Cannot read properties of undefined (reading 'discount')", source="page")
    with run.step("Check the total", ok=False):
        run.expect("toHaveText", "$90.00", "$100.00", ".order-total")
    return run.case("a-page-typeerror-one-step-before-the-failed-total", "js_exception", 3)


def uncaught_reference_error() -> Case:
    run = Run()
    with run.step("Open the shop"):
        run.goto("/")
    with run.step("Open checkout", ok=False):
        run.goto("/checkout")
        run.console("error", "Uncaught ReferenceError: analytics is not defined\n    at checkout.js:12:5")
        run.error(
            "TimeoutError",
            "locator.fill: Timeout 30000ms exceeded.\nCall log:\n  - waiting for locator('#email')",
        )
    return run.case("an-uncaught-console-error-explains-the-missing-form", "js_exception", 2)


def stripe_key_console_error() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Add to cart"):
        run.fetch("POST", "/api/cart", 200)
    with run.step("Open checkout"):
        run.goto("/checkout")
    with run.step("Fill shipping"):
        run.fill("#address", "1 Analytical Way")
    with run.step("Mount the payment form", ok=False):
        run.console("error", "Stripe.js: publishable key is missing. Set STRIPE_PUBLISHABLE_KEY.")
    return run.case("a-console-error-is-all-a-bare-failed-step-has", "console_error", 5)


def pricing_404() -> Case:
    run = Run()
    with run.step("Open the shop"):
        run.goto("/")
    with run.step("Open pricing", ok=False):
        run.goto("/pricing", 404)
        run.expect("toHaveText", "Pricing", "Page not found", "h1")
    return run.case("a-pricing-page-that-answers-404-is-a-navigation-error", "navigation_error", 2)


def checkout_aborted() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open checkout", ok=False):
        run.emit("action", line="page.goto('/checkout')", action="goto", url=f"{ORIGIN}/checkout")
        run.fetch("GET", "/checkout", 200, error="net::ERR_ABORTED", resource_type="document")
        run.error("Error", f"page.goto: net::ERR_ABORTED at {ORIGIN}/checkout")
    return run.case("an-aborted-goto-is-a-navigation-error", "navigation_error", 2)


def flaky_add_to_cart() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open a product"):
        run.goto("/products/mug-01")
    with run.step("Add to cart"):
        run.click("text=Add to cart")
        run.expect("toHaveText", "1", "0", ".cart-count")
        run.retry(1, "expect failed")
        run.click("text=Add to cart")
        run.fetch("POST", "/api/cart", 200)
        run.expect("toHaveText", "1", "1", ".cart-count")
    return run.case("a-step-that-passes-on-retry-is-flaky", "flaky", 3, status="passed")


def flaky_then_failure() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Search"):
        run.fill("#search", "mug")
        run.expect("toHaveCount", 4, 0, ".product-card")
        run.retry(1, "expect failed")
        run.expect("toHaveCount", 4, 4, ".product-card")
    with run.step("Open the mug"):
        run.goto("/products/mug-01")
    with run.step("Add to cart"):
        run.fetch("POST", "/api/cart", 200)
    with run.step("Check the total", ok=False):
        run.expect("toHaveText", "$12.00", "$0.00", ".order-total")
    return run.case("a-real-failure-outranks-an-earlier-flaky-step", "assertion_failed", 5)


def timeout_after_retry() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open billing"):
        run.goto("/billing")
    with run.step("Refresh invoices"):
        run.fetch("GET", "/api/invoices", 200)
    with run.step("Wait for the refreshed status", ok=False):
        message = 'page.waitForResponse: Timeout 10000ms exceeded while waiting for event "response"'
        run.click("#refresh-status")
        run.error("TimeoutError", message)
        run.retry(1, "TimeoutError")
        run.click("#refresh-status")
        run.error("TimeoutError", message)
    return run.case("a-step-that-times-out-again-after-retry-is-a-timeout-not-flaky", "timeout", 4)


def clean_checkout() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Add to cart"):
        run.click("text=Add to cart")
        run.fetch("POST", "/api/cart", 200)
        run.expect("toHaveText", "1", "1", ".cart-count")
    with run.step("Pay"):
        run.fetch("POST", "/api/payments", 200)
        run.expect("toHaveURL", f"{ORIGIN}/thanks", f"{ORIGIN}/thanks")
    return run.case("a-clean-checkout-with-no-status-has-no-findings", None, None, status=None)


def passing_with_noise() -> Case:
    run = Run()
    with run.step("Open the shop"):
        run.goto("/")
        run.fetch("GET", "/favicon.ico", 404, resource_type="image")
        run.console("warning", "[perf] long task: 212 ms")
        run.error("TypeError", "Cannot read properties of null (reading 'focus')", source="page")
    with run.step("Search"):
        run.fetch("GET", "/api/products?q=mug", 200)
        run.expect("toHaveCount", 4, 4, ".product-card")
    return run.case("a-passed-run-with-favicon-404-and-console-noise-has-no-findings", None, None, "passed")


def whole_test_retry() -> Case:
    run = Run()
    with run.step("Open the shop"):
        run.goto("/")
    with run.step("Check the banner", ok=False):
        run.expect("toBeVisible", True, False, ".promo-banner")
    run.retry(1, "test failed; retrying the whole test", whole_test=True)
    run.restart()
    with run.step("Open the shop"):
        run.goto("/")
    with run.step("Check the banner"):
        run.expect("toBeVisible", True, True, ".promo-banner")
    return run.case("a-whole-test-retry-that-passes-is-flaky-at-the-step-that-failed", "flaky", 2, "passed")


def failed_by_status_only() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open the catalogue"):
        run.goto("/products")
    with run.step("Open a product"):
        run.goto("/products/mug-01")
    return run.case("a-run-failed-by-status-alone-is-an-unexplained-failure-at-its-last-step", "step_failed", 3)


def bare_failed_step() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open checkout"):
        run.goto("/checkout")
    with run.step("Fill the shipping address", ok=False):
        run.fill("#address", "1 Analytical Way")
    return run.case("a-failed-step-with-no-evidence-is-step-failed", "step_failed", 3)


def fixture_error() -> Case:
    run = Run()
    with run.step("Seed a user", ok=False):
        run.error("Error", "fixture 'seededUser' failed: duplicate key value violates unique constraint")
    return run.case("an-unrecognised-runner-error-is-step-failed", "step_failed", 1)


def expect_as_runner_error() -> Case:
    run = Run()
    _signed_in(run)
    for title in ("Open billing", "Choose Pro", "Pay", "Wait for the webhook"):
        with run.step(title):
            run.fetch("GET", "/api/billing", 200)
    with run.step("Check the plan badge", ok=False):
        run.error(
            "Error",
            'expect(locator(\'.plan-badge\')).toHaveText(expected) failed\nExpected: "Pro"\nReceived: "Free"',
        )
    return run.case("a-failed-expect-reported-only-as-an-error-is-an-assertion-failure", "assertion_failed", 6)


def pending_beacon() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open the cart"):
        run.goto("/cart")
    with run.step("Check the cart", ok=False):
        run.fetch("POST", "https://www.google-analytics.com/g/collect?v=2&tid=G-1", None)
        run.expect("toHaveCount", 1, 0, ".cart-line")
    return run.case("a-pending-analytics-beacon-is-not-blamed", "assertion_failed", 3)


def cdn_dns_failure() -> Case:
    run = Run()
    with run.step("Open the shop"):
        run.goto("/")
    with run.step("Open a product"):
        run.goto("/products/mug-01")
        run.fetch("GET", "https://cdn.example-static.test/widgets/buy.js", 200, error="net::ERR_NAME_NOT_RESOLVED")
        run.console("error", "Failed to load resource: net::ERR_NAME_NOT_RESOLVED")
    with run.step("Buy now", ok=False):
        run.error(
            "TimeoutError",
            "locator.click: Timeout 30000ms exceeded.\nCall log:\n"
            "  - waiting for getByRole('button', { name: 'Buy now' })",
        )
    return run.case("a-dns-failure-one-step-before-the-missing-button-is-the-cause", "network_failure", 2)


def cart_503_retried() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open a product"):
        run.goto("/products/mug-01")
    with run.step("Add to cart"):
        run.fetch("GET", "/api/cart", 503)
        run.fetch("GET", "/api/cart", 200)
    with run.step("Check the total", ok=False):
        run.expect("toHaveText", "$12.00", "$24.00", ".order-total")
    return run.case("a-503-the-app-retried-successfully-is-not-the-cause", "assertion_failed", 4)


def soft_assertions() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Open settings"):
        run.goto("/settings")
    with run.step("Check the name", ok=False):
        run.expect("toHaveValue", "Ada", "", "#name")
    with run.step("Save"):
        run.fetch("PUT", "/api/me", 200)
    with run.step("Check the email", ok=False):
        run.expect("toHaveValue", "ada@example.test", "", "#email")
    return run.case("with-soft-assertions-the-first-failure-wins", "assertion_failed", 3)


def requests_without_step_ids() -> Case:
    run = Run()
    _signed_in(run)
    with run.step("Load invoices"):
        run.click("text=Invoices")
        run.fetch("GET", "/api/invoices", 500, outside_step=True)
    with run.step("Check the invoice rows", ok=False):
        run.expect("toHaveCount", 3, 0, ".invoice-row")
    return run.case("responses-without-a-step-id-belong-to-the-running-step", "http_error", 2)


def explicit_step_numbers() -> Case:
    run = Run(number_steps=True)
    _signed_in(run)
    for title in ("Open the catalogue", "Filter by mugs"):
        with run.step(title):
            run.fetch("GET", "/api/products", 200)
    with run.step("Check the filter chip", ok=False):
        run.expect("toHaveText", "Mugs", "All", ".filter-chip")
    return run.case("explicit-step-numbers-are-used-as-given", "assertion_failed", 4)


WEB_CASES: tuple[Case, ...] = tuple(
    build()
    for build in (
        checkout_webhook_404,
        coupon_total_wrong,
        favicon_noise,
        tolerated_api_404,
        cart_500_same_step,
        me_401_before_login,
        plans_503_mentioned,
        connection_refused,
        order_connection_reset,
        payment_hangs,
        dashboard_load_timeout,
        pay_button_missing,
        coupon_field_missing,
        cart_500_hides_checkout,
        coupon_script_typeerror,
        uncaught_reference_error,
        stripe_key_console_error,
        pricing_404,
        checkout_aborted,
        flaky_add_to_cart,
        flaky_then_failure,
        timeout_after_retry,
        clean_checkout,
        passing_with_noise,
        whole_test_retry,
        failed_by_status_only,
        bare_failed_step,
        fixture_error,
        expect_as_runner_error,
        pending_beacon,
        cdn_dns_failure,
        cart_503_retried,
        soft_assertions,
        requests_without_step_ids,
        explicit_step_numbers,
    )
)
