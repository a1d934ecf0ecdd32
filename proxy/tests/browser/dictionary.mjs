// RFC 9842 in a real browser: loads a page whose script is a versioned bundle (its response
// says `Use-As-Dictionary`), then asks the test to deploy the next version (a line on stdout,
// answered on stdin), reloads in the same profile and reports how each load's script arrived:
// its Content-Encoding, what Chromium sent (`Available-Dictionary`, `Accept-Encoding`), its
// transfer and decoded sizes (Resource Timing), and the script's own result (it ran).
// Usage: node dictionary.mjs http://localhost:PORT/
import { launch } from './launch.mjs';
import { createInterface } from 'node:readline';

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: node dictionary.mjs URL');
  process.exit(2);
}
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const browser = await launch();
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const loads = [];
  for (let i = 0; i < 2; i++) {
    const scripts = [];
    const onResponse = async (resp) => {
      if (!resp.url().includes('/assets/')) return;
      const req = await resp.request().allHeaders();
      const h = await resp.allHeaders();
      scripts.push({
        url: new URL(resp.url()).pathname,
        status: resp.status(),
        contentEncoding: h['content-encoding'] || null,
        useAsDictionary: h['use-as-dictionary'] || null,
        xCache: h['x-cache'] || null,
        availableDictionary: req['available-dictionary'] || null,
        acceptEncoding: req['accept-encoding'] || null,
      });
    };
    page.on('response', onResponse);
    if (i === 0) await page.goto(url, { waitUntil: 'load' });
    else await page.reload({ waitUntil: 'load' });
    page.off('response', onResponse);
    const timing = await page.evaluate(() => performance.getEntriesByType('resource')
      .filter((e) => e.name.includes('/assets/'))
      .map((e) => ({ url: new URL(e.name).pathname, transferSize: e.transferSize, encodedBodySize: e.encodedBodySize, decodedBodySize: e.decodedBodySize })));
    loads.push({ scripts, timing, result: await page.evaluate(() => window.bundleResult ?? null) });
    if (i === 0) {
      // Chromium writes the dictionary after the response is complete; give it a moment.
      await page.waitForTimeout(1500);
      console.log('deploy');
      await lines.next();
    }
  }
  console.log(JSON.stringify({ browser: browser.version(), loads }));
} finally {
  await browser.close();
}
