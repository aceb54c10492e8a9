// The example Mini Program page, run against the real engine with a `wx`
// stand-in whose wx.request is real HTTP: it proves the example works as
// shipped and that the Mini Program adapters (wxTransport, wxStorage) speak
// to the engine: login through the merchant's service, countdown, buy,
// limit, orders, cancel.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';

import { NetworkError, createClient, wxStorage, wxTransport } from '../src/index.js';
import { newShopper, shopperToken, startEngine } from '../testing/engine.js';
import { loadExample, until } from '../testing/page.js';
import { wxStandIn } from '../testing/wx.js';

const EXAMPLE = new URL('../example/', import.meta.url);

let engine;

before(async () => {
  engine = await startEngine();
});

after(async () => {
  await engine?.stop();
});

test('the example page: countdown, buy once, limit, orders, cancel, through wx.request and wx storage', { timeout: 60_000 }, async () => {
  const sale = await engine.createSale({ stock_total: 2, per_user_limit: 1, title: '红色小包' });
  const { wx, page, logins, engineUrl } = await loadExample({ engineBaseUrl: engine.baseUrl, shopper: newShopper() });
  assert.equal(engineUrl, 'https://seckill.example.com');

  page.onLoad({ sale: sale.id });
  try {
    await until(() => page.data.sale && page.data.countdown, 'the sale and its countdown shown');
    assert.equal(page.data.phase, 'live');
    assert.match(page.data.countdown, /^00:5\d:\d\d\.\d$/);
    assert.equal(page.data.soldPercent, 0);

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

test('the example WXML only names handlers and data the page has', async () => {
  const wxml = await readFile(new URL('pages/seckill/seckill.wxml', EXAMPLE), 'utf8');
  const js = await readFile(new URL('pages/seckill/seckill.js', EXAMPLE), 'utf8');
  for (const [, handler] of wxml.matchAll(/bind\w+="(\w+)"/g)) {
    assert.match(js, new RegExp(`\\n  (async )?${handler}\\(`), `handler ${handler}`);
  }
  const data = /data: \{([^}]*)\}/.exec(js)[1];
  for (const [, name] of wxml.matchAll(/\{\{\s*!?\(?\s*([a-zA-Z_]\w*)/g)) {
    if (name === 'item') continue;
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
