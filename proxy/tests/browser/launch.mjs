// Debian's Chromium, headless, without the background traffic a closed network refuses
// (shared by the browser checks). QUIC is off unless `quic` is asked for (the HTTP/3 check):
// the other checks measure TCP.
import { chromium } from 'playwright-core';

export function launch(extraArgs = [], { quic = false } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', ...(quic ? [] : ['--disable-quic']), ...extraArgs],
  });
}
