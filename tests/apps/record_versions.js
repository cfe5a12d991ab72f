// Records one library trace of the ticket shop with whatever playwright-core release `require` finds
// (tests/apps/record_versions.py installs one per release into a cache folder and runs this with it):
// the wrong-text page opened, a quantity typed, an "In stock" wait that times out on "Sold out", and a
// click on a button the page does not have. Driven in Debian's Chromium.
//   node record_versions.js BASE_URL OUT.zip
const { chromium } = require('playwright-core');

async function main() {
  const [base, out] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.MOLAR_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
    headless: true,
  });
  const context = await browser.newContext({ viewport: { width: 640, height: 480 } });
  await context.tracing.start({ screenshots: false, snapshots: true, sources: false, title: 'old-release' });
  const page = await context.newPage();
  let failed = 0;
  try {
    await page.goto(base + '/event/sold-out');
    await page.fill('#qty', '2');
    try {
      await page.waitForSelector('#stock:has-text("In stock")', { timeout: 1200 });
    } catch (e) {
      failed += 1;
    }
    try {
      await page.click('#add-to-cart', { timeout: 1200 });
    } catch (e) {
      failed += 1;
    }
  } finally {
    await context.tracing.stop({ path: out });
    await browser.close();
  }
  console.log(`recorded ${out} (${failed} failing calls)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
