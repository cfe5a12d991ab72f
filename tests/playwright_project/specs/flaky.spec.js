// @ts-check
const { test, expect } = require('@playwright/test');

test.describe('warm-up', () => {
  test.describe.configure({ retries: 2 });

  // Flaky: the first visit with a key answers 503, the retry passes.
  test('the page loads once the cache is warm', async ({ page }) => {
    await page.goto(`/flaky?key=${process.env.FLAKY_KEY}`);
    await expect(page.locator('#result')).toHaveText('Ready');
  });
});
