//! The JSON shapes the API reads and answers with, as the contract shows
//! them, and their conversions from and to the domain's types. Each derives
//! its OpenAPI schema (`ToSchema`), so `/openapi.json` describes the very
//! types the handlers read and serialize. The merchant's webhook is sent
//! the same order object ([`OrderBody`]).

use std::cell::RefCell;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use smol_str::SmolStr;
use utoipa::ToSchema;

use crate::domain::{
    Difference, Order, OrderId, OrderStatus, PaymentException, QueueStats, RecountedUnits,
    RefundKind, SaleId, SaleRecords, SaleStats, SaleStatus, SaleView, ShopperId, Timestamp,
};
use crate::sales::live::LiveSale;
use crate::store::DeadLetter;

/// A JSON answer whose body is serialized into a buffer its thread
/// reuses, then copied out at its exact size: one allocation per body,
/// where axum's `Json` starts a 128-byte buffer, grows it to fit, and
/// allocates again to share it. For the answers every order request gets.
pub struct JsonAnswer<T>(pub T);

/// The most a thread's answer buffer keeps between answers; a larger body
/// (a long list) gets a buffer of its own, dropped after.
const ANSWER_BUFFER_KEPT_MAX: usize = 16 * 1024;

thread_local! {
    /// The thread's buffer [`JsonAnswer`] serializes into.
    static ANSWER_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<T: Serialize> IntoResponse for JsonAnswer<T> {
    fn into_response(self) -> Response {
        let body = ANSWER_BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            let written = serde_json::to_writer(&mut *buffer, &self.0);
            let body = written.map(|()| Bytes::copy_from_slice(buffer));
            if buffer.capacity() > ANSWER_BUFFER_KEPT_MAX {
                *buffer = Vec::new();
            }
            body
        });
        match body {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            // As axum's `Json` answers a value that cannot be serialized
            // (a bug: the engine's answers always can).
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        }
    }
}

/// A sale, as both shoppers and merchants see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SaleBody {
    #[schema(example = "s_k3v9x2m7q1ab")]
    pub id: String,
    #[schema(example = "LC-POUCH-RED")]
    pub sku: String,
    #[schema(example = "Le Pliage pouch, red")]
    pub title: String,
    /// Minor units of `currency`.
    #[schema(example = 19900)]
    pub price_cents: i64,
    /// ISO 4217 code.
    #[schema(example = "CNY")]
    pub currency: String,
    #[schema(example = 500)]
    pub stock_total: i64,
    #[schema(example = 1)]
    pub per_user_limit: i64,
    #[schema(value_type = String, format = DateTime, example = "2026-11-11T00:00:00Z")]
    pub starts_at: Timestamp,
    #[schema(value_type = String, format = DateTime, example = "2026-11-11T01:00:00Z")]
    pub ends_at: Timestamp,
    #[schema(example = 900)]
    pub payment_timeout_secs: i64,
    /// Orders need a purchase token (`POST /api/v1/sales/{id}/purchase-token`,
    /// or admission through the waiting room of a queued sale).
    pub require_purchase_token: bool,
    pub admission: AdmissionBody,
    pub status: SaleStatus,
    /// Units left. On public routes it may be slightly stale; admin stats
    /// are exact.
    #[schema(example = 500)]
    pub remaining: i64,
}

impl From<&SaleView> for SaleBody {
    fn from(view: &SaleView) -> Self {
        let sale = &view.sale;
        Self {
            id: sale.id.to_string(),
            sku: sale.sku.clone(),
            title: sale.title.clone(),
            price_cents: sale.price_cents,
            currency: sale.currency.clone(),
            stock_total: sale.stock_total,
            per_user_limit: sale.per_user_limit,
            starts_at: Timestamp(sale.starts_at),
            ends_at: Timestamp(sale.ends_at),
            payment_timeout_secs: sale.payment_timeout_secs,
            require_purchase_token: sale.require_purchase_token,
            admission: AdmissionBody::new(view),
            status: view.status(),
            remaining: view.stats.remaining,
        }
    }
}

/// How shoppers get in, with the fair shuffle's seed commitment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdmissionBody {
    /// `open` (the race) or `queue` (the waiting room).
    #[schema(example = "queue")]
    pub mode: String,
    #[schema(example = 600)]
    pub prequeue_opens_secs: i64,
    #[schema(example = 500)]
    pub admit_per_sec: i64,
    #[schema(example = 60)]
    pub token_ttl_secs: i64,
    /// When the pre-queue opens (`starts_at - prequeue_opens_secs`); `null`
    /// on an open sale.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub prequeue_opens_at: Option<Timestamp>,
    /// Hex SHA-256 of the shuffle's seed, fixed before the pre-queue
    /// opens; `null` on an open sale.
    pub seed_sha256: Option<String>,
    /// The seed (hex, 32 bytes), from the opening on, when the shuffle is
    /// done: recompute the pre-queue's order from it (see the README).
    pub seed: Option<String>,
}

