// Paying: `pay(orderId)` against the real engine in WeChat Pay mode, with a
// WeChat Pay stand-in (testing/wechatpay.js: it signs its answers with a
// platform key and, when the shopper pays in the sheet, sends the engine a
// signed, AES-256-GCM encrypted TRANSACTION.SUCCESS notification) and a
// `wx` stand-in whose requestPayment records what it was called with.
// Proved: the engine's parameters reach wx.requestPayment unchanged and
// paySign verifies with the merchant's public key; the order ends `paid`,
// read no faster than the poll interval; a cancelled sheet leaves the order
// pending and is answered as such; a 503 is retried after its Retry-After;
// "still processing" after the bounded wait, but an order that can no
// longer be paid at once; a payment after a cancel is refund_required;
// 404, 409 and the engine's 502 are answered at once, without a sheet; and
// the example page's pay button.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { PAYMENT_FIELDS, createClient, fetchTransport, sheetOutcome, wxRequestPayment } from '../src/index.js';
import { newShopper, shopperToken, startEngine } from '../testing/engine.js';
import { loadExample, until } from '../testing/page.js';
import { recording, startProxy } from '../testing/proxy.js';
import { APPID, rsaVerifies, startWeChatPay } from '../testing/wechatpay.js';
import { wxStandIn } from '../testing/wx.js';

let wechat;
let engine;
let proxy;

before(async () => {
  wechat = await startWeChatPay();
  engine = await startEngine(wechat.engineSettings());
  proxy = await startProxy(engine.baseUrl);
});

after(async () => {
  await proxy?.close();
  await engine?.stop();
  await wechat?.close();
});

const POLL_MS = 200;
const PREPAY = /^\/api\/v1\/orders\/[^/]+\/wechatpay$/;
const ORDER_READ = /^\/api\/v1\/orders\/[^/]+$/;

/**
 * A shopper with a pending order of a fresh sale, and a client whose
 * payment sheet is `wx.requestPayment` of a stand-in answering as
 * `onRequestPayment(params)` says. `afterAnswer(request, answer)` runs
 * before the client sees each answer.
 */
async function shopperWithOrder({ onRequestPayment, baseUrl = engine.baseUrl, afterAnswer, ...options } = {}) {
  const sale = await engine.createSale({ stock_total: 5, per_user_limit: 1 });
  const shopper = newShopper();
  const token = shopperToken(shopper);
  const wx = wxStandIn({ onRequestPayment });
  const plain = fetchTransport({ baseUrl });
  const transport = recording(async (request) => {
    const answer = await plain(request);
    if (afterAnswer) await afterAnswer(request, answer);
    return answer;
  });
  const client = createClient({
    transport,
    getToken: () => token,
    requestPayment: wxRequestPayment(wx),
    pollIntervalMinMs: POLL_MS,
    ...options,
  });
  const placed = await client.placeOrder(sale.id, 1);
  assert.equal(placed.ok, true, JSON.stringify(placed));
  return { sale, shopper, wx, transport, client, order: placed.order };
}

/** The order reads the client sent after the sheet. */
function orderReads(transport) {
  return transport.log.filter((e) => e.method === 'GET' && ORDER_READ.test(e.path));
}

function assertSpaced(reads, ms) {
  for (let i = 1; i < reads.length; i++) {
    const gap = reads[i].sentAt - reads[i - 1].answeredAt;
    assert.ok(gap >= ms, `read ${i} sent ${gap} ms after the previous answer, interval ${ms} ms`);
  }
}

