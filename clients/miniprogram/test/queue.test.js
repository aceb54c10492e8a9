// The waiting room against the real engine (embedded store, a queued sale
// opening seconds after it is scheduled, the engine's poll advice between
// 200 and 600 ms so a test's polls reach the store): the client polls no
// sooner than each answer's poll_after_ms (checked from the recorded
// send and answer times of every request it made, never against a
// wall-clock budget), hands the admission's token to the order, joins
// again after a 404 (one the proxy puts in place of the engine's answer,
// and the engine's own once an admission expired unused), stops at
// sold_out, and answers a too-early poll from memory whatever the page
// does. The expiry takes 15 s of the engine's time: that test runs beside
// the others.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { createClient, fetchTransport, memoryStorage } from '../src/index.js';
import { newShopper, shopperToken, startEngine } from '../testing/engine.js';
import { until } from '../testing/page.js';
import { recording, startProxy } from '../testing/proxy.js';

let engine;
let proxy;

before(async () => {
  engine = await startEngine({
    FLASHSALE_QUEUE_POLL_MS_MIN: '200',
    FLASHSALE_QUEUE_POLL_MS_MAX: '600',
    // One admission outstanding per unit left: a one-unit sale admits one shopper at a time.
    FLASHSALE_QUEUE_HEADROOM_PCT: '100',
  });
  proxy = await startProxy(engine.baseUrl);
});

after(async () => {
  await proxy?.close();
  await engine?.stop();
});

const QUEUE = /^\/api\/v1\/sales\/[^/]+\/queue$/;
const ORDERS = /^\/api\/v1\/sales\/[^/]+\/orders$/;

function client(shopper = newShopper()) {
  const transport = recording(fetchTransport({ baseUrl: proxy.baseUrl }));
  const token = shopperToken(shopper);
  const c = createClient({ transport, getToken: () => token, pollIntervalMinMs: 100, retry: { backoffMs: 50, jitterMs: 50 } });
  return { shopper, token, transport, client: c };
}

/**
 * Every queue call after an answer was sent no sooner than that answer's
 * poll_after_ms (or Retry-After) later. `calls` are the client's requests
 * (recorded by its transport: sent at `sentAt`) or the engine's (recorded
 * by the proxy: arrived at `receivedAt`).
 */
function assertPacedAsTold(calls, sentAt = 'sentAt') {
  for (let i = 1; i < calls.length; i++) {
    const previous = calls[i - 1];
    const gap = calls[i][sentAt] - previous.answeredAt;
    let told = 0;
    if (previous.status === 200 || previous.status === 201) told = previous.body.poll_after_ms;
    else if (previous.retryAfter) told = Number(previous.retryAfter) * 1000;
    assert.ok(gap >= told, `queue call ${i} came ${gap} ms after the previous answer (${previous.status}), told ${told} ms`);
  }
  return calls;
}

/** The client's queue calls, as its transport recorded them. */
function queueCalls(log) {
  return log.filter((e) => QUEUE.test(e.path));
}

/** The queue calls the engine got with this shopper's token, as the proxy recorded them. */
function engineQueueCalls(token) {
  return proxy.log.filter((e) => e.authorization === `Bearer ${token}` && QUEUE.test(e.url));
}

