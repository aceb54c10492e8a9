// placeOrder, listOrders, getOrder and cancelOrder against the real engine
// (embedded store), through a proxy that drops answers on request: one
// purchase intent makes one order however its answer is lost.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { createClient, fetchTransport, memoryStorage } from '../src/index.js';
import { newShopper, shopperToken, startEngine } from '../testing/engine.js';
import { recording, startProxy } from '../testing/proxy.js';

let engine;
let proxy;

before(async () => {
  engine = await startEngine();
  proxy = await startProxy(engine.baseUrl);
});

after(async () => {
  await proxy?.close();
  await engine?.stop();
});

const ORDERS = /^\/api\/v1\/sales\/[^/]+\/orders$/;

function client(shopper, options = {}) {
  const transport = recording(fetchTransport({ baseUrl: proxy.baseUrl }));
  const token = shopperToken(shopper);
  return {
    transport,
    client: createClient({ transport, getToken: () => token, retry: { backoffMs: 20, jitterMs: 20 }, ...options }),
  };
}

test('an order whose answer is dropped is retried with the same key and returns the first order: one order in the engine', async () => {
  // per_user_limit 5: a second order would be accepted, so only the key prevents it.
  const sale = await engine.createSale({ stock_total: 10, per_user_limit: 5 });
  const shopper = newShopper();
  const { client: c, transport } = client(shopper);
  proxy.dropAnswer('POST', ORDERS);

  const result = await c.placeOrder(sale.id, 1);

  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.replayed, true, 'the second attempt is the engine replaying the first order');
  const sent = transport.log.filter((e) => e.method === 'POST');
  assert.equal(sent.length, 2);
  assert.equal(sent[0].status, null, 'the first answer was lost');
  assert.equal(sent[0].headers['idempotency-key'], sent[1].headers['idempotency-key']);
  const stats = await engine.stats(sale.id);
  assert.equal(stats.reserved, 1, JSON.stringify(stats));
  assert.equal(stats.buyers, 1);
  const orders = await c.listOrders();
  assert.deepEqual(orders.orders.map((o) => o.id), [result.order.id]);
  assert.equal(await c.pendingIntent(sale.id), undefined, 'a 201 ends the intent');
});

test('an order whose answer comes after the client timed out is retried with the same key: one order', async () => {
  const sale = await engine.createSale({ stock_total: 10, per_user_limit: 5 });
  const { client: c, transport } = client(newShopper(), { timeoutMs: 1000 });
  proxy.stall('POST', ORDERS, 2500);

  const result = await c.placeOrder(sale.id, 1);

  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.replayed, true);
  assert.equal(transport.log[0].status, null, 'the first attempt timed out');
  assert.equal(transport.log.at(-1).status, 201);
  assert.equal((await engine.stats(sale.id)).reserved, 1);
});

test('a double tap (two calls at once for one sale) sends one order request and both get the same order', async () => {
  const sale = await engine.createSale({ stock_total: 10, per_user_limit: 5 });
  const { client: c, transport } = client(newShopper());

  const [first, second] = await Promise.all([c.placeOrder(sale.id, 1), c.placeOrder(sale.id, 1)]);

  assert.equal(first.ok, true);
  assert.equal(second.order.id, first.order.id);
  assert.equal(transport.log.length, 1);
  assert.equal((await engine.stats(sale.id)).reserved, 1);
});

test('after a restart the stored intent is resent with its key and returns the order the lost answer carried', async () => {
  const sale = await engine.createSale({ stock_total: 10, per_user_limit: 5 });
  const shopper = newShopper();
  const storage = memoryStorage();
  const first = client(shopper, { storage, retry: { attemptsMax: 1 } });
  proxy.dropAnswer('POST', ORDERS);

  const lost = await first.client.placeOrder(sale.id, 2);
  assert.equal(lost.ok, false);
  assert.equal(lost.code, 'network_error');
  const intent = await first.client.pendingIntent(sale.id);
  assert.ok(intent && intent.key, 'the intent outlives the failed call');

  // The Mini Program restarts: a new client, the same storage.
  const second = client(shopper, { storage });
  const result = await second.client.placeOrder(sale.id, 2);
  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.replayed, true);
  assert.equal(second.transport.log.at(-1).headers['idempotency-key'], intent.key);
  const stats = await engine.stats(sale.id);
  assert.equal(stats.reserved, 2, JSON.stringify(stats));
  assert.equal(stats.buyers, 1);
  assert.equal((await second.client.listOrders()).orders.length, 1);
});

