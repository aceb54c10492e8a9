// The flashsale client: every call a shop's front end makes to the engine,
// with the rules that keep a seckill page correct at the opening second.
//
// - Every call answers a result, never throws for an HTTP answer:
//   `{ ok: true, ... }` or `{ ok: false, status, code, message, retryAfterMs,
//   uncertain }`, where `code` is the engine's error code, or
//   `network_error` when no answer came back (status 0), and `uncertain`
//   says an attempt may have reached the engine without its answer reaching
//   us (no answer, or a 5xx): "it may have gone through".
// - Only repeatable calls are retried (reads, an order under its
//   Idempotency-Key, a cancel), and only on "not now" answers (see retry.js).
// - A purchase intent (one shopper, one sale) keeps one Idempotency-Key in
//   storage from before its first request until a definite answer, so a
//   retry, a second tap or a restart of the Mini Program never makes a
//   second order and never loses the first.
// - Paying asks the engine for fresh `wx.requestPayment` parameters every
//   time (never stale ones), and believes the order, not the payment
//   sheet: it is paid once the engine says `paid`.
// - The engine sets the pace of every poll: a sale or a campaign page no
//   sooner than its `Cache-Control: max-age`, a place in a waiting room no
//   sooner than its `poll_after_ms` (waitingRoom.js), whatever the page asks.

import { campaignOver, campaignRounds, campaignSaleId, dueReminders } from './campaign.js';
import { ServerClock, saleCountdown } from './clock.js';
import { PAYMENT_FIELDS, sheetOutcome } from './payment.js';
import { RETRY_DEFAULTS, isRefusal, isRetryableAnswer, retryAfterMs, retryWaitMs } from './retry.js';
import { NO_ANSWER, clientResult, toResult } from './result.js';
import { memoryStorage } from './storage.js';
import { NetworkError } from './transport.js';
import { WaitingRoom } from './waitingRoom.js';

const INTENT_PREFIX = 'flashsale:intent:';
/** The key of a shopper's list of the sales they made intents for, the one tapped longest ago first. */
const INTENT_LIST_PREFIX = 'flashsale:intents:';
/** Intents one shopper keeps in storage at most: past it, the one tapped longest ago goes. */
const INTENTS_KEPT_MAX = 32;
/** Samples one clock sync takes. */
const CLOCK_SYNC_SAMPLES = 3;
/** How old the clock's last sync may be before a watched sale's poll syncs it again. */
const CLOCK_REFRESH_MS = 30_000;
/** Fastest the engine is polled (a watched sale or campaign, whatever its `Cache-Control` says; a place in a waiting room; an order being paid). */
const POLL_INTERVAL_MIN_MS = 1000;
/** Longest `pay` polls a paid sheet's order for the engine's `paid` before it answers `payment_processing`. */
const PAY_WAIT_MAX_MS = 10_000;
/** Sale statuses after which nothing changes: a watch stops. */
const FINAL_STATUSES = new Set(['ended', 'cancelled']);
/** Order statuses that still hold what the shopper bought. */
const LIVE_ORDER = new Set(['pending_payment', 'paid']);
/** Order statuses from which an order is never `paid`: a wait for it ends, answering the status as its code. */
const UNPAYABLE_ORDER = new Map([
  ['refund_required', 'paid after the order expired or was cancelled: the merchant refunds it'],
  ['expired', 'the order expired unpaid and can no longer be paid: a payment made for it is refunded'],
  ['cancelled', 'the order was cancelled and can no longer be paid: a payment made for it is refunded'],
  ['refunding', 'the order was paid and its payment is being refunded'],
  ['refunded', 'the order was paid and its payment refunded'],
]);
/** Sales whose access (open, purchase token, queue) is remembered; the oldest is forgotten past it. */
const SALES_KNOWN_MAX = 256;
/** Pages (campaign lists and pages) kept for their max-age; the oldest is dropped past it. */
const PAGES_MAX = 16;

/** Waits `ms` by the local clock: never returns early (a timer may fire a millisecond before its time). */
function defaultSleep(ms) {
  const until = Date.now() + ms;
  return new Promise((resolve) => {
    const check = () => {
      const left = until - Date.now();
      if (left <= 0) resolve();
      else setTimeout(check, left);
    };
    check();
  });
}

