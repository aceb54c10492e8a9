// A stand-in for the Mini Program's `wx` (the parts the client and the
// example use), backed by real HTTP: `wx.request` is sent with fetch and
// answered as the Mini Program documents it (success with statusCode, data
// (parsed when dataType is json, the default), header; fail with errMsg).
// `routes` maps a URL prefix to a real base URL, or to a function that
// answers in place (the merchant's login service). `wx.requestPayment`
// records the parameters it was called with (callbacks left out) and
// settles as `onRequestPayment(params)` says: its errMsg
// (`requestPayment:ok`, `requestPayment:fail cancel`, ...), through `fail`
// unless it is `requestPayment:ok`, then `complete`. Every call is recorded.

export function wxStandIn({ routes = {}, onRequestPayment = () => 'requestPayment:fail no payment in this test' } = {}) {
  const storage = new Map();
  const requests = [];
  const payments = [];
  let codes = 0;
  return {
    requests,
    payments,
    storage,
    request(options) {
      const entry = { url: options.url, method: options.method || 'GET', header: options.header, data: options.data, dataType: options.dataType };
      requests.push(entry);
      const prefix = Object.keys(routes).find((p) => options.url.startsWith(p));
      const route = prefix === undefined ? undefined : routes[prefix];
      const finish = (status, text, header) => {
        const json = options.dataType === undefined || options.dataType === 'json';
        let data = text;
        if (json) {
          try {
            data = JSON.parse(text);
          } catch {
            data = text;
          }
        }
        entry.statusCode = status;
        options.success?.({ statusCode: status, data, header, errMsg: 'request:ok' });
        options.complete?.();
      };
      const fail = (errMsg) => {
        entry.errMsg = errMsg;
        options.fail?.({ errMsg });
        options.complete?.();
      };
      if (typeof route === 'function') {
        Promise.resolve(route(entry)).then(({ status, body }) => finish(status, JSON.stringify(body), { 'Content-Type': 'application/json' }));
        return;
      }
      if (route === undefined) {
        setTimeout(() => fail('request:fail url not in domain list'), 0);
        return;
      }
      const body = options.data === undefined || typeof options.data === 'string' ? options.data : JSON.stringify(options.data);
      fetch(route + options.url.slice(prefix.length), {
        method: entry.method,
        headers: options.header,
        body: entry.method === 'GET' ? undefined : body,
        signal: AbortSignal.timeout(options.timeout || 60_000),
      })
        .then(async (response) => {
          // wx.request hands header names as the server sent them.
          const header = {};
          response.headers.forEach((value, name) => {
            header[name.replace(/(^|-)([a-z])/g, (m) => m.toUpperCase())] = value;
          });
          finish(response.status, await response.text(), header);
        })
        .catch((err) => fail(`request:fail ${err.cause?.code || err.message}`));
    },
    requestPayment(options) {
      const params = {};
      for (const [name, value] of Object.entries(options)) if (typeof value !== 'function') params[name] = value;
      payments.push(params);
      Promise.resolve()
        .then(() => onRequestPayment(params))
        .catch((err) => `requestPayment:fail ${err.message}`)
        .then((errMsg) => {
          if (errMsg === 'requestPayment:ok') options.success?.({ errMsg });
          else options.fail?.({ errMsg });
          options.complete?.({ errMsg });
        });
    },
    login(options) {
      codes += 1;
      setTimeout(() => options.success?.({ code: `code-${codes}`, errMsg: 'login:ok' }), 0);
    },
    getStorageSync(key) {
      return storage.has(key) ? structuredClone(storage.get(key)) : '';
    },
    setStorageSync(key, value) {
      storage.set(key, structuredClone(value));
    },
    removeStorageSync(key) {
      storage.delete(key);
    },
  };
}
