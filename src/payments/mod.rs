//! Payments: every way money reaches an order, each written once.
//!
//! - A WeChat Pay v3 notification ([`Payments::wechatpay_notified`]):
//!   verified and decrypted by [`wechatpay`], then applied; a verified
//!   payment that cannot be applied (a wrong amount, an unknown order) is
//!   recorded as a payment exception, once per transaction, and
//!   acknowledged.
//! - A simulated payment ([`Payments::pay_simulated`]), for demos and load
//!   suites: the shopper's own order, paid at once.
//!
//! Both apply the payment through the store's one payment step, so an
//! order is paid (or marked for refund) exactly once whichever way money
//! arrives, and a payment, a cancel and an expiry of one order are decided
//! once, by the script that runs first.

pub mod wechatpay;

use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};

use self::wechatpay::{NotifyError, NotifyHeaders, WeChatPayVerifier};
use crate::domain::{
    system_now, Order, OrderId, Payment, PaymentException, PaymentExceptionKind, PaymentOutcome,
    ShopperId,
};
use crate::orders::WorkNotices;
use crate::store::{Store, StoreError};
use crate::telemetry;

/// How payments are taken: the WeChat Pay verifier, or simulated.
pub enum PaymentMethod {
    WeChatPay(Box<WeChatPayVerifier>),
    Simulated,
}

