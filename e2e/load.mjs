// The official SocketCluster client (19.x, from
// test/interop's packages) subscribing and publishing through a gateway
// while a test changes the cluster under it: the e2e suite (e2e/) and the
// fault suite (test/faults), through testutil.StartJSLoad.
//
// Env: SCC_HOST, SCC_PORT (the gateway), SCC_CLIENTS subscribers over
// SCC_CHANNELS channels, SCC_RATE publishes per second from 4 publishers.
// Prints "ready" once every subscriber is subscribed and publishing has
// begun; on the line "stop <ms since epoch>" on stdin it stops publishing,
// waits for the last deliveries and prints one JSON line of counts, with
// reconnect times measured from that instant (the suite's action).
import {createRequire} from 'node:module';
import {monitorEventLoopDelay} from 'node:perf_hooks';
import readline from 'node:readline';

// The clients are installed once, for the interop tests (scripts/deps.sh).
const require = createRequire(new URL('../test/interop/package.json', import.meta.url));
const scc = require('socketcluster-client');

const host = process.env.SCC_HOST;
const port = Number(process.env.SCC_PORT);
const N = Number(process.env.SCC_CLIENTS || 300);
const CHANNELS = Number(process.env.SCC_CHANNELS || 30);
const RATE = Number(process.env.SCC_RATE || 200);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(new Date().toISOString(), 'load:', ...a);

// After a connection that just ended without a close code that says come
// back at once (4000 and the like), a client waits 200-400 ms, then 1.5
// times longer after each failed attempt, up to 2 s: the fault suite's Go
// clients do the same, so both kinds measure the cluster and not two
// different retry policies. (socketcluster-client's own default waits
// 10-20 s.)
function client() {
  return scc.create({hostname: host, port, ackTimeout: 10000,
    autoReconnectOptions: {initialDelay: 200, randomness: 200, multiplier: 1.5, maxDelay: 2000}});
}

// A subscriber's record: when it was subscribed (intervals from a
// 'subscribe' to the close that ended it), what it got and when.
function subscriber(i) {
  const s = client();
  const r = {s, ch: 'e2e-' + (i % CHANNELS), got: new Map(), gotAt: new Map(), intervals: [], closes: [], aborts: [], frameAt: null};
  (async () => {
    for await (const e of s.listener('close')) {
      // When the close frame was read, if it was: the 'close' event comes
      // a round trip later, once TCP is gone.
      const t = r.frameAt ?? Date.now();
      r.frameAt = null;
      r.closes.push({t, code: e.code});
      const open = r.intervals[r.intervals.length - 1];
      if (open && open.end === undefined) open.end = t;
    }
  })();
  (async () => { for await (const _ of s.listener('connectAbort')) r.aborts.push(Date.now()); })();
  (async () => {
    for await (const _ of s.listener('connect')) {
      // ws answers a close frame by calling its own close().
      const ws = s.transport && s.transport.socket;
      if (ws && typeof ws.close === 'function') {
        const close = ws.close.bind(ws);
        ws.close = (...a) => { if (r.frameAt === null) r.frameAt = Date.now(); return close(...a); };
      }
    }
  })();
  const chan = s.subscribe(r.ch);
  (async () => { for await (const _ of chan.listener('subscribe')) r.intervals.push({start: Date.now()}); })();
  (async () => {
    for await (const d of chan) {
      r.got.set(d.seq, (r.got.get(d.seq) || 0) + 1);
      if (!r.gotAt.has(d.seq)) r.gotAt.set(d.seq, Date.now());
    }
  })();
  r.chan = chan;
  return r;
}

const subs = [];
for (let i = 0; i < N; i++) {
  subs.push(subscriber(i));
  if (i % 100 === 99) await sleep(50);
}
const t0 = Date.now();
while (subs.some((r) => r.chan.state !== 'subscribed')) {
  if (Date.now() - t0 > 60000) {
    log(`${subs.filter((r) => r.chan.state === 'subscribed').length}/${N} subscribed after 60 s`);
    process.exit(2);
  }
  await sleep(50);
}

