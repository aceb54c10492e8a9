// The example Mini Program page, run against the real engine with a `wx`
// stand-in whose wx.request is real HTTP: it proves the example works as
// shipped and that the Mini Program adapters (wxTransport, wxStorage) speak
// to the engine: login through the merchant's service, countdown, buy,
// limit, orders, cancel on one sale; a campaign's rounds, countdowns,
// progress bars and allowance; a queued sale's position while waiting; the
// payment deadline on the phone's clock, a refused cancel's own message,
// and buy and pay when the login service fails.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';

import { NetworkError, createClient, wxStorage, wxTransport } from '../src/index.js';
import { newShopper, shopperToken, startEngine } from '../testing/engine.js';
import { loadExample, until } from '../testing/page.js';
import { wxStandIn } from '../testing/wx.js';

const EXAMPLE = new URL('../example/', import.meta.url);

let engine;
let example;

before(async () => {
  engine = await startEngine();
  example = await loadExample({ engineBaseUrl: engine.baseUrl, shopper: newShopper() });
});

after(async () => {
  await engine?.stop();
});

test('the example page: countdown, buy once, limit, orders, cancel, through wx.request and wx storage', { timeout: 60_000 }, async () => {
  const sale = await engine.createSale({ stock_total: 2, per_user_limit: 1, title: '红色小包' });
  const { wx, page, logins, engineUrl, open } = example;
  assert.equal(engineUrl, 'https://seckill.example.com');

  open({ sale: sale.id });
  try {
    await until(() => page.data.items.length && page.data.countdown, 'the sale and its countdown shown');
    assert.equal(page.data.phase, 'live');
    assert.equal(page.data.title, '红色小包');
    assert.match(page.data.countdown, /^00:5\d:\d\d\.\d$/);
    assert.equal(page.data.items[0].soldPercent, 0);
    assert.equal(page.data.items[0].price, '199.00');

    await page.buy();
    assert.match(page.data.message, /^抢到了/);
    assert.equal(page.data.orders.length, 1);
    assert.equal(page.data.orders[0].status, 'pending_payment');
    assert.equal(page.data.orders[0].statusText, '待支付');
    const orderPosts = wx.requests.filter((r) => r.method === 'POST' && r.url.endsWith('/orders'));
    assert.equal(orderPosts.length, 1);
    assert.ok(orderPosts[0].header['idempotency-key']);
    assert.equal(orderPosts[0].dataType, 'text');
    assert.equal([...wx.storage.keys()].filter((k) => k.startsWith('flashsale:intent:')).length, 0, 'the intent ended with its order');

    await page.buy();
    assert.equal(page.data.message, '已达限购数量');

    await page.cancel({ currentTarget: { dataset: { id: page.data.orders[0].id } } });
    assert.equal(page.data.message, '订单已取消');
    assert.equal(page.data.orders[0].statusText, '已取消');
    const stats = await engine.stats(sale.id);
    assert.equal(stats.cancelled, 1);
    assert.equal(stats.reserved, 0);
    assert.equal(logins.length, 1, 'one login for the whole session');
  } finally {
    page.onUnload();
  }
});