test('pay: the parameters reach wx.requestPayment unchanged, paySign verifies with the merchant key, and the order ends paid', async () => {
  let notified = null;
  const { sale, wx, transport, client, order } = await shopperWithOrder({
    onRequestPayment: () => 'requestPayment:ok',
    // WeChat Pay's notification reaches the engine once the client has
    // read the order pending after the sheet: the client must poll.
    afterAnswer: async (request, answer) => {
      if (!notified && request.method === 'GET' && ORDER_READ.test(request.path) && answer.body.status === 'pending_payment') {
        notified = await wechat.pay(engine.baseUrl, wx.payments[0].package);
      }
    },
  });

  const result = await client.pay(order.id);

  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.order.status, 'paid');
  const prepay = transport.log.find((e) => e.method === 'POST' && PREPAY.test(e.path));
  assert.equal(prepay.status, 200);
  const answered = prepay.body;
  assert.equal(answered.appId, APPID);
  assert.equal(wx.payments.length, 1, 'one payment sheet');
  const passed = wx.payments[0];
  assert.deepEqual(Object.keys(passed).sort(), [...PAYMENT_FIELDS].sort(), 'exactly what wx.requestPayment takes');
  for (const field of PAYMENT_FIELDS) assert.equal(passed[field], answered[field], `${field} unchanged`);
  assert.equal(passed.signType, 'RSA');
  const wxOrder = wechat.orders.get(order.id);
  assert.equal(passed.package, `prepay_id=${wxOrder.prepayId}`);
  assert.ok(
    rsaVerifies(wechat.merchantPublicKey, `${APPID}\n${passed.timeStamp}\n${passed.nonceStr}\n${passed.package}\n`, passed.paySign),
    'paySign verifies with the merchant public key',
  );
  assert.deepEqual(notified, { status: 200, body: { code: 'SUCCESS', message: 'OK' } });
  assert.equal(result.order.transaction_id, wxOrder.transactionId);
  const reads = orderReads(transport);
  assert.ok(reads.length >= 2, `${reads.length} reads`);
  assert.equal(reads[0].body.status, 'pending_payment');
  assert.equal(reads.at(-1).body.status, 'paid');
  assertSpaced(reads, POLL_MS);
  const stats = await engine.stats(sale.id);
  assert.equal(stats.paid, 1, JSON.stringify(stats));
  assert.equal(stats.reserved, 0);
  assert.ok(wechat.calls.every((call) => call.authorized), 'every call to WeChat Pay signed by the merchant');
});

test('a cancelled payment sheet answers payment_cancelled and leaves the order pending; paying again reuses the WeChat Pay order', async () => {
  let sheet = 'requestPayment:fail cancel';
  const { sale, wx, transport, client, order } = await shopperWithOrder({
    onRequestPayment: async (params) => {
      if (sheet === 'requestPayment:ok') await wechat.pay(engine.baseUrl, params.package);
      return sheet;
    },
  });

  const cancelled = await client.pay(order.id);

  assert.equal(cancelled.ok, false);
  assert.equal(cancelled.code, 'payment_cancelled');
  assert.equal(cancelled.message, 'requestPayment:fail cancel');
  assert.equal(orderReads(transport).length, 0, 'no polling after a cancelled sheet');
  assert.equal((await client.getOrder(order.id)).order.status, 'pending_payment');
  const stats = await engine.stats(sale.id);
  assert.equal(stats.reserved, 1, JSON.stringify(stats));
  assert.equal(stats.paid, 0);

  sheet = 'requestPayment:ok';
  const jsapiCalls = () => wechat.calls.filter((call) => call.path === '/v3/pay/transactions/jsapi').length;
  const jsapiBefore = jsapiCalls();
  const paid = await client.pay(order.id);
  assert.equal(paid.ok, true, JSON.stringify(paid));
  assert.equal(paid.order.status, 'paid');
  assert.equal(wx.payments.length, 2);
  assert.equal(wx.payments[1].package, wx.payments[0].package, 'the same WeChat Pay order');
  assert.notEqual(wx.payments[1].nonceStr, wx.payments[0].nonceStr, 'freshly signed parameters');
  assert.equal(jsapiCalls(), jsapiBefore, 'the engine kept the prepay id: WeChat Pay is not asked again');
});

