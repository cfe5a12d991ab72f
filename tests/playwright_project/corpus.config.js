// @ts-check
// The recorded corpus's Playwright Test runs (tests/corpus, source `pwtest`): corpus/*.spec.js against
// the task board and the clinic (tests/apps, at BOARD_URL and CLINIC_URL), recorded by
// scripts/record_corpus.py with molar-playwright-reporter/record. Traces keep actions, network, console
// and snapshots (Playwright records the network only with them), no screenshots or sources: the
// recordings are checked in.
const { defineConfig } = require('@playwright/test');

module.exports = defineConfig({
  testDir: './corpus',
  outputDir: process.env.PW_OUTPUT_DIR || 'test-results',
  fullyParallel: true,
  workers: 2,
  retries: 0,
  timeout: 20_000,
  expect: { timeout: 4_000 },
  reporter: [['list'], ['molar-playwright-reporter/record', { runName: 'Corpus · Playwright Test' }]],
  use: {
    trace: { mode: 'on', screenshots: false, snapshots: true, sources: false },
    screenshot: 'off',
    actionTimeout: 4_000,
    viewport: { width: 800, height: 600 },
    launchOptions: {
      executablePath: process.env.MOLAR_CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox'],
    },
  },
  projects: [{ name: 'chromium', use: { browserName: 'chromium' } }],
});
