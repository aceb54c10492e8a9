//! An order: units of one sale held for one shopper until paid, cancelled
//! or expired. Created in the same atomic step that takes the stock.

use serde::Serialize;

use super::{Millis, OrderId, SaleId, UserId};

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
        [
            Self::PendingPayment,
            Self::Paid,
            Self::Cancelled,
            Self::Expired,
            Self::RefundRequired,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub quantity: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub status: OrderStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub paid_at: Option<Millis>,
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
}