test('a 503 from the engine (WeChat Pay answering 500) is retried no sooner than Retry-After, then paid', async () => {
  const { transport, client, order } = await shopperWithOrder({
    onRequestPayment: async (params) => {
      await wechat.pay(engine.baseUrl, params.package);
      return 'requestPayment:ok';
    },
  });
  wechat.failNext(1);

  const result = await client.pay(order.id);

  assert.equal(result.ok, true, JSON.stringify(result));
  const prepays = transport.log.filter((e) => e.method === 'POST' && PREPAY.test(e.path));
  assert.deepEqual(prepays.map((e) => e.status), [503, 200]);
  assert.equal(prepays[0].body.error.code, 'unavailable');
  const retryAfterMs = Number(prepays[0].retryAfter) * 1000;
  assert.ok(retryAfterMs >= 1000, `Retry-After: ${prepays[0].retryAfter}`);
  const gap = prepays[1].sentAt - prepays[0].answeredAt;
  assert.ok(gap >= retryAfterMs, `retried ${gap} ms after the 503, Retry-After ${retryAfterMs} ms`);
});

test('no notification within payWaitMaxMs: payment_processing with the pending order; waitUntilPaid later sees it paid', async () => {
  const { wx, transport, client, order } = await shopperWithOrder({
    onRequestPayment: () => 'requestPayment:ok',
    payWaitMaxMs: 1000,
  });

  const processing = await client.pay(order.id);

  assert.equal(processing.ok, false);
  assert.equal(processing.code, 'payment_processing');
  assert.equal(processing.order.status, 'pending_payment');
  const reads = orderReads(transport);
  assert.ok(reads.length >= 2 && reads.length <= 1 + 1000 / POLL_MS, `${reads.length} reads in 1 s at most every ${POLL_MS} ms`);
  assertSpaced(reads, POLL_MS);

  await wechat.pay(engine.baseUrl, wx.payments[0].package);
  const paid = await client.waitUntilPaid(order.id);
  assert.equal(paid.ok, true, JSON.stringify(paid));
  assert.equal(paid.order.status, 'paid');
});

test('waitUntilPaid on an order that can no longer be paid answers its status at once (cancelled, with the order), not payment_processing', async () => {
  const { transport, client, order } = await shopperWithOrder();
  assert.equal((await client.cancelOrder(order.id)).ok, true);

  const startedAt = Date.now();
  const closed = await client.waitUntilPaid(order.id);

  assert.equal(closed.ok, false);
  assert.equal(closed.code, 'cancelled', JSON.stringify(closed));
  assert.equal(closed.order.status, 'cancelled');
  assert.equal(orderReads(transport).length, 1, 'one read: a cancelled order is never paid');
  assert.ok(Date.now() - startedAt < POLL_MS, `answered after ${Date.now() - startedAt} ms`);
});

test('a sheet that fails otherwise answers payment_failed with its errMsg, after one read of the order', async () => {
  const { transport, client, order } = await shopperWithOrder({ onRequestPayment: () => 'requestPayment:fail 支付签名验证失败' });

  const failed = await client.pay(order.id);

  assert.equal(failed.code, 'payment_failed');
  assert.equal(failed.message, 'requestPayment:fail 支付签名验证失败');
  assert.equal(orderReads(transport).length, 1);
  assert.equal((await client.getOrder(order.id)).order.status, 'pending_payment');
  assert.equal(sheetOutcome('requestPayment:cancel'), 'cancelled', 'the cancel of WeChat 6.5.2 and older');
  assert.equal(sheetOutcome('requestPayment:ok'), 'paid');
});

