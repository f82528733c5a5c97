// socketcluster-client 14.x (protocol 1) against the scc worker in protocol 1
// mode. The Go test starts the server (see interop_test.go) and sets SCC_PORT.
'use strict';
const {test, after} = require('node:test');
const assert = require('node:assert/strict');
const scc14 = require('scc14');

const port = Number(process.env.SCC_PORT);
// SCC_SECURE=1: wss://, trusting the test's CA (NODE_EXTRA_CA_CERTS).
const secure = process.env.SCC_SECURE === '1';
const sockets = [];

function connect(opts = {}) {
  const s = scc14.create({
    hostname: '127.0.0.1', port, secure, ackTimeout: 2000, multiplex: false,
    autoReconnectOptions: {initialDelay: 100, randomness: 100, multiplier: 1.5, maxDelay: 1000},
    ...opts,
  });
  s.on('error', () => {}); // auth and protocol errors are asserted where expected
  sockets.push(s);
  return s;
}

function once(emitter, event) {
  return new Promise((resolve) => emitter.once(event, (...args) => resolve(args)));
}

async function connected(opts) {
  const s = connect(opts);
  const [status] = await once(s, 'connect');
  return [s, status];
}

// invoke wraps emit-with-callback (the 14.x RPC).
function invoke(s, event, data) {
  return new Promise((resolve, reject) => s.emit(event, data, (err, res) => (err ? reject(err) : resolve(res))));
}

function publish(s, ch, data) {
  return new Promise((resolve, reject) => s.publish(ch, data, (err) => (err ? reject(err) : resolve())));
}

function authenticate(s, token) {
  return new Promise((resolve, reject) => s.authenticate(token, (err, status) => (err ? reject(err) : resolve(status))));
}

async function subscribed(s, name, options) {
  const ch = s.subscribe(name, options);
  if (ch.state !== 'subscribed') await once(ch, 'subscribe');
  return ch;
}

function collect(ch) {
  const got = [];
  ch.watch((d) => got.push(d));
  return got;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in ' + ms + ' ms');
    await sleep(10);
  }
}

after(() => { for (const s of sockets) s.destroy(); });

test('handshake', async () => {
  const [s, status] = await connected();
  assert.equal(s.state, 'open');
  assert.equal(status.id.length, 20);
  assert.equal(status.pingTimeout, 1000);
  assert.equal(status.isAuthenticated, false);
});

test('ping/pong for longer than pingTimeout', async () => {
  const [s] = await connected();
  let closes = 0;
  s.on('close', () => closes++);
  await sleep(2500);
  assert.equal(closes, 0);
  assert.equal(s.state, 'open');
  assert.equal(await invoke(s, 'echo', 'still here'), 'still here');
});

test('invoke: result and error objects', async () => {
  const [s] = await connected();
  assert.deepEqual(await invoke(s, 'echo', {a: [1, {b: 'c'}], u: 'é☕'}), {a: [1, {b: 'c'}], u: 'é☕'});
  await assert.rejects(invoke(s, 'fail', 1), (err) => {
    assert.equal(err.name, 'BoomError');
    assert.equal(err.message, 'boom');
    assert.equal(err.extra, 1);
    return true;
  });
});

test('transmit both ways', async () => {
  const [s] = await connected();
  const ack = once(s, 'noteAck');
  s.emit('note', {hello: 'world'});
  assert.deepEqual((await ack)[0], {hello: 'world'});
});

test('server invokes a client procedure', async () => {
  const [s] = await connected();
  s.on('ask', (data, res) => res(null, {echoed: data}));
  const result = once(s, 'askResult');
  s.emit('askMe', 42);
  assert.deepEqual((await result)[0], {answer: {echoed: 42}});
});

test('subscribe, publish, unsubscribe', async () => {
  const [a] = await connected();
  const [b] = await connected();
  const ch = await subscribed(a, 'news');
  const got = collect(ch);
  await publish(b, 'news', {n: 1});
  await publish(b, 'news', {n: 2});
  await until(() => got.length === 2);
  assert.deepEqual(got, [{n: 1}, {n: 2}]);
  a.unsubscribe('news');
  await sleep(100);
  await publish(b, 'news', {n: 3});
  await sleep(200);
  assert.equal(got.length, 2);
});

test('kickOut', async () => {
  const [s] = await connected();
  await subscribed(s, 'room');
  const kick = once(s, 'kickOut');
  await invoke(s, 'kickMe', {channel: 'room'});
  const [message, channel] = await kick;
  assert.equal(channel, 'room');
  assert.equal(message, 'bye');
  await until(() => !s.isSubscribed('room', true));
});