test('the example page on a campaign: round tabs, countdowns, prices, progress bars, buy, allowance', { timeout: 60_000 }, async () => {
  const campaign = await engine.createCampaign();
  const { page, open } = example;

  open({ campaign: campaign.id });
  try {
    await until(() => page.data.items.length && page.data.countdown, 'the campaign and its countdown shown');
    assert.equal(page.data.title, 'Client test campaign');
    assert.equal(page.data.rounds.length, 2);
    assert.deepEqual(page.data.rounds.map((r) => r.phaseText), ['抢购中', '即将开始']);
    assert.equal(page.data.current, 0, 'the live round is shown');
    assert.equal(page.data.phase, 'live');
    assert.match(page.data.countdown, /^00:5\d:\d\d\.\d$/);
    assert.deepEqual(
      page.data.items.map((i) => [i.title, i.price, i.originalPrice, i.soldPercent]),
      [['小包', '99.00', '199.00', 0], ['托特包', '299.00', '599.00', 0]],
    );
    assert.equal(page.data.allowanceText, '本场还可抢 1 件，本活动还可抢 2 件');

    page.pickRound({ currentTarget: { dataset: { index: '1' } } });
    assert.equal(page.data.current, 1);
    assert.equal(page.data.phase, 'upcoming');
    assert.match(page.data.countdown, /^01:5\d:\d\d\.\d$/, 'round 1 starts in two hours');
    page.pickRound({ currentTarget: { dataset: { index: '0' } } });

    const item = page.data.items[0];
    await page.buy({ currentTarget: { dataset: { sale: item.saleId } } });
    assert.match(page.data.message, /^抢到了/);
    assert.deepEqual(page.data.orders.map((o) => [o.title, o.amount, o.statusText]), [['小包', '99.00', '待支付']]);
    // The page is read again after its max-age (the engine's, 1 s): the bar and the allowance move.
    await until(() => page.data.allowanceText === '本场还可抢 0 件，本活动还可抢 1 件', 'the allowance spent');
    await until(() => page.data.items[0].soldPercent === 20, 'the progress bar at 1 of 5');

    await page.buy({ currentTarget: { dataset: { sale: page.data.items[1].saleId } } });
    assert.equal(page.data.message, '已达限购数量', 'one item a round');
  } finally {
    page.onUnload();
  }
});

test('the example page on a queued sale: the queue position while waiting, then the order', { timeout: 60_000 }, async () => {
  const sale = await engine.createQueuedSale({ startsInMs: 1500, stock_total: 3, title: '排队款' });
  const { page, patches, open, wx } = example;

  open({ sale: sale.id });
  try {
    await until(() => page.data.items.length, 'the sale shown');
    assert.equal(page.data.phase, 'upcoming');
    assert.equal(page.data.items[0].queued, true, 'the button queues, before the opening too');
    const from = patches.length;
    // Tapped in the pre-queue, before the opening.
    await page.buy();
    assert.match(page.data.message, /^抢到了/, page.data.message);
    assert.equal(page.data.queueText, '', 'the queue box is gone once bought');
    const shown = patches.slice(from).map((p) => p.queueText).filter(Boolean);
    assert.match(shown[0], /^排队中，开抢后分配名次/);
    assert.ok(shown.some((text) => text === '轮到你了，正在下单…'), shown.join(' | '));
    const order = wx.requests.find((r) => r.method === 'POST' && r.url.endsWith(`${sale.id}/orders`));
    assert.ok(order.header['x-purchase-token'], 'the admission token went with the order');
    assert.equal((await engine.stats(sale.id)).reserved, 1);
  } finally {
    page.onUnload();
  }
});

test("the example page shows the payment deadline on the phone's clock", { timeout: 60_000 }, async () => {
  const sale = await engine.createSale({ stock_total: 2, per_user_limit: 1, title: '时钟款' });
  const { page, open } = example;
  const zone = process.env.TZ;
  // The phone is in China (UTC+8 all year); the engine answers in UTC.
  process.env.TZ = 'Asia/Shanghai';
  open({ sale: sale.id });
  try {
    await until(() => page.data.phase === 'live', 'the sale shown live');
    await page.buy();
    const [order] = page.data.orders;
    const local = new Date(Date.parse(order.expires_at) + 8 * 3_600_000).toISOString().slice(11, 16);
    assert.equal(page.data.message, `抢到了！请在 ${local} 前支付`);
  } finally {
    page.onUnload();
    if (zone === undefined) delete process.env.TZ;
    else process.env.TZ = zone;
  }
});

