//! What the stand-in keeps: the WeChat Pay orders by `out_trade_no` (with
//! what happened to each: prepay calls, closes, payments, notification
//! deliveries), the refunds by `out_refund_no`, and the calls received.
//! Also the ledger's wire form, `GET /standin/ledger`, which the load
//! suite's verdict reads after a run.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// WeChat Pay orders kept at most; past it a prepay is refused
/// (`FREQUENCY_LIMITED`), so a run that never ends cannot grow the stand-in
/// without bound.
pub const ORDERS_MAX: usize = 1_000_000;
/// Calls kept for [`crate::WeChatPayServer::calls`], the newest; older ones
/// are dropped.
pub const CALLS_KEPT_MAX: usize = 10_000;

/// One WeChat Pay order, as the stand-in keeps it.
#[derive(Debug, Clone)]
pub struct WxOrder {
    pub prepay_id: String,
    /// The first jsapi call's body, as received.
    pub request: Value,
    pub state: WxState,
    /// jsapi calls for this `out_trade_no` (a repeat gets the same prepay id).
    pub prepay_calls: u32,
    /// Close calls received for it, answered or refused.
    pub close_calls: u32,
    /// Times it was paid (the shopper's route refuses a second payment;
    /// a test's `pay_anyway` does not).
    pub payments: u32,
    /// Payment notifications posted to its `notify_url`, and whether one
    /// was acknowledged (200 or 204).
    pub notify_attempts: u32,
    pub notified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WxState {
    NotPay,
    /// Paid, with its transaction id.
    Paid(String),
    Closed,
}

impl WxState {
    /// WeChat Pay's `trade_state` for it.
    pub fn trade_state(&self) -> &'static str {
        match self {
            Self::NotPay => "NOTPAY",
            Self::Paid(_) => "SUCCESS",
            Self::Closed => "CLOSED",
        }
    }
}

/// One call the stand-in received.
#[derive(Debug, Clone)]
pub struct WxCall {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Whether its `Authorization` verified with the merchant public key.
    pub authorized: bool,
}

/// One refund, as the stand-in keeps it (by `out_refund_no`).
#[derive(Debug, Clone)]
pub struct WxRefund {
    pub out_trade_no: String,
    /// The refunded payment's transaction id.
    pub transaction_id: String,
    pub refund_id: String,
    /// `PROCESSING` until a notification settles it.
    pub status: String,
    /// The refund call's body, as first received.
    pub request: Value,
    /// Refund calls received for this `out_refund_no` (a repeat is
    /// answered with this same refund).
    pub calls: u32,
}

#[derive(Default)]
pub(crate) struct Ledger {
    pub orders: HashMap<String, WxOrder>,
    /// prepay id → `out_trade_no`, for the shopper's payment.
    pub prepays: HashMap<String, String>,
    pub refunds: HashMap<String, WxRefund>,
    pub calls: VecDeque<WxCall>,
}

impl Ledger {
    pub fn record(&mut self, call: WxCall) {
        if self.calls.len() == CALLS_KEPT_MAX {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }

    pub fn view(&self) -> LedgerView {
        let mut orders: Vec<OrderView> = self
            .orders
            .iter()
            .map(|(out_trade_no, order)| OrderView {
                out_trade_no: out_trade_no.clone(),
                prepay_id: order.prepay_id.clone(),
                trade_state: order.state.trade_state().to_owned(),
                transaction_id: match &order.state {
                    WxState::Paid(id) => Some(id.clone()),
                    _ => None,
                },
                prepay_calls: order.prepay_calls,
                close_calls: order.close_calls,
                payments: order.payments,
                notify_attempts: order.notify_attempts,
                notified: order.notified,
            })
            .collect();
        orders.sort_by(|a, b| a.out_trade_no.cmp(&b.out_trade_no));
        let mut refunds: Vec<RefundView> = self
            .refunds
            .iter()
            .map(|(out_refund_no, refund)| RefundView {
                out_refund_no: out_refund_no.clone(),
                out_trade_no: refund.out_trade_no.clone(),
                status: refund.status.clone(),
                calls: refund.calls,
            })
            .collect();
        refunds.sort_by(|a, b| a.out_refund_no.cmp(&b.out_refund_no));
        LedgerView { orders, refunds }
    }
}

/// `GET /standin/ledger`: every WeChat Pay order and refund, sorted by
/// their merchant-side numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LedgerView {
    pub orders: Vec<OrderView>,
    pub refunds: Vec<RefundView>,
}

/// One WeChat Pay order in the ledger's wire form (see [`WxOrder`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub out_trade_no: String,
    pub prepay_id: String,
    /// `NOTPAY`, `SUCCESS` or `CLOSED`.
    pub trade_state: String,
    pub transaction_id: Option<String>,
    pub prepay_calls: u32,
    pub close_calls: u32,
    pub payments: u32,
    pub notify_attempts: u32,
    pub notified: bool,
}

/// One refund in the ledger's wire form (see [`WxRefund`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundView {
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub status: String,
    pub calls: u32,
}
