// When to send a request again, and after how long. Only answers that say
// "not now" are retried: 429 `rate_limited` and 503 `overloaded` /
// `unavailable` (after their `Retry-After`), 502 and 504 from a proxy in
// front (it got no answer from the engine), and no answer at all. Every
// other answer is definite (201, 4xx, 409 codes, 500, the engine's own 502
// `wechatpay_refused`) and returned as it is.

import { httpCode } from './result.js';

export const RETRY_DEFAULTS = Object.freeze({
  /** Requests sent for one call, the first included. */
  attemptsMax: 6,
  /** First wait after an answer without `Retry-After` (or none); doubles each time. */
  backoffMs: 300,
  /** Longest such wait, before jitter. */
  backoffMaxMs: 5000,
  /** Up to this much is added at random to a `Retry-After`, so shoppers told the same second do not all come back at once. */
  jitterMs: 500,
  /** A single wait longer than this (a long `Retry-After`) is not waited: the call gives up and says how long to wait. */
  waitMaxMs: 15000,
});

const RETRYABLE_STATUSES = new Set([429, 502, 503, 504]);

export function isRetryableStatus(status) {
  return RETRYABLE_STATUSES.has(status);
}

/**
 * Whether an answer `{ status, body }` says "not now". A 502 that carries
 * the engine's error JSON is the engine's definite answer (WeChat Pay
 * refused the call), not a proxy's.
 */
export function isRetryableAnswer(answer) {
  if (!isRetryableStatus(answer.status)) return false;
  const engineError = answer.body && answer.body.error && typeof answer.body.error.code === 'string';
  return !(answer.status === 502 && engineError);
}

/**
 * Whether a failed call's result is a refusal that holds: a 4xx but 429
 * with the engine's error JSON (asking again gets the same). A 4xx without
 * it (`http_<status>`: a proxy's, CDN's or WAF's page) says nothing of what
 * the engine did with the request, or with an earlier attempt.
 */
export function isRefusal(result) {
  return result.status >= 400 && result.status < 500 && result.status !== 429 && result.code !== httpCode(result.status);
}

/** `Retry-After` in ms (delay-seconds or an HTTP date), or null when absent or unreadable. */
export function retryAfterMs(headers, nowMs) {
  const value = headers && headers['retry-after'];
  if (value === undefined || value === null || value === '') return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - nowMs) : null;
}

/**
 * The wait before attempt `attempt + 1` (attempt counts from 1): the
 * engine's `Retry-After` plus up to `jitterMs`, never less; without one,
 * exponential backoff with equal jitter (half the step always, half at
 * random).
 */
export function retryWaitMs(policy, attempt, retryAfter, random) {
  if (retryAfter !== null && retryAfter !== undefined) return retryAfter + random() * policy.jitterMs;
  const step = Math.min(policy.backoffMaxMs, policy.backoffMs * 2 ** (attempt - 1));
  return step / 2 + (random() * step) / 2;
}
