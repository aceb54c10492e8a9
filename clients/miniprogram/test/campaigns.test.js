// Campaigns against the real engine (embedded store; the engine's page
// kept 1 s, so `Cache-Control: max-age=1`): the seckill page in one call,
// each round's countdown and reminder by the server clock whatever the
// phone's clock says, the shopper's allowance with a token, and the page
// read no more often than its max-age by the client's own clock (one the
// test moves on).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { campaignRounds, createClient, fetchTransport } from '../src/index.js';
import { REMINDER_EARLY_MS } from '../src/campaign.js';
import { newShopper, shopperToken, startEngine } from '../testing/engine.js';
import { recording } from '../testing/proxy.js';

let engine;

before(async () => {
  // The sale read for each clock sample is fresh (kept 1 ms), so the sync
  // is judged on the engine's clock during each request (see clock.test.js).
  engine = await startEngine({ FLASHSALE_CAMPAIGN_PAGE_CACHE_MS: '1000', FLASHSALE_SALE_POLL_CACHE_MS: '1' });
});

after(async () => {
  await engine?.stop();
});

const PAGE = /^\/api\/v1\/campaigns(\/[^/?]+)?$/;

function client({ now, getToken } = {}) {
  const transport = recording(fetchTransport({ baseUrl: engine.baseUrl }));
  const token = shopperToken(newShopper());
  return { transport, client: createClient({ transport, getToken: getToken ?? (() => token), now, pollIntervalMinMs: 100 }) };
}

// The engine runs on this machine: its clock is Date.now(), to the millisecond it formats.
const FORMAT_MS = 1;

for (const skewMs of [3_600_000, -5_400_000]) {
  test(`a local clock ${skewMs / 60_000} min off: each round's countdown is right to half a round trip`, async () => {
    const campaign = await engine.createCampaign();
    const { client: c, transport } = client({ now: () => Date.now() + skewMs });

    const before = Date.now();
    const page = await c.getCampaign(campaign.id);
    const afterNow = Date.now();

    assert.equal(page.ok, true, JSON.stringify(page));
    assert.equal(page.campaign.id, campaign.id);
    assert.equal(page.allowance, null, 'no allowance without asking for it');
    assert.equal(transport.log[0].headers.authorization, undefined, 'the public page is read without the token');
    assert.ok(transport.log.slice(1).every((e) => /^\/api\/v1\/sales\/[^/]+\?clock=\d+$/.test(e.path)), 'the clock synced through a sale');
    assert.equal(page.current, 0);
    const [live, next] = page.rounds;
    assert.equal(live.countdown.phase, 'live');
    assert.equal(next.countdown.phase, 'upcoming');
    const bound = c.clock.errorMs + FORMAT_MS;
    const endsAt = Date.parse(live.ends_at);
    const startsAt = Date.parse(next.starts_at);
    // The countdowns were computed between `before` and `afterNow`, by the server clock.
    assert.ok(
      live.countdown.msToEnd >= endsAt - afterNow - bound && live.countdown.msToEnd <= endsAt - before + bound,
      `round 0 ends in ${live.countdown.msToEnd} ms, true ${endsAt - before} ms`,
    );
    assert.ok(
      next.countdown.msToStart >= startsAt - afterNow - bound && next.countdown.msToStart <= startsAt - before + bound,
      `round 1 starts in ${next.countdown.msToStart} ms, true ${startsAt - before} ms`,
    );
    // A countdown from the phone's own clock would be off by the skew.
    assert.ok(Math.abs(campaignRounds(page.campaign, Date.now() + skewMs).rounds[1].countdown.msToStart - next.countdown.msToStart) > 60_000);
    const [item] = live.items;
    assert.equal(item.original_price_cents, 19900);
    assert.equal(item.sold_share, 0);
  });
}

