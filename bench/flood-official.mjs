// One client process of bench/flood-official.sh: N official
// socketcluster-client (19.x) connections opened at once, 64 in flight,
// after a line on stdin says go. Prints one JSON line: when it began and
// ended (ms since the epoch), the CPU it used and how many failed; then
// holds the connections a few seconds so the worker's count can be read.
import {createRequire} from 'node:module';

const require = createRequire(new URL('../test/interop/package.json', import.meta.url));
const scc = require('socketcluster-client');

const port = Number(process.argv[2]);
const n = Number(process.argv[3] || 1250);
await new Promise((r) => process.stdin.once('data', r));
const start = Date.now();
const cpu0 = process.cpuUsage();
let done = 0, inflight = 0, next = 0, failed = 0;
await new Promise((resolve) => {
  const launch = () => {
    while (inflight < 64 && next < n) {
      next++;
      inflight++;
      const s = scc.create({hostname: '127.0.0.1', port, autoReconnect: false, connectTimeout: 30000});
      (async () => {
        const e = await Promise.race([s.listener('connect').once(), s.listener('error').once().then(() => 'error')]);
        if (e === 'error') failed++;
        inflight--;
        if (++done === n) resolve(); else launch();
      })();
    }
  };
  launch();
});
const c = process.cpuUsage(cpu0);
console.log(JSON.stringify({start, end: Date.now(), cpu: (c.user + c.system) / 1e6, failed}));
setTimeout(() => process.exit(0), 4000);
