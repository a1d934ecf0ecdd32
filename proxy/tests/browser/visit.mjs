// Loads a page over HTTPS as a browser does, twice, each in a fresh context (its own HTTP
// cache, so the second load reaches Portier), and prints, per load, the protocol negotiated
// (`nextHopProtocol`), the status and Portier's cache headers. The name resolves to
// 127.0.0.1. Over TCP (ALPN, HTTP/2: `:authority` and no Host field) the test's self-signed
// certificate is accepted as such; given its key's SPKI hash, QUIC is forced for the origin
// instead (`--origin-to-force-quic-on`, what a remembered `Alt-Svc` does), and the certificate
// accepted by that key (QUIC takes no "ignore certificate errors").
// Usage: node visit.mjs https://a.test:PORT/path [SPKI_SHA256_BASE64]
import { launch } from './launch.mjs';

const [url, spki] = process.argv.slice(2);
if (!url) {
  console.error('usage: node visit.mjs URL [SPKI]');
  process.exit(2);
}
const u = new URL(url);
const args = [`--host-resolver-rules=MAP ${u.hostname} 127.0.0.1`];
if (spki) {
  args.push(`--origin-to-force-quic-on=${u.hostname}:${u.port}`, `--ignore-certificate-errors-spki-list=${spki}`, '--enable-quic');
}
const browser = await launch(args, { quic: Boolean(spki) });
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
      altSvc: h['alt-svc'] || null,
      body: await page.evaluate(() => document.body.textContent),
    });
    await context.close();
  }
  console.log(JSON.stringify({ browser: browser.version(), loads }));
} finally {
  await browser.close();
}