test('the page is read no more often than its max-age, per shopper; the allowance comes with the token and is the shopper\'s', async () => {
  const campaign = await engine.createCampaign();
  // The client's local clock stands still until the test moves it on.
  let localMs = Date.now();
  const mine = shopperToken(newShopper());
  let token = mine;
  const { client: c, transport } = client({ now: () => localMs, getToken: () => token });
  const reads = () => transport.log.filter((e) => PAGE.test(e.path));

  const first = await c.getCampaign(campaign.id, { allowance: true });
  assert.equal(first.cached, false);
  assert.equal(first.msToRefresh, 1000, 'max-age=1');
  assert.deepEqual(first.allowance, { round_left: 1, campaign_left: 2 });
  assert.match(reads()[0].headers.authorization, /^Bearer /);
  const again = await c.getCampaign(campaign.id, { allowance: true });
  assert.equal(again.cached, true);
  assert.equal(reads().length, 1, 'within max-age: no request');
  await c.getCampaign(campaign.id);
  assert.equal(reads().length, 2, 'the public page is another page');

  const item = first.rounds[first.current].items[0];
  const sent = transport.log.length;
  const bought = await c.buy(item.sale_id, 1);
  assert.equal(bought.ok, true, JSON.stringify(bought));
  assert.deepEqual(transport.log.slice(sent).map((e) => e.method), ['POST'], 'the page told how the item is sold: the order alone');
  // The engine's page is read once a second: let it read the sale again.
  await new Promise((resolve) => setTimeout(resolve, 1100));
  assert.equal((await c.getCampaign(campaign.id, { allowance: true })).cached, true, 'the local clock says max-age has not passed');
  localMs += 1000;
  const after = await c.getCampaign(campaign.id, { allowance: true });
  assert.equal(after.cached, false);
  assert.equal(reads().length, 3);
  assert.deepEqual(after.allowance, { round_left: 0, campaign_left: 1 });
  const shown = after.rounds[after.current].items.find((i) => i.sale_id === item.sale_id);
  assert.equal(shown.sold_share, 1 / 5, 'the progress bar moved');

  // Another shopper logs in on the same client within the max-age: their own page, not the one kept.
  const theirToken = shopperToken(newShopper());
  token = theirToken;
  const theirs = await c.getCampaign(campaign.id, { allowance: true });
  assert.equal(theirs.cached, false);
  assert.equal(reads().length, 4);
  assert.equal(reads()[3].headers.authorization, `Bearer ${theirToken}`);
  assert.deepEqual(theirs.allowance, { round_left: 1, campaign_left: 2 }, 'another shopper\'s own allowance');
  token = mine;
  const mineAgain = await c.getCampaign(campaign.id, { allowance: true });
  assert.equal(mineAgain.cached, true, 'the first shopper\'s page is still kept');
  assert.deepEqual(mineAgain.allowance, { round_left: 0, campaign_left: 1 });
  assert.equal(reads().length, 4);

  const listed = await c.listCampaigns();
  assert.equal(listed.ok, true);
  assert.ok(listed.campaigns.some((entry) => entry.campaign.id === campaign.id && entry.rounds[entry.current].countdown.phase === 'live'));
  assert.equal((await c.getCampaign('c_nothing0')).code, 'not_found');
});

test('watchCampaign reads no sooner than max-age after each answer and stops once every round has ended', { timeout: 30_000 }, async () => {
  const now = Date.now();
  const campaign = await engine.createCampaign({
    rounds: [{ starts_at: new Date(now - 60_000).toISOString(), ends_at: new Date(now + 2500).toISOString() }],
  });
  const { client: c, transport } = client();
  const updates = [];
  let over;
  const done = new Promise((resolve) => {
    over = resolve;
  });
  const watch = c.watchCampaign(campaign.id, (update) => {
    updates.push(update);
    if (update.ok && update.rounds[0].countdown.phase === 'ended') over();
  });
  await done;
  const reads = transport.log.filter((e) => PAGE.test(e.path));
  await new Promise((resolve) => setTimeout(resolve, 1500));
  watch.stop();

  assert.equal(transport.log.filter((e) => PAGE.test(e.path)).length, reads.length, 'no read after the last round ended');
  assert.ok(reads.length >= 3, `${reads.length} reads`);
  for (let i = 1; i < reads.length; i++) {
    const gap = reads[i].sentAt - reads[i - 1].answeredAt;
    assert.ok(gap >= 1000, `read ${i} sent ${gap} ms after the previous answer, max-age 1000 ms`);
  }
  assert.equal(updates[0].rounds[0].countdown.phase, 'live');
  assert.ok(updates.every((update) => update.reminders.length === 0), 'a campaign without remind_before_secs reminds of nothing');
});

