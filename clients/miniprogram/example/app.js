// The example Mini Program: one flashsale client for the whole app, with
// the shopper's token from the merchant's login service.
//
// ENGINE_URL is the engine behind your HTTPS proxy (a request domain of the
// Mini Program); LOGIN_URL is your own login service: it takes the code of
// wx.login, exchanges it with WeChat (code2Session) for the shopper's
// OpenID, and answers {"token": "<HS256 JWT, sub = the OpenID, exp set>"}
// signed with the engine's FLASHSALE_USER_TOKEN_SECRET.

import { createClient, wxRequestPayment, wxStorage, wxTransport } from './flashsale/index.js';

export const ENGINE_URL = 'https://seckill.example.com';
export const LOGIN_URL = 'https://shop.example.com/api/flashsale-login';

App({
  onLaunch() {
    this.flashsale = createClient({
      transport: wxTransport({ baseUrl: ENGINE_URL, wx }),
      storage: wxStorage(wx),
      requestPayment: wxRequestPayment(wx),
      getToken: ({ refresh }) => this.shopperToken(refresh),
    });
  },

  /** The shopper's token: kept until the engine refuses it (401), then fetched again. */
  shopperToken(refresh) {
    if (this.token && !refresh) return this.token;
    if (!this.login || refresh) {
      this.login = new Promise((resolve, reject) => {
        wx.login({
          success: ({ code }) =>
            wx.request({
              url: LOGIN_URL,
              method: 'POST',
              data: { code },
              success: (res) => {
                if (res.statusCode === 200 && res.data && res.data.token) {
                  this.token = res.data.token;
                  resolve(this.token);
                } else reject(new Error(`login: ${res.statusCode}`));
              },
              fail: (err) => reject(new Error(`login: ${err.errMsg}`)),
            }),
          fail: (err) => reject(new Error(`wx.login: ${err.errMsg}`)),
        });
      });
      this.login.catch(() => {
        this.login = null;
      });
    }
    return this.login;
  },
});
