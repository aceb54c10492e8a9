// The waiting room of a queued sale (`"admission": {"mode": "queue"}`),
// from the shopper's side: join (again: the same place), poll no sooner
// than the engine's `poll_after_ms`, and hand the admission's purchase
// token to the order.
//
// The pace is the engine's, whatever the page does: the last place read
// for a sale stands until its `poll_after_ms` (and the client's
// `pollIntervalMinMs`) has passed, and a join or poll before then answers
// it from memory without a request. A poll answered 404 means the shopper
// is not in the line (never joined, or an admission that expired unused
// gave its place away): `wait` joins again, at the back.

import { isRefusal, retryWaitMs } from './retry.js';
import { clientResult } from './result.js';

/** Sales whose last place is remembered; the oldest is forgotten past it. */
const PLACES_MAX = 32;
/** Joins again after a 404 within one `wait`, before it answers `not_found`. */
const REJOINS_MAX = 3;
/** Times one `wait` sleeps until the pre-queue opens after a join refused `not_started`. */
const PREQUEUE_WAITS_MAX = 2;
/** Most a wait's join after the pre-queue opened is spread (drawn at random; capped at half the pre-queue), so a crowd waiting for it does not join in one instant: every place taken before the sale opens is shuffled, so none is lost by it. */
const PREQUEUE_SPREAD_MAX_MS = 2000;
/** The longest delay `setTimeout` takes. */
const TIMER_MAX_MS = 2 ** 31 - 1;
/** Queue statuses after which the engine's answer does not change: a wait ends. */
const FINAL_STATUSES = new Set(['admitted', 'sold_out', 'ended']);

/** A wait's sleep that `stop()` cuts short; never wakes early otherwise. */
class Waiter {
  constructor(now) {
    this.now = now;
    this.stopped = false;
    this.timer = null;
    this.wake = null;
  }

  sleep(ms) {
    const until = this.now() + ms;
    return new Promise((resolve) => {
      this.wake = resolve;
      const check = () => {
        const left = until - this.now();
        if (this.stopped || left <= 0) resolve();
        // setTimeout takes at most 2^31 - 1 ms (24.8 days); longer, check again then.
        else this.timer = setTimeout(check, Math.min(left, TIMER_MAX_MS));
      };
      check();
    });
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.wake) this.wake();
  }
}

export class WaitingRoom {
  /** `client`: the FlashsaleClient whose requests, clock, policy and shopper it uses. */
  constructor(client) {
    this.client = client;
    /** shopper:sale -> { place, notBefore } (local ms). */
    this.places = new Map();
    /** sale -> the running wait: { promise, waiter, onProgress }. */
    this.waits = new Map();
  }

  async _key(saleId) {
    return `${await this.client._subject()}:${saleId}`;
  }

  _remember(key, place) {
    const { client } = this;
    const told = Number.isFinite(place.poll_after_ms) ? place.poll_after_ms : 0;
    this.places.delete(key);
    this.places.set(key, { place, notBefore: client.now() + Math.max(told, client.pollIntervalMinMs) });
    if (this.places.size > PLACES_MAX) this.places.delete(this.places.keys().next().value);
  }

  async _call(method, saleId, retry) {
    const key = await this._key(saleId);
    const last = this.places.get(key);
    // An admission whose token has expired (by the server clock) is never answered from memory.
    const expired = last && last.place.expires_at && Date.parse(last.place.expires_at) <= this.client.serverNow();
    if (last && !expired && this.client.now() < last.notBefore) return { ok: true, place: last.place, remembered: true };
    const result = await this.client._request({
      method,
      path: `/api/v1/sales/${encodeURIComponent(saleId)}/queue`,
      shopper: true,
      retry,
    });
    if (!result.ok) {
      if (result.status === 404) this.places.delete(key);
      return result;
    }
    this._remember(key, result.body);
    return { ok: true, place: result.body, remembered: false };
  }

  /**
   * Joins the sale's line: `{ ok, place, remembered }`, `place` as the
   * engine answers it (`status`, `position`, `ahead`, `eta_secs`,
   * `poll_after_ms`, `server_time`, and `purchase_token`, `expires_at`
   * when admitted). Joining again keeps the place. Refusals: 409
   * `not_started` (before the pre-queue opens), `ended`, `sold_out`,
   * `conflict` (an open sale: no line), 503 `overloaded` (the line is full).
   */
  join(saleId) {
    return this._call('POST', saleId, true);
  }

  /** The shopper's place, as `join` answers it; 404 `not_found` when not in the line. */
  poll(saleId) {
    return this._call('GET', saleId, true);
  }

  /** Ms until the sale's place may be read again (0: now). */
  async msUntilPoll(saleId) {
    const last = this.places.get(await this._key(saleId));
    return last ? Math.max(0, last.notBefore - this.client.now()) : 0;
  }

