// @ts-check
// The Playwright Test run `serve --demo` shows: demo/*.spec.js against the demo shop
// (src/molar_mcp/demo/shop, at APP_URL), recorded by scripts/record_playwright_demo.py with
// molar-playwright-reporter/record into the folder the package ships.
const { defineConfig } = require('@playwright/test');

module.exports = defineConfig({
  testDir: './demo',
  outputDir: process.env.PW_OUTPUT_DIR || 'test-results',
  workers: 1,
  timeout: 15_000,
  expect: { timeout: 2_000 },
  reporter: [['list'], ['molar-playwright-reporter/record', { runName: 'Demo shop · Playwright Test' }]],
  use: {
    baseURL: process.env.APP_URL || 'http://127.0.0.1:8000',
    trace: 'on',
    screenshot: 'only-on-failure',
    actionTimeout: 2_000,
    viewport: { width: 800, height: 600 },
    launchOptions: {
      executablePath: process.env.MOLAR_CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox'],
    },
  },
  projects: [{ name: 'chromium', use: { browserName: 'chromium' } }],
});
