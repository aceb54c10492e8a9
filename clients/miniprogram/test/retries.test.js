// Retries: 429 and 503 are sent again only after their Retry-After (plus
// jitter, never less), no answer and 502/504 after a growing backoff, and a
// definite answer never. Timing is checked from recorded timestamps ("the
// retry was sent no sooner than ..."), never against a wall-clock budget.
// The engine runs with a per-shopper rate of 1 request a second (burst 1),
// so a shopper's second order within the second is a real 429.

import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';

import { NetworkError, RETRY_DEFAULTS, createClient, fetchTransport, memoryStorage, retryAfterMs, retryWaitMs } from '../src/index.js';
import { newShopper, shopperToken, startEngine } from '../testing/engine.js';
import { recording, startProxy } from '../testing/proxy.js';

let engine;
let proxy;

before(async () => {
  engine = await startEngine({ FLASHSALE_RATE_USER_PER_SEC: '1', FLASHSALE_RATE_USER_BURST: '1' });
  proxy = await startProxy(engine.baseUrl);
});

after(async () => {
  await proxy?.close();
  await engine?.stop();
});

const ORDERS = /^\/api\/v1\/sales\/[^/]+\/orders$/;

function client(baseUrl, shopper = newShopper(), retry = {}) {
  const transport = recording(fetchTransport({ baseUrl }));
  const token = shopperToken(shopper);
  return { transport, client: createClient({ transport, getToken: () => token, retry }) };
}

test('429 from the engine: the order is sent again no sooner than Retry-After, and made once', async () => {
  const first = await engine.createSale({ per_user_limit: 5 });
  const second = await engine.createSale({ per_user_limit: 5 });
  const { client: c, transport } = client(engine.baseUrl);
  assert.equal((await c.placeOrder(first.id, 1)).ok, true);

  // Within the same second: over the shopper's rate.
  const result = await c.placeOrder(second.id, 1);

  assert.equal(result.ok, true, JSON.stringify(result));
  const [, limited, retried] = transport.log;
  assert.equal(limited.status, 429);
  const retryAfterMs = Number(limited.retryAfter) * 1000;
  assert.ok(retryAfterMs >= 1000, `Retry-After: ${limited.retryAfter}`);
  assert.equal(retried.status, 201);
  assert.ok(
    retried.sentAt - limited.answeredAt >= retryAfterMs,
    `retry sent ${retried.sentAt - limited.answeredAt} ms after the 429, Retry-After ${retryAfterMs} ms`,
  );
  assert.equal(transport.log.length, 3);
  assert.equal((await engine.stats(second.id)).reserved, 1);
});

test('503 with Retry-After (injected once by a proxy): the order is sent again no sooner than Retry-After', async () => {
  const sale = await engine.createSale({ per_user_limit: 5 });
  const { client: c } = client(proxy.baseUrl);
  proxy.answer('POST', ORDERS, 503, { 'retry-after': '2' }, { error: { code: 'unavailable', message: 'store down' } });
  const from = proxy.log.length;

  const result = await c.placeOrder(sale.id, 1);

  assert.equal(result.ok, true, JSON.stringify(result));
  const [refused, retried] = proxy.log.slice(from);
  assert.equal(refused.status, 503);
  assert.equal(refused.action, 'answer');
  assert.equal(retried.status, 201);
  assert.ok(retried.receivedAt - refused.answeredAt >= 2000, `retried after ${retried.receivedAt - refused.answeredAt} ms`);
  assert.equal(proxy.log.length - from, 2);
  assert.equal((await engine.stats(sale.id)).reserved, 1);
});

test('a Retry-After longer than the longest wait is not waited: the call says how long, and the intent is kept', async () => {
  const sale = await engine.createSale({ per_user_limit: 5 });
  const { client: c, transport } = client(proxy.baseUrl, newShopper(), { waitMaxMs: 5000 });
  proxy.answer('POST', ORDERS, 503, { 'retry-after': '60' }, { error: { code: 'overloaded', message: 'shedding' } });

  const result = await c.placeOrder(sale.id, 1);

  assert.equal(result.ok, false);
  assert.equal(result.code, 'overloaded');
  assert.equal(result.retryAfterMs, 60_000);
  assert.equal(transport.log.length, 1);
  const intent = await c.pendingIntent(sale.id);
  assert.ok(intent, 'the purchase is still pending');
  const later = await c.placeOrder(sale.id, 1);
  assert.equal(later.ok, true);
  assert.equal(transport.log.at(-1).headers['idempotency-key'], intent.key);
});