test('watchCampaign reminds of each round once, remind_before_secs before it starts by the server clock, waking for it past the max-age', { timeout: 60_000 }, async (t) => {
  // Pages kept 12 s (max-age 12): a watch reading only at its max-age would
  // read the page again after round 0 started. A webhook (nothing listens
  // there) lets the campaign remind of rounds.
  const kept = await startEngine({
    FLASHSALE_CAMPAIGN_PAGE_CACHE_MS: '12000',
    FLASHSALE_ORDER_WEBHOOK_URL: 'http://127.0.0.1:9/flashsale-hooks',
    FLASHSALE_ORDER_WEBHOOK_SECRET: 'client-tests-webhook-secret',
  });
  t.after(() => kept.stop());
  const now = Date.now();
  const at = (ms) => new Date(now + ms).toISOString();
  const campaign = await kept.createCampaign({
    remind_before_secs: 5,
    rounds: [
      { starts_at: at(8000), ends_at: at(9000) },
      { starts_at: at(600_000), ends_at: at(660_000) },
    ],
  });
  // By the phone's own clock, an hour ahead, round 0 started long ago: a
  // reminder by it would never come.
  const transport = recording(fetchTransport({ baseUrl: kept.baseUrl }));
  const c = createClient({ transport, getToken: () => shopperToken(newShopper()), now: () => Date.now() + 3_600_000, pollIntervalMinMs: 100 });
  const updates = [];
  let started;
  const done = new Promise((resolve) => {
    started = resolve;
  });
  const reads = () => transport.log.filter((e) => PAGE.test(e.path)).length;
  const watch = c.watchCampaign(campaign.id, (update) => {
    updates.push({ update, at: Date.now(), reads: reads() });
    if (update.ok && update.rounds[0].countdown.phase !== 'upcoming') started();
  });
  await done;
  watch.stop();

  assert.ok(updates.every(({ update }) => update.ok), JSON.stringify(updates.find(({ update }) => !update.ok)));
  const reminding = updates.filter(({ update }) => update.reminders.length > 0);
  assert.equal(reminding.length, 1, 'one update reminds');
  const [{ update, at: sentAt, reads: readBefore }] = reminding;
  assert.deepEqual(update.reminders.map((round) => round.number), [0], 'round 0 only: round 1 is ten minutes off');
  const startsAt = Date.parse(campaign.rounds[0].starts_at);
  const bound = c.clock.errorMs + FORMAT_MS;
  assert.ok(sentAt >= startsAt - 5000 - bound, `reminded ${startsAt - sentAt} ms before the start, not before its 5 s`);
  // A reminder due within REMINDER_EARLY_MS is given at once (a timer may fire a little early).
  assert.ok(update.reminders[0].msToStart > 0 && update.reminders[0].msToStart <= 5000 + REMINDER_EARLY_MS, JSON.stringify(update.reminders));
  assert.equal(update.rounds[0].countdown.phase, 'upcoming', 'before the round starts');
  assert.equal(update.rounds[1].countdown.msToReminder > 0, true, 'round 1 counts down to its own');
  assert.equal(update.cached, true, 'the reminder woke the watch within the max-age: the kept page, no request');
  assert.equal(readBefore, 1, 'the page read once before the reminder');
});

test('a watch outlives a getToken that rejects, and stops at not_found', { timeout: 30_000 }, async () => {
  const campaign = await engine.createCampaign();
  const transport = recording(fetchTransport({ baseUrl: engine.baseUrl }));
  const token = shopperToken(newShopper());
  let logins = 0;
  const getToken = async () => {
    logins += 1;
    if (logins === 1) throw new Error('the login service is down');
    return token;
  };
  const c = createClient({ transport, getToken, pollIntervalMinMs: 100 });
  const updates = [];
  let twoSeen;
  const two = new Promise((resolve) => {
    twoSeen = resolve;
  });
  const watch = c.watchCampaign(
    campaign.id,
    (update) => {
      updates.push(update);
      if (updates.length === 2) twoSeen();
    },
    { allowance: true },
  );
  await two;
  watch.stop();
  assert.equal(updates[0].ok, false);
  assert.equal(updates[0].code, 'watch_failed');
  assert.match(updates[0].message, /login service is down/);
  assert.equal(updates[1].ok, true, 'polled again once the login service answered');
  assert.deepEqual(updates[1].allowance, { round_left: 1, campaign_left: 2 });

  for (const [watchOne, path] of [
    [(onUpdate) => c.watchCampaign('c_nothing0', onUpdate), '/api/v1/campaigns/c_nothing0'],
    [(onUpdate) => c.watchSale('s_nowhere', onUpdate), '/api/v1/sales/s_nowhere'],
  ]) {
    const gone = [];
    watchOne((update) => gone.push(update));
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(gone.map((update) => update.code), ['not_found'], path);
    assert.equal(transport.log.filter((e) => e.path === path).length, 1, `${path}: read once`);
  }
});
