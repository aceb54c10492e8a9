// A seckill page on the flashsale client. Open it as
// pages/seckill/seckill?campaign=c_... for a campaign (its rounds as tabs,
// the shown round's countdown by the engine's clock, each item's seckill
// and list price, progress bar and buy button, and the shopper's allowance
// left), or ?sale=s_... for one sale (the same page with one round of one
// item). Buying goes through `client.buy`: a queued sale's waiting room
// first (the queue position shown while waiting), and the order's retries
// never make a second order. Below, the shopper's orders of the page with
// pay (wx.requestPayment, then the engine's word that it is paid) and
// cancel.

import { formatCountdown } from '../../flashsale/index.js';

/** What the shopper reads for each code the client can answer. */
const MESSAGES = {
  sold_out: '已抢光',
  limit_exceeded: '已达限购数量',
  not_started: '还没开始',
  ended: '活动已结束',
  conflict: '你已下过单，请在订单中查看',
  forbidden: '抢购资格已失效，请重新抢购',
  not_found: '排队资格已失效，请重新抢购',
  stopped: '已停止排队',
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
  expired: '订单已过期，不能支付；如已付款将退回',
  cancelled: '订单已取消，不能支付；如已付款将退回',
  refunding: '订单已退款，款项退回中',
  refunded: '订单已退款',
  wechatpay_refused: '暂时无法支付，请稍后再试',
};

/** What the shopper reads when a cancel is refused: `conflict` meaning the order can no longer be cancelled. */
const CANCEL_MESSAGES = {
  ...MESSAGES,
  conflict: '订单已支付、已取消或已过期，不能再取消',
  not_found: '订单不存在',
  wechatpay_refused: '暂时无法取消，请稍后再试',
};

/** What the shopper reads when a call threw instead of answering (the login service failed: the client has no token). */
const FAILED = '出错了，请稍后再试';

const STATUS_TEXT = {
  pending_payment: '待支付',
  paid: '已支付',
  cancelled: '已取消',
  expired: '已过期',
  refund_required: '待退款',
};

const PHASE_TEXT = { upcoming: '即将开始', live: '抢购中', sold_out: '已抢光', ended: '已结束', cancelled: '已取消' };

/** The countdown is redrawn this often (ms); the engine is polled only as it allows. */
const TICK_MS = 200;

function yuan(cents) {
  return (cents / 100).toFixed(2);
}

