// What a call answers: `{ ok: true, ... }`, or `{ ok: false, status, code,
// message, retryAfterMs, uncertain }` with the engine's error code, or one
// of the client's own (status 0) when no engine answer stands behind it.

/** The code of a failed answer without the engine's error JSON (a proxy's page, say): `http_<status>`. */
export function httpCode(status) {
  return `http_${status}`;
}

/** An engine answer `{ status, headers, body }` as a result (`retryAfterMs` is filled in by the caller). */
export function toResult(answer) {
  if (answer.status >= 200 && answer.status < 300) {
    return { ok: true, status: answer.status, body: answer.body, headers: answer.headers };
  }
  const error = (answer.body && answer.body.error) || {};
  return {
    ok: false,
    status: answer.status,
    code: typeof error.code === 'string' ? error.code : httpCode(answer.status),
    message: typeof error.message === 'string' ? error.message : '',
    retryAfterMs: null,
  };
}

/** A result the client makes itself (no engine answer behind it: status 0). */
export function clientResult(code, message, extra = {}) {
  return { ok: false, status: 0, code, message, retryAfterMs: null, uncertain: false, ...extra };
}

/** No answer came back. */
export const NO_ANSWER = Object.freeze({
  ok: false,
  status: 0,
  code: 'network_error',
  message: 'no answer from the engine',
  retryAfterMs: null,
});
