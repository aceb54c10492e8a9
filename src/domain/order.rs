//! An order: units of one sale held for one shopper until paid, cancelled
//! or expired. Created in the same atomic step that takes the stock.

use serde::Serialize;

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
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [
        Self::PendingPayment,
        Self::Paid,
        Self::Cancelled,
        Self::Expired,
        Self::RefundRequired,
    ];

    /// The status as it is serialized and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::RefundRequired => "refund_required",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

/// What the merchant's webhook is told about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// The order service took the reservation: stock is held for the shopper.
    Reserved,
    Paid,
    /// Paid after it expired or was cancelled: refund the shopper.
    RefundRequired,
}

impl OrderEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "order.reserved",
            Self::Paid => "order.paid",
            Self::RefundRequired => "order.refund_required",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Reserved, Self::Paid, Self::RefundRequired]
            .into_iter()
            .find(|event| event.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub sale_id: SaleId,
    pub shopper_id: ShopperId,
    pub quantity: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub status: OrderStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub paid_at: Option<Millis>,
    /// WeChat Pay's prepay id, once the shopper asked to pay with WeChat
    /// Pay (one per order, reused).
    pub prepay_id: Option<String>,
    /// The payment provider's id of the transaction that paid it.
    pub transaction_id: Option<String>,
}

/// An order as the contract shows it (API answers, webhook bodies).
/// Units of a sale given back by an order (cancelled or expired).
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
        for status in [
            OrderStatus::PendingPayment,
            OrderStatus::Paid,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
            OrderStatus::RefundRequired,
        ] {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("shipped"), None);
    }

    #[test]
    fn event_names_round_trip() {
        for event in [
            OrderEvent::Reserved,
            OrderEvent::Paid,
            OrderEvent::RefundRequired,
        ] {
            assert_eq!(OrderEvent::parse(event.as_str()), Some(event));
        }
        assert_eq!(OrderEvent::parse("order.shipped"), None);
    }
}