test('JWT: setAuthToken, token at the next handshake, deauthenticate', async () => {
  const [s] = await connected();
  const authed = once(s, 'authenticate');
  assert.equal(await invoke(s, 'login', {username: 'alice'}), 'ok');
  await authed;
  assert.equal(s.authState, 'authenticated');
  assert.equal(s.getAuthToken().username, 'alice');
  assert.equal(await invoke(s, 'whoami'), 'alice');

  const c = connect({autoConnect: false, authTokenName: 'tok-14'});
  await new Promise((r) => c.auth.saveToken('tok-14', s.signedAuthToken, {}, r));
  c.connect();
  const [status] = await once(c, 'connect');
  assert.equal(status.isAuthenticated, true);
  assert.equal(await invoke(c, 'whoami'), 'alice');

  await new Promise((r) => s.deauthenticate(r));
  await sleep(50);
  assert.equal(s.authState, 'unauthenticated');
  assert.equal(await invoke(s, 'whoami'), undefined);
});

test('JWT: authenticate with valid, expired and invalid tokens', async () => {
  const [s] = await connected();
  const good = await invoke(s, 'sign', {username: 'bob'});
  const st = await authenticate(s, good);
  assert.equal(st.isAuthenticated, true);
  assert.equal(await invoke(s, 'whoami'), 'bob');

  const expired = await invoke(s, 'sign', {username: 'bob', exp: Math.floor(Date.now() / 1000) - 60});
  await assert.rejects(authenticate(s, expired), (err) => {
    assert.equal(err.name, 'AuthTokenExpiredError');
    assert.equal(err.message, 'jwt expired');
    return true;
  });
  await until(() => s.authState === 'unauthenticated');
  assert.equal(await invoke(s, 'whoami'), undefined);
  await assert.rejects(authenticate(s, good.slice(0, -3) + 'abc'), {name: 'AuthTokenInvalidError', message: 'invalid signature'});
});

test('JWT: expired and invalid tokens at handshake', async () => {
  const [s] = await connected();
  const expired = await invoke(s, 'sign', {username: 'carl', exp: Math.floor(Date.now() / 1000) - 60});
  const c = connect({autoConnect: false, authTokenName: 'tok-exp14'});
  await new Promise((r) => c.auth.saveToken('tok-exp14', expired, {}, r));
  c.connect();
  const [status] = await once(c, 'connect');
  assert.equal(status.isAuthenticated, false);
  assert.equal(status.authError.name, 'AuthTokenExpiredError');
  await until(() => c.signedAuthToken == null);

  const d = connect({autoConnect: false, authTokenName: 'tok-bad14'});
  await new Promise((r) => d.auth.saveToken('tok-bad14', 'not.a.token', {}, r));
  d.connect();
  const [st2] = await once(d, 'connect');
  assert.equal(st2.authError.name, 'AuthTokenInvalidError');
});

test('reconnect with automatic resubscribe', async () => {
  const [s] = await connected();
  const [pub] = await connected();
  const ch = await subscribed(s, 'resub');
  const got = collect(ch);
  const firstId = s.id;
  const reconnected = once(s, 'connect');
  s.emit('dropMe', 4001);
  await reconnected;
  assert.notEqual(s.id, firstId);
  if (ch.state !== 'subscribed') await once(ch, 'subscribe');
  await publish(pub, 'resub', 'after');
  await until(() => got.length === 1);
  assert.deepEqual(got, ['after']);
});

test('batches: batched subscriptions', async () => {
  const [s] = await connected();
  const chans = ['b1', 'b2', 'b3'].map((n) => s.subscribe(n, {batch: true}));
  await Promise.all(chans.map((ch) => (ch.state === 'subscribed' ? null : once(ch, 'subscribe'))));
  const got = chans.map(collect);
  const [pub] = await connected();
  for (const n of ['b1', 'b2', 'b3']) await publish(pub, n, n);
  await until(() => got.every((g) => g.length === 1));
  assert.deepEqual(got, [['b1'], ['b2'], ['b3']]);
});

test('500 subscribers receive 100 messages each, in order', async () => {
  const subs = [];
  for (let i = 0; i < 500; i++) subs.push(connect());
  await Promise.all(subs.map((s) => once(s, 'connect')));
  const chans = await Promise.all(subs.map((s) => subscribed(s, 'bulk')));
  const gots = chans.map(collect);
  const [pub] = await connected();
  for (let i = 0; i < 100; i++) await publish(pub, 'bulk', {seq: i});
  await until(() => gots.every((g) => g.length >= 100), 20000);
  for (const g of gots) {
    assert.equal(g.length, 100);
    g.forEach((m, i) => assert.equal(m.seq, i));
  }
  for (const s of subs) s.destroy();
});