test('a sale that requires a purchase token: the client fetches one, and a retry after a lost answer replays the order', async () => {
  const sale = await engine.createSale({ stock_total: 5, per_user_limit: 1, require_purchase_token: true });
  const shopper = newShopper();
  const { client: c, transport } = client(shopper);
  assert.equal((await c.getSale(sale.id)).sale.require_purchase_token, true);
  proxy.dropAnswer('POST', ORDERS);

  const result = await c.placeOrder(sale.id, 1);

  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.replayed, true);
  const orderPosts = transport.log.filter((e) => e.method === 'POST' && ORDERS.test(e.path));
  assert.equal(orderPosts.length, 2);
  assert.ok(orderPosts[0].headers['x-purchase-token']);
  assert.equal((await engine.stats(sale.id)).reserved, 1);
});

test('a definite answer is never retried: sold_out and limit_exceeded come back after one request, and end the intent', async () => {
  const sale = await engine.createSale({ stock_total: 1, per_user_limit: 1 });
  const buyer = client(newShopper());
  const bought = await buyer.client.placeOrder(sale.id, 1);
  assert.equal(bought.ok, true);
  assert.equal(bought.replayed, false);
  assert.equal(buyer.transport.log.length, 1);

  const again = await buyer.client.placeOrder(sale.id, 1);
  assert.equal(again.code, 'limit_exceeded');
  assert.equal(buyer.transport.log.length, 2, 'one request for the refusal');

  const late = client(newShopper());
  const refused = await late.client.placeOrder(sale.id, 1);
  assert.equal(refused.ok, false);
  assert.equal(refused.code, 'sold_out');
  assert.equal(refused.status, 409);
  assert.equal(refused.uncertain, false);
  assert.equal(late.transport.log.length, 1, 'sold_out is not retried');
  assert.equal(await late.client.pendingIntent(sale.id), undefined, 'no order exists under the key: the intent ends');
});

test('the same intent with another quantity after an order was made is conflict, and the intent is kept', async () => {
  const sale = await engine.createSale({ stock_total: 10, per_user_limit: 5 });
  const shopper = newShopper();
  const { client: c } = client(shopper, { retry: { attemptsMax: 1 } });
  proxy.dropAnswer('POST', ORDERS);
  assert.equal((await c.placeOrder(sale.id, 1)).code, 'network_error');

  const other = await c.placeOrder(sale.id, 3);
  assert.equal(other.code, 'conflict', JSON.stringify(other));
  assert.ok(await c.pendingIntent(sale.id));
  const same = await c.placeOrder(sale.id, 1);
  assert.equal(same.ok, true);
  assert.equal(same.replayed, true);
  assert.equal((await engine.stats(sale.id)).reserved, 1);
});

test('a kept intent on a token sale its own lost order sold out: the token is refused, and the order is replayed all the same', async () => {
  const sale = await engine.createSale({ stock_total: 1, per_user_limit: 1, require_purchase_token: true });
  const shopper = newShopper();
  const { client: c } = client(shopper, { retry: { attemptsMax: 1 } });
  assert.equal((await c.getSale(sale.id)).sale.require_purchase_token, true);
  proxy.dropAnswer('POST', ORDERS);
  const lost = await c.placeOrder(sale.id, 1);
  assert.equal(lost.code, 'network_error');
  assert.equal((await engine.stats(sale.id)).remaining, 0, 'the lost order took the last unit');

  const again = await c.placeOrder(sale.id, 1);

  assert.equal(again.ok, true, JSON.stringify(again));
  assert.equal(again.replayed, true);
  assert.equal(again.order.status, 'pending_payment');
  assert.equal(await c.pendingIntent(sale.id), undefined);
  assert.equal((await engine.stats(sale.id)).reserved, 1);
});

