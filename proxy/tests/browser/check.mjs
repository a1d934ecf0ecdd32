// Loads `portier demo`'s page in Debian's headless Chromium, records every network response
// through the DevTools protocol (what the Network panel shows), reloads, and prints a JSON
// report on stdout. Usage: node check.mjs BASE_URL SCREENSHOT.png
import { launch } from './launch.mjs';

const [base, shot] = process.argv.slice(2);
if (!base || !shot) {
  console.error('usage: node check.mjs BASE_URL SCREENSHOT.png');
  process.exit(2);
}

const browser = await launch();
try {
  const context = await browser.newContext(); // a fresh profile
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  let current = null;
  const requests = new Map();
  cdp.on('Network.requestWillBeSent', (e) => {
    requests.set(e.requestId, e.request.url);
    current.sent.push(new URL(e.request.url).pathname);
  });
  cdp.on('Network.requestServedFromCache', (e) => current.fromMemoryCache.push(new URL(requests.get(e.requestId) || 'http://x/?').pathname));
  cdp.on('Network.responseReceived', (e) => {
    const h = {};
    for (const [k, v] of Object.entries(e.response.headers)) h[k.toLowerCase()] = v;
    current.responses.push({
      path: new URL(e.response.url).pathname + new URL(e.response.url).search,
      status: e.response.status,
      headers: h,
      fromDiskCache: !!e.response.fromDiskCache,
      fromMemoryCache: !!e.response.fromMemoryCache,
      requestHeaders: e.response.requestHeaders || null,
    });
  });
  cdp.on('Network.responseReceivedExtraInfo', (e) => {
    // The raw status and headers on the wire (a revalidation's 304 shows here).
    current.wire.push({ statusCode: e.statusCode, headers: Object.fromEntries(Object.entries(e.headers).map(([k, v]) => [k.toLowerCase(), v])) });
  });

  const loads = [];
  const visit = async (how) => {
    current = { how, sent: [], fromMemoryCache: [], responses: [], wire: [] };
    if (how === 'load') await page.goto(base + '/', { waitUntil: 'load' });
    else await page.reload({ waitUntil: 'load' });
    await page.waitForFunction(() => document.body.dataset.status !== undefined, null, { timeout: 10000 });
    await page.waitForTimeout(300);
    current.table = await page.$$eval('#headers tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.header, r.cells[1].textContent])));
    current.apiStatusSeenByScript = await page.evaluate(() => document.body.dataset.status);
    loads.push(current);
  };
  await visit('load');
  await visit('reload');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ browser: browser.version(), loads }, null, 2));
} finally {
  await browser.close();
}
