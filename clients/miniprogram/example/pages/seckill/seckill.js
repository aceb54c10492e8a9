// A seckill page on the flashsale client: the countdown by the engine's
// clock, a stock bar, one buy button whose retries never make a second
// order, and the shopper's orders with pay (wx.requestPayment, then the
// engine's word that it is paid) and cancel. Open it as
// pages/seckill/seckill?sale=s_...
//
// Not on this page yet (the engine routes do not exist yet): campaign
// rounds and the waiting room's queue position.

import { formatCountdown } from '../../flashsale/index.js';

/** What the shopper reads for each code the client can answer. */
const MESSAGES = {
  sold_out: '已抢光',
  limit_exceeded: '已达限购数量',
  not_started: '还没开始',
  ended: '活动已结束',
  conflict: '你已下过单，请在订单中查看',
  rate_limited: '人太多了，请稍后再试',
  overloaded: '人太多了，请稍后再试',
  unavailable: '服务繁忙，请稍后再试',
  network_error: '网络不给力，请重试',
};

/** What the shopper reads when paying: the codes of `pay`, and `conflict` meaning the order can no longer be paid. */
const PAY_MESSAGES = {
  ...MESSAGES,
  conflict: '订单已取消或已过期，不能支付',
  not_found: '订单不存在',
  payment_cancelled: '已取消支付，可在订单中继续支付',
  payment_failed: '支付未完成，请重试',
  payment_processing: '支付结果确认中，请稍后查看订单',
  refund_required: '订单已失效，款项将退回',
  wechatpay_refused: '暂时无法支付，请稍后再试',
};

const STATUS_TEXT = {
  pending_payment: '待支付',
  paid: '已支付',
  cancelled: '已取消',
  expired: '已过期',
  refund_required: '待退款',
};

/** The countdown is redrawn this often (ms); the engine is polled only as it allows. */
const TICK_MS = 200;

Page({
  data: {
    sale: null,
    phase: 'loading',
    countdown: '',
    soldPercent: 0,
    buying: false,
    paying: false,
    message: '',
    orders: [],
  },

  onLoad(query) {
    this.client = getApp().flashsale;
    this.saleId = query.sale;
    this.watch = this.client.watchSale(this.saleId, (update) => this.onSale(update));
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.loadOrders();
  },

  onUnload() {
    this.watch.stop();
    clearInterval(this.ticker);
  },

  onSale(update) {
    // A failed poll is retried by the watch itself, as late as the engine says.
    if (!update.ok) return;
    const sale = update.sale;
    const sold = sale.stock_total - sale.remaining;
    this.setData({ sale, soldPercent: Math.round((100 * sold) / sale.stock_total) });
    this.tick();
  },

  tick() {
    const sale = this.data.sale;
    if (!sale) return;
    const { phase, msToStart, msToEnd } = this.client.countdown(sale);
    const countdown = formatCountdown(phase === 'upcoming' ? msToStart : msToEnd);
    if (phase !== this.data.phase || countdown !== this.data.countdown) this.setData({ phase, countdown });
  },

  async buy() {
    // One request at a time from this page; a second tap while it runs is
    // ignored, and a tap after a lost answer reuses the same purchase intent.
    if (this.data.buying) return;
    this.setData({ buying: true, message: '' });
    const result = await this.client.placeOrder(this.saleId, 1);
    if (result.ok) {
      this.setData({ message: `抢到了！请在 ${result.order.expires_at.slice(11, 19)} 前支付` });
    } else {
      this.setData({ message: MESSAGES[result.code] || result.message || '出错了' });
    }
    this.setData({ buying: false });
    await this.loadOrders();
  },

  async pay(event) {
    // One payment sheet at a time; the client also shows one per order.
    if (this.data.paying) return;
    this.setData({ paying: true, message: '' });
    const result = await this.client.pay(event.currentTarget.dataset.id);
    this.setData({ paying: false, message: result.ok ? '支付成功' : PAY_MESSAGES[result.code] || result.message || '出错了' });
    await this.loadOrders();
  },

  async cancel(event) {
    const result = await this.client.cancelOrder(event.currentTarget.dataset.id);
    this.setData({ message: result.ok ? '订单已取消' : MESSAGES[result.code] || result.message });
    await this.loadOrders();
  },

  async loadOrders() {
    const result = await this.client.listOrders();
    if (!result.ok) return;
    const orders = result.orders
      .filter((order) => order.sale_id === this.saleId)
      .map((order) => ({ ...order, statusText: STATUS_TEXT[order.status] || order.status }));
    this.setData({ orders });
  },
});