impl AdmissionBody {
    fn new(view: &SaleView) -> Self {
        let sale = &view.sale;
        let admission = &sale.admission;
        let queued = admission.is_queue();
        Self {
            mode: admission.mode.as_str().to_owned(),
            prequeue_opens_secs: admission.prequeue_opens_secs,
            admit_per_sec: admission.admit_per_sec,
            token_ttl_secs: admission.token_ttl_secs,
            prequeue_opens_at: queued
                .then(|| Timestamp(admission.prequeue_opens_at(sale.starts_at))),
            seed_sha256: admission.seed_sha256(),
            seed: (queued && view.now >= sale.starts_at).then(|| admission.seed.clone()),
        }
    }
}

/// A sale for merchants: with exact stats.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSaleBody {
    #[serde(flatten)]
    pub sale: SaleBody,
    pub stats: SaleStats,
    /// The campaign round and item this sale is; `null` for a sale of its
    /// own. A campaign's sale changes only with its campaign.
    pub campaign: Option<CampaignSlotBody>,
}

impl From<&SaleView> for AdminSaleBody {
    fn from(view: &SaleView) -> Self {
        Self {
            sale: view.into(),
            stats: view.stats,
            campaign: view.sale.id.campaign().map(|slot| CampaignSlotBody {
                campaign_id: slot.campaign.to_string(),
                round: slot.round,
                item: slot.item,
            }),
        }
    }
}

/// Where a campaign's sale sits in its campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignSlotBody {
    #[schema(example = "c_k3v9x2ma")]
    pub campaign_id: String,
    /// The round's `number`.
    #[schema(example = 1)]
    pub round: u32,
    /// The item's `number`.
    #[schema(example = 2)]
    pub item: u32,
}

/// One tick of a sale's live feed, the `stats` event of
/// `GET /admin/v1/sales/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SaleEventBody {
    /// The feed's tick, counted from 1 when its first console arrived;
    /// every console watching the sale on this node gets the same ticks.
    #[schema(example = 12)]
    pub seq: u64,
    /// The store's clock at the read.
    #[schema(value_type = String, format = DateTime, example = "2026-11-11T00:00:12Z")]
    pub at: Timestamp,
    /// The sale with its exact stats, as read at `at`.
    pub sale: AdminSaleBody,
    /// A queued sale's line, read just after the sale (as
    /// `GET /admin/v1/sales/{id}/queue`); null for an open sale, or when
    /// this tick's read of the line failed.
    pub queue: Option<QueueStats>,
    /// Units taken from stock per second since the previous tick (0 at the
    /// first).
    #[schema(example = 42.0)]
    pub sold_per_sec: f64,
    /// This engine node's 429 answers per second since the previous tick.
    #[schema(example = 0.0)]
    pub shed_429_per_sec: f64,
    /// This engine node's 503 answers per second since the previous tick.
    #[schema(example = 0.0)]
    pub shed_503_per_sec: f64,
}

impl From<&LiveSale> for SaleEventBody {
    fn from(live: &LiveSale) -> Self {
        Self {
            seq: live.seq,
            at: Timestamp(live.view.now),
            sale: (&live.view).into(),
            queue: live.queue,
            sold_per_sec: live.sold_per_sec,
            shed_429_per_sec: live.shed_429_per_sec,
            shed_503_per_sec: live.shed_503_per_sec,
        }
    }
}

/// `GET /admin/v1/sales/{id}/queue`: a queued sale's line in counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminQueueBody {
    #[schema(example = "s_k3v9x2m7q1ab")]
    pub sale_id: String,
    pub stats: QueueStats,
}

/// A reconciliation of one sale: its counts recomputed from the raw records.
#[derive(Debug, Serialize, ToSchema)]
pub struct SaleAuditBody {
    #[schema(example = "s_k3v9x2m7q1ab")]
    pub sale_id: String,
    /// The store's clock at the (atomic) read.
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: Timestamp,
    /// True when the records agree with every count: no differences.
    pub ok: bool,
    /// The counts the engine keeps.
    pub stats: SaleStats,
    /// The same, recomputed from the order records.
    pub recounted: RecountedUnits,
    pub differences: Vec<Difference>,
}

impl From<&SaleRecords> for SaleAuditBody {
    fn from(records: &SaleRecords) -> Self {
        let audit = records.audit();
        Self {
            sale_id: records.view.sale.id.to_string(),
            checked_at: Timestamp(records.view.now),
            ok: audit.differences.is_empty(),
            stats: records.view.stats,
            recounted: audit.recounted,
            differences: audit.differences,
        }
    }
}