/** A random Idempotency-Key: 128 bits as hex (printable ASCII, as the engine requires). */
function randomKey() {
  const bytes = new Uint8Array(16);
  const crypto = typeof globalThis === 'undefined' ? undefined : globalThis.crypto;
  if (crypto && typeof crypto.getRandomValues === 'function') {
    crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  return 'mp-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The `sub` of a JWT (no verification: it only scopes stored intents), or '' when unreadable. */
export function tokenSubject(token) {
  const part = String(token).split('.')[1] || '';
  let bits = 0;
  let value = 0;
  let text = '';
  for (const char of part.replace(/=+$/, '')) {
    const index = BASE64URL.indexOf(char === '+' ? '-' : char === '/' ? '_' : char);
    if (index < 0) return '';
    value = (value << 6) | index;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      text += String.fromCharCode((value >> bits) & 0xff);
    }
  }
  try {
    const sub = JSON.parse(text).sub;
    return typeof sub === 'string' ? sub : '';
  } catch {
    return '';
  }
}

function enc(id) {
  return encodeURIComponent(id);
}

/** `max-age` of a Cache-Control header in ms, or 0. */
function maxAgeMs(headers) {
  const match = /max-age=(\d+)/.exec((headers && headers['cache-control']) || '');
  return match ? Number(match[1]) * 1000 : 0;
}

function validQuantity(quantity) {
  return Number.isInteger(quantity) && quantity >= 1;
}

const QUANTITY_REFUSED = Object.freeze(clientResult('invalid_request', 'quantity: a whole number from 1'));

export class FlashsaleClient {
  /**
   * @param {object} options
   * @param {Function} options.transport `fetchTransport(...)` or `wxTransport(...)`
   * @param {Function} options.getToken `({ refresh }) => token | Promise<token>`: the shopper's
   *   JWT from the merchant's login service; `refresh: true` after the engine answered 401.
   * @param {object} [options.storage] `wxStorage(wx)` in a Mini Program; memory by default.
   * @param {Function} [options.requestPayment] the payment sheet, `wxRequestPayment(wx)` in a
   *   Mini Program (see payment.js); `pay` needs it.
   * @param {object} [options.retry] overrides of `RETRY_DEFAULTS`.
   * @param {number} [options.timeoutMs] per request (default 10 s).
   * @param {Function} [options.now] the local clock in ms (tests skew it).
   * @param {number} [options.pollIntervalMinMs] fastest the engine is polled (default 1 s).
   * @param {number} [options.payWaitMaxMs] longest `pay` waits for `paid` after the sheet (default 10 s).
   * @param {number} [options.intentsKeptMax] purchase intents one shopper keeps in storage at
   *   most (default 32); past it, the one tapped longest ago goes.
   */
  constructor({
    transport,
    getToken,
    storage = memoryStorage(),
    requestPayment,
    retry = {},
    timeoutMs = 10_000,
    now = Date.now,
    random = Math.random,
    sleep = defaultSleep,
    newKey = randomKey,
    pollIntervalMinMs = POLL_INTERVAL_MIN_MS,
    payWaitMaxMs = PAY_WAIT_MAX_MS,
    clockRefreshMs = CLOCK_REFRESH_MS,
    intentsKeptMax = INTENTS_KEPT_MAX,
  }) {
    if (typeof transport !== 'function') throw new TypeError('FlashsaleClient: transport is required');
    this.transport = transport;
    this.getToken = getToken;
    this.storage = storage;
    this.requestPayment = requestPayment;
    this.policy = { ...RETRY_DEFAULTS, ...retry };
    this.timeoutMs = timeoutMs;
    this.now = now;
    this.random = random;
    this.sleep = sleep;
    this.newKey = newKey;
    this.pollIntervalMinMs = pollIntervalMinMs;
    this.payWaitMaxMs = payWaitMaxMs;
    this.clockRefreshMs = clockRefreshMs;
    this.intentsKeptMax = intentsKeptMax;
    /** The last change of a shopper's list of intents: one at a time. */
    this.intentListing = Promise.resolve();
    this.clock = new ServerClock({ now });
    this.clockSyncedAt = null;
    /** How each sale seen is bought: id -> 'open', 'token' (a purchase token first) or 'queue' (the waiting room first). */
    this.saleAccess = new Map();
    /** Pages read, until their Cache-Control max-age: path and shopper -> { result, until }. */
    this.pages = new Map();
    /** The waiting room of queued sales: `join`, `poll`, `wait`, `stop` (see waitingRoom.js). */
    this.waitingRoom = new WaitingRoom(this);
    /** Orders on their way, by intent: intent key -> the call's promise. */
    this.ordering = new Map();
    /** Payments on their way: order id -> the call's promise. */
    this.paying = new Map();
  }

  /**
   * Runs `start()` unless a call for `key` is already running in `running`
   * (a Map), in which case the caller gets that call's answer: a double tap
   * sends once.
   */
  async _once(running, key, start) {
    const current = running.get(key);
    if (current) return current;
    const call = start();
    running.set(key, call);
    try {
      return await call;
    } finally {
      running.delete(key);
    }
  }

  async _token(refresh) {
    if (typeof this.getToken !== 'function') throw new TypeError('FlashsaleClient: getToken is required for shopper calls');
    return this.getToken({ refresh });
  }

  /**
   * One call: sends, and sends again while the answer says "not now" and
   * the policy allows. `uncertain` in the result: an earlier attempt may
   * have reached the engine (no answer, or a 5xx).
   */
  async _request({ method, path, body, shopper = false, headers: extra = {}, retry = true, onAnswer }) {
    let refreshed = false;
    let uncertain = false;
    // attempt counts requests sent, a 401's refresh included.
    for (let attempt = 1; ; attempt++) {
      const headers = { accept: 'application/json', ...extra };
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (shopper) headers.authorization = `Bearer ${await this._token(false)}`;
      const sentAt = this.now();
      let answer = null;
      try {
        answer = await this.transport({ method, path, headers, body, timeoutMs: this.timeoutMs });
      } catch (err) {
        if (!(err instanceof NetworkError)) throw err;
      }
      if (answer && onAnswer) onAnswer(answer, sentAt, this.now());
      if (answer && answer.status === 401 && shopper && !refreshed) {
        // An expired token: one fresh one from the login service, then again.
        refreshed = true;
        await this._token(true);
        continue;
      }
      uncertain = uncertain || !answer || answer.status >= 500;
      if (answer && !isRetryableAnswer(answer)) return { ...toResult(answer), uncertain };
      const failure = answer ? toResult(answer) : NO_ANSWER;
      const after = answer ? retryAfterMs(answer.headers, this.clock.now()) : null;
      if (!retry || attempt >= this.policy.attemptsMax) return { ...failure, retryAfterMs: after, uncertain };
      const wait = retryWaitMs(this.policy, attempt, after, this.random);
      if (wait > this.policy.waitMaxMs) return { ...failure, retryAfterMs: after ?? wait, uncertain };
      await this.sleep(wait);
    }
  }

  /**
   * Sets the server clock from `samples` reads of the sale (a cache-busting
   * query, so no CDN answers with an old `server_time`). Without a sale id
   * it reads the sale list, which costs the engine more.
   */
  async syncClock(saleId, samples = CLOCK_SYNC_SAMPLES) {
    let last = null;
    for (let i = 0; i < samples; i++) {
      const base = saleId ? `/api/v1/sales/${enc(saleId)}` : '/api/v1/sales';
      last = await this._request({
        method: 'GET',
        path: `${base}?clock=${Math.floor(this.random() * 1e9)}`,
        onAnswer: (answer, sentAt, receivedAt) => {
          if (answer.status === 200 && answer.body && answer.body.server_time) {
            this.clock.addSample(sentAt, receivedAt, answer.body.server_time);
          }
        },
      });
      if (!last.ok) return last;
    }
    this.clockSyncedAt = this.now();
    return { ok: true, offsetMs: this.clock.offsetMs, errorMs: this.clock.errorMs };
  }

  /** The engine's time now (ms since the epoch); the local clock until synced. */
  serverNow() {
    return this.clock.now();
  }

  /** Where the sale stands by the server clock: `{ phase, msToStart, msToEnd }`. */
  countdown(sale) {
    return saleCountdown(sale, this.clock.now());
  }

  _remember(sale) {
    if (!sale || !sale.id) return;
    const queued = sale.admission && sale.admission.mode === 'queue';
    this._rememberAccess(sale.id, queued ? 'queue' : sale.require_purchase_token === true ? 'token' : 'open');
  }

  _rememberAccess(saleId, access) {
    this.saleAccess.delete(saleId);
    this.saleAccess.set(saleId, access);
    if (this.saleAccess.size > SALES_KNOWN_MAX) this.saleAccess.delete(this.saleAccess.keys().next().value);
  }

  /** Live and upcoming sales: `{ ok, sales }`. */
  async listSales() {
    const result = await this._request({ method: 'GET', path: '/api/v1/sales' });
    if (!result.ok) return result;
    for (const sale of result.body.sales) this._remember(sale);
    return { ok: true, sales: result.body.sales };
  }

  /** One sale: `{ ok, sale, maxAgeMs }` (`maxAgeMs`: how long the engine says the answer holds). */
  async getSale(saleId) {
    const result = await this._request({ method: 'GET', path: `/api/v1/sales/${enc(saleId)}` });
    if (!result.ok) return result;
    this._remember(result.body);
    return { ok: true, sale: result.body, maxAgeMs: maxAgeMs(result.headers) };
  }

  /** Syncs the server clock (through `saleId`) unless its last sync is under `clockRefreshMs` old. */
  async _keepClockSynced(saleId) {
    if (this.clockSyncedAt === null || this.now() - this.clockSyncedAt >= this.clockRefreshMs) {
      await this.syncClock(saleId);
    }
  }

  /**
   * Calls `read()` until it says `final` or the watch is stopped, handing
   * each `update` (a result) to `onUpdate`: the next call no sooner than
   * `pollIntervalMinMs` and the `waitMs` the read asks for (the engine's
   * max-age) after each answer, later after a failure's `Retry-After`.
   * `read()` answers `{ update, waitMs, final }`. A read that throws (say
   * `getToken` rejected: the login service is down) is a failed update,
   * `watch_failed` with the error, polled again with backoff; `not_found`
   * (no such sale or campaign, or no longer) is the last update. Returns
   * `{ stop() }`.
   */
  _watch(read, onUpdate) {
    let stopped = false;
    let timer = null;
    let failures = 0;
    const poll = async () => {
      if (stopped) return;
      let answer;
      try {
        answer = await read();
      } catch (err) {
        answer = { update: clientResult('watch_failed', String(err?.message ?? err), { error: err }) };
      }
      if (stopped) return;
      const { update, waitMs: told = 0 } = answer;
      const final = answer.final === true || (!update.ok && update.code === 'not_found');
      // A throwing callback must not end the watch.
      try {
        onUpdate(update);
      } catch (err) {
        console.error('flashsale watch: onUpdate threw', err);
      }
      if (final) return;
      let waitMs = Math.max(this.pollIntervalMinMs, told);
      if (update.ok) {
        failures = 0;
      } else {
        failures += 1;
        waitMs = Math.max(waitMs, retryWaitMs(this.policy, failures, update.retryAfterMs, this.random));
      }
      timer = setTimeout(poll, waitMs);
    };
    poll();
    return {
      stop() {
        stopped = true;
        if (timer !== null) clearTimeout(timer);
      },
    };
  }

  /**
   * Polls the sale for `onUpdate({ ok, sale, countdown })` (or a failed
   * result) no sooner than the engine's `Cache-Control: max-age` (and
   * `pollIntervalMinMs`) after each answer, later after a `Retry-After`;
   * keeps the server clock synced; stops by itself once the sale has ended
   * or was cancelled, or after a `not_found`. Returns `{ stop() }`.
   */
  watchSale(saleId, onUpdate) {
    return this._watch(async () => {
      await this._keepClockSynced(saleId);
      const result = await this._request({ method: 'GET', path: `/api/v1/sales/${enc(saleId)}`, retry: false });
      if (!result.ok) return { update: result };
      this._remember(result.body);
      return {
        update: { ok: true, sale: result.body, countdown: this.countdown(result.body) },
        waitMs: maxAgeMs(result.headers),
        final: FINAL_STATUSES.has(result.body.status),
      };
    }, onUpdate);
  }

  /**
   * A GET of a page the engine lets caches keep (`Cache-Control:
   * max-age`): within that age the answer read last is answered again
   * (`cached: true`) without a request. `msToRefresh`: how long until the
   * page may be read again. `shopper`: with the shopper's token (kept per
   * shopper).
   */
  async _page(path, { shopper = false, retry = true } = {}) {
    const key = `${shopper ? await this._subject() : ''}|${path}`;
    const kept = this.pages.get(key);
    if (kept && this.now() < kept.until) return { ...kept.result, cached: true, msToRefresh: kept.until - this.now() };
    const result = await this._request({ method: 'GET', path, shopper, retry });
    if (!result.ok) return result;
    const maxAge = maxAgeMs(result.headers);
    this.pages.delete(key);
    if (maxAge > 0) {
      this.pages.set(key, { result, until: this.now() + maxAge });
      if (this.pages.size > PAGES_MAX) this.pages.delete(this.pages.keys().next().value);
    }
    return { ...result, cached: false, msToRefresh: maxAge };
  }

  /** Each round of a campaign with its countdown by the server clock now, and the round to show (see campaign.js). */
  campaignRounds(campaign) {
    return campaignRounds(campaign, this.clock.now());
  }

  async _campaignPage(read) {
    if (!read.ok) return read;
    await this._keepClockSynced(campaignSaleId(read.body));
    const shown = this.campaignRounds(read.body);
    // A campaign's sales are never queued: `buy` needs no read of the sale
    // at the opening second. Only the items of the round shown are
    // remembered, so a big campaign does not push every other sale out.
    const access = read.body.require_purchase_token ? 'token' : 'open';
    for (const item of shown.rounds[shown.current]?.items ?? []) this._rememberAccess(item.sale_id, access);
    return {
      ok: true,
      campaign: read.body,
      ...shown,
      allowance: read.body.allowance ?? null,
      cached: read.cached,
      msToRefresh: read.msToRefresh,
    };
  }

  /**
   * The seckill page of a campaign in one call: `{ ok, campaign, rounds,
   * current, allowance, cached, msToRefresh }`. `campaign` is the engine's
   * page (rounds of items with `sale_id`, prices, `remaining`,
   * `sold_share` for the progress bar); `rounds` are its rounds each with
   * `countdown` `{ phase, msToStart, msToEnd }` by the server clock
   * (synced through one of the campaign's sales when it is older than
   * `clockRefreshMs`), `current` the index of the live round, else the
   * next, else the last. `allowance: true` sends the shopper's token: the
   * answer then has the shopper's `allowance` `{ round_left,
   * campaign_left }` (exact, and never shared by a cache). Within the
   * page's `Cache-Control: max-age` the page read last is answered again
   * (`cached: true`, countdowns recomputed) without a request.
   */
  async getCampaign(campaignId, { allowance = false } = {}) {
    return this._campaignPage(await this._page(`/api/v1/campaigns/${enc(campaignId)}`, { shopper: allowance }));
  }

  /**
   * Campaigns with a round live or to come: `{ ok, campaigns: [{ campaign,
   * rounds, current }] }`, read no more often than the engine's max-age.
   */
  async listCampaigns() {
    const read = await this._page('/api/v1/campaigns');
    if (!read.ok) return read;
    const first = read.body.campaigns[0];
    if (first) await this._keepClockSynced(campaignSaleId(first));
    return {
      ok: true,
      campaigns: read.body.campaigns.map((campaign) => ({ campaign, ...this.campaignRounds(campaign) })),
      cached: read.cached,
    };
  }

  /**
   * Polls a campaign's page for `onUpdate(page)` (as `getCampaign`
   * answers, or a failed result), no sooner than its max-age (and
   * `pollIntervalMinMs`) after each answer, later after a `Retry-After`;
   * stops by itself once every round has ended, or after a `not_found`.
   * Each update with `ok: true` also carries `reminders` (empty without
   * the campaign's `remind_before_secs`): the rounds whose reminder came
   * due by the server clock since the last update (`[{ number, starts_at,
   * msToStart }]`, each round once per watch, again if it is moved; a
   * round already within its reminder when the watch starts is reminded
   * at once), and the watch wakes for the next one even if the page's
   * max-age is longer (the page kept is answered again then, with no
   * request). Returns `{ stop() }`.
   */
  watchCampaign(campaignId, onUpdate, { allowance = false } = {}) {
    const path = `/api/v1/campaigns/${enc(campaignId)}`;
    const given = new Set();
    return this._watch(async () => {
      const read = await this._page(path, { shopper: allowance, retry: false });
      const page = await this._campaignPage(read);
      if (!page.ok) return { update: page };
      const { due, msToNext } = dueReminders(page.rounds, given);
      return {
        update: { ...page, reminders: due },
        waitMs: Math.min(page.msToRefresh, msToNext),
        final: campaignOver(page.campaign, this.clock.now()),
      };
    }, onUpdate);
  }

  /** A purchase token for a live sale that requires one: `{ ok, token, expiresAt }`. */
  async purchaseToken(saleId) {
    const result = await this._request({
      method: 'POST',
      path: `/api/v1/sales/${enc(saleId)}/purchase-token`,
      shopper: true,
    });
    if (!result.ok) return result;
    return { ok: true, token: result.body.purchase_token, expiresAt: result.body.expires_at };
  }

  /** The shopper's id (the token's `sub`): what stored intents and remembered queue places are scoped to. */
  async _subject() {
    return tokenSubject(await this._token(false));
  }

  async _intentKey(saleId) {
    return `${INTENT_PREFIX}${await this._subject()}:${saleId}`;
  }

  /**
   * Races for `quantity` units of the sale: `{ ok: true, order, replayed }`
   * or `{ ok: false, code, ... }`.
   *
   * The purchase intent's Idempotency-Key is stored before the first send
   * and reused by every retry, by a second call for the same sale, and
   * after a restart, until a definite answer: a 201 (the order, first or
   * replayed) or a refusal (`sold_out`, `limit_exceeded`, ...: no order
   * exists under the key). It is kept after `conflict` (an earlier attempt
   * made an order with another quantity; see `listOrders`), after a 4xx
   * without the engine's error JSON (`http_<status>`: a proxy's page), and
   * when the call gives up without an answer. A kept intent is sent even
   * when the purchase token is refused (the engine replays its order
   * without one); one whose order was cancelled or expired since is over:
   * the call makes a new order under a new key.
   *
   * `purchaseToken`: the token a sale with `require_purchase_token` needs
   * (or an admission token); without one, the client fetches one when it
   * has seen that the sale requires it (and is not queued: `buy` waits in
   * a queued sale's line for its token).
   */
  async placeOrder(saleId, quantity = 1, { purchaseToken } = {}) {
    if (!validQuantity(quantity)) return QUANTITY_REFUSED;
    const intentKey = await this._intentKey(saleId);
    // A second tap while the first is on its way waits for the first and
    // gets its answer: two calls never read the stored intent at once (and
    // make two keys).
    return this._once(this.ordering, intentKey, () => this._placeOrder(intentKey, saleId, quantity, purchaseToken));
  }

  async _placeOrder(intentKey, saleId, quantity, purchaseToken, fresh = false) {
    const stored = fresh ? undefined : await this.storage.get(intentKey);
    const intent = { key: stored ? stored.key : this.newKey(), quantity, createdAt: stored ? stored.createdAt : this.now() };
    await this.storage.set(intentKey, intent);
    await this._listIntent(saleId);
    let token = purchaseToken;
    if (!token && this.saleAccess.get(saleId) === 'token') {
      const issued = await this.purchaseToken(saleId);
      if (!issued.ok) {
        // An earlier attempt's order (its answer lost) is still there
        // under the key however the sale goes on: the engine replays it
        // without a token.
        if (stored) return this._replayOr(intentKey, intent, saleId, quantity, issued);
        return issued;
      }
      token = issued.token;
    }
    const result = await this._sendOrder(intentKey, intent, saleId, quantity, token);
    // The intent's order was cancelled or expired (or refunded) since: this
    // tap is a new purchase, under a new key.
    if (result.ok && result.replayed && !LIVE_ORDER.has(result.order.status) && !fresh) {
      return this._placeOrder(intentKey, saleId, quantity, purchaseToken, true);
    }
    return result;
  }

  /**
   * Lists the intent for `saleId` last in the shopper's list (in storage:
   * the sales of their intents, the one used longest ago first); past
   * `intentsKeptMax` the first listed go, their intents with them, so a
   * shopper's intents in storage stay bounded whatever answers were lost.
   * An intent ended by its answer leaves its sale listed until it goes
   * first. One change of the list at a time.
   */
  _listIntent(saleId) {
    const run = this.intentListing.then(async () => {
      const subject = await this._subject();
      const listKey = `${INTENT_LIST_PREFIX}${subject}`;
      const kept = await this.storage.get(listKey);
      const listed = (Array.isArray(kept) ? kept : []).filter((id) => id !== saleId);
      listed.push(saleId);
      const dropped = listed.splice(0, Math.max(0, listed.length - this.intentsKeptMax));
      for (const id of dropped) await this.storage.remove(`${INTENT_PREFIX}${subject}:${id}`);
      await this.storage.set(listKey, listed);
    });
    // A failed change fails its own call only, never the ones after it.
    this.intentListing = run.catch(() => {});
    return run;
  }

  /** The order a kept intent made, replayed; else `refused` (the intent ends when the engine says no order is under its key). */
  async _replayOr(intentKey, intent, saleId, quantity, refused) {
    const replay = await this._sendOrder(intentKey, intent, saleId, quantity, undefined);
    return replay.ok && LIVE_ORDER.has(replay.order.status) ? replay : refused;
  }

  /** One order request under the intent's key; a definite answer ends the intent. */
  async _sendOrder(intentKey, intent, saleId, quantity, token) {
    const headers = { 'idempotency-key': intent.key };
    if (token) headers['x-purchase-token'] = token;
    const result = await this._request({
      method: 'POST',
      path: `/api/v1/sales/${enc(saleId)}/orders`,
      body: { quantity },
      shopper: true,
      headers,
    });
    if (result.ok) {
      await this.storage.remove(intentKey);
      return { ok: true, order: result.body, replayed: result.headers['idempotent-replayed'] === 'true' };
    }
    // A refusal ends the intent when the engine looked its key up: no
    // order was made under it. Not a 401: the token is checked first, so
    // an earlier attempt whose answer was lost may have made the order;
    // nor a proxy's 4xx page, which is no refusal of the engine's (see
    // isRefusal).
    if (isRefusal(result) && result.code !== 'conflict' && result.code !== 'unauthorized') {
      await this.storage.remove(intentKey);
    }
    return result;
  }

  /**
   * Buys `quantity` units of any sale the way it is sold (read first when
   * this client has not seen it): a queued sale's waiting room first
   * (`waitingRoom.wait`: join, poll as the engine says, `onProgress(place)`
   * with each place read, rejoin after a 404), then the order with the
   * admission's purchase token; on a sale with `require_purchase_token`,
   * a purchase token first; else the order. Answers as `placeOrder`, or
   * the wait's refusal (`sold_out`, `ended`, `stopped`, ...; before the
   * pre-queue opens the wait sleeps until it does).
   */
  async buy(saleId, quantity = 1, { onProgress } = {}) {
    if (!validQuantity(quantity)) return QUANTITY_REFUSED;
    if (!this.saleAccess.has(saleId)) {
      const read = await this.getSale(saleId);
      if (!read.ok) return read;
    }
    if (this.saleAccess.get(saleId) !== 'queue') return this.placeOrder(saleId, quantity);
    const admission = await this.waitingRoom.wait(saleId, { onProgress });
    if (!admission.ok) {
      // Refused a place (the sale ended, sold out): an order an earlier
      // attempt made under a kept intent (its answer lost) is replayed all
      // the same, without a token.
      const intentKey = await this._intentKey(saleId);
      const stored = await this.storage.get(intentKey);
      if (!stored) return admission;
      return this._once(this.ordering, intentKey, () => this._replayOr(intentKey, stored, saleId, stored.quantity, admission));
    }
    const result = await this.placeOrder(saleId, quantity, { purchaseToken: admission.purchaseToken });
    // The admission is used (or refused): the next wait asks the engine.
    if (result.ok || isRefusal(result)) await this.waitingRoom.forget(saleId);
    return result;
  }

  /** The purchase intent pending for this sale (its Idempotency-Key), or undefined. */
  async pendingIntent(saleId) {
    return this.storage.get(await this._intentKey(saleId));
  }

  /** Drops the pending intent for this sale: the next `placeOrder` is a new purchase. */
  async forgetIntent(saleId) {
    await this.storage.remove(await this._intentKey(saleId));
  }

  /**
   * A page of the shopper's orders, newest first: `{ ok, orders,
   * nextCursor }`; pass `nextCursor` back as `cursor` for the next page
   * (`null` after the last). `limit`: 1 to 500, the engine's 50 when
   * unset.
   */
  async listOrders({ cursor, limit } = {}) {
    // No URLSearchParams: a Mini Program's runtime has none.
    const query = [];
    if (limit !== undefined) query.push(`limit=${enc(String(limit))}`);
    if (cursor !== undefined && cursor !== null) query.push(`cursor=${enc(cursor)}`);
    const path = query.length ? `/api/v1/orders?${query.join('&')}` : '/api/v1/orders';
    const result = await this._request({ method: 'GET', path, shopper: true });
    return result.ok ? { ok: true, orders: result.body.orders, nextCursor: result.body.next_cursor ?? null } : result;
  }

  /** One of the shopper's orders: `{ ok, order }`. */
  async getOrder(orderId) {
    const result = await this._request({ method: 'GET', path: `/api/v1/orders/${enc(orderId)}`, shopper: true });
    return result.ok ? { ok: true, order: result.body } : result;
  }

  /**
   * Cancels an unpaid order: `{ ok, order }`. A retry whose earlier attempt
   * may have cancelled it (no answer) and that is then told `conflict`
   * reads the order: cancelled is success.
   */
  async cancelOrder(orderId) {
    const result = await this._request({
      method: 'POST',
      path: `/api/v1/orders/${enc(orderId)}/cancel`,
      shopper: true,
    });
    if (result.ok) return { ok: true, order: result.body };
    if (result.code === 'conflict' && result.uncertain) {
      const read = await this.getOrder(orderId);
      if (read.ok && read.order.status === 'cancelled') return read;
    }
    return result;
  }

  /**
   * Pays one of the shopper's `pending_payment` orders with WeChat Pay:
   * asks the engine for the `wx.requestPayment` parameters (retried on 429
   * and 503 as every call is: the engine keeps one WeChat Pay order per
   * order), shows the payment sheet with them unchanged, then reads the
   * order until the engine says `paid` (see `waitUntilPaid`). Answers
   * `{ ok: true, order }` once paid, or `{ ok: false, code, ... }`:
   * - `payment_cancelled`: the shopper closed the sheet; the order is still
   *   pending, `pay` may be called again;
   * - `payment_failed`: the sheet failed (`message`: its errMsg), and the
   *   order is not paid; or the answer carried no parameters (a proxy's
   *   page), and no sheet was shown;
   * - `payment_processing` (with the last `order` read): the sheet was paid
   *   but the engine has not heard from WeChat Pay within `payWaitMaxMs`:
   *   tell the shopper it is being confirmed, and `waitUntilPaid` later;
   * - `refund_required` (with `order`): the payment came after the order
   *   expired or was cancelled; the merchant refunds it;
   * - `expired`, `cancelled` (with `order`): the order can no longer be
   *   paid (a payment the sheet made for it is refunded, the order turning
   *   `refund_required` once WeChat Pay's word arrives);
   * - `refunding`, `refunded` (with `order`): it was paid, and the payment
   *   is being or was refunded;
   * - the engine's codes: `not_found`, `conflict` (the order is no longer
   *   pending: `order` when it could be read), `wechatpay_refused`,
   *   `unavailable` or `network_error` once retries are spent.
   * An order already paid (an earlier sheet, another device) answers
   * `{ ok: true, order }` without a sheet. Two calls at once for one order
   * show one sheet.
   */
  async pay(orderId) {
    if (typeof this.requestPayment !== 'function') throw new TypeError('FlashsaleClient: requestPayment is required to pay');
    return this._once(this.paying, orderId, () => this._pay(orderId));
  }

  async _pay(orderId) {
    const prepay = await this._request({ method: 'POST', path: `/api/v1/orders/${enc(orderId)}/wechatpay`, shopper: true });
    if (!prepay.ok) {
      if (prepay.code !== 'conflict') return prepay;
      // No longer pending: paid already is what the shopper wanted.
      const read = await this.getOrder(orderId);
      if (!read.ok) return prepay;
      return read.order.status === 'paid' ? read : { ...prepay, order: read.order };
    }
    if (!prepay.body || PAYMENT_FIELDS.some((field) => typeof prepay.body[field] !== 'string')) {
      return clientResult('payment_failed', 'the engine answered no payment parameters');
    }
    const params = {};
    for (const field of PAYMENT_FIELDS) params[field] = prepay.body[field];
    const { errMsg } = await this.requestPayment(params);
    const outcome = sheetOutcome(errMsg);
    if (outcome === 'cancelled') return clientResult('payment_cancelled', errMsg);
    if (outcome === 'failed') {
      // A sheet that failed after charging (a lost callback) is paid all the same: one read tells.
      const read = await this.getOrder(orderId);
      if (read.ok && read.order.status === 'paid') return read;
      return clientResult('payment_failed', errMsg);
    }
    return this.waitUntilPaid(orderId);
  }

  /**
   * Reads the order until the engine says it is `paid` (`{ ok: true,
   * order }`) or it can never be (its status as the code, with the order:
   * `refund_required`, `expired`, `cancelled`, `refunding`, `refunded`),
   * no sooner than `pollIntervalMinMs` after each answer (later after a
   * `Retry-After`), for at most `waitMaxMs`; then `payment_processing` with
   * the last order read. A refusal (`not_found`, `unauthorized`) ends it at
   * once.
   */
  async waitUntilPaid(orderId, { waitMaxMs = this.payWaitMaxMs } = {}) {
    const deadline = this.now() + waitMaxMs;
    let order = null;
    let failures = 0;
    for (;;) {
      const read = await this._request({ method: 'GET', path: `/api/v1/orders/${enc(orderId)}`, shopper: true, retry: false });
      let waitMs = this.pollIntervalMinMs;
      if (read.ok) {
        order = read.body;
        failures = 0;
        if (order.status === 'paid') return { ok: true, order };
        if (UNPAYABLE_ORDER.has(order.status)) return clientResult(order.status, UNPAYABLE_ORDER.get(order.status), { order });
      } else if (isRefusal(read)) {
        return read;
      } else {
        failures += 1;
        waitMs = Math.max(waitMs, retryWaitMs(this.policy, failures, read.retryAfterMs, this.random));
      }
      if (this.now() + waitMs > deadline) {
        return clientResult('payment_processing', 'paid in WeChat; the engine has not confirmed it yet', { order });
      }
      await this.sleep(waitMs);
    }
  }
}

export function createClient(options) {
  return new FlashsaleClient(options);
}