test('a kept intent whose order was cancelled since: the next tap is a new purchase under a new key', async () => {
  const sale = await engine.createSale({ stock_total: 5, per_user_limit: 1 });
  const shopper = newShopper();
  const { client: c, transport } = client(shopper, { retry: { attemptsMax: 1 } });
  proxy.dropAnswer('POST', ORDERS);
  assert.equal((await c.placeOrder(sale.id, 1)).code, 'network_error');
  const [lostOrder] = (await c.listOrders()).orders;
  assert.equal((await c.cancelOrder(lostOrder.id)).ok, true);

  const again = await c.placeOrder(sale.id, 1);

  assert.equal(again.ok, true, JSON.stringify(again));
  assert.equal(again.replayed, false);
  assert.notEqual(again.order.id, lostOrder.id);
  assert.equal(again.order.status, 'pending_payment');
  const keys = transport.log.filter((e) => e.method === 'POST' && ORDERS.test(e.path)).map((e) => e.headers['idempotency-key']);
  assert.equal(keys.length, 3);
  assert.equal(keys[0], keys[1], 'the replay of the cancelled order');
  assert.notEqual(keys[2], keys[1], 'a new key for the new purchase');
  const stats = await engine.stats(sale.id);
  assert.equal(stats.reserved, 1, JSON.stringify(stats));
  assert.equal(stats.cancelled, 1);
});

test('listOrders pages with nextCursor until null', async () => {
  const { client: c } = client(newShopper());
  const made = [];
  for (let i = 0; i < 3; i++) {
    const sale = await engine.createSale({ stock_total: 5, per_user_limit: 1 });
    made.push((await c.placeOrder(sale.id, 1)).order.id);
  }
  const seen = [];
  let cursor = null;
  do {
    const page = await c.listOrders({ limit: 1, cursor });
    assert.equal(page.ok, true, JSON.stringify(page));
    assert.ok(page.orders.length <= 1);
    seen.push(...page.orders.map((o) => o.id));
    cursor = page.nextCursor;
  } while (cursor !== null);
  assert.deepEqual(new Set(seen), new Set(made));
  assert.equal(seen.length, 3);
});

test('orders: list, read, cancel; a cancel whose answer is lost is confirmed by reading the order', async () => {
  const sale = await engine.createSale({ stock_total: 3, per_user_limit: 3 });
  const { client: c } = client(newShopper());
  const a = (await c.placeOrder(sale.id, 1)).order;
  await c.forgetIntent(sale.id);
  const b = (await c.placeOrder(sale.id, 1)).order;
  assert.notEqual(a.id, b.id);

  const listed = await c.listOrders();
  assert.deepEqual(new Set(listed.orders.map((o) => o.id)), new Set([a.id, b.id]));
  assert.equal((await c.getOrder(a.id)).order.status, 'pending_payment');

  const cancelled = await c.cancelOrder(a.id);
  assert.equal(cancelled.ok, true);
  assert.equal(cancelled.order.status, 'cancelled');

  proxy.dropAnswer('POST', /\/cancel$/);
  const lostCancel = await c.cancelOrder(b.id);
  assert.equal(lostCancel.ok, true, JSON.stringify(lostCancel));
  assert.equal(lostCancel.order.status, 'cancelled');

  assert.equal((await c.cancelOrder(b.id)).code, 'conflict', 'a plain second cancel is refused as the engine says');
  const stats = await engine.stats(sale.id);
  assert.equal(stats.cancelled, 2);
  assert.equal(stats.remaining, 3);
  const otherShopper = client(newShopper()).client;
  assert.equal((await otherShopper.getOrder(a.id)).code, 'not_found');
});

