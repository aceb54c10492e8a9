// Transports: how the client sends one HTTP request. A transport is a
// function `({ method, path, headers, body, timeoutMs }) => Promise<answer>`
// where the answer is `{ status, headers, body }` (header names in lower
// case, body parsed from JSON or null). A transport rejects with a
// `NetworkError` when no answer arrived (refused, reset, timed out, cut
// mid-body): the request may or may not have reached the engine, which is
// exactly the case an Idempotency-Key exists for.

export class NetworkError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'NetworkError';
  }
}

function parseBody(text) {
  if (typeof text !== 'string' || text.trim() === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function lowerCaseKeys(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers || {})) out[name.toLowerCase()] = String(value);
  return out;
}

function encodeBody(body) {
  return body === undefined ? undefined : JSON.stringify(body);
}

/** Node (18+) and browsers: the standard `fetch`. */
export function fetchTransport({ baseUrl, fetch: fetchImpl = globalThis.fetch }) {
  if (typeof fetchImpl !== 'function') throw new TypeError('fetchTransport: no fetch available');
  const base = baseUrl.replace(/\/+$/, '');
  return async function request({ method, path, headers, body, timeoutMs }) {
    let text;
    let response;
    try {
      response = await fetchImpl(base + path, {
        method,
        headers,
        body: encodeBody(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      // An answer cut off mid-body is no answer.
      text = await response.text();
    } catch (err) {
      throw new NetworkError(`${method} ${path}: no answer (${err.cause?.code || err.name})`, { cause: err });
    }
    const names = {};
    response.headers.forEach((value, name) => {
      names[name] = value;
    });
    return { status: response.status, headers: lowerCaseKeys(names), body: parseBody(text) };
  };
}

/**
 * The Mini Program runtime: `wx.request`. The body is sent and read as text
 * (`dataType: 'text'`) and parsed here, so an answer that is not JSON (a
 * proxy's error page) is an answer with a null body, never a throw.
 */
export function wxTransport({ baseUrl, wx }) {
  if (!wx || typeof wx.request !== 'function') throw new TypeError('wxTransport: wx.request missing');
  const base = baseUrl.replace(/\/+$/, '');
  return function request({ method, path, headers, body, timeoutMs }) {
    return new Promise((resolve, reject) => {
      const options = {
        url: base + path,
        method,
        header: headers,
        timeout: timeoutMs,
        dataType: 'text',
        responseType: 'text',
        success(res) {
          resolve({ status: res.statusCode, headers: lowerCaseKeys(res.header), body: parseBody(res.data) });
        },
        fail(err) {
          reject(new NetworkError(`${method} ${path}: no answer (${err && err.errMsg})`, { cause: err }));
        },
      };
      const data = encodeBody(body);
      if (data !== undefined) options.data = data;
      wx.request(options);
    });
  };
}