test('no answer at all: retried with a growing backoff, attemptsMax requests in all, then network_error', async () => {
  // A port nobody listens on: every attempt is refused.
  const closed = createServer();
  await new Promise((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = closed.address().port;
  await new Promise((resolve) => closed.close(resolve));
  const policy = { attemptsMax: 4, backoffMs: 100, backoffMaxMs: 1000 };
  const { client: c, transport } = client(`http://127.0.0.1:${port}`, newShopper(), policy);

  const result = await c.placeOrder('s_nowhere', 1);

  assert.equal(result.code, 'network_error');
  assert.equal(result.status, 0);
  assert.equal(result.uncertain, true);
  assert.equal(transport.log.length, 4);
  for (let i = 1; i < transport.log.length; i++) {
    // Equal jitter: at least half of each doubling step.
    const floor = (policy.backoffMs * 2 ** (i - 1)) / 2;
    const gap = transport.log[i].sentAt - transport.log[i - 1].answeredAt;
    assert.ok(gap >= floor, `wait ${i}: ${gap} ms, at least ${floor}`);
  }
  assert.ok(await c.pendingIntent('s_nowhere'), 'the order may have been made: the key is kept');
});

test('502 from a proxy is retried; a 500 is an answer and is not', async () => {
  const sale = await engine.createSale({ per_user_limit: 5 });
  const { client: c, transport } = client(proxy.baseUrl, newShopper(), { backoffMs: 50 });
  proxy.answer('POST', ORDERS, 502, {}, 'bad gateway');
  const ok = await c.placeOrder(sale.id, 1);
  assert.equal(ok.ok, true);
  assert.deepEqual(transport.log.map((e) => e.status), [502, 201]);

  const other = await engine.createSale({ per_user_limit: 5 });
  proxy.answer('POST', ORDERS, 500, {}, { error: { code: 'internal', message: 'a bug' } });
  const failed = await c.placeOrder(other.id, 1);
  assert.equal(failed.code, 'internal');
  assert.equal(failed.uncertain, true, 'a 500 may have come after the order was made');
  assert.equal(transport.log.length, 3, 'one request for the 500');
  assert.ok(await c.pendingIntent(other.id), 'a 500 does not say whether the order was made: the key is kept');
});

test('Retry-After as seconds or as a date; the wait is never shorter, and jitter stays within its bound', () => {
  const now = Date.parse('2026-11-11T00:00:00Z');
  assert.equal(retryAfterMs({ 'retry-after': '3' }, now), 3000);
  assert.equal(retryAfterMs({ 'retry-after': 'Wed, 11 Nov 2026 00:00:05 GMT' }, now), 5000);
  assert.equal(retryAfterMs({ 'retry-after': 'Wed, 10 Nov 2026 23:00:00 GMT' }, now), 0);
  assert.equal(retryAfterMs({}, now), null);
  assert.equal(retryAfterMs({ 'retry-after': 'soon' }, now), null);
  assert.equal(retryWaitMs(RETRY_DEFAULTS, 1, 2000, () => 0), 2000);
  assert.equal(retryWaitMs(RETRY_DEFAULTS, 1, 2000, () => 0.999), 2000 + 0.999 * RETRY_DEFAULTS.jitterMs);
  // Without Retry-After: half of the doubling step always, capped.
  assert.equal(retryWaitMs(RETRY_DEFAULTS, 3, null, () => 0), (RETRY_DEFAULTS.backoffMs * 4) / 2);
  assert.equal(retryWaitMs(RETRY_DEFAULTS, 30, null, () => 1), RETRY_DEFAULTS.backoffMaxMs);
});

test('a shopper keeps at most intentsKeptMax intents in storage: past it, the one used longest ago goes', async () => {
  const storage = memoryStorage();
  const down = async () => {
    throw new NetworkError('no network');
  };
  const token = shopperToken(newShopper());
  const c = createClient({ transport: down, getToken: () => token, storage, retry: { attemptsMax: 1 }, intentsKeptMax: 2 });

  for (const sale of ['s_first', 's_second', 's_first', 's_third']) {
    assert.equal((await c.placeOrder(sale, 1)).code, 'network_error');
  }

  // s_first was tapped again (its kept intent reused, listed last):
  // s_second, used longest ago, went when s_third came.
  assert.equal(await c.pendingIntent('s_second'), undefined);
  assert.ok(await c.pendingIntent('s_first'), 'kept');
  assert.ok(await c.pendingIntent('s_third'), 'kept');
  const again = await c.pendingIntent('s_first');
  await c.placeOrder('s_first', 1);
  assert.equal((await c.pendingIntent('s_first')).key, again.key, 'the kept intent is reused');
});
