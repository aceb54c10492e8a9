//! An order: units of one sale held for one shopper until paid, cancelled
//! or expired. Created in the same atomic step that takes the stock.

use serde::Serialize;
use smol_str::SmolStr;

use super::{Millis, OrderId, SaleId, ShopperId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Cancelled,
    Expired,
    /// Paid after it had expired or been cancelled: the money goes back.
    RefundRequired,
    /// A paid order the merchant refunds: WeChat Pay has been (or is about
    /// to be) asked for the refund and has not confirmed it yet.
    Refunding,
    /// The money went back to the shopper (confirmed by WeChat Pay, or
    /// recorded at once with simulated payments).
    Refunded,
}

impl OrderStatus {
    pub const ALL: [Self; 7] = [
        Self::PendingPayment,
        Self::Paid,
        Self::Cancelled,
        Self::Expired,
        Self::RefundRequired,
        Self::Refunding,
        Self::Refunded,
    ];

    /// The status as it is serialized and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::RefundRequired => "refund_required",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// Where a refunded order's units went, kept on the order once its refund
/// is asked for (the audit recounts the sale's units by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundKind {
    /// Paid late (`refund_required`): its units were already back on sale.
    Late,
    /// A paid order refunded by the merchant, its units kept off sale
    /// (still counted to the shopper).
    Kept,
    /// A paid order refunded by the merchant, its units back on sale and
    /// off the shopper's count.
    Restocked,
}

impl RefundKind {
    pub const ALL: [Self; 3] = [Self::Late, Self::Kept, Self::Restocked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Late => "late",
            Self::Kept => "kept",
            Self::Restocked => "restocked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// An entry of a sale's outbox: what the merchant's webhook is told about
/// an order (`order.*`), or the call that refunds it at WeChat Pay
/// ([`OrderEvent::Refund`]). Both are leased, retried with backoff and
/// dead-lettered the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// The order service took the reservation: stock is held for the shopper.
    Reserved,
    Paid,
    /// Paid after it expired or was cancelled: refund the shopper.
    RefundRequired,
    /// The money went back to the shopper.
    Refunded,
    /// Not a webhook event: `POST /v3/refund/domestic/refunds` for the
    /// order, sent to WeChat Pay.
    Refund,
}

impl OrderEvent {
    const ALL: [Self; 5] = [
        Self::Reserved,
        Self::Paid,
        Self::RefundRequired,
        Self::Refunded,
        Self::Refund,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "order.reserved",
            Self::Paid => "order.paid",
            Self::RefundRequired => "order.refund_required",
            Self::Refunded => "order.refunded",
            Self::Refund => "wechatpay.refund",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub sale_id: SaleId,
    pub shopper_id: ShopperId,
    pub quantity: i64,
    pub amount_cents: i64,
    /// ISO 4217 code, held inline (each order of a reserve call carries it).
    pub currency: SmolStr,
    pub status: OrderStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub paid_at: Option<Millis>,
    /// WeChat Pay's prepay id, once the shopper asked to pay with WeChat
    /// Pay (one per order, reused).
    pub prepay_id: Option<String>,
    /// The payment provider's id of the transaction that paid it.
    pub transaction_id: Option<String>,
    /// Set once a refund of the order is asked for.
    pub refund: Option<RefundKind>,
    /// When the merchant recorded paying the refund back outside WeChat
    /// Pay (store clock): the order is `refunded` without WeChat Pay's
    /// confirmation (see [`RefundSettledBy::Merchant`]).
    pub refund_settled_by_hand_at: Option<Millis>,
}

/// Who settles an order's refund, making it `refunded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundSettledBy {
    /// WeChat Pay confirmed it (`SUCCESS`, by notification, answer or
    /// query).
    WeChatPay,
    /// The merchant paid it back another way, after WeChat Pay could not
    /// (`ABNORMAL`, `CLOSED`, or a refund call it refused for good). Only
    /// while no refund call of the order is in the sale's outbox, where
    /// WeChat Pay may still pay it (whether WeChat Pay holds a refund the
    /// engine dead-lettered is asked of WeChat Pay before: see
    /// `Payments::settle_refund_by_hand`).
    Merchant,
}

/// Units of a sale given back by an order (cancelled, expired or refunded
/// with restock): the shopper may reserve again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockReturn {
    pub sale_id: SaleId,
    // The name other engine nodes read in announcements.
    #[serde(rename = "user_id")]
    pub shopper_id: ShopperId,
    pub quantity: i64,
}

impl From<&Order> for StockReturn {
    fn from(order: &Order) -> Self {
        Self {
            sale_id: order.sale_id.clone(),
            shopper_id: order.shopper_id.clone(),
            quantity: order.quantity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("shipped"), None);
    }

    #[test]
    fn event_names_round_trip() {
        for event in OrderEvent::ALL {
            assert_eq!(OrderEvent::parse(event.as_str()), Some(event));
        }
        for kind in RefundKind::ALL {
            assert_eq!(RefundKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(OrderEvent::parse("order.shipped"), None);
    }
}