/// A sale for shoppers: with the server's clock for an exact countdown.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicSaleBody {
    #[serde(flatten)]
    pub sale: SaleBody,
    /// The engine's clock when the sale was read.
    #[schema(value_type = String, format = DateTime)]
    pub server_time: Timestamp,
}

impl From<&SaleView> for PublicSaleBody {
    fn from(view: &SaleView) -> Self {
        Self {
            sale: view.into(),
            server_time: Timestamp(view.now),
        }
    }
}

/// `GET /api/v1/sales`: live, upcoming and sold-out sales.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicSaleList {
    pub sales: Vec<PublicSaleBody>,
    /// The engine's clock, for exact countdowns.
    #[schema(value_type = String, format = DateTime)]
    pub server_time: Timestamp,
}

/// `GET /admin/v1/sales`: a page of every sale, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminSaleList {
    pub sales: Vec<AdminSaleBody>,
    /// The `cursor` of the next page; `null` after the last.
    pub next_cursor: Option<String>,
}

/// An order, as shoppers see it and the merchant's webhook is told.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    #[schema(value_type = String, example = "o_k3v9x2m7q1ab_h4p8n2c6w1z5r7t3")]
    pub id: OrderId,
    #[schema(value_type = String, example = "s_k3v9x2m7q1ab")]
    pub sale_id: SaleId,
    /// The shopper: the `sub` of their token.
    #[schema(value_type = String, example = "oX3a9Yb2")]
    pub user_id: ShopperId,
    #[schema(minimum = 1, example = 1)]
    pub quantity: i64,
    /// `quantity × price_cents`, in minor units.
    #[schema(example = 19900)]
    pub amount_cents: i64,
    /// ISO 4217 code.
    #[schema(value_type = String, example = "CNY")]
    pub currency: SmolStr,
    pub status: OrderStatus,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// An unpaid order expires then; its stock returns to the sale.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_at: Option<Timestamp>,
    /// WeChat Pay's prepay id, once the shopper started paying with WeChat
    /// Pay (`POST /api/v1/orders/{id}/wechatpay`).
    #[schema(example = "wx201410272009395522657a690389285100")]
    pub prepay_id: Option<String>,
    /// The payment provider's id of the transaction that paid the order.
    #[schema(example = "4200001234202611110000000001")]
    pub transaction_id: Option<String>,
    /// Once a refund is asked for, where the order's units went: `late`
    /// (paid after it expired or was cancelled: already back on sale),
    /// `kept` (refunded by the merchant, kept off sale) or `restocked`
    /// (refunded by the merchant, back on sale).
    #[schema(example = "kept")]
    pub refund: Option<&'static str>,
    /// When the merchant recorded paying the refund back outside WeChat
    /// Pay (`POST /admin/v1/orders/{id}/refund/settled-by-hand`); `null`
    /// for a refund WeChat Pay paid, or none.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub refund_settled_by_hand_at: Option<Timestamp>,
}

impl From<&Order> for OrderBody {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id.clone(),
            sale_id: order.sale_id.clone(),
            user_id: order.shopper_id.clone(),
            quantity: order.quantity,
            amount_cents: order.amount_cents,
            currency: order.currency.clone(),
            status: order.status,
            created_at: Timestamp(order.created_at),
            expires_at: Timestamp(order.expires_at),
            paid_at: order.paid_at.map(Timestamp),
            prepay_id: order.prepay_id.clone(),
            transaction_id: order.transaction_id.clone(),
            refund: order.refund.map(RefundKind::as_str),
            refund_settled_by_hand_at: order.refund_settled_by_hand_at.map(Timestamp),
        }
    }
}

/// `GET /api/v1/orders` (a page of the shopper's orders, newest first) and
/// `GET /admin/v1/sales/{id}/orders` (a page of a sale's orders, in the
/// store's order).
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<OrderBody>,
    /// The `cursor` of the next page; `null` after the last.
    pub next_cursor: Option<String>,
}

/// A purchase token: the right of one shopper to buy once in one live sale,
/// for a short time. Sent back in the `X-Purchase-Token` header of
/// `POST /api/v1/sales/{id}/orders`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseTokenBody {
    pub purchase_token: String,
    #[schema(example = "s_k3v9x2m7q1ab")]
    pub sale_id: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// A verified payment the engine could not apply, kept for the merchant to
