// The demo page of `scc dev` in headless Chromium: two pages join the same
// channel, one sends a message, the other shows it. The Go test starts the
// dev service and sets SCC_PORT and CHROMIUM (Debian's /usr/bin/chromium).
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {chromium} from 'playwright-core';
import net from 'node:net';

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

// A raw WebSocket client, to send what no well-behaved client would.
async function rawClient(port) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  let buf = Buffer.alloc(0);
  let ended = false;
  const waiters = [];
  const wake = () => waiters.splice(0).forEach((w) => w());
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); wake(); });
  sock.on('close', () => { ended = true; wake(); });
  sock.on('error', () => {});
  const more = () => {
    if (ended) throw new Error('connection closed');
    return new Promise((resolve) => waiters.push(resolve));
  };
  sock.write(`GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\n` +
    'Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  while (buf.indexOf('\r\n\r\n') < 0) await more();
  assert.match(buf.toString('latin1', 0, 12), / 101/);
  buf = buf.subarray(buf.indexOf('\r\n\r\n') + 4);
  const send = (op, payload) => {
    const mask = Buffer.from([7, 1, 3, 5]);
    const head = payload.length < 126 ? Buffer.from([0x80 | op, 0x80 | payload.length])
      : Buffer.from([0x80 | op, 0x80 | 126, payload.length >> 8, payload.length & 255]);
    const body = Buffer.from(payload.map((b, i) => b ^ mask[i & 3]));
    sock.write(Buffer.concat([head, mask, body]));
  };
  const next = async () => { // one server frame: {op, payload}
    for (;;) {
      if (buf.length >= 2) {
        let n = buf[1] & 0x7f, at = 2;
        if (n === 126) { n = buf.length >= 4 ? buf.readUInt16BE(2) : Infinity; at = 4; }
        if (buf.length >= at + n) {
          const f = {op: buf[0] & 0x0f, payload: buf.subarray(at, at + n)};
          buf = buf.subarray(at + n);
          return f;
        }
      }
      await more();
    }
  };
  const handshake = async () => {
    send(1, Buffer.from('{"event":"#handshake","data":{"authToken":null},"cid":1}'));
    for (;;) {
      const f = await next();
      if (f.op === 1 && f.payload.toString().includes('"rid":1')) return;
    }
  };
  return {send, next, handshake, close: () => sock.destroy()};
}

const publishOf = (text) => Buffer.concat([
  Buffer.from('{"event":"#publish","data":{"channel":"lobby","data":{"from":"raw","text":"'),
  text, Buffer.from('"}},"cid":2}')]);

test('a publisher of invalid UTF-8 cannot disconnect a browser', async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await (await browser.newContext()).newPage();
    // Count every WebSocket close the page sees: Chromium fails a
    // connection that receives a text frame that is not UTF-8.
    await page.addInitScript(() => {
      window.__closes = 0;
      const WS = window.WebSocket;
      window.WebSocket = function (...args) {
        const ws = new WS(...args);
        ws.addEventListener('close', () => { window.__closes++; });
        return ws;
      };
      window.WebSocket.prototype = WS.prototype;
      Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
    });
    await page.goto(url);
    await page.waitForSelector('#status.connected', {timeout: 10000});
    await page.waitForSelector('body[data-joined="lobby"]', {timeout: 10000});

    // In a text frame: the publisher is failed with 1007; nothing is relayed.
    const evil = await rawClient(Number(process.env.SCC_PORT));
    await evil.handshake();
    evil.send(1, publishOf(Buffer.from([0xff, 0xfe])));
    let f;
    do { f = await evil.next(); } while (f.op !== 8);
    assert.equal(f.payload.readUInt16BE(0), 1007);
    evil.close();

    // In a binary frame (read as text, as socketcluster-server reads it):
    // acknowledged, and delivered with U+FFFD.
    const bin = await rawClient(Number(process.env.SCC_PORT));
    await bin.handshake();
    bin.send(2, publishOf(Buffer.from([0x61, 0xff, 0x62])));
    for (;;) {
      f = await bin.next();
      if (f.op === 1 && f.payload.toString().includes('"rid":2')) break;
    }
    assert.doesNotMatch(f.payload.toString(), /error/);
    await page.locator('#log li.msg', {hasText: 'a\ufffdb'}).waitFor({timeout: 10000});
    bin.close();

    // The page is still connected and still receives.
    await page.fill('#name', 'carol');
    await page.fill('#text', 'still here');
    await page.click('#send');
    await page.locator('#log li.msg', {hasText: 'still here'}).waitFor({timeout: 10000});
    assert.equal(await page.evaluate(() => window.__closes), 0);
    await page.waitForSelector('#status.connected', {timeout: 1000});
  } finally {
    await browser.close();
  }
});
