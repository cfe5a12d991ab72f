// @ts-check
// The clinic (tests/apps/clinic.py) at CLINIC_URL: one test per case of tests/corpus/cases.py
// (source `pwtest`, app `clinic`); each fails the way its label says. QUICK: the wait of a step meant to fail.
const { test, expect } = require('@playwright/test');

const QUICK = 1_500;
const LONG = 6_000;
const key = () => Math.random().toString(16).slice(2, 14);
test.use({ baseURL: process.env.CLINIC_URL });

test.describe('clinic', () => {
  test('passing', async ({ page }) => {
    await page.goto('/');
    await expect(page.locator('#doctors li')).toHaveCount(2);
  });
  test('queue-passing', async ({ page }) => {
    await page.goto(`/queue?key=${key()}`);
    await expect(page.locator('#ahead')).toHaveText('3 ahead of you');
  });
  test('slow-passing', async ({ page }) => {
    await page.goto('/results?ms=400');
    await expect(page.locator('#result')).toHaveText('All values normal', { timeout: LONG });
  });
  test('banner-404-then-assert', async ({ page }) => {
    await page.goto('/', { waitUntil: 'networkidle' });
    await expect(page.locator('#doctors li')).toHaveCount(3, { timeout: QUICK });
  });
  test('patient-404', async ({ page }) => {
    await page.goto('/patient/p-999', { waitUntil: 'networkidle' });
    await expect(page.locator('#patient-name')).toHaveText('Ada Lovelace', { timeout: QUICK });
  });
  test('booking-422', async ({ page }) => {
    await page.goto('/book?slot=past');
    await page.locator('#confirm').click();
    await expect(page.locator('#outcome')).toHaveText('Booked', { timeout: QUICK });
  });
  test('booking-503', async ({ page }) => {
    await page.goto('/book?slot=full');
    await page.locator('#confirm').click();
    await expect(page.locator('#outcome')).toHaveText('Booked', { timeout: QUICK });
  });
  test('banner-404-then-422', async ({ page }) => {
    await page.goto('/', { waitUntil: 'networkidle' });
    await page.goto('/book?slot=past');
    await page.locator('#confirm').click();
    await expect(page.locator('#outcome')).toHaveText('Booked', { timeout: QUICK });
  });
  test('spinner-overlay', async ({ page }) => {
    await page.goto('/loading');
    await page.locator('#start').click({ timeout: QUICK });
  });
  test('next-disabled', async ({ page }) => {
    await page.goto('/consent');
    await page.locator('#next').click({ timeout: QUICK });
  });
  test('book-hidden', async ({ page }) => {
    await page.goto('/doctor/lind', { waitUntil: 'networkidle' });
    await page.locator('#book').click({ timeout: QUICK });
  });
  test('missing-selector', async ({ page }) => {
    await page.goto('/doctor/okafor', { waitUntil: 'networkidle' });
    await page.locator('#cancel').click({ timeout: QUICK });
  });
  test('results-pending', async ({ page }) => {
    await page.goto(`/results?ms=${LONG}`);
    await expect(page.locator('#result')).toHaveText('All values normal', { timeout: QUICK });
  });
  test('slow-navigation', async ({ page }) => {
    await page.goto(`/waiting?ms=${LONG}`, { timeout: QUICK });
  });
  test('reminder-refused', async ({ page }) => {
    await page.goto('/reminders');
    await page.locator('#send').click();
    await expect(page.locator('#sent')).toHaveText('Sent', { timeout: QUICK });
  });
  test('invoice-js', async ({ page }) => {
    await page.goto('/invoice');
    await page.locator('#print').click();
    await expect(page.locator('#lines')).toHaveText(/\w/, { timeout: QUICK });
  });
  test('queue-then-wrong', async ({ page }) => {
    await page.goto(`/queue?key=${key()}`);
    await expect(page.locator('#ahead')).toHaveText('3 ahead of you');
    await page.goto('/doctor/okafor', { waitUntil: 'networkidle' });
    await expect(page.locator('#name')).toHaveText('Dr. Lind', { timeout: QUICK });
  });
});
