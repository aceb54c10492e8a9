// flashsale for WeChat Mini Programs (and Node): the client a seckill page
// uses to count down by the engine's clock, order once however often a tap
// is retried, back off as the engine tells it, wait in a queued sale's
// line, show a campaign's rounds, and pay with `wx.requestPayment`. ES
// module, no dependencies, no build step.

export { FlashsaleClient, createClient, tokenSubject } from './client.js';
export { campaignOver, campaignRounds, campaignSaleId } from './campaign.js';
export { ServerClock, saleCountdown, formatCountdown, CLOCK_SAMPLES_MAX } from './clock.js';
export { PAYMENT_FIELDS, sheetOutcome, wxRequestPayment } from './payment.js';
export { RETRY_DEFAULTS, isRefusal, isRetryableAnswer, isRetryableStatus, retryAfterMs, retryWaitMs } from './retry.js';
export { memoryStorage, wxStorage } from './storage.js';
export { NetworkError, fetchTransport, wxTransport } from './transport.js';
export { WaitingRoom } from './waitingRoom.js';
