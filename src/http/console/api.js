// The admin API, as the console calls it: the admin token from this tab's
// sessionStorage as a bearer header (never in a URL or a cookie), JSON in
// and out, and the API's own error (`{"error": {"code", "message"}}`)
// raised as an ApiError.

const TOKEN_KEY = 'flashsale.admin_token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function headers(token, accept) {
  return { Authorization: `Bearer ${token ?? ''}`, Accept: accept };
}

async function failure(response) {
  let error = null;
  try {
    error = (await response.json())?.error;
  } catch {
    // Not the API's JSON (a proxy's page): the status says it.
  }
  return new ApiError(response.status, error?.code ?? 'http_error',
    error?.message ?? `HTTP ${response.status} ${response.statusText}`);
}

/** One admin API call; resolves to the answer's JSON. */
export async function call(method, path, body, token = savedToken()) {
  const init = { method, headers: headers(token, 'application/json'), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'network', `the engine did not answer (${err.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Follows a Server-Sent Events route, calling `onEvent({event, data})`
 *  for each event until the stream ends or `signal` aborts. Read through
 *  fetch because EventSource cannot send a bearer header. */
export async function follow(path, onEvent, signal) {
  const response = await fetch(path, {
    headers: headers(savedToken(), 'text/event-stream'), cache: 'no-store', signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll('\r\n', '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) onEvent(event);
    }
  }
}

function parseEvent(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue; // a keep-alive comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  return { event, data: JSON.parse(data.join('\n')) };
}