/// settle (refund it, or match it to an order by hand).
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentExceptionBody {
    /// `amount_mismatch` (the amount or currency differs from the order's),
    /// `unknown_order` (no order has this id), `refund_abnormal` (WeChat
    /// Pay could not pay the order's refund back: the shopper's account
    /// was closed or frozen), `refund_closed` (WeChat Pay closed the
    /// refund unpaid) or `refund_paid_twice` (WeChat Pay paid a refund the
    /// merchant had settled by hand: named by WeChat Pay's `refund_id`). A
    /// refund's exception is otherwise named by the refunded payment's
    /// transaction id, and carries the amount refunded.
    #[schema(example = "amount_mismatch")]
    pub kind: &'static str,
    /// The payment provider's id of the transaction.
    #[schema(example = "4200001234202611110000000001")]
    pub transaction_id: String,
    /// The order id the payment named, as sent.
    pub out_trade_no: String,
    /// What was paid, in minor units of `currency`.
    pub amount_cents: i64,
    pub currency: String,
    /// When the engine recorded it.
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: Timestamp,
}

impl From<&PaymentException> for PaymentExceptionBody {
    fn from(exception: &PaymentException) -> Self {
        Self {
            kind: exception.kind.as_str(),
            transaction_id: exception.transaction_id.clone(),
            out_trade_no: exception.out_trade_no.clone(),
            amount_cents: exception.amount.0,
            currency: exception.amount.1.clone(),
            recorded_at: Timestamp(exception.recorded_at),
        }
    }
}

/// A hand-off to the merchant's webhook that failed for good: the merchant
/// refused it (a 4xx other than 408 and 429), or its last allowed attempt
/// failed. It is sent no more until re-driven.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
    /// The order it reports; null for a campaign round's reminder
    /// (`campaign.round_starting`: the sale names the round).
    #[schema(example = "o_k3v9x2m7q1ab_h4p8n2c6w1z5r7t3")]
    pub order_id: Option<String>,
    #[schema(example = "order.reserved")]
    pub event: String,
    /// Attempts made.
    #[schema(example = 20)]
    pub attempts: u32,
    /// The webhook's HTTP status on the last attempt; null when it did not
    /// answer (a refused connection, a timeout).
    #[schema(example = 500)]
    pub last_status: Option<u16>,
    /// What went wrong on the last attempt.
    #[schema(example = "the webhook answered 500 Internal Server Error")]
    pub last_error: String,
    /// When it was taken out of the outbox.
    #[schema(value_type = String, format = DateTime)]
    pub dead_lettered_at: Timestamp,
}

impl From<&DeadLetter> for DeadLetterBody {
    fn from(letter: &DeadLetter) -> Self {
        Self {
            order_id: letter.errand.order_id().map(ToString::to_string),
            event: letter.errand.event().to_owned(),
            attempts: letter.attempts,
            last_status: letter.failure.status,
            last_error: letter.failure.error.clone(),
            dead_lettered_at: Timestamp(letter.at),
        }
    }
}

/// `GET /admin/v1/payment-exceptions`: a page, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentExceptionList {
    pub exceptions: Vec<PaymentExceptionBody>,
    /// The `cursor` of the next page; `null` after the last.
    pub next_cursor: Option<String>,
}

/// `GET /admin/v1/sales/{id}/dead-letters`: a page, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    #[schema(example = "s_k3v9x2m7q1ab")]
    pub sale_id: String,
    pub dead_letters: Vec<DeadLetterBody>,
    /// The `cursor` of the next page; `null` after the last.
    pub next_cursor: Option<String>,
}

impl DeadLetterList {
    pub fn new(sale: &SaleId, letters: &[DeadLetter], next_cursor: Option<String>) -> Self {
        Self {
            sale_id: sale.to_string(),
            dead_letters: letters.iter().map(DeadLetterBody::from).collect(),
            next_cursor,
        }
    }
}

/// `POST /admin/v1/sales/{id}/dead-letters/redrive`: how many hand-offs
/// went back into the outbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveBody {
    #[schema(example = "s_k3v9x2m7q1ab")]
    pub sale_id: String,
    #[schema(example = 3)]
    pub redriven: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answered(value: &serde_json::Value) -> (Option<HeaderValue>, Bytes) {
        let response = JsonAnswer(value).into_response();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (content_type, body)
    }

    /// Goal: a `JsonAnswer` is the value's JSON whatever came before it
    /// on its thread, and the thread keeps no buffer past its bound.
    /// Method: a large answer, then a small one, on one thread.
    #[tokio::test(flavor = "current_thread")]
    async fn answers_are_the_values_json_and_the_buffer_stays_bounded() {
        let large = serde_json::json!({"items": vec!["x".repeat(100); 1_000]});
        let small = serde_json::json!({"error": {"code": "sold_out", "message": "not enough"}});
        for value in [&large, &small, &large] {
            let (content_type, body) = answered(value).await;
            assert_eq!(
                content_type,
                Some(HeaderValue::from_static("application/json"))
            );
            assert_eq!(body, serde_json::to_vec(value).expect("json"));
            let kept = ANSWER_BUFFER.with_borrow(Vec::capacity);
            assert!(kept <= ANSWER_BUFFER_KEPT_MAX, "kept {kept} bytes");
        }
    }
}
