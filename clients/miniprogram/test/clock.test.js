// The server clock and the sale watch, against the real engine: a phone
// whose clock is an hour off still counts down to the engine's start to
// within half a round trip, and the sale is polled no sooner than the
// engine's Cache-Control max-age (or a Retry-After) allows.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ServerClock, createClient, fetchTransport, formatCountdown, saleCountdown } from '../src/index.js';
import { startEngine } from '../testing/engine.js';
import { recording, startProxy } from '../testing/proxy.js';

let engine;
// The clock tests' engine reads the sale afresh for every sample (its
// memory holds a read 1 ms), so each `server_time` is the engine's clock
// during that very request: what the client's sync is judged on. The
// engine's own aging of a kept view is tested in the engine's crate.
let exact;
let proxy;

before(async () => {
  engine = await startEngine({ FLASHSALE_SALE_POLL_CACHE_MS: '1000' });
  exact = await startEngine({ FLASHSALE_SALE_POLL_CACHE_MS: '1' });
  proxy = await startProxy(engine.baseUrl);
});

after(async () => {
  await proxy?.close();
  await exact?.stop();
  await engine?.stop();
});

// The engine runs on this machine: its clock is Date.now(), to the millisecond it formats.
const FORMAT_MS = 1;

for (const skewMs of [3_600_000, -5_400_000]) {
  test(`a local clock ${skewMs / 60_000} min off: server time and the countdown are right to half a round trip`, async () => {
    const startsAt = Date.now() + 600_000;
    const sale = await exact.createSale({
      starts_at: new Date(startsAt).toISOString(),
      ends_at: new Date(startsAt + 3_600_000).toISOString(),
    });
    const transport = recording(fetchTransport({ baseUrl: exact.baseUrl }));
    const c = createClient({ transport, now: () => Date.now() + skewMs });

    const synced = await c.syncClock(sale.id);

    assert.equal(synced.ok, true);
    assert.equal(transport.log.length, 3, 'three samples');
    assert.ok(transport.log.every((e) => /\?clock=\d+$/.test(e.path)), 'samples bypass any cache');
    assert.ok(Math.abs(synced.offsetMs + skewMs) < 60_000, `offset ${synced.offsetMs} undoes the skew`);
    const bound = c.clock.errorMs + FORMAT_MS;
    const before = Date.now();
    const serverNow = c.serverNow();
    const countdown = c.countdown(sale);
    const afterNow = Date.now();
    assert.ok(serverNow >= before - bound && serverNow <= afterNow + bound, `server now off by ${serverNow - before} ms (bound ${bound})`);
    assert.equal(countdown.phase, 'upcoming');
    assert.ok(
      countdown.msToStart >= startsAt - afterNow - bound && countdown.msToStart <= startsAt - before + bound,
      `countdown ${countdown.msToStart} ms, true ${startsAt - before} ms`,
    );
    // A countdown from the phone's own clock would be off by minutes.
    assert.ok(Math.abs(saleCountdown(sale, Date.now() + skewMs).msToStart - countdown.msToStart) > 60_000);
  });
}

test('the clock takes the middle of the round trip and trusts the shortest one', () => {
  let local = 1_000_000;
  const clock = new ServerClock({ now: () => local });
  assert.equal(clock.synced, false);
  // Sent at 1000, answered at 1400: the engine's 5200 was read about at 1200.
  clock.addSample(1000, 1400, 5200);
  assert.equal(clock.offsetMs, 4000);
  assert.equal(clock.errorMs, 200);
  // A 20 ms round trip is trusted over the 400 ms one.
  clock.addSample(2000, 2020, 7011);
  assert.equal(clock.offsetMs, 5001);
  assert.equal(clock.errorMs, 10);
  assert.equal(clock.now(), local + 5001);
  clock.addSample(3000, 3900, '2026-11-11T00:00:00.000Z');
  assert.equal(clock.offsetMs, 5001);
  assert.equal(formatCountdown(3_723_456), '01:02:03.4');
});

test('a live sale moves to ended by the server clock; an upcoming one to live', () => {
  const sale = { status: 'upcoming', starts_at: '2026-11-11T00:00:00.000Z', ends_at: '2026-11-11T01:00:00.000Z' };
  const start = Date.parse(sale.starts_at);
  assert.deepEqual(saleCountdown(sale, start - 1500), { phase: 'upcoming', msToStart: 1500, msToEnd: 3_601_500 });
  assert.equal(saleCountdown(sale, start).phase, 'live');
  assert.equal(saleCountdown({ ...sale, status: 'sold_out' }, start + 3_600_000).phase, 'ended');
});

const SALE_POLL = /^\/api\/v1\/sales\/[^/?]+$/;

test('watchSale polls no sooner than Cache-Control max-age after each answer, later after a Retry-After, and stops once the sale ended', { timeout: 60_000 }, async () => {
  const sale = await engine.createSale();
  const transport = recording(fetchTransport({ baseUrl: proxy.baseUrl }));
  const c = createClient({ transport, pollIntervalMinMs: 100 });
  const updates = [];
  let ended;
  const done = new Promise((resolve) => {
    ended = resolve;
  });
  let watch;
  watch = c.watchSale(sale.id, (update) => {
    updates.push({ ...update, at: Date.now() });
    if (updates.length === 2) {
      // The next poll is refused with a Retry-After of 2 s.
      proxy.answer('GET', SALE_POLL, 503, { 'retry-after': '2' }, { error: { code: 'overloaded', message: 'shedding' } });
    }
    if (updates.length === 4) engine.admin('PATCH', `/admin/v1/sales/${sale.id}`, { status: 'ended' });
    if (update.ok && update.sale.status === 'ended') ended();
  });
  await done;
  const polls = transport.log.filter((e) => SALE_POLL.test(e.path));
  // Longer than any interval it could use: nothing more is sent.
  await new Promise((resolve) => setTimeout(resolve, 2500));
  watch.stop();
  assert.equal(transport.log.filter((e) => SALE_POLL.test(e.path)).length, polls.length, 'no poll after the sale ended');

  assert.ok(updates[0].ok && updates[0].countdown.phase === 'live');
  assert.ok(polls.length >= 5);
  for (let i = 1; i < polls.length; i++) {
    const gap = polls[i].sentAt - polls[i - 1].answeredAt;
    const told = polls[i - 1].status === 503 ? 2000 : 1000;
    assert.ok(gap >= told, `poll ${i} sent ${gap} ms after the previous answer (${polls[i - 1].status}), told ${told}`);
  }
  assert.equal(polls[2].status, 503);
  assert.equal(updates[2].code, 'overloaded');
});
