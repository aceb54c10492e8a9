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

/// A verified payment the engine could not apply to an order. WeChat Pay
/// retries a refused notification for about a day and then gives up, so
/// each is recorded durably (once per transaction) and acknowledged: the
/// merchant settles it by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentException {
    pub kind: PaymentExceptionKind,
    /// The payment provider's id of the transaction.
    pub transaction_id: String,
    /// The order the payment named (`out_trade_no`), as sent.
    pub out_trade_no: String,
    /// What was paid: minor units and currency.
    pub amount: (i64, String),
    /// When the store recorded it (its clock); set by the store.
    pub recorded_at: super::Millis,
}

/// Why a verified payment could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentExceptionKind {
    /// The amount or currency differs from the order's.
    AmountMismatch,
    /// No order has this id.
    UnknownOrder,
    /// WeChat Pay could not pay a refund back (`ABNORMAL`: the shopper's
    /// card was closed or frozen): the merchant settles it by hand.
    RefundAbnormal,
    /// WeChat Pay closed a refund without paying it (`CLOSED`).
    RefundClosed,
    /// WeChat Pay paid a refund (`SUCCESS`) the merchant had already
    /// settled by hand: the shopper was paid back twice. Named by WeChat
    /// Pay's `refund_id` (the refund's other names may name its settled
    /// `ABNORMAL` exception).
    RefundPaidTwice,
}

impl PaymentExceptionKind {
    pub const ALL: [Self; 5] = [
        Self::AmountMismatch,
        Self::UnknownOrder,
        Self::RefundAbnormal,
        Self::RefundClosed,
        Self::RefundPaidTwice,
    ];

    /// The kind as it is stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AmountMismatch => "amount_mismatch",
            Self::UnknownOrder => "unknown_order",
            Self::RefundAbnormal => "refund_abnormal",
            Self::RefundClosed => "refund_closed",
            Self::RefundPaidTwice => "refund_paid_twice",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// A refund WeChat Pay could not pay (its `out_trade_no` names the
    /// order refunded): the merchant pays it back by hand.
    pub fn is_unpaid_refund(self) -> bool {
        matches!(self, Self::RefundAbnormal | Self::RefundClosed)
    }
}
