// @ts-check
// The task board (tests/apps/board.py) at BOARD_URL: one test per case of tests/corpus/cases.py
// (source `pwtest`, app `board`); each fails the way its label says. QUICK: the wait of a step meant to fail.
const { test, expect } = require('@playwright/test');

const QUICK = 1_500;
const LONG = 6_000;
const key = () => Math.random().toString(16).slice(2, 14);
test.use({ baseURL: process.env.BOARD_URL });

test.describe('board', () => {
  test('passing', async ({ page }) => {
    await page.goto('/');
    await expect(page.locator('#tasks li')).toHaveCount(3);
  });
  test('retry-passing', async ({ page }) => {
    await page.goto(`/retry?key=${key()}`);
    await expect(page.locator('#status')).toHaveText('Synced');
  });
  test('slow-passing', async ({ page }) => {
    await page.goto('/report?ms=400');
    await expect(page.locator('#total')).toHaveText('3', { timeout: LONG });
  });
  test('wrong-count', async ({ page }) => {
    await page.goto('/stats');
    await expect(page.locator('#count')).toHaveText('4 open tasks', { timeout: QUICK });
  });
  test('avatar-404-then-assert', async ({ page }) => {
    await page.goto('/', { waitUntil: 'networkidle' });
    await expect(page.locator('#tasks li')).toHaveCount(4, { timeout: QUICK });
  });
  test('task-404', async ({ page }) => {
    await page.goto('/task/t404', { waitUntil: 'networkidle' });
    await expect(page.locator('#title')).toHaveText('Write the release notes', { timeout: QUICK });
  });
  test('close-409', async ({ page }) => {
    await page.goto('/task/locked', { waitUntil: 'networkidle' });
    await page.locator('#close').click();
    await expect(page.locator('#state')).toHaveText('closed', { timeout: QUICK });
  });
  test('create-500', async ({ page }) => {
    await page.goto('/new');
    await page.locator('#title').fill('boom: ship it');
    await page.locator('#create').click();
    await expect(page.locator('#msg')).toHaveText('Created', { timeout: QUICK });
  });
  test('avatar-404-then-409', async ({ page }) => {
    await page.goto('/', { waitUntil: 'networkidle' });
    await page.goto('/task/locked', { waitUntil: 'networkidle' });
    await page.locator('#close').click();
    await expect(page.locator('#state')).toHaveText('closed', { timeout: QUICK });
  });
  test('modal-overlay', async ({ page }) => {
    await page.goto('/archive');
    await page.locator('#archive').click({ timeout: QUICK });
  });
  test('save-disabled', async ({ page }) => {
    await page.goto('/settings');
    await page.locator('#save').click({ timeout: QUICK });
  });
  test('advanced-hidden', async ({ page }) => {
    await page.goto('/settings');
    await page.locator('#advanced').click({ timeout: QUICK });
  });
  test('missing-selector', async ({ page }) => {
    await page.goto('/task/t1', { waitUntil: 'networkidle' });
    await page.locator('#assign').click({ timeout: QUICK });
  });
  test('report-pending', async ({ page }) => {
    await page.goto(`/report?ms=${LONG}`);
    await expect(page.locator('#total')).toHaveText('3', { timeout: QUICK });
  });
  test('slow-navigation', async ({ page }) => {
    await page.goto(`/slowpage?ms=${LONG}`, { timeout: QUICK });
  });
  test('wait-response', async ({ page }) => {
    await page.goto(`/report?ms=${LONG}`);
    await page.waitForResponse(/\/api\/report/, { timeout: QUICK });
  });
  test('sync-refused', async ({ page }) => {
    await page.goto('/sync');
    await page.locator('#sync').click();
    await expect(page.locator('#sync-state')).toHaveText('Synced', { timeout: QUICK });
  });
  test('chart-js', async ({ page }) => {
    await page.goto('/chart');
    await page.locator('#draw').click();
    await expect(page.locator('#points')).toHaveText(/\d/, { timeout: QUICK });
  });
  test('retry-then-wrong', async ({ page }) => {
    await page.goto(`/retry?key=${key()}`);
    await expect(page.locator('#status')).toHaveText('Synced');
    await page.goto('/stats');
    await expect(page.locator('#count')).toHaveText('5 open tasks', { timeout: QUICK });
  });
});