/** A time as HH:MM on the phone's time zone (a round's tab, a payment deadline). */
function clockLabel(iso) {
  const at = new Date(Date.parse(iso));
  return `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
}

/** One sale as a campaign page of one round of one item, so both draw alike. */
function saleAsCampaign(sale) {
  const sold = sale.stock_total - sale.remaining;
  return {
    title: sale.title,
    rounds: [
      {
        starts_at: sale.starts_at,
        ends_at: sale.ends_at,
        status: sale.status,
        items: [{ ...sale, sale_id: sale.id, original_price_cents: null, sold_share: sale.stock_total > 0 ? sold / sale.stock_total : 0 }],
      },
    ],
  };
}

/** What the queue box says for a place in the waiting room. */
function queueText(place) {
  if (place.status === 'admitted') return '轮到你了，正在下单…';
  if (place.position === null) return `排队中，开抢后分配名次（约 ${place.eta_secs} 秒后开抢）`;
  return `排队中：第 ${place.position} 位，前面还有 ${place.ahead} 人，预计 ${place.eta_secs} 秒`;
}

Page({
  data: {
    title: '',
    rounds: [],
    current: 0,
    phase: 'loading',
    countdown: '',
    items: [],
    allowanceText: '',
    buying: false,
    queueText: '',
    paying: false,
    message: '',
    orders: [],
  },

  onLoad(query) {
    this.client = getApp().flashsale;
    this.campaign = null;
    this.sale = null;
    this.picked = null;
    this.waitingFor = null;
    if (query.campaign) {
      this.watch = this.client.watchCampaign(query.campaign, (update) => this.onCampaign(update), { allowance: true });
    } else {
      this.watch = this.client.watchSale(query.sale, (update) => this.onSale(update));
    }
    this.ticker = setInterval(() => this.tick(), TICK_MS);
  },

  onUnload() {
    this.watch.stop();
    clearInterval(this.ticker);
    if (this.waitingFor) this.client.waitingRoom.stop(this.waitingFor);
  },

  onCampaign(update) {
    // A failed read is retried by the watch itself, as late as the engine says.
    if (!update.ok) return;
    const first = this.campaign === null;
    this.campaign = update.campaign;
    const { allowance } = update;
    const campaignLeft = allowance && allowance.campaign_left !== null ? `，本活动还可抢 ${allowance.campaign_left} 件` : '';
    this.setData({ allowanceText: allowance ? `本场还可抢 ${allowance.round_left} 件${campaignLeft}` : '' });
    this.draw();
    if (first) this.loadOrders();
  },

  onSale(update) {
    if (!update.ok) return;
    const first = this.campaign === null;
    this.sale = update.sale;
    this.campaign = saleAsCampaign(update.sale);
    this.draw();
    if (first) this.loadOrders();
  },

  /** The shown round: the shopper's pick, else the live one, else the next. */
  roundsNow() {
    if (this.sale) {
      const countdown = this.client.countdown(this.sale);
      return { rounds: [{ ...this.campaign.rounds[0], countdown }], current: 0 };
    }
    return this.client.campaignRounds(this.campaign);
  },

  draw() {
    const { rounds, current } = this.roundsNow();
    const shown = this.picked ?? current;
    const round = rounds[shown];
    this.setData({
      title: this.campaign.title,
      current: shown,
      rounds: rounds.map((r) => ({ label: clockLabel(r.starts_at), phaseText: PHASE_TEXT[r.countdown.phase] || '' })),
      items: round.items.map((item) => ({
        saleId: item.sale_id,
        title: item.title,
        price: yuan(item.price_cents),
        originalPrice: item.original_price_cents === null ? '' : yuan(item.original_price_cents),
        soldPercent: Math.round(100 * item.sold_share),
        soldOut: item.status === 'sold_out',
        // A queued sale's line opens before the sale: its button works in the pre-queue.
        queued: Boolean(item.admission && item.admission.mode === 'queue'),
      })),
    });
    this.tick();
  },

  tick() {
    if (!this.campaign) return;
    const { rounds } = this.roundsNow();
    const { phase, msToStart, msToEnd } = rounds[this.data.current].countdown;
    const countdown = formatCountdown(phase === 'upcoming' ? msToStart : msToEnd);
    if (phase !== this.data.phase || countdown !== this.data.countdown) this.setData({ phase, countdown });
  },

  pickRound(event) {
    this.picked = Number(event.currentTarget.dataset.index);
    this.draw();
  },

  async buy(event) {
    // One purchase at a time from this page; a second tap while it runs is
    // ignored, and a tap after a lost answer reuses the same purchase intent.
    if (this.data.buying) return;
    const saleId = (event && event.currentTarget.dataset.sale) || this.data.items[0].saleId;
    this.setData({ buying: true, message: '' });
    this.waitingFor = saleId;
    let message = FAILED;
    try {
      const result = await this.client.buy(saleId, 1, { onProgress: (place) => this.setData({ queueText: queueText(place) }) });
      message = result.ok ? `抢到了！请在 ${clockLabel(result.order.expires_at)} 前支付` : MESSAGES[result.code] || result.message || '出错了';
    } catch (err) {
      // The login service failed (the client answers everything else as a
      // result): the shopper is told FAILED.
      console.error('buy', err);
    } finally {
      // Whatever happened, the button works again.
      this.waitingFor = null;
      this.setData({ buying: false, queueText: '', message });
    }
    await this.loadOrders();
  },

  async pay(event) {
    // One payment sheet at a time; the client also shows one per order.
    if (this.data.paying) return;
    this.setData({ paying: true, message: '' });
    let message = FAILED;
    try {
      const result = await this.client.pay(event.currentTarget.dataset.id);
      message = result.ok ? '支付成功' : PAY_MESSAGES[result.code] || result.message || '出错了';
    } catch (err) {
      console.error('pay', err);
    } finally {
      this.setData({ paying: false, message });
    }
    await this.loadOrders();
  },

  async cancel(event) {
    let message = FAILED;
    try {
      const result = await this.client.cancelOrder(event.currentTarget.dataset.id);
      message = result.ok ? '订单已取消' : CANCEL_MESSAGES[result.code] || result.message;
    } catch (err) {
      console.error('cancel', err);
    }
    this.setData({ message });
    await this.loadOrders();
  },

  /** The shopper's orders of this page's sales (every round's). */
  async loadOrders() {
    if (!this.campaign) return;
    let result;
    try {
      result = await this.client.listOrders();
    } catch (err) {
      console.error('orders', err);
      return;
    }
    if (!result.ok) return;
    const titles = new Map();
    for (const round of this.campaign.rounds) for (const item of round.items) titles.set(item.sale_id, item.title);
    const orders = result.orders
      .filter((order) => titles.has(order.sale_id))
      .map((order) => ({
        ...order,
        title: titles.get(order.sale_id),
        amount: yuan(order.amount_cents),
        statusText: STATUS_TEXT[order.status] || order.status,
      }));
    this.setData({ orders });
  },
});
