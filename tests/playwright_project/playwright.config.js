// @ts-check
// A real Playwright Test project: its specs drive Debian's Chromium against the ticket shop
// (tests/apps/ticketshop.py, at APP_URL) and molar-playwright-reporter uploads every attempt to the
// Molar server at MOLAR_URL. tests/integrations/test_playwright_reporter.py runs it; by hand:
//   python -m tests.apps.ticketshop --port 8123 &
//   APP_URL=http://127.0.0.1:8123 MOLAR_URL=http://127.0.0.1:4173 npx playwright test
const { defineConfig } = require('@playwright/test');

// One key per run, shared with the workers (they inherit the environment): the flaky page fails on
// the first visit with a key and passes on the next, so the first attempt fails and the retry passes.
process.env.FLAKY_KEY ??= `run-${Date.now()}-${process.pid}`;

module.exports = defineConfig({
  testDir: './specs',
  outputDir: process.env.PW_OUTPUT_DIR || 'test-results',
  fullyParallel: false,
  workers: 2,
  timeout: 15_000,
  expect: { timeout: 4_000 }, // the machine may be busy: a passing check must not time out
  reporter: [['list'], ['molar-playwright-reporter']],
  use: {
    baseURL: process.env.APP_URL || 'http://127.0.0.1:8123',
    trace: 'on',
    screenshot: 'only-on-failure',
    actionTimeout: 4_000,
    launchOptions: {
      executablePath: process.env.MOLAR_CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox'],
    },
  },
  projects: [{ name: 'chromium', use: { browserName: 'chromium' } }],
});