const pubs = [0, 1, 2, 3].map(() => client());
for (const p of pubs) if (p.state !== 'open') await p.listener('connect').once();
const acked = new Map(); // seq -> {t, ch}
let failed = 0, sent = 0, publishing = true;
const publisher = (async () => {
  const start = Date.now();
  while (publishing) {
    const due = Math.floor((Date.now() - start) * RATE / 1000);
    for (; sent < due; sent++) {
      const seq = sent, ch = 'e2e-' + (seq % CHANNELS);
      pubs[seq % pubs.length].invokePublish(ch, {seq}).then(
        () => acked.set(seq, {t: Date.now(), ch}), () => { failed++; });
    }
    await sleep(5);
  }
})();
const loopDelay = monitorEventLoopDelay({resolution: 10});
loopDelay.enable();
await sleep(1000);
console.log('ready');
log(`${N} subscribed on ${CHANNELS} channels, publishing ${RATE}/s`);

const rl = readline.createInterface({input: process.stdin});
let actionAt = 0;
for await (const line of rl) {
  const m = /^stop (\d+)/.exec(line);
  if (m) { actionAt = Number(m[1]); break; }
}
publishing = false;
await publisher;
await sleep(3000); // the last deliveries and acks
loopDelay.disable();

// A message is owed to a subscriber when its publish was acked while the
// subscriber was subscribed, more than the margin after its subscribe and
// before its close: timestamps here are good to about twice the event
// loop's worst lag (bytes polled just late wait out that turn and the
// next), and an ack can outrun the close or the subscribe by a round trip.
const loopMaxMs = Math.round(loopDelay.max / 1e6);
const margin = Math.max(100, 2 * loopMaxMs);
const out = {clients: N, channels: CHANNELS, published: sent, acked: acked.size, failed,
  loopDelayMaxMs: loopMaxMs, marginMs: margin, delivered: 0, owed: 0, lost: 0, duplicates: 0,
  atEdges: 0, whileAway: 0, reconnected: 0, notBack: 0, backWithinMs: 0, codes: {}, lostSamples: [],
  firstCloseMs: 0, lastCloseMs: 0, backAfterCloseMs: 0, retried: 0};
const byChannel = new Map();
for (const [seq, a] of acked) {
  if (!byChannel.has(a.ch)) byChannel.set(a.ch, []);
  byChannel.get(a.ch).push([seq, a.t]);
}
for (const r of subs) {
  for (const [, n] of r.got) { out.delivered += n; if (n > 1) out.duplicates += n - 1; }
  for (const [seq, t] of byChannel.get(r.ch) || []) {
    const iv = r.intervals.find((v) => t >= v.start && (v.end === undefined || t <= v.end));
    const inner = iv && t >= iv.start + margin && (iv.end === undefined || t <= iv.end - margin);
    if (inner) out.owed++;
    if (r.got.has(seq)) continue;
    if (inner) {
      out.lost++;
      if (out.lostSamples.length < 10) out.lostSamples.push({ch: r.ch, seq, ackedAt: t, interval: iv});
    } else if (iv) out.atEdges++;
    else out.whileAway++;
  }
  // Reconnected after the action: back once a message arrives on its
  // latest subscription.
  const closes = r.closes.filter((c) => c.t >= actionAt);
  if (closes.length === 0) continue;
  out.reconnected++;
  const first = closes[0].t - actionAt, lastClose = closes[closes.length - 1].t;
  out.firstCloseMs = out.reconnected === 1 ? first : Math.min(out.firstCloseMs, first);
  out.lastCloseMs = Math.max(out.lastCloseMs, lastClose - actionAt);
  if (r.aborts.some((t) => t >= actionAt)) out.retried++;
  for (const c of closes) out.codes[c.code] = (out.codes[c.code] || 0) + 1;
  const last = r.intervals[r.intervals.length - 1];
  const back = last && last.start >= closes[closes.length - 1].t &&
    [...r.gotAt.values()].filter((t) => t >= last.start).sort((a, b) => a - b)[0];
  if (!back) out.notBack++;
  else {
    out.backWithinMs = Math.max(out.backWithinMs, back - actionAt);
    out.backAfterCloseMs = Math.max(out.backAfterCloseMs, back - lastClose);
  }
}
console.log(JSON.stringify(out));
for (const c of [...subs.map((r) => r.s), ...pubs]) c.disconnect();
process.exit(0);