test('a lost answer, then a 401 the login service cannot fix: the intent keeps its key, and the next tap replays the order', async () => {
  // per_user_limit 5: a second order would be accepted, so only the key prevents it.
  const sale = await engine.createSale({ stock_total: 10, per_user_limit: 5 });
  const shopper = newShopper();
  let lapsed = true;
  const transport = recording(fetchTransport({ baseUrl: proxy.baseUrl }));
  const posted = () => transport.log.some((e) => e.method === 'POST');
  const c = createClient({
    transport,
    // The first attempt's token is good; then the login session lapses
    // (an expired token, refresh or not) until the shopper logs in again.
    getToken: () => shopperToken(shopper, !posted() || !lapsed ? 3600 : -60),
    retry: { backoffMs: 20, jitterMs: 20 },
  });
  proxy.dropAnswer('POST', ORDERS);

  const refused = await c.placeOrder(sale.id, 1);
  assert.equal(refused.code, 'unauthorized', JSON.stringify(refused));
  assert.equal((await engine.stats(sale.id)).reserved, 1, 'the lost answer carried an order');
  const intent = await c.pendingIntent(sale.id);
  assert.ok(intent, 'a 401 says nothing of the lost answer: the intent stays');
  assert.equal(intent.key, transport.log[0].headers['idempotency-key']);

  lapsed = false;
  const again = await c.placeOrder(sale.id, 1);
  assert.equal(again.ok, true, JSON.stringify(again));
  assert.equal(again.replayed, true, 'the order the lost answer carried');
  const stats = await engine.stats(sale.id);
  assert.equal(stats.reserved, 1, JSON.stringify(stats));
});

test("a lost answer, then a proxy's 403 page (no engine error body): the intent keeps its key, and the next tap replays the order", async () => {
  // per_user_limit 5: a second order would be accepted, so only the key prevents it.
  const sale = await engine.createSale({ stock_total: 10, per_user_limit: 5 });
  const { client: c, transport } = client(newShopper());
  proxy.dropAnswer('POST', ORDERS);
  // A WAF in front of the engine refuses the retry with a page of its own,
  // not the engine's error JSON: the engine may never have seen it.
  proxy.answer('POST', ORDERS, 403, { 'content-type': 'text/html' }, '<html><body>403 Forbidden</body></html>');

  const blocked = await c.placeOrder(sale.id, 1);
  assert.equal(blocked.ok, false);
  assert.equal(blocked.status, 403);
  assert.equal(blocked.code, 'http_403', JSON.stringify(blocked));
  assert.equal((await engine.stats(sale.id)).reserved, 1, 'the lost answer carried an order');
  const intent = await c.pendingIntent(sale.id);
  assert.ok(intent, "a proxy's page says nothing of the lost answer: the intent stays");
  assert.equal(intent.key, transport.log[0].headers['idempotency-key']);

  const again = await c.placeOrder(sale.id, 1);
  assert.equal(again.ok, true, JSON.stringify(again));
  assert.equal(again.replayed, true, 'the order the lost answer carried');
  assert.equal(transport.log.at(-1).headers['idempotency-key'], intent.key);
  const stats = await engine.stats(sale.id);
  assert.equal(stats.reserved, 1, JSON.stringify(stats));
  assert.equal(stats.buyers, 1);
});

test('an expired shopper token: one refresh from the login service, then the call goes through', async () => {
  const shopper = newShopper();
  const refreshes = [];
  let token = shopperToken(shopper, -60);
  const c = createClient({
    transport: fetchTransport({ baseUrl: engine.baseUrl }),
    getToken: ({ refresh }) => {
      if (refresh) {
        refreshes.push(Date.now());
        token = shopperToken(shopper);
      }
      return token;
    },
  });
  const result = await c.listOrders();
  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(refreshes.length, 1);

  const bad = createClient({ transport: fetchTransport({ baseUrl: engine.baseUrl }), getToken: () => 'not-a-token' });
  const refused = await bad.listOrders();
  assert.equal(refused.code, 'unauthorized', 'a token the login service cannot fix is refused after one refresh');
});