  /** Forgets the sale's place (its admission was used or refused): the next call asks the engine. */
  async forget(saleId) {
    this.places.delete(await this._key(saleId));
  }

  /**
   * Joins and waits until admitted: `{ ok: true, purchaseToken, expiresAt,
   * place }`, or `{ ok: false, code }`. A join before the pre-queue opens
   * (`not_started`) sleeps until it does by the server clock (the sale
   * read for its `admission.prequeue_opens_at`, the clock synced), then
   * joins: calling it early costs one join and one read of the sale.
   * Otherwise: `sold_out` or `ended` (with
   * `place`), a refusal of the join (see `join`), `not_found` after
   * `REJOINS_MAX` joins each answered 404, `stopped` after `stop(saleId)`,
   * or the last failure once `attemptsMax` polls in a row failed (the
   * place is kept: call again). `onProgress(place)` hears every place
   * read. Polls no sooner than the engine's `poll_after_ms` (later after a
   * 429 or 503's `Retry-After`). A second call for the same sale while one
   * runs shares its answer (its `onProgress` replaces the first's).
   */
  wait(saleId, { onProgress } = {}) {
    const running = this.waits.get(saleId);
    if (running) {
      if (onProgress) running.onProgress = onProgress;
      return running.promise;
    }
    const run = { waiter: new Waiter(this.client.now), onProgress };
    run.promise = this._wait(saleId, run).finally(() => this.waits.delete(saleId));
    this.waits.set(saleId, run);
    return run.promise;
  }

  /** Ends a running `wait` for the sale (it answers `stopped`); the shopper keeps the place in the line. */
  stop(saleId) {
    this.waits.get(saleId)?.waiter.stop();
  }

  /**
   * Ms to sleep before joining a line that refused `not_started`: until the
   * pre-queue opens by the server clock (synced first, its error bound
   * added), plus a random part of the spread; `null` when the sale says no
   * pre-queue time (the refusal stands).
   */
  async _msUntilPrequeue(saleId) {
    const { client } = this;
    await client._keepClockSynced(saleId);
    const read = await client.getSale(saleId);
    const admission = read.ok ? read.sale.admission : null;
    const opensAt = Date.parse(admission?.prequeue_opens_at ?? '');
    if (!Number.isFinite(opensAt)) return null;
    const startsAt = Date.parse(read.sale.starts_at);
    const spread = Math.max(0, Math.min(PREQUEUE_SPREAD_MAX_MS, (startsAt - opensAt) / 2));
    // By the synced clock, its error bound on top (the engine's clock is
    // past the opening by then, whichever way the estimate errs); unsynced,
    // by the `server_time` the sale was just read with, never the phone's.
    const { errorMs } = client.clock;
    const untilOpen = Number.isFinite(errorMs)
      ? opensAt - client.serverNow() + errorMs
      : opensAt - Date.parse(read.sale.server_time);
    return Math.max(0, Number.isFinite(untilOpen) ? untilOpen : 0) + client.random() * spread;
  }

  async _wait(saleId, run) {
    const { client } = this;
    const stopped = () => clientResult('stopped', 'the wait was stopped; the place in the line is kept');
    let joined = false;
    let rejoins = 0;
    let prequeueWaits = 0;
    let failures = 0;
    for (;;) {
      if (run.waiter.stopped) return stopped();
      const result = await this._call(joined ? 'GET' : 'POST', saleId, false);
      if (run.waiter.stopped) return stopped();
      let waitMs;
      if (result.ok) {
        joined = true;
        failures = 0;
        const { place } = result;
        try {
          run.onProgress?.(place);
        } catch (err) {
          console.error('flashsale wait: onProgress threw', err);
        }
        if (place.status === 'admitted') {
          return { ok: true, purchaseToken: place.purchase_token, expiresAt: place.expires_at, place };
        }
        if (FINAL_STATUSES.has(place.status)) return clientResult(place.status, `the queue says ${place.status}`, { place });
        waitMs = await this.msUntilPoll(saleId);
      } else if (result.status === 404 && rejoins < REJOINS_MAX) {
        // Out of the line (an admission that expired unused): join again, at
        // the back. A join can answer it too: the engine frees the expired
        // place on the join's own read of the line, and the next join queues.
        joined = false;
        rejoins += 1;
        continue;
      } else if (!joined && result.code === 'not_started' && prequeueWaits < PREQUEUE_WAITS_MAX) {
        // Before the pre-queue opens: sleep until it does, then join.
        prequeueWaits += 1;
        const untilOpen = await this._msUntilPrequeue(saleId);
        if (untilOpen === null) return result;
        waitMs = untilOpen;
      } else if (isRefusal(result)) {
        return result;
      } else {
        failures += 1;
        if (failures >= client.policy.attemptsMax) return result;
        waitMs = Math.max(client.pollIntervalMinMs, retryWaitMs(client.policy, failures, result.retryAfterMs, client.random));
      }
      await run.waiter.sleep(waitMs);
    }
  }
}