test('paid after the order was cancelled (the race no close prevents): refund_required, with the order', async () => {
  let client;
  const shopper = await shopperWithOrder({
    onRequestPayment: async (params) => {
      const cancelled = await client.cancelOrder(shopper.order.id);
      assert.equal(cancelled.ok, true, JSON.stringify(cancelled));
      await wechat.pay(engine.baseUrl, params.package, { afterClose: true });
      return 'requestPayment:ok';
    },
  });
  client = shopper.client;

  const late = await client.pay(shopper.order.id);

  assert.equal(late.ok, false);
  assert.equal(late.code, 'refund_required');
  assert.equal(late.order.status, 'refund_required');
  assert.equal(wechat.orders.get(shopper.order.id).state, 'SUCCESS');
});

test("no sheet for another shopper's order (not_found), a cancelled one (conflict, with the order), the engine's 502, an answer without parameters; an order already paid is ok", async () => {
  const payAll = async (params) => {
    await wechat.pay(engine.baseUrl, params.package);
    return 'requestPayment:ok';
  };
  const mine = await shopperWithOrder({ onRequestPayment: payAll, baseUrl: proxy.baseUrl });
  const other = await shopperWithOrder({ onRequestPayment: payAll });

  const notMine = await mine.client.pay(other.order.id);
  assert.equal(notMine.status, 404);
  assert.equal(notMine.code, 'not_found');

  proxy.answer('POST', PREPAY, 502, {}, { error: { code: 'wechatpay_refused', message: 'WeChat Pay refused: 400 PARAM_ERROR' } });
  const refused = await mine.client.pay(mine.order.id);
  assert.equal(refused.code, 'wechatpay_refused');
  const minePrepays = () => mine.transport.log.filter((e) => e.path === `/api/v1/orders/${mine.order.id}/wechatpay`);
  assert.deepEqual(minePrepays().map((e) => e.status), [502], "the engine's 502 is an answer: not retried");

  proxy.answer('POST', PREPAY, 200, {}, 'not the parameters');
  const garbled = await mine.client.pay(mine.order.id);
  assert.equal(garbled.code, 'payment_failed');
  assert.equal(mine.wx.payments.length, 0, 'no sheet without the parameters');

  // A double tap: one sheet, one answer for both.
  const [first, second] = await Promise.all([mine.client.pay(mine.order.id), mine.client.pay(mine.order.id)]);
  assert.equal(first.ok, true, JSON.stringify(first));
  assert.equal(second, first);
  assert.equal(mine.wx.payments.length, 1);

  const again = await mine.client.pay(mine.order.id);
  assert.equal(again.ok, true, 'paid already: what the shopper wanted');
  assert.equal(again.order.status, 'paid');
  assert.equal(mine.wx.payments.length, 1, 'no second sheet');

  assert.equal((await other.client.cancelOrder(other.order.id)).ok, true);
  const late = await other.client.pay(other.order.id);
  assert.equal(late.code, 'conflict');
  assert.equal(late.order.status, 'cancelled');
  assert.equal(other.wx.payments.length, 0);
});

test('the example page: buy, then its pay button shows the sheet and the order paid', { timeout: 60_000 }, async () => {
  const sale = await engine.createSale({ stock_total: 2, per_user_limit: 1, title: '红色小包' });
  const { wx, page } = await loadExample({
    engineBaseUrl: engine.baseUrl,
    shopper: newShopper(),
    onRequestPayment: async (params) => {
      await wechat.pay(engine.baseUrl, params.package);
      return 'requestPayment:ok';
    },
  });
  page.onLoad({ sale: sale.id });
  try {
    await until(() => page.data.phase === 'live', 'the sale shown live');
    await page.buy();
    assert.equal(page.data.orders[0].status, 'pending_payment');

    await page.pay({ currentTarget: { dataset: { id: page.data.orders[0].id } } });

    assert.equal(page.data.message, '支付成功');
    assert.equal(page.data.paying, false);
    assert.equal(page.data.orders[0].statusText, '已支付');
    assert.equal(wx.payments.length, 1);
    assert.equal((await engine.stats(sale.id)).paid, 1);
  } finally {
    page.onUnload();
  }
});
