//! A payment as it reaches an order, whichever way the money came, and
//! what it did to the order.

use super::Order;

/// A payment that arrived for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// What was paid, checked against the order (`None`: simulated
    /// payments, which pay the order's own amount).
    pub amount: Option<(i64, String)>,
    /// The payment provider's id of the transaction.
    pub transaction_id: String,
}

/// What a payment did to its order (the order as it is now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The order was pending: it is paid.
    Paid(Order),
    /// A repeat: the order was already paid (or marked for refund).
    Unchanged(Order),
    /// The order had expired or been cancelled: it is marked
    /// `refund_required`; stock is untouched.
    RefundRequired(Order),
    /// The amount or currency differs from the order's: nothing changed.
    AmountMismatch(Order),
}
