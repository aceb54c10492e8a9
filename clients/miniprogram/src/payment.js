// The payment sheet: how the client hands the engine's WeChat Pay
// parameters to the shopper. A payment adapter is a function
// `(params) => Promise<{ errMsg }>` that shows the sheet for `params`
// (`timeStamp`, `nonceStr`, `package`, `signType`, `paySign`, as the engine
// signed them) and settles with `wx.requestPayment`'s `errMsg` once the
// sheet is closed. The sheet's outcome is only the shopper's side: the
// order is paid once the engine has WeChat Pay's notification, which the
// client learns by reading the order.

/** The parameters `wx.requestPayment` takes from the engine's answer, in its spelling (its `appId` is the Mini Program's own). */
export const PAYMENT_FIELDS = Object.freeze(['timeStamp', 'nonceStr', 'package', 'signType', 'paySign']);

/** `wx.requestPayment` as a payment adapter. */
export function wxRequestPayment(wx) {
  if (!wx || typeof wx.requestPayment !== 'function') throw new TypeError('wxRequestPayment: wx.requestPayment missing');
  return (params) =>
    new Promise((resolve) => {
      // The first callback wins: `complete` follows `success` or `fail`,
      // and is the only one WeChat 6.5.2 and older call on a cancel.
      let settled = false;
      const settle = (res) => {
        if (settled) return;
        settled = true;
        resolve({ errMsg: String((res && res.errMsg) || '') });
      };
      wx.requestPayment({ ...params, success: settle, fail: settle, complete: settle });
    });
}

/**
 * What the sheet's `errMsg` says: `paid` (`requestPayment:ok`: the shopper
 * paid, WeChat Pay's notification still to come), `cancelled` (the shopper
 * closed the sheet: `requestPayment:fail cancel`, or `requestPayment:cancel`
 * from old WeChat versions), or `failed` (`requestPayment:fail <reason>`).
 */
export function sheetOutcome(errMsg) {
  if (errMsg === 'requestPayment:ok') return 'paid';
  if (/^requestPayment:(fail )?cancel$/.test(errMsg)) return 'cancelled';
  return 'failed';
}
