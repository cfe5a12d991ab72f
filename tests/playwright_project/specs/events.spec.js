// @ts-check
const { test, expect } = require('@playwright/test');

test('the home page lists every event', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('#events li')).toHaveCount(3);
  await test.step('open an event', async () => {
    await page.getByRole('link', { name: 'Jazz night' }).click();
    await expect(page.locator('#stock')).toHaveText('In stock');
  });
});

test.describe('event page', () => {
  // Wrong text: the page says "Sold out".
  test('shows tickets in stock', async ({ page }) => {
    await test.step('open the sold-out concert', async () => {
      await page.goto('/event/sold-out');
      await test.step('choose two tickets', async () => {
        await page.locator('#qty').fill('2');
      });
    });
    await expect(page.locator('#stock')).toHaveText('In stock');
  });

  // Missing selector: there is no add-to-cart button.
  test('adds tickets to the cart', async ({ page }) => {
    await page.goto('/event/jazz-night');
    await page.locator('#add-to-cart').click();
  });
});
