// The real engine for the client's tests: the debug binary, embedded store,
// on a free port it picks itself (FLASHSALE_LISTEN=127.0.0.1:0, read back
// from its JSON log line), with a known admin token and shopper secret.
// Shopper tokens are made here with node:crypto (HS256), as the merchant's
// login service would.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const BINARY = process.env.FLASHSALE_BIN || `${REPO}target/debug/flashsale`;
export const ADMIN_TOKEN = 'client-tests-admin-token-of-at-least-32-bytes';
export const SHOPPER_SECRET = 'client-tests-shopper-secret';

function base64url(data) {
  return Buffer.from(data).toString('base64url');
}

/** An HS256 shopper JWT for `sub`, valid `lifetimeSecs` (negative: already expired). */
export function shopperToken(sub, lifetimeSecs = 3600, secret = SHOPPER_SECRET) {
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const exp = Math.floor(Date.now() / 1000) + lifetimeSecs;
  const payload = base64url(JSON.stringify({ sub, exp }));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

let shoppers = 0;
/** A shopper id no other test uses. */
export function newShopper() {
  shoppers += 1;
  return `oT-${process.pid}-${shoppers}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Starts the engine; `env` adds or overrides settings. */
export async function startEngine(env = {}) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} missing: run cargo build first`);
  const child = spawn(BINARY, [], {
    env: {
      PATH: process.env.PATH,
      FLASHSALE_LISTEN: '127.0.0.1:0',
      FLASHSALE_LOG_FORMAT: 'json',
      FLASHSALE_ADMIN_TOKEN: ADMIN_TOKEN,
      FLASHSALE_USER_TOKEN_SECRET: SHOPPER_SECRET,
      FLASHSALE_PAYMENTS: 'simulated',
      RUST_LOG: 'warn,flashsale::startup=info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = createInterface({ input: child.stdout });
  const output = [];
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`engine did not start:\n${output.join('\n')}`)), 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`engine exited (${code}):\n${output.join('\n')}`));
    });
    lines.on('line', (line) => {
      if (output.length < 50) output.push(line);
      try {
        const entry = JSON.parse(line);
        if (entry.fields && entry.fields.message === 'flashsale listening') {
          clearTimeout(timer);
          resolve(entry.fields.address);
        }
      } catch {
        // not a JSON line
      }
    });
  });
  child.stderr.resume();
  const baseUrl = `http://${address}`;
  return new Engine(child, baseUrl);
}

class Engine {
  constructor(child, baseUrl) {
    this.child = child;
    this.baseUrl = baseUrl;
  }

  async admin(method, path, body) {
    const response = await fetch(this.baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await response.json();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Schedules a sale; by default live now for an hour. */
  async createSale(fields = {}) {
    const now = Date.now();
    return this.admin('POST', '/admin/v1/sales', {
      sku: 'CLIENT-TEST',
      title: 'Client test sale',
      price_cents: 19900,
      stock_total: 10,
      per_user_limit: 1,
      starts_at: new Date(now - 60_000).toISOString(),
      ends_at: new Date(now + 3_600_000).toISOString(),
      ...fields,
    });
  }

  /**
   * Schedules a queued sale (the waiting room) opening `startsInMs` from
   * now, its pre-queue open already; `admission` adds to or overrides the
   * defaults.
   */
  async createQueuedSale({ startsInMs = 0, admission = {}, ...fields } = {}) {
    const startsAt = Date.now() + startsInMs;
    return this.createSale({
      starts_at: new Date(startsAt).toISOString(),
      ends_at: new Date(startsAt + 3_600_000).toISOString(),
      admission: { mode: 'queue', prequeue_opens_secs: 600, admit_per_sec: 1000, token_ttl_secs: 60, ...admission },
      ...fields,
    });
  }

  /**
   * Schedules a campaign: by default round 0 live since a minute ago for
   * an hour, round 1 in two hours, two items of 5 units a round, one unit
   * per shopper a round and two in all.
   */
  async createCampaign(fields = {}) {
    const now = Date.now();
    const at = (ms) => new Date(now + ms).toISOString();
    return this.admin('POST', '/admin/v1/campaigns', {
      title: 'Client test campaign',
      per_user_limit_per_round: 1,
      per_user_limit_total: 2,
      rounds: [
        { starts_at: at(-60_000), ends_at: at(3_600_000) },
        { starts_at: at(7_200_000), ends_at: at(10_800_000) },
      ],
      items: [
        { sku: 'CT-A', title: '小包', price_cents: 9900, original_price_cents: 19900, stock_per_round: 5 },
        { sku: 'CT-B', title: '托特包', price_cents: 29900, original_price_cents: 59900, stock_per_round: 5 },
      ],
      ...fields,
    });
  }

  /** Pays an order through the simulated pay route, as `sub`. */
  async payOrder(sub, orderId) {
    const response = await fetch(`${this.baseUrl}/api/v1/orders/${orderId}/pay`, {
      method: 'POST',
      headers: { authorization: `Bearer ${shopperToken(sub)}` },
    });
    if (!response.ok) throw new Error(`pay ${orderId}: ${response.status} ${await response.text()}`);
    return response.json();
  }

  /** The sale with its exact stats (admin). */
  async stats(saleId) {
    return (await this.admin('GET', `/admin/v1/sales/${saleId}`)).stats;
  }

  async stop() {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    await exited;
  }
}
