// socketcluster-client 19.x (protocol 2) against the scc worker.
// The Go test starts the server (see interop_test.go: directly, through the
// gateway, over ws:// or wss://) and sets SCC_PORT and SCC_SECURE.
import {test, after} from 'node:test';
import assert from 'node:assert/strict';
import scc from 'socketcluster-client';

const port = Number(process.env.SCC_PORT);
// SCC_SECURE=1: wss://, trusting the test's CA (NODE_EXTRA_CA_CERTS).
const secure = process.env.SCC_SECURE === '1';
const sockets = [];

function connect(opts = {}) {
  const s = scc.create({
    hostname: '127.0.0.1', port, secure, ackTimeout: 2000,
    autoReconnectOptions: {initialDelay: 100, randomness: 100, multiplier: 1.5, maxDelay: 1000},
    ...opts,
  });
  sockets.push(s);
  return s;
}

async function connected(opts) {
  const s = connect(opts);
  const status = await s.listener('connect').once();
  return [s, status];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function subscribed(s, name) {
  const ch = s.subscribe(name);
  if (ch.state !== 'subscribed') await ch.listener('subscribe').once();
  return ch;
}

function collect(ch) {
  const got = [];
  (async () => { for await (const d of ch) got.push(d); })();
  return got;
}

async function until(cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in ' + ms + ' ms');
    await sleep(10);
  }
}

after(() => { for (const s of sockets) s.disconnect(); });

test('handshake', async () => {
  const [s, status] = await connected();
  assert.equal(s.state, 'open');
  assert.equal(typeof status.id, 'string');
  assert.equal(status.id.length, 20);
  assert.equal(status.pingTimeout, 1000);
  assert.equal(status.isAuthenticated, false);
  assert.equal(s.id, status.id);
});

test('ping/pong for longer than pingTimeout', async () => {
  const [s] = await connected();
  let closes = 0;
  (async () => { for await (const _ of s.listener('close')) closes++; })();
  await sleep(2500); // pingTimeout is 1000 ms, pingInterval 200 ms
  assert.equal(closes, 0);
  assert.equal(s.state, 'open');
  assert.equal(await s.invoke('echo', 'still here'), 'still here');
});

test('invoke: result and error objects', async () => {
  const [s] = await connected();
  assert.deepEqual(await s.invoke('echo', {a: [1, 2, {b: 'c'}], u: 'é☕'}), {a: [1, 2, {b: 'c'}], u: 'é☕'});
  await assert.rejects(s.invoke('fail', 1), (err) => {
    assert.equal(err.name, 'BoomError');
    assert.equal(err.message, 'boom');
    assert.equal(err.extra, 1);
    return true;
  });
  await assert.rejects(s.invoke('nobodyHandlesThis', 1, {ackTimeout: 300}), {name: 'TimeoutError'});
});

test('transmit both ways', async () => {
  const [s] = await connected();
  const ack = s.receiver('noteAck').once();
  s.transmit('note', {hello: 'world'});
  assert.deepEqual(await ack, {hello: 'world'});
});

test('server invokes a client procedure', async () => {
  const [s] = await connected();
  (async () => {
    for await (const req of s.procedure('ask')) req.end({echoed: req.data});
  })();
  const res = s.receiver('askResult').once();
  s.transmit('askMe', 42);
  assert.deepEqual(await res, {answer: {echoed: 42}});
});

test('subscribe, publish, unsubscribe', async () => {
  const [a] = await connected();
  const [b] = await connected();
  const ch = await subscribed(a, 'news');
  const got = collect(ch);
  await b.invokePublish('news', {n: 1});
  b.transmitPublish('news', {n: 2});
  await until(() => got.length === 2);
  assert.deepEqual(got, [{n: 1}, {n: 2}]);
  a.unsubscribe('news');
  await sleep(100);
  await b.invokePublish('news', {n: 3});
  await sleep(200);
  assert.equal(got.length, 2);
});

test('kickOut', async () => {
  const [s] = await connected();
  await subscribed(s, 'room');
  const kick = s.listener('kickOut').once();
  await s.invoke('kickMe', {channel: 'room'});
  const ev = await kick;
  assert.equal(ev.channel, 'room');
  assert.equal(ev.message, 'bye');
  await until(() => !s.isSubscribed('room', true));
});

