// A WeChat Pay stand-in for the client's tests, on node:http and
// node:crypto, as WeChat Pay API v3 (direct merchant mode) behaves towards
// the engine:
// - it holds the keys: a merchant API key pair (the engine signs calls and
//   `paySign` with its private half, written as PKCS#8 PEM), a platform key
//   pair (it signs every answer and notification; the engine gets the SPKI
//   PEM of its public half) and an APIv3 key, all made fresh per run and
//   written to a temporary directory for the engine;
// - it answers `POST /v3/pay/transactions/jsapi` with a `prepay_id` (one
//   WeChat Pay order per `out_trade_no`), the close and the query, after
//   checking each call's `Authorization` signature with the merchant's
//   public key; every answer carries `Wechatpay-Timestamp`,
//   `Wechatpay-Nonce`, `Wechatpay-Serial` and `Wechatpay-Signature`
//   (RSA-SHA256 over `timestamp\nnonce\nbody\n`);
// - `pay(prepayId)` is the shopper paying in the sheet: the WeChat Pay
//   order is paid and the engine gets a signed `TRANSACTION.SUCCESS`
//   notification whose resource is the transaction, AES-256-GCM encrypted
//   with the APIv3 key (`associated_data` "transaction", the tag after the
//   ciphertext, base64);
// - `failNext(n)` answers the next n calls 500 `SYSTEM_ERROR` (the engine
//   then answers 503 `unavailable`).