test("the example page's cancel says why a cancel was refused, in its own words", { timeout: 60_000 }, async () => {
  const sale = await engine.createSale({ stock_total: 2, per_user_limit: 1, title: '取消款' });
  const { page, open } = example;
  open({ sale: sale.id });
  try {
    await until(() => page.data.phase === 'live', 'the sale shown live');
    await page.buy();
    const tap = (id) => ({ currentTarget: { dataset: { id } } });
    const { id } = page.data.orders[0];
    await page.cancel(tap(id));
    assert.equal(page.data.message, '订单已取消');

    await page.cancel(tap(id));
    assert.equal(page.data.message, '订单已支付、已取消或已过期，不能再取消', 'conflict: not the order message');
    await page.cancel(tap('o_nothing0'));
    assert.equal(page.data.message, '订单不存在', 'not_found: not the waiting room message');
  } finally {
    page.onUnload();
  }
});

test('the example page when the login service fails: buy, pay and cancel say so, and their buttons work again', { timeout: 60_000 }, async () => {
  const sale = await engine.createSale({ stock_total: 2, per_user_limit: 1, title: '登录款' });
  const { app, page, open } = example;
  const login = app.shopperToken;
  open({ sale: sale.id });
  try {
    await until(() => page.data.phase === 'live', 'the sale shown live');
    await page.buy();
    assert.match(page.data.message, /^抢到了/);
    const { id } = page.data.orders[0];
    // The login service goes down: the client's getToken rejects.
    app.shopperToken = () => Promise.reject(new Error('login: 502'));

    // Each handler tells the shopper, and throws nothing out of the page.
    await page.buy();
    assert.equal(page.data.buying, false, 'the buy button works again');
    assert.equal(page.data.queueText, '');
    assert.equal(page.data.message, '出错了，请稍后再试');

    await page.pay({ currentTarget: { dataset: { id } } });
    assert.equal(page.data.paying, false, 'the pay button works again');
    assert.equal(page.data.message, '出错了，请稍后再试');

    page.setData({ message: '' });
    await page.cancel({ currentTarget: { dataset: { id } } });
    assert.equal(page.data.message, '出错了，请稍后再试');
  } finally {
    app.shopperToken = login;
    page.onUnload();
  }
});

test('the example WXML only names handlers and data the page has', async () => {
  const wxml = await readFile(new URL('pages/seckill/seckill.wxml', EXAMPLE), 'utf8');
  const js = await readFile(new URL('pages/seckill/seckill.js', EXAMPLE), 'utf8');
  for (const [, handler] of wxml.matchAll(/bind\w+="(\w+)"/g)) {
    assert.match(js, new RegExp(`\\n  (async )?${handler}\\(`), `handler ${handler}`);
  }
  const data = /data: \{([^}]*)\}/.exec(js)[1];
  for (const [, name] of wxml.matchAll(/\{\{\s*!?\(?\s*([a-zA-Z_]\w*)/g)) {
    if (name === 'item' || name === 'index') continue;
    assert.match(data, new RegExp(`\\b${name}:`), `data ${name}`);
  }
});

test('wxTransport: a failed wx.request is a NetworkError; wxStorage keeps values as wx storage does', async () => {
  const wx = wxStandIn({ routes: {} });
  const transport = wxTransport({ baseUrl: 'https://nowhere.example.com', wx });
  await assert.rejects(transport({ method: 'GET', path: '/api/v1/sales', headers: {}, timeoutMs: 1000 }), NetworkError);
  const client = createClient({ transport, storage: wxStorage(wx), getToken: () => shopperToken('oX'), retry: { attemptsMax: 2, backoffMs: 10 } });
  const result = await client.placeOrder('s_x', 1);
  assert.equal(result.code, 'network_error');
  assert.equal(wx.requests.length, 3, 'the probe, then two attempts');
  assert.ok(wx.storage.get('flashsale:intent:oX:s_x').key, 'the intent is in wx storage under the shopper and sale');
});
