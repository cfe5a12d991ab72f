// @ts-check
const { test, expect } = require('@playwright/test');

// HTTP 500: /api/checkout fails and the page says "Payment failed".
test('pays for the tickets', async ({ page }) => {
  await page.goto('/checkout');
  await page.locator('#pay').click();
  await expect(page.locator('#status')).toHaveText('Paid');
});

// JS exception: the seat map throws a TypeError and shows nothing.
test('shows the seat map', async ({ page }) => {
  await page.goto('/crash');
  await page.locator('#go').click();
  await expect(page.locator('#seats')).toHaveText(/\d+/);
});