test('JWT: setAuthToken, token at the next handshake, deauthenticate', async () => {
  const [s] = await connected();
  const authed = s.listener('authenticate').once();
  assert.equal(await s.invoke('login', {username: 'alice'}), 'ok');
  await authed;
  assert.equal(s.authState, 'authenticated');
  assert.equal(s.authToken.username, 'alice');
  assert.equal(typeof s.authToken.exp, 'number');
  assert.equal(await s.invoke('whoami'), 'alice');

  // A new client presenting that token is authenticated at handshake.
  const c = connect({autoConnect: false, authTokenName: 'tok-19'});
  await c.auth.saveToken('tok-19', s.signedAuthToken);
  c.connect();
  const status = await c.listener('connect').once();
  assert.equal(status.isAuthenticated, true);
  assert.equal(await c.invoke('whoami'), 'alice');

  await s.deauthenticate();
  await sleep(50);
  assert.equal(s.authState, 'unauthenticated');
  assert.equal(await s.invoke('whoami'), undefined);
});

test('JWT: authenticate with valid, expired and invalid tokens', async () => {
  const [s] = await connected();
  const good = await s.invoke('sign', {username: 'bob'});
  const st = await s.authenticate(good);
  assert.equal(st.isAuthenticated, true);
  assert.equal(await s.invoke('whoami'), 'bob');

  const expired = await s.invoke('sign', {username: 'bob', exp: Math.floor(Date.now() / 1000) - 60});
  await assert.rejects(s.authenticate(expired), (err) => {
    assert.equal(err.name, 'AuthTokenExpiredError');
    assert.equal(err.message, 'jwt expired');
    assert.equal(err.isBadToken, true);
    assert.ok(err.expiry);
    return true;
  });
  assert.equal(s.authState, 'unauthenticated');
  assert.equal(await s.invoke('whoami'), undefined);

  await assert.rejects(s.authenticate(good.slice(0, -3) + 'abc'), (err) => {
    assert.equal(err.name, 'AuthTokenInvalidError');
    assert.equal(err.message, 'invalid signature');
    return true;
  });
  await assert.rejects(s.authenticate('garbage'), {name: 'AuthTokenInvalidError', message: 'jwt malformed'});
});

test('JWT: expired and invalid tokens at handshake', async () => {
  const [s] = await connected();
  const expired = await s.invoke('sign', {username: 'carl', exp: Math.floor(Date.now() / 1000) - 60});
  const c = connect({autoConnect: false, authTokenName: 'tok-exp'});
  await c.auth.saveToken('tok-exp', expired);
  c.connect();
  const status = await c.listener('connect').once();
  assert.equal(status.isAuthenticated, false);
  assert.equal(status.authError.name, 'AuthTokenExpiredError');
  assert.equal(status.authError.isBadToken, true);
  await until(() => c.signedAuthToken == null);

  const d = connect({autoConnect: false, authTokenName: 'tok-bad'});
  await d.auth.saveToken('tok-bad', 'not.a.token');
  d.connect();
  const st2 = await d.listener('connect').once();
  assert.equal(st2.authError.name, 'AuthTokenInvalidError');
});

test('reconnect with automatic resubscribe', async () => {
  const [s] = await connected();
  const [pub] = await connected();
  const ch = await subscribed(s, 'resub');
  const got = collect(ch);
  const firstId = s.id;
  const reconnected = s.listener('connect').once();
  s.transmit('dropMe', 4001); // the server closes the socket; the client reconnects at once
  await reconnected;
  assert.notEqual(s.id, firstId);
  if (ch.state !== 'subscribed') await ch.listener('subscribe').once();
  await pub.invokePublish('resub', 'after');
  await until(() => got.length === 1);
  assert.deepEqual(got, ['after']);
});

test('batches from the client', async () => {
  const [s] = await connected();
  const acks = [];
  (async () => { for await (const d of s.receiver('noteAck')) acks.push(d); })();
  s.startBatch();
  s.transmit('note', 1);
  s.transmit('note', 2);
  const r = s.invoke('echo', 3);
  s.flushBatch();
  assert.equal(await r, 3);
  await until(() => acks.length === 2);
  assert.deepEqual(acks, [1, 2]);
});

test('500 subscribers receive 100 messages each, in order', async () => {
  const subs = [];
  for (let i = 0; i < 500; i++) subs.push(connect());
  await Promise.all(subs.map((s) => s.listener('connect').once()));
  const chans = await Promise.all(subs.map((s) => subscribed(s, 'bulk')));
  const gots = chans.map(collect);
  const [pub] = await connected();
  for (let i = 0; i < 100; i++) await pub.invokePublish('bulk', {seq: i});
  await until(() => gots.every((g) => g.length >= 100), 20000);
  for (const g of gots) {
    assert.equal(g.length, 100);
    g.forEach((m, i) => assert.equal(m.seq, i));
  }
  for (const s of subs) s.disconnect();
});
