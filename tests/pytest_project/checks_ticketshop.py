"""Browser checks of the ticket shop (tests/apps/ticketshop.py at --base-url): one passes, two fail."""

from __future__ import annotations

from playwright.sync_api import Page, expect

QUICK_MS = 1_500


def test_the_home_page_lists_every_event(page: Page) -> None:
    page.goto("/")
    expect(page.locator("#events li")).to_have_count(3)


def test_a_sold_out_event_shows_tickets_in_stock(page: Page) -> None:
    page.goto("/event/sold-out")
    page.locator("#qty").fill("2")
    print("chose 2 tickets")
    expect(page.locator("#stock")).to_have_text("In stock", timeout=QUICK_MS)


class TestCheckout:
    def test_pays_for_the_tickets(self, page: Page) -> None:
        page.goto("/checkout")
        page.locator("#pay").click()
        expect(page.locator("#status")).to_have_text("Paid", timeout=QUICK_MS)


def test_a_failure_outside_the_browser() -> None:
    assert 1 + 1 == 3, "arithmetic is broken"
