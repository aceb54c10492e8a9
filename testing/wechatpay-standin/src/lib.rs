//! A WeChat Pay APIv3 stand-in, shared by flashsale's integration tests
//! and its load suite (the `wechatpay-standin` binary). It does not link
//! the engine: like WeChat Pay, it knows the engine only by what it sends.
//!
//! On 127.0.0.1 it verifies every request's `Authorization` signature
//! with the merchant's public key; answers prepay (JSAPI), close, query,
//! refund and refund query as WeChat Pay documents them, signing every answer with its
//! platform key; keeps the WeChat Pay orders (one per `out_trade_no`) and
//! refunds (one per `out_refund_no`: a repeat is answered with the first,
//! and counted); can be told to fail, stall, refuse, take a refund and
//! lose the answer, or answer forged or stale signatures; and pays an
//! order when the shopper's phone asks (`POST /standin/pay` with the
//! `wx.requestPayment` parameters), delivering the signed, encrypted
//! notification to the engine until it is acknowledged.
//!
//! # Layout
//! - `sim`: the keys (merchant, platform, APIv3) and notifications.
//! - `ledger`: what it keeps, and the ledger's wire form.
//! - `api`: WeChat Pay's API (`/v3/...`) and the [`Behaviour`] it answers with.
//! - `shopper`: `POST /standin/pay` (the shopper pays, the notification is
//!   delivered) and `GET /standin/ledger`.
//! - `server`: [`WeChatPayServer`], the axum server and the engine's key files.

mod api;
pub mod ledger;
mod server;
pub mod shopper;
mod sim;

pub use api::Behaviour;
pub use ledger::{LedgerView, OrderView, RefundView, WxCall, WxOrder, WxRefund, WxState};
pub use server::WeChatPayServer;
pub use shopper::{Paid, RequestPayment};
pub use sim::{merchant_key_pem, signed_by_merchant, Notification, WeChatPaySim};

/// The merchant id the stand-in serves (the engine's
/// `FLASHSALE_WECHATPAY_MCHID`).
pub const MCHID: &str = "1230000109";
/// The Mini Program's AppID (`FLASHSALE_WECHATPAY_APPID`).
pub const APPID: &str = "wxd678efh567hg6787";
/// The merchant API certificate's serial
/// (`FLASHSALE_WECHATPAY_MERCHANT_SERIAL`).
pub const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD00000000";
