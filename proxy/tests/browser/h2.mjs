// Loads a page over HTTPS as a browser does (ALPN, HTTP/2, `:authority` and no Host field),
// twice, each in a fresh context (its own HTTP cache, so the second load reaches Portier), and
// prints, per load, the protocol negotiated (`nextHopProtocol`), the status and Portier's cache
// headers. The name resolves to 127.0.0.1; the test's self-signed certificate is accepted.
// Usage: node h2.mjs https://a.test:PORT/path
import { launch } from './launch.mjs';

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: node h2.mjs URL');
  process.exit(2);
}
const host = new URL(url).hostname;
const browser = await launch([`--host-resolver-rules=MAP ${host} 127.0.0.1`]);
try {
  const loads = [];
  for (let i = 0; i < 2; i++) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const resp = await page.goto(url, { waitUntil: 'load' });
    const h = await resp.allHeaders();
    loads.push({
      status: resp.status(),
      protocol: await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol),
      xCache: h['x-cache'] || null,
      cacheStatus: h['cache-status'] || null,
      body: await page.evaluate(() => document.body.textContent),
    });
    await context.close();
  }
  console.log(JSON.stringify({ browser: browser.version(), loads }));
} finally {
  await browser.close();
}