import { createCipheriv, createSign, createVerify, generateKeyPairSync, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const MCHID = '1230000109';
export const APPID = 'wxd678efh567hg6787';
export const MERCHANT_SERIAL = '3775B6A45ACD588826D15E583A95F5DD00000000';
const NOTIFY_PATH = '/api/v1/payments/wechatpay/notify';

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomText(length, alphabet = ALPHANUMERIC) {
  let text = '';
  for (let i = 0; i < length; i++) text += alphabet[randomInt(alphabet.length)];
  return text;
}

/** Base64 RSA-SHA256 (PKCS#1 v1.5) signature of `message`. */
export function rsaSign(privateKey, message) {
  return createSign('RSA-SHA256').update(message).sign(privateKey, 'base64');
}

/** Whether `signature` (base64) is `publicKey`'s RSA-SHA256 signature of `message`. */
export function rsaVerifies(publicKey, message, signature) {
  try {
    return createVerify('RSA-SHA256').update(message).verify(publicKey, String(signature), 'base64');
  } catch {
    return false;
  }
}

/** Now in China Standard Time, as WeChat Pay writes times. */
function beijingNow() {
  return new Date(Date.now() + 8 * 3_600_000).toISOString().replace(/\.\d+Z$/, '+08:00');
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export async function startWeChatPay() {
  const merchant = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const platform = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const apiv3Key = randomText(32);
  const platformSerial = randomText(40, '0123456789ABCDEF');
  const keys = mkdtempSync(join(tmpdir(), 'flashsale-wechatpay-'));
  const merchantKeyPath = join(keys, 'merchant.pem');
  const platformKeyPath = join(keys, 'platform.pem');
  writeFileSync(merchantKeyPath, merchant.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(platformKeyPath, platform.publicKey.export({ type: 'spki', format: 'pem' }));

  /** WeChat Pay orders by out_trade_no: { prepayId, request, state: NOTPAY|SUCCESS|CLOSED, transactionId }. */
  const orders = new Map();
  /** Every call: { method, path, authorized }. */
  const calls = [];
  let failures = 0;

  /** The `Wechatpay-*` headers of a message WeChat Pay signs now. */
  function signedHeaders(body) {
    const timestamp = String(Math.floor(Date.now() / 1000));
    const nonce = randomText(32);
    return {
      'Wechatpay-Timestamp': timestamp,
      'Wechatpay-Nonce': nonce,
      'Wechatpay-Serial': platformSerial,
      'Wechatpay-Signature': rsaSign(platform.privateKey, `${timestamp}\n${nonce}\n${body}\n`),
    };
  }

  function answer(res, status, value) {
    const body = value === undefined ? '' : JSON.stringify(value);
    res.writeHead(status, { 'content-type': 'application/json', ...signedHeaders(body) });
    res.end(body);
  }

  /** Whether the call's `Authorization` is the merchant's signature of it. */
  function authorized(req, body) {
    const value = req.headers.authorization || '';
    if (!value.startsWith('WECHATPAY2-SHA256-RSA2048 ')) return false;
    const fields = {};
    for (const [, name, field] of value.matchAll(/(\w+)="([^"]*)"/g)) fields[name] = field;
    const message = `${req.method}\n${req.url}\n${fields.timestamp}\n${fields.nonce_str}\n${body}\n`;
    return fields.mchid === MCHID && fields.serial_no === MERCHANT_SERIAL && rsaVerifies(merchant.publicKey, message, fields.signature);
  }

  function transaction(outTradeNo, order) {
    const { amount } = order.request;
    const paid = order.state === 'SUCCESS';
    return {
      appid: order.request.appid,
      mchid: order.request.mchid,
      out_trade_no: outTradeNo,
      ...(paid ? { transaction_id: order.transactionId, success_time: beijingNow(), bank_type: 'CMC' } : {}),
      trade_type: 'JSAPI',
      trade_state: order.state,
      trade_state_desc: order.state,
      payer: order.request.payer,
      amount: { total: amount.total, payer_total: amount.total, currency: amount.currency, payer_currency: amount.currency },
    };
  }

  const server = createServer(async (req, res) => {
    const body = await readBody(req);
    const call = { method: req.method, path: req.url, authorized: authorized(req, body) };
    calls.push(call);
    if (!call.authorized) return answer(res, 401, { code: 'SIGN_ERROR', message: 'signature does not verify' });
    if (failures > 0) {
      failures -= 1;
      return answer(res, 500, { code: 'SYSTEM_ERROR', message: 'stand-in told to fail' });
    }
    const path = new URL(req.url, 'http://stand-in').pathname;
    if (req.method === 'POST' && path === '/v3/pay/transactions/jsapi') {
      const request = JSON.parse(body);
      if (!orders.has(request.out_trade_no)) {
        orders.set(request.out_trade_no, { prepayId: `wx${randomText(34, '0123456789')}`, request, state: 'NOTPAY' });
      }
      return answer(res, 200, { prepay_id: orders.get(request.out_trade_no).prepayId });
    }
    const close = /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)\/close$/.exec(path);
    const query = /^\/v3\/pay\/transactions\/out-trade-no\/([^/]+)$/.exec(path);
    const order = orders.get(decodeURIComponent((close || query || [])[1] || ''));
    if ((close || query) && !order) return answer(res, 404, { code: 'ORDER_NOT_EXIST', message: 'no such order' });
    if (req.method === 'POST' && close) {
      if (order.state === 'SUCCESS') return answer(res, 400, { code: 'ORDERPAID', message: 'paid' });
      order.state = 'CLOSED';
      return answer(res, 204);
    }
    if (req.method === 'GET' && query) return answer(res, 200, transaction(query[1], order));
    return answer(res, 404, { code: 'NOT_FOUND', message: `${req.method} ${path}` });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const baseUrl = `http://127.0.0.1:${server.address().port}`;

  return {
    baseUrl,
    calls,
    orders,
    merchantPublicKey: merchant.publicKey,

    /** The engine's settings for WeChat Pay mode against this stand-in. */
    engineSettings() {
      return {
        FLASHSALE_PAYMENTS: 'wechatpay',
        FLASHSALE_WECHATPAY_MCHID: MCHID,
        FLASHSALE_WECHATPAY_APPID: APPID,
        FLASHSALE_WECHATPAY_MERCHANT_KEY: merchantKeyPath,
        FLASHSALE_WECHATPAY_MERCHANT_SERIAL: MERCHANT_SERIAL,
        FLASHSALE_WECHATPAY_PLATFORM_KEY: platformKeyPath,
        FLASHSALE_WECHATPAY_APIV3_KEY: apiv3Key,
        FLASHSALE_WECHATPAY_NOTIFY_URL: `https://shop.example.com${NOTIFY_PATH}`,
        FLASHSALE_WECHATPAY_BASE_URL: baseUrl,
        FLASHSALE_WECHATPAY_TIMEOUT_MS: '2000',
      };
    },

    /** The next `n` calls are answered 500 SYSTEM_ERROR. */
    failNext(n) {
      failures = n;
    },

    /** The WeChat Pay order whose `package` is `prepay_id=<prepayId>`: [out_trade_no, order], or undefined. */
    orderOf(prepayPackage) {
      return [...orders].find(([, order]) => `prepay_id=${order.prepayId}` === prepayPackage);
    },

    /**
     * The shopper pays the WeChat Pay order of `prepayPackage` in the sheet:
     * it is paid, and WeChat Pay posts its notification to the engine at
     * `engineBaseUrl`. Answers the engine's `{ status, body }`.
     * `afterClose`: a closed order is paid too (the race no close prevents:
     * WeChat Pay completing a payment after it answered the close).
     */
    async pay(engineBaseUrl, prepayPackage, { afterClose = false } = {}) {
      const found = this.orderOf(prepayPackage);
      if (!found) throw new Error(`no WeChat Pay order for ${prepayPackage}`);
      const [outTradeNo, order] = found;
      if (order.state !== 'NOTPAY' && !(afterClose && order.state === 'CLOSED')) throw new Error(`${outTradeNo} is ${order.state}`);
      order.state = 'SUCCESS';
      order.transactionId = `4200${randomText(24, '0123456789')}`;
      const resourceNonce = randomText(12);
      const cipher = createCipheriv('aes-256-gcm', Buffer.from(apiv3Key), Buffer.from(resourceNonce));
      cipher.setAAD(Buffer.from('transaction'));
      const sealed = Buffer.concat([cipher.update(JSON.stringify(transaction(outTradeNo, order))), cipher.final(), cipher.getAuthTag()]);
      const body = JSON.stringify({
        id: `EV-${randomText(19, '0123456789')}`,
        create_time: beijingNow(),
        resource_type: 'encrypt-resource',
        event_type: 'TRANSACTION.SUCCESS',
        summary: '支付成功',
        resource: {
          original_type: 'transaction',
          algorithm: 'AEAD_AES_256_GCM',
          ciphertext: sealed.toString('base64'),
          associated_data: 'transaction',
          nonce: resourceNonce,
        },
      });
      const response = await fetch(engineBaseUrl + NOTIFY_PATH, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...signedHeaders(body) },
        body,
      });
      return { status: response.status, body: await response.json() };
    },

    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      rmSync(keys, { recursive: true, force: true });
    },
  };
}
