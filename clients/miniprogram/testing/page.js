// The example Mini Program in Node: its app and seckill page loaded as the
// Mini Program runtime would (`App`, `Page`, `getApp` and `wx` as
// globals), with a `wx` stand-in whose wx.request reaches the engine at
// `https://seckill.example.com` and the merchant's login service in place,
// and `setData` merging into `data` (every patch recorded in `patches`).
// ES modules load once per process: one example app per test file, whose
// page `open(query)` opens afresh (its first data, then `onLoad`).

import { shopperToken } from './engine.js';
import { wxStandIn } from './wx.js';

const EXAMPLE = new URL('../example/', import.meta.url);

/** Polls `condition` every 10 ms for up to 5 s. */
export async function until(condition, what) {
  for (let i = 0; i < 500; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`never: ${what}`);
}

/**
 * Loads the example for `shopper` against `engineBaseUrl`; `onRequestPayment`
 * is the payment sheet (see wx.js). Answers `{ wx, app, page, patches,
 * logins, engineUrl, open }`; the page is not loaded yet (call
 * `open(query)`, or `page.onLoad` once).
 */
export async function loadExample({ engineBaseUrl, shopper, onRequestPayment }) {
  const logins = [];
  const wx = wxStandIn({
    routes: {
      'https://seckill.example.com': engineBaseUrl,
      'https://shop.example.com/api/flashsale-login': (request) => {
        logins.push(request.data.code);
        return { status: 200, body: { token: shopperToken(shopper) } };
      },
    },
    onRequestPayment,
  });
  globalThis.wx = wx;
  let app;
  let page;
  globalThis.App = (definition) => {
    app = definition;
  };
  globalThis.getApp = () => app;
  globalThis.Page = (definition) => {
    page = definition;
  };
  const { ENGINE_URL } = await import(new URL('app.js', EXAMPLE));
  app.onLaunch();
  await import(new URL('pages/seckill/seckill.js', EXAMPLE));
  const initial = structuredClone(page.data);
  const patches = [];
  page.data = structuredClone(initial);
  page.setData = (patch) => {
    patches.push(patch);
    Object.assign(page.data, patch);
  };
  const open = (query) => {
    page.data = structuredClone(initial);
    page.onLoad(query);
  };
  return { wx, app, page, patches, logins, engineUrl: ENGINE_URL, open };
}