/// Why a payment was not applied.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The notification did not verify (or could not be read).
    #[error(transparent)]
    Notify(#[from] NotifyError),
    /// This way of paying is not enabled in this deployment.
    #[error("{0}")]
    NotEnabled(&'static str),
    /// The amount or currency paid differs from the order's: nothing
    /// changed.
    #[error("the amount paid differs from the order's")]
    AmountMismatch,
}

pub struct Payments {
    store: Arc<dyn Store>,
    method: PaymentMethod,
    /// Where to queue hand-offs to the merchant's webhook (when one is
    /// configured): the order service then sends them.
    hand_offs: Option<WorkNotices>,
}

impl Payments {
    pub fn new(
        store: Arc<dyn Store>,
        method: PaymentMethod,
        hand_offs: Option<WorkNotices>,
    ) -> Self {
        Self {
            store,
            method,
            hand_offs,
        }
    }

    pub fn method(&self) -> &PaymentMethod {
        &self.method
    }

    /// Applies a WeChat Pay notification: verifies the headers over the raw
    /// body now, and pays the order a successful transaction names. An
    /// unsuccessful transaction changes nothing.
    pub async fn wechatpay_notified(
        &self,
        headers: &NotifyHeaders<'_>,
        body: &[u8],
    ) -> Result<(), PaymentError> {
        let PaymentMethod::WeChatPay(verifier) = &self.method else {
            return Err(PaymentError::NotEnabled(
                "WeChat Pay is not enabled (FLASHSALE_PAYMENTS=simulated)",
            ));
        };
        let transaction = verifier
            .open(headers, body, system_now() / 1000)
            .inspect_err(|err| {
                tracing::warn!(error = %err, "WeChat Pay notification refused");
                telemetry::count_payment("rejected");
            })?;
        if !transaction.succeeded() {
            tracing::info!(order = %transaction.out_trade_no, state = %transaction.trade_state,
                "WeChat Pay notification of an unsuccessful transaction; nothing to do");
            return Ok(());
        }
        let payment = Payment {
            amount: Some((transaction.amount_total, transaction.currency)),
            transaction_id: transaction.transaction_id,
        };
        let paid = match OrderId::parse(&transaction.out_trade_no) {
            Ok(order_id) => self.pay(&order_id, &payment).await,
            Err(_) => Err(StoreError::NotFound("order").into()),
        };
        let kind = match paid {
            Ok(_) => return Ok(()),
            Err(PaymentError::AmountMismatch) => PaymentExceptionKind::AmountMismatch,
            Err(PaymentError::Store(StoreError::NotFound(_))) => {
                tracing::error!(out_trade_no = %transaction.out_trade_no,
                    transaction = %payment.transaction_id, "payment for an unknown order");
                PaymentExceptionKind::UnknownOrder
            }
            Err(err) => return Err(err),
        };
        self.record_exception(kind, transaction.out_trade_no, payment)
            .await
    }

    /// Keeps a verified payment that could not be applied, so that it can
    /// be acknowledged (WeChat Pay would otherwise retry it for a day, then
    /// give up) and settled by the merchant.
    async fn record_exception(
        &self,
        kind: PaymentExceptionKind,
        out_trade_no: String,
        payment: Payment,
    ) -> Result<(), PaymentError> {
        let Payment {
            amount,
            transaction_id,
        } = payment;
        let exception = PaymentException {
            kind,
            transaction_id,
            out_trade_no,
            amount: amount.unwrap_or_default(),
            recorded_at: 0,
        };
        if self.store.record_payment_exception(&exception).await? {
            telemetry::count_payment_exception(kind.as_str());
            tracing::warn!(transaction = %exception.transaction_id, kind = kind.as_str(),
                "payment exception recorded for the merchant (GET /admin/v1/payment-exceptions)");
        }
        Ok(())
    }

    /// Every verified payment that could not be applied, newest first.
    pub async fn exceptions(&self) -> Result<Vec<PaymentException>, StoreError> {
        self.store.payment_exceptions().await
    }

    /// Pays the shopper's own order at once (simulated payments only).
    pub async fn pay_simulated(
        &self,
        order_id: &OrderId,
        shopper: &ShopperId,
    ) -> Result<Order, PaymentError> {
        if !matches!(self.method, PaymentMethod::Simulated) {
            return Err(PaymentError::NotEnabled(
                "simulated payments are not enabled",
            ));
        }
        self.store
            .order(order_id)
            .await?
            .filter(|order| &order.shopper_id == shopper)
            .ok_or(StoreError::NotFound("order"))?;
        let payment = Payment {
            amount: None,
            transaction_id: format!("sim_{}", Alphanumeric.sample_string(&mut rand::rng(), 24)),
        };
        self.pay(order_id, &payment).await
    }

    /// Applies a payment to its order and logs what it did; answers the
    /// order as it is now (paid, already paid, or marked for refund).
    async fn pay(&self, order_id: &OrderId, payment: &Payment) -> Result<Order, PaymentError> {
        let outcome = self
            .store
            .pay_order(order_id, payment, self.hand_offs.is_some())
            .await?;
        if let Some(notices) = &self.hand_offs {
            notices.notify(&order_id.sale_id());
        }
        let transaction = payment.transaction_id.as_str();
        telemetry::count_payment(outcome_name(&outcome));
        match outcome {
            PaymentOutcome::Paid(order) => {
                tracing::info!(order = %order_id, transaction, "order paid");
                Ok(order)
            }
            PaymentOutcome::Unchanged(order) => {
                tracing::info!(order = %order_id, transaction, status = order.status.as_str(),
                    "repeated payment notification; nothing changed");
                Ok(order)
            }
            PaymentOutcome::RefundRequired(order) => {
                tracing::warn!(order = %order_id, transaction, amount_cents = order.amount_cents,
                    "payment arrived after the order expired or was cancelled: refund required");
                Ok(order)
            }
            PaymentOutcome::AmountMismatch(order) => {
                tracing::error!(order = %order_id, transaction, expected = order.amount_cents,
                    paid = ?payment.amount, "payment amount differs from the order's; refused");
                Err(PaymentError::AmountMismatch)
            }
        }
    }
}

/// The payment metric's label for an outcome.
fn outcome_name(outcome: &PaymentOutcome) -> &'static str {
    match outcome {
        PaymentOutcome::Paid(_) => "paid",
        PaymentOutcome::Unchanged(_) => "unchanged",
        PaymentOutcome::RefundRequired(_) => "refund_required",
        PaymentOutcome::AmountMismatch(_) => "amount_mismatch",
    }
}
