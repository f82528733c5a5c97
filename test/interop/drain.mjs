// A worker drained under load, seen by the official client (19.x): run by
// TestDrainUnderLoad (drain_test.go), which starts the cluster behind a
// gateway and drains a worker when this script asks (SCC_CONTROL/drain).
// It prints one JSON line of counts for the Go test to check.
import scc from 'socketcluster-client';
import {monitorEventLoopDelay} from 'node:perf_hooks';

const port = Number(process.env.SCC_PORT);
const control = process.env.SCC_CONTROL;
const N = Number(process.env.SCC_CLIENTS || 3000);
const CHANNELS = 100;
const RATE = Number(process.env.SCC_RATE || 300); // publishes per second
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(new Date().toISOString(), ...a);

const host = process.env.SCC_HOST || '127.0.0.1';
function client(p = port) {
  return scc.create({hostname: host, port: p, ackTimeout: 10000,
    autoReconnectOptions: {initialDelay: 1000, randomness: 1000, multiplier: 1.5, maxDelay: 5000}});
}

// Subscribers: each on one channel, recording what it gets and when its
// connection closes and comes back.
const subs = [];
for (let i = 0; i < N; i++) {
  const s = client();
  const rec = {s, ch: 'drain-' + (i % CHANNELS), got: new Set(), gotAt: new Map(), frameAt: [], closes: [], connects: [], connectings: [], firstAfter: []};
  (async () => {
    for await (const e of s.listener('close')) {
      const t = Date.now();
      // Seen at the close frame, when it was read; else at the event.
      const seen = rec.frameAt.length > rec.closes.length ? rec.frameAt[rec.closes.length] : t;
      rec.closes.push({t: seen, code: e.code});
      while (rec.frameAt.length > rec.closes.length) rec.frameAt.pop();
    }
  })();
  (async () => { for await (const _ of s.listener('connecting')) rec.connectings.push(Date.now()); })();
  (async () => {
    for await (const _ of s.listener('connect')) {
      rec.connects.push(Date.now());
      // The moment the close frame is read: the client's 'close' event
      // comes only once the TCP connection is gone, a round trip later.
      // ws answers a close frame by calling its own close().
      const ws = s.transport && s.transport.socket;
      if (ws && typeof ws.close === 'function') {
        const close = ws.close.bind(ws);
        ws.close = (...a) => { if (rec.frameAt.length === rec.closes.length) rec.frameAt.push(Date.now()); return close(...a); };
      }
    }
  })();
  const chan = s.subscribe(rec.ch);
  (async () => {
    for await (const d of chan) {
      rec.got.add(d.seq);
      rec.gotAt.set(d.seq, Date.now());
      if (rec.connects.length > 1 && rec.firstAfter.length < rec.connects.length - 1) rec.firstAfter.push(Date.now());
    }
  })();
  rec.chan = chan;
  subs.push(rec);
  if (i % 200 === 199) await sleep(20); // a steady ramp, not one burst
}
const t0 = Date.now();
while (subs.some((r) => r.chan.state !== 'subscribed')) {
  if (Date.now() - t0 > 60000) throw new Error('subscribers not all subscribed in 60 s');
  await sleep(50);
}
log(`${N} subscribed`);

// Publishers on the workers that stay (SCC_PUB_PORTS): one on the drained
// worker would reconnect and its channels go quiet meanwhile.
// seq -> ack time (or failure).
const pubPorts = process.env.SCC_PUB_PORTS.split(',').map(Number);
const pubs = [0, 1, 2, 3].map((i) => client(pubPorts[i % pubPorts.length]));
for (const p of pubs) if (p.state !== 'open') await p.listener('connect').once();
const acked = new Map(); // seq -> {t, ch}
let failed = 0, sent = 0;
let publishing = true;
const publisher = (async () => {
  const start = Date.now();
  while (publishing) {
    const due = Math.floor((Date.now() - start) * RATE / 1000);
    for (; sent < due; sent++) {
      const seq = sent, ch = 'drain-' + (seq % CHANNELS);
      pubs[seq % pubs.length].invokePublish(ch, {seq}).then(
        () => acked.set(seq, {t: Date.now(), ch}), () => { failed++; });
    }
    await sleep(5);
  }
})();

