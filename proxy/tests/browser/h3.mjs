// Loads a page over HTTP/3 as Chromium does once it knows the origin speaks it: QUIC forced
// for the origin (`--origin-to-force-quic-on`, what a remembered `Alt-Svc` does), the test's
// self-signed certificate accepted by its key (QUIC takes no "ignore certificate errors"),
// twice in fresh contexts (own HTTP caches, so the second load reaches Portier). Prints per
// load the protocol (`nextHopProtocol`), the status and Portier's cache headers.
// Usage: node h3.mjs https://a.test:PORT/path SPKI_SHA256_BASE64
import { launch } from './launch.mjs';

const [url, spki] = process.argv.slice(2);
if (!url || !spki) {
  console.error('usage: node h3.mjs URL SPKI');
  process.exit(2);
}
const u = new URL(url);
const browser = await launch([
  `--host-resolver-rules=MAP ${u.hostname} 127.0.0.1`,
  `--origin-to-force-quic-on=${u.hostname}:${u.port}`,
  `--ignore-certificate-errors-spki-list=${spki}`,
  '--enable-quic',
], { quic: true });
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
      altSvc: h['alt-svc'] || null,
      body: await page.evaluate(() => document.body.textContent),
    });
    await context.close();
  }
  console.log(JSON.stringify({ browser: browser.version(), loads }));
} finally {
  await browser.close();
}
