// The proxies benchmark's cross-check with a load tool that is not ours:
// the official SocketCluster client (19.x, from test/interop's packages)
// as SCC_CLIENTS subscribers of one channel and one publisher at
// SCC_RATE publishes per second, through whatever SCC_URL points at.
// Over SCC_SECONDS it counts deliveries and their latency (each payload
// carries its publish time), and reads the CPU the server's processes
// (SCC_SERVER_PIDS) and the proxy's (SCC_PROXY_PIDS) spent from /proc.
// Prints one JSON array in the shape of `scc bench --json`.
import {createRequire} from 'node:module';
import {readFileSync} from 'node:fs';

const require = createRequire(new URL('../test/interop/package.json', import.meta.url));
const scc = require('socketcluster-client');

const url = new URL(process.env.SCC_URL);
const N = Number(process.env.SCC_CLIENTS || 1000);
const RATE = Number(process.env.SCC_RATE || 10);
const SECONDS = Number(process.env.SCC_SECONDS || 5);
const pids = (v) => (v || '').split(',').filter(Boolean).map(Number);
const serverPids = pids(process.env.SCC_SERVER_PIDS);
const proxyPids = pids(process.env.SCC_PROXY_PIDS);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error('proxy-load:', ...a);

// CPU seconds (user and system) of pids and their threads, from /proc.
const TICKS = 100; // USER_HZ on Linux
function cpu(list) {
  let ticks = 0;
  for (const pid of list) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
    } catch { /* gone */ }
  }
  return ticks / TICKS;
}

function client() {
  return scc.create({hostname: url.hostname, port: Number(url.port), path: url.pathname,
    secure: url.protocol === 'wss:', ackTimeout: 10000, autoReconnect: false});
}

let delivered = 0;
let counting = false;
const latencies = [];
const subs = [];
const sem = {n: 0};
for (let i = 0; i < N; i++) {
  while (sem.n >= 100) await sleep(5);
  sem.n++;
  const s = client();
  subs.push(s);
  (async () => {
    const ch = s.subscribe('proxy-fan');
    await ch.listener('subscribe').once();
    sem.n--;
    for await (const data of ch) {
      if (!counting) continue;
      delivered++;
      latencies.push(Date.now() - data.t);
    }
  })();
}
while (sem.n > 0) await sleep(10);
log(`${N} subscribed`);
const pub = client();
await pub.listener('connect').once();
let published = 0;
let errors = 0;
const payload = 'x'.repeat(48);
let stop = false;
const publisher = (async () => {
  const start = Date.now();
  while (!stop) {
    const due = start + (published * 1000) / RATE;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait);
    published++;
    pub.invokePublish('proxy-fan', {t: Date.now(), p: payload}).catch(() => errors++);
  }
})();
await sleep(1000); // warm-up
counting = true;
const cpu0 = [cpu(serverPids), cpu(proxyPids)];
const t0 = Date.now();
await sleep(SECONDS * 1000);
const seconds = (Date.now() - t0) / 1000;
const cpu1 = [cpu(serverPids), cpu(proxyPids)];
counting = false;
stop = true;
await publisher;
latencies.sort((a, b) => a - b);
const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : 0);
const server = cpu1[0] - cpu0[0];
const proxy = cpu1[1] - cpu0[1];
console.log(JSON.stringify([{
  scenario: 'fanout-rate-js', seconds, connections: N, published, publishes_per_sec: RATE,
  delivered, delivered_per_sec: delivered / seconds, latency_p50_ms: q(0.5), latency_p99_ms: q(0.99),
  server_cpu_seconds: server + proxy, proxy_cpu_seconds: proxy, errors, disconnects: 0, unexpected_payloads: 0,
}]));
for (const s of subs) s.disconnect();
pub.disconnect();
process.exit(0);