await sleep(2000);
// How late this event loop runs its callbacks during the drain: the
// precision of every timestamp below.
const loopDelay = monitorEventLoopDelay({resolution: 10});
loopDelay.enable();
const drainAt = Date.now();
const res = await fetch(control + '/drain', {method: 'POST'});
if (!res.ok) throw new Error('drain request: ' + res.status);
log('drain started');
await sleep(7000);
publishing = false;
loopDelay.disable();
await publisher;
await sleep(2000); // the last deliveries and acks
log('measuring');

// Counts.
// A drained client's lost messages: older than the newest it got before
// its close (a hole: a bug), acked more than IN_FLIGHT ms before the close
// (a bug), acked just before it (crossed the close in flight: the broker
// applied it after the worker wrote the close frame, and its ack outran
// the close), or acked after it (missed while reconnecting).
// The bound is at least twice how late the event loop ran during the
// drain: bytes that arrive just after their socket was polled wait out the
// rest of that turn and the next before they are handled and timestamped,
// while another socket's bytes that came later may be handled in between.
const loopMaxMs = Math.round(loopDelay.max / 1e6);
const IN_FLIGHT = Math.max(Number(process.env.SCC_IN_FLIGHT_MS || 100), 2 * loopMaxMs);
const out = {clients: N, published: sent, acked: acked.size, failed, drained: 0, survivors: 0,
  loopDelayMaxMs: loopMaxMs, loopDelayP99Ms: Math.round(loopDelay.percentile(99) / 1e6), inFlightMs: IN_FLIGHT,
  survivorLost: 0, holes: 0, lostWellBeforeClose: 0, crossed: 0, crossedMaxMs: 0,
  drainedMissedWhileAway: 0, drainedNotBack: 0,
  backWithinMs: 0, codes: {}, reconnectHandshakeMs: []};
const byChannel = new Map();
for (const [seq, a] of acked) {
  if (!byChannel.has(a.ch)) byChannel.set(a.ch, []);
  byChannel.get(a.ch).push([seq, a.t]);
}
for (const r of subs) {
  const msgs = byChannel.get(r.ch) || [];
  const close = r.closes.find((c) => c.t >= drainAt);
  if (!close) {
    out.survivors++;
    for (const [seq] of msgs) if (!r.got.has(seq)) out.survivorLost++;
    continue;
  }
  out.drained++;
  out.codes[close.code] = (out.codes[close.code] || 0) + 1;
  let last = -1;
  for (const [seq, t] of r.gotAt) if (t < close.t && seq > last) last = seq;
  for (const [seq, t] of msgs) {
    if (r.got.has(seq)) continue;
    if (seq < last) out.holes++;
    else if (t < close.t - IN_FLIGHT) out.lostWellBeforeClose++;
    else if (t < close.t) { out.crossed++; out.crossedMaxMs = Math.max(out.crossedMaxMs, close.t - t); }
    else out.drainedMissedWhileAway++;
  }
  const back = r.firstAfter[0];
  if (back === undefined) out.drainedNotBack++;
  else out.backWithinMs = Math.max(out.backWithinMs, back - drainAt);
  // The reconnect's handshake: from its 'connecting' to its 'connect'.
  const conn = r.connects.find((t) => t >= close.t);
  const connecting = r.connectings.filter((t) => t >= close.t && (conn === undefined || t <= conn)).pop();
  if (conn !== undefined && connecting !== undefined) out.reconnectHandshakeMs.push(conn - connecting);
}
const hs = out.reconnectHandshakeMs.sort((a, b) => a - b);
out.handshakeP50 = hs[Math.floor(hs.length * 0.5)] ?? -1;
out.handshakeP99 = hs[Math.floor(hs.length * 0.99)] ?? -1;
out.handshakeMax = hs[hs.length - 1] ?? -1;
delete out.reconnectHandshakeMs;
console.log(JSON.stringify(out));
for (const r of subs) r.s.disconnect();
for (const p of pubs) p.disconnect();
process.exit(0);
