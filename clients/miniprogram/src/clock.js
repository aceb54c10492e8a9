// The server clock: what time the engine thinks it is, whatever the phone's
// clock says. Each sample is one request that answered a `server_time`:
// the engine read its clock somewhere between sending and receiving, so the
// best estimate is the middle of the round trip (the round trip halved), and
// its error is at most half the round trip. Of the recent samples, the one
// with the shortest round trip wins.

/** Samples kept; older ones are dropped. */
export const CLOCK_SAMPLES_MAX = 8;

export class ServerClock {
  /** `now`: the local clock in ms (injectable, so tests can skew it). */
  constructor({ now = Date.now } = {}) {
    this.localNow = now;
    this.samples = [];
  }

  /** Records one answer: local send and receive times, and the engine's `server_time`. */
  addSample(sentAtMs, receivedAtMs, serverTime) {
    const serverMs = typeof serverTime === 'string' ? Date.parse(serverTime) : serverTime;
    const roundTripMs = receivedAtMs - sentAtMs;
    if (!Number.isFinite(serverMs) || !(roundTripMs >= 0)) return;
    this.samples.push({ offsetMs: serverMs - (sentAtMs + roundTripMs / 2), roundTripMs });
    if (this.samples.length > CLOCK_SAMPLES_MAX) this.samples.shift();
  }

  /** True once at least one sample was taken. */
  get synced() {
    return this.samples.length > 0;
  }

  /** The best sample: the shortest round trip. */
  best() {
    let best = null;
    for (const sample of this.samples) if (!best || sample.roundTripMs < best.roundTripMs) best = sample;
    return best;
  }

  /** Server time minus local time, in ms (0 before any sample). */
  get offsetMs() {
    return this.best()?.offsetMs ?? 0;
  }

  /** How far off `now()` may be, in ms: half the best round trip (Infinity before any sample). */
  get errorMs() {
    const best = this.best();
    return best ? best.roundTripMs / 2 : Infinity;
  }

  /** The engine's time now, in ms since the epoch. */
  now() {
    return this.localNow() + this.offsetMs;
  }

  /** Drops every sample (say the phone's clock was changed). */
  reset() {
    this.samples = [];
  }
}

/**
 * Where a sale stands by the server clock: `phase` is the engine's status,
 * moved on locally when the clock passes `starts_at` or `ends_at` (the
 * engine still decides every order), with the milliseconds to each.
 */
export function saleCountdown(sale, serverNowMs) {
  const startsAt = Date.parse(sale.starts_at);
  const endsAt = Date.parse(sale.ends_at);
  let phase = sale.status;
  if (phase === 'upcoming' && serverNowMs >= startsAt) phase = 'live';
  if ((phase === 'live' || phase === 'sold_out') && serverNowMs >= endsAt) phase = 'ended';
  return {
    phase,
    msToStart: Math.max(0, startsAt - serverNowMs),
    msToEnd: Math.max(0, endsAt - serverNowMs),
  };
}

/** `ms` as `HH:MM:SS.t` for a countdown display. */
export function formatCountdown(ms) {
  const tenths = Math.floor(ms / 100);
  const pad = (n) => String(n).padStart(2, '0');
  const s = Math.floor(tenths / 10);
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}.${tenths % 10}`;
}
