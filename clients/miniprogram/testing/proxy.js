// A fault-injecting HTTP proxy in front of the engine, for the client's
// tests: it forwards every request, records when each arrived and was
// answered (this process's clock), whose it was (its Authorization), and
// the engine's status, Retry-After and body, and can be told, for the next request
// matching a rule, to drop the engine's answer (the engine did the work,
// the client hears nothing), to hold it back (the client times out), or to
// answer itself (say 503 with Retry-After)
// without forwarding.

import { createServer, request as httpRequest } from 'node:http';

function parseJson(bytes) {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return null;
  }
}

export async function startProxy(targetBaseUrl) {
  const target = new URL(targetBaseUrl);
  const rules = [];
  const log = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const entry = {
        method: req.method,
        url: req.url,
        authorization: req.headers.authorization,
        receivedAt: Date.now(),
        answeredAt: null,
        status: null,
        action: 'forward',
      };
      log.push(entry);
      const index = rules.findIndex((rule) => rule.method === req.method && rule.path.test(req.url));
      const rule = index >= 0 ? rules.splice(index, 1)[0] : null;
      if (rule && rule.action === 'answer') {
        entry.action = 'answer';
        entry.status = rule.status;
        entry.retryAfter = rule.headers['retry-after'];
        entry.body = rule.body;
        res.writeHead(rule.status, { 'content-type': 'application/json', ...rule.headers });
        res.end(JSON.stringify(rule.body));
        entry.answeredAt = Date.now();
        return;
      }
      const upstream = httpRequest(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          const body = [];
          answer.on('data', (chunk) => body.push(chunk));
          answer.on('end', () => {
            entry.status = answer.statusCode;
            entry.retryAfter = answer.headers['retry-after'];
            entry.body = parseJson(Buffer.concat(body));
            entry.answeredAt = Date.now();
            if (rule && rule.action === 'drop') {
              entry.action = 'drop';
              req.socket.destroy();
              return;
            }
            const send = () => {
              res.writeHead(answer.statusCode, answer.headers);
              res.end(Buffer.concat(body));
            };
            if (rule && rule.action === 'stall') {
              entry.action = 'stall';
              setTimeout(send, rule.ms);
            } else send();
          });
        },
      );
      upstream.on('error', () => req.socket.destroy());
      upstream.end(Buffer.concat(chunks));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    baseUrl: `http://127.0.0.1:${server.address().port}`,
    log,
    /** The next `method` request whose URL matches `path` is forwarded, and its answer dropped. */
    dropAnswer(method, path) {
      rules.push({ method, path, action: 'drop' });
    },
    /** The next `method` request whose URL matches `path` is forwarded, and its answer held `ms`. */
    stall(method, path, ms) {
      rules.push({ method, path, action: 'stall', ms });
    },
    /** The next `method` request whose URL matches `path` is answered by the proxy. */
    answer(method, path, status, headers, body) {
      rules.push({ method, path, action: 'answer', status, headers, body });
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Wraps a transport and records each request as the client sent it:
 * `{ method, path, headers, sentAt, answeredAt, status, retryAfter, body }`
 * (status null: no answer; body: the answer's, parsed), this process's clock.
 */
export function recording(transport) {
  const log = [];
  const wrapped = async (request) => {
    const entry = { method: request.method, path: request.path, headers: request.headers, sentAt: Date.now(), answeredAt: null, status: null };
    log.push(entry);
    try {
      const answer = await transport(request);
      entry.status = answer.status;
      entry.retryAfter = answer.headers['retry-after'];
      entry.body = answer.body;
      return answer;
    } finally {
      entry.answeredAt = Date.now();
    }
  };
  wrapped.log = log;
  return wrapped;
}
