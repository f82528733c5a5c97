// The demo page of `scc dev` in headless Chromium: two pages join the same
// channel, one sends a message, the other shows it. The Go test starts the
// dev service and sets SCC_PORT and CHROMIUM (Debian's /usr/bin/chromium).
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {chromium} from 'playwright-core';

const url = `http://127.0.0.1:${process.env.SCC_PORT}/`;

test('two pages chat over a channel', async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    const a = await ctxA.newPage();
    const b = await ctxB.newPage();
    await a.goto(url);
    await b.goto(url);
    for (const p of [a, b]) {
      await p.waitForSelector('#status.connected', {timeout: 10000});
      await p.waitForSelector('body[data-joined="lobby"]', {timeout: 10000});
    }
    await a.fill('#name', 'alice');
    await a.fill('#text', 'hello from page A');
    await a.click('#send');
    const line = b.locator('#log li.msg', {hasText: 'hello from page A'});
    await line.waitFor({timeout: 10000});
    assert.match(await line.textContent(), /alice\s*hello from page A/);
    // The sender sees its own message too (it is subscribed).
    await a.locator('#log li.msg', {hasText: 'hello from page A'}).waitFor({timeout: 10000});
    if (process.env.SCC_SCREENSHOT) await b.screenshot({path: process.env.SCC_SCREENSHOT});
  } finally {
    await browser.close();
  }
});
