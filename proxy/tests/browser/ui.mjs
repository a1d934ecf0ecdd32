// Opens Portier's admin /ui page in Debian's headless Chromium, waits for it to render its
// data, reads the numbers and tables from the DOM, purges one URL through the page's form,
// and prints a JSON report. Usage: node ui.mjs ADMIN_BASE_URL SCREENSHOT.png PURGE_URL
import { launch } from './launch.mjs';

const [base, shot, purgeUrl] = process.argv.slice(2);
if (!base || !shot || !purgeUrl) {
  console.error('usage: node ui.mjs ADMIN_BASE_URL SCREENSHOT.png PURGE_URL');
  process.exit(2);
}
const browser = await launch();
try {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(base + '/ui', { waitUntil: 'load' });
  await page.waitForFunction(() => Number(document.body.dataset.loaded || 0) >= 1, null, { timeout: 10000 });
  const table = (id) => page.$$eval(`#${id} tbody tr`, (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  const report = {
    hitRatio: await page.$eval('#hit-ratio', (e) => ({ text: e.textContent, value: Number(e.dataset.value) })),
    entries: await page.$eval('#entries', (e) => Number(e.dataset.value)),
    memory: await page.$eval('#memory', (e) => e.textContent),
    saved: await page.$eval('#saved', (e) => e.textContent),
    chartPoints: await page.$eval('#chart', (e) => Number(e.dataset.points || 0)),
    topHits: await table('top-hits'),
    topMisses: await table('top-misses'),
    pools: await table('pools'),
    error: await page.$eval('#error', (e) => e.textContent),
  };
  await page.screenshot({ path: shot, fullPage: true });
  await page.fill('#purge-value', purgeUrl);
  await page.click('#purge button[type=submit]');
  await page.waitForFunction(() => document.getElementById('purge-result').dataset.status !== undefined, null, { timeout: 10000 });
  report.purge = await page.$eval('#purge-result', (e) => ({ status: Number(e.dataset.status), text: e.textContent }));
  report.errors = errors;
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