describe('the waiting room', { concurrency: true }, () => {
  test('an admission left unused expires: wait joins again, the engine puts the shopper at the back, and the new admission buys', { timeout: 60_000 }, async () => {
    // Straight to the engine: the proxy's injected answers belong to the tests beside this one.
    const transport = recording(fetchTransport({ baseUrl: engine.baseUrl }));
    const token = shopperToken(newShopper());
    const c = createClient({ transport, getToken: () => token, pollIntervalMinMs: 100 });
    const sale = await engine.createQueuedSale({ stock_total: 3, admission: { token_ttl_secs: 10 } });

    const first = await c.waitingRoom.wait(sale.id);
    assert.equal(first.ok, true, JSON.stringify(first));
    assert.equal(first.place.position, 1);
    // Not used: 5 s after it expires (the engine's grace), its place goes to the next shopper.
    await new Promise((resolve) => setTimeout(resolve, Date.parse(first.expiresAt) + 5500 - Date.now()));
    const from = transport.log.length;
    const second = await c.waitingRoom.wait(sale.id);

    assert.equal(second.ok, true, JSON.stringify(second));
    const calls = transport.log.slice(from);
    // The client knows the token expired, so it joins rather than polls;
    // the engine's join frees the expired place and answers the back of the line.
    assert.equal(calls[0].method, 'POST', `joins again: ${calls.map((e) => `${e.method} ${e.status}`).join(', ')}`);
    assert.equal(calls[0].status, 201);
    assert.equal(calls.at(-1).status === 200 || calls.at(-1).status === 201, true);
    assert.equal(second.place.position, 2, 'at the back of the line');
    assert.notEqual(second.purchaseToken, first.purchaseToken);
    const order = await c.placeOrder(sale.id, 1, { purchaseToken: second.purchaseToken });
    assert.equal(order.ok, true, JSON.stringify(order));
  });

  // One at a time: they share the proxy's injected answers.
  describe('paced, admitted, refused', { concurrency: 1 }, () => {
    test('three shoppers in the pre-queue: polled no sooner than poll_after_ms, positions reported, each admission token buys its order', { timeout: 60_000 }, async () => {
      const sale = await engine.createQueuedSale({ startsInMs: 2500, stock_total: 5, admission: { admit_per_sec: 1 } });
      const shoppers = [client(), client(), client()];
      const progress = shoppers.map(() => []);

      const results = await Promise.all(
        shoppers.map(({ client: c }, i) => c.buy(sale.id, 1, { onProgress: (place) => progress[i].push(place) })),
      );

      for (const [i, result] of results.entries()) {
        assert.equal(result.ok, true, JSON.stringify(result));
        const { transport, token } = shoppers[i];
        const calls = assertPacedAsTold(queueCalls(transport.log));
        const received = assertPacedAsTold(engineQueueCalls(token), 'receivedAt');
        assert.equal(received.length, calls.length, 'the engine got what the client sent');
        assert.equal(calls[0].method, 'POST', 'joins first');
        assert.ok(calls.slice(1).every((e) => e.method === 'GET'), 'then only polls');
        const places = progress[i];
        assert.equal(places[0].status, 'waiting');
        assert.equal(places[0].position, null, 'no place before the opening: the shuffle places the pre-queue');
        const admitted = places.at(-1);
        assert.equal(admitted.status, 'admitted');
        assert.ok(admitted.position >= 1 && admitted.position <= 3);
        const orders = transport.log.filter((e) => ORDERS.test(e.path));
        assert.equal(orders.length, 1);
        assert.equal(orders[0].headers['x-purchase-token'], admitted.purchase_token, 'the admission token reaches the order route');
        assert.equal(orders[0].status, 201);
        const last = transport.log.findLastIndex((e) => QUEUE.test(e.path));
        assert.ok(last < transport.log.indexOf(orders[0]), 'no poll after the admission');
      }
      const positions = progress.map((places) => places.at(-1).position).sort();
      assert.deepEqual(positions, [1, 2, 3]);
      // One admission a second: the last in line was told someone was ahead.
      const third = progress.find((places) => places.at(-1).position === 3);
      assert.ok(third.some((place) => place.status === 'waiting' && place.ahead > 0), JSON.stringify(third));
      assert.ok(third.filter((place) => place.status === 'waiting').length >= 3, 'several polls while waiting');
      const stats = await engine.stats(sale.id);
      assert.equal(stats.reserved, 3, JSON.stringify(stats));
      assert.equal(stats.buyers, 3);
    });

    test('a 404 while waiting (an admission that expired unused) joins again; a 503 is polled again no sooner than its Retry-After', { timeout: 60_000 }, async () => {
      const sale = await engine.createQueuedSale({ startsInMs: 1500, stock_total: 5 });
      const { client: c, transport } = client();
      const notInLine = { error: { code: 'not_found', message: 'not in this sale\'s queue' } };
      proxy.answer('GET', QUEUE, 404, {}, notInLine);
      proxy.answer('GET', QUEUE, 503, { 'retry-after': '1' }, { error: { code: 'overloaded', message: 'shedding' } });

      const result = await c.buy(sale.id, 1);

      assert.equal(result.ok, true, JSON.stringify(result));
      const calls = assertPacedAsTold(queueCalls(transport.log));
      assert.deepEqual(
        calls.slice(0, 4).map((e) => `${e.method} ${e.status}`),
        ['POST 201', 'GET 404', 'POST 201', 'GET 503'],
        'joined again after the 404',
      );
      assert.equal(calls.at(-1).body.status, 'admitted');
      assert.equal((await engine.stats(sale.id)).reserved, 1);

      // Never joined: the engine's own 404, answered as not_found.
      const other = await engine.createQueuedSale({ startsInMs: 60_000 });
      const poll = await c.waitingRoom.poll(other.id);
      assert.equal(poll.status, 404);
      assert.equal(poll.code, 'not_found');
    });

    test('a wait before the pre-queue opens sleeps until it does by the server clock, then joins and buys', { timeout: 60_000 }, async () => {
      const sale = await engine.createQueuedSale({ startsInMs: 4000, stock_total: 5, admission: { prequeue_opens_secs: 2 } });
      const opensAt = Date.parse(sale.admission.prequeue_opens_at);
      const { client: c, transport } = client();

      const result = await c.buy(sale.id, 1);

      assert.equal(result.ok, true, JSON.stringify(result));
      const joins = queueCalls(transport.log).filter((e) => e.method === 'POST');
      assert.deepEqual(joins.map((e) => e.status), [409, 201], 'refused once, then joined');
      assert.equal(joins[0].body.error.code, 'not_started');
      // The engine runs on this machine: its clock is the test's.
      assert.ok(joins[1].sentAt >= opensAt, `joined ${opensAt - joins[1].sentAt} ms before the pre-queue opened`);
      assert.ok(joins[1].sentAt < opensAt + 1500, `joined ${joins[1].sentAt - opensAt} ms after it opened (spread at most 1 s)`);
      assertPacedAsTold(queueCalls(transport.log).slice(1));
      assert.equal((await engine.stats(sale.id)).reserved, 1);
    });

    test('sold_out ends the wait and its polling; an order without the queue is forbidden', { timeout: 60_000 }, async () => {
      const sale = await engine.createQueuedSale({ stock_total: 1 });
      const first = client();
      const second = client();
      const admission = await first.client.waitingRoom.wait(sale.id);
      assert.equal(admission.ok, true, JSON.stringify(admission));

      const waiting = [];
      const secondBuy = second.client.buy(sale.id, 1, { onProgress: (place) => waiting.push(place) });
      await until(() => waiting.length >= 2, 'the second shopper waiting');
      assert.ok(waiting.every((place) => place.status === 'waiting'), 'one admission at a time for one unit');
      const bought = await first.client.placeOrder(sale.id, 1, { purchaseToken: admission.purchaseToken });
      assert.equal(bought.ok, true, JSON.stringify(bought));
      // Paid: nothing can come back, so the line is sold out.
      await engine.payOrder(first.shopper, bought.order.id);
      const result = await secondBuy;

      assert.equal(result.ok, false);
      assert.equal(result.code, 'sold_out');
      assert.equal(result.place.status, 'sold_out');
      assertPacedAsTold(queueCalls(second.transport.log));
      const sent = second.transport.log.length;
      await new Promise((resolve) => setTimeout(resolve, 1500));
      assert.equal(second.transport.log.length, sent, 'no poll after sold_out');
      assert.equal(second.transport.log.filter((e) => ORDERS.test(e.path)).length, 0, 'no order without admission');

      const outsider = client();
      const refused = await outsider.client.placeOrder(sale.id, 1);
      assert.equal(refused.code, 'forbidden');
      assert.equal(outsider.transport.log.filter((e) => /purchase-token/.test(e.path)).length, 0, 'a queued sale gives no purchase token');
    });

    test('a join or poll before poll_after_ms is answered from memory, whatever the page calls; two waits share one', { timeout: 60_000 }, async () => {
      const sale = await engine.createQueuedSale({ startsInMs: 60_000 });
      const { client: c, transport } = client();

      const joined = await c.waitingRoom.join(sale.id);
      assert.equal(joined.ok, true);
      assert.equal(joined.remembered, false);
      const early = [];
      for (let i = 0; i < 5; i++) early.push(await c.waitingRoom.poll(sale.id), await c.waitingRoom.join(sale.id));
      assert.ok(early.every((answer) => answer.ok && answer.remembered), 'answered from memory');
      assert.equal(transport.log.length, 1, 'one request');

      const firstWait = c.waitingRoom.wait(sale.id);
      const secondWait = c.waitingRoom.wait(sale.id);
      await until(() => transport.log.length >= 2, 'a poll');
      c.waitingRoom.stop(sale.id);
      const [a, b] = await Promise.all([firstWait, secondWait]);
      assert.equal(a.code, 'stopped');
      assert.equal(b, a, 'one wait');
      assertPacedAsTold(queueCalls(transport.log));
      const polls = transport.log.filter((e) => e.method === 'GET');
      assert.ok(polls.length >= 1);
    });

    test('an admission is not answered from memory once its token has expired, however long poll_after_ms is', async () => {
      // A stand-in engine: admitted, token for 10 s, poll again in 60 s (an engine whose longest advice outlasts the token).
      let localMs = Date.now();
      const requests = [];
      const transport = async (request) => {
        requests.push(request);
        const place = {
          status: 'admitted',
          position: 1,
          ahead: 0,
          eta_secs: 0,
          poll_after_ms: 60_000,
          server_time: new Date(localMs).toISOString(),
          purchase_token: `t${requests.length}`,
          expires_at: new Date(localMs + 10_000).toISOString(),
        };
        return { status: 200, headers: {}, body: place };
      };
      const token = shopperToken(newShopper());
      const c = createClient({ transport, getToken: () => token, now: () => localMs });

      assert.equal((await c.waitingRoom.poll('s_standin01')).place.purchase_token, 't1');
      localMs += 9_000;
      assert.equal((await c.waitingRoom.poll('s_standin01')).remembered, true, 'the token still holds');
      localMs += 1_000;
      const after = await c.waitingRoom.poll('s_standin01');
      assert.equal(after.remembered, false);
      assert.equal(after.place.purchase_token, 't2');
      assert.equal(requests.length, 2);
    });

    test('a kept intent on a queued sale that ended: the wait is refused, and the order the lost answer made is replayed', { timeout: 60_000 }, async () => {
      const own = await startProxy(engine.baseUrl);
      try {
        const token = shopperToken(newShopper());
        const storage = memoryStorage();
        const started = () => createClient({
          transport: recording(fetchTransport({ baseUrl: own.baseUrl })),
          getToken: () => token,
          storage,
          pollIntervalMinMs: 100,
          retry: { attemptsMax: 1 },
        });
        const sale = await engine.createQueuedSale({ stock_total: 2 });
        own.dropAnswer('POST', ORDERS);
        const lost = await started().buy(sale.id, 1);
        assert.equal(lost.code, 'network_error', JSON.stringify(lost));
        assert.equal((await engine.stats(sale.id)).reserved, 1, 'the order of the lost answer was made');
        await engine.admin('PATCH', `/admin/v1/sales/${sale.id}`, { status: 'ended' });

        // The Mini Program restarts: its admission is gone, its intent kept.
        const c = started();
        const again = await c.buy(sale.id, 1);

        assert.equal(again.ok, true, JSON.stringify(again));
        assert.equal(again.replayed, true);
        assert.equal(await c.pendingIntent(sale.id), undefined);
        assert.equal((await engine.stats(sale.id)).reserved, 1);
      } finally {
        await own.close();
      }
    });

    test('buy on a sale the client has not seen: an open sale with require_purchase_token gets its token first', async () => {
      const sale = await engine.createSale({ stock_total: 5, require_purchase_token: true });
      const { client: c, transport } = client();

      const result = await c.buy(sale.id, 1);

      assert.equal(result.ok, true, JSON.stringify(result));
      assert.deepEqual(
        transport.log.map((e) => `${e.method} ${e.path.replace(sale.id, ':id')}`),
        ['GET /api/v1/sales/:id', 'POST /api/v1/sales/:id/purchase-token', 'POST /api/v1/sales/:id/orders'],
      );
      assert.ok(transport.log[2].headers['x-purchase-token']);
      assert.equal((await c.buy(sale.id, 0)).code, 'invalid_request');
    });
  });
});
