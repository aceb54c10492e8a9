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
//! And the shopper's side of WeChat Pay: [`Payments::wechatpay_prepay`]
//! creates the WeChat Pay order of one of ours (once: the prepay id is kept
//! on the order and reused) and answers what `wx.requestPayment` takes;
//! [`Payments::close_wechatpay_order`] closes it before the order lets its
//! units go (expiry, the shopper's cancel), and applies the payment when
//! WeChat Pay says it was paid first.
//!
//! Both apply the payment through the store's one payment step, so an
//! order is paid (or marked for refund) exactly once whichever way money
//! arrives, and a payment, a cancel and an expiry of one order are decided
//! once, by the script that runs first.

pub mod wechatpay;

use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};

use self::wechatpay::{
    CallError, Closed, NotifyError, PrepayOrder, RequestPayment, SignedHeaders, WeChatPay,
};
use crate::domain::{
    system_now, Order, OrderId, OrderStatus, Payment, PaymentException, PaymentExceptionKind,
    PaymentOutcome, ShopperId,
};
use crate::orders::WorkNotices;
use crate::store::{Store, StoreError};
use crate::telemetry;

/// How payments are taken: WeChat Pay, or simulated.
pub enum PaymentMethod {
    WeChatPay(Box<WeChatPay>),
    Simulated,
}

/// What closing an order's WeChat Pay order found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// Nothing can pay the order any more: let its units go.
    Closed,
    /// It was paid before the close: the payment is applied, and this is
    /// the order now.
    Paid(Order),
}

/// The longest transaction id kept on an order.
const TRANSACTION_ID_LEN_MAX: usize = 64;

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
    /// A call to WeChat Pay failed.
    #[error(transparent)]
    WeChatPay(#[from] CallError),
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
        headers: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<(), PaymentError> {
        let wechatpay = self.wechatpay()?;
        let transaction = wechatpay
            .verifier
            .open(headers, body, system_now() / 1000)
            .and_then(|transaction| {
                if transaction.succeeded() {
                    checked_transaction_id(&transaction.transaction_id)?;
                }
                Ok(transaction)
            })
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

    fn wechatpay(&self) -> Result<&WeChatPay, PaymentError> {
        match &self.method {
            PaymentMethod::WeChatPay(wechatpay) => Ok(wechatpay),
            PaymentMethod::Simulated => Err(PaymentError::NotEnabled(
                "WeChat Pay is not enabled (FLASHSALE_PAYMENTS=simulated)",
            )),
        }
    }

    /// What the shopper's Mini Program passes to `wx.requestPayment` to pay
    /// their own unpaid order. The WeChat Pay order is created once (JSAPI
    /// prepay: `out_trade_no` the order id, `time_expire` its `expires_at`,
    /// the payer the shopper); its prepay id is kept on the order and
    /// reused by every later call, so one order of ours is never two of
    /// WeChat Pay's. Each answer is freshly signed.
    pub async fn wechatpay_prepay(
        &self,
        order_id: &OrderId,
        shopper: &ShopperId,
    ) -> Result<RequestPayment, PaymentError> {
        let wechatpay = self.wechatpay()?;
        let order = self
            .store
            .order(order_id)
            .await?
            .filter(|order| &order.shopper_id == shopper)
            .ok_or(StoreError::NotFound("order"))?;
        if order.status != OrderStatus::PendingPayment {
            return Err(StoreError::Conflict(format!(
                "the order is {}, not pending_payment",
                order.status.as_str()
            ))
            .into());
        }
        let prepay_id = match order.prepay_id {
            Some(prepay_id) => prepay_id,
            // Past its deadline (the expiry has not run yet): WeChat Pay
            // would refuse a `time_expire` in the past, and the unit is
            // about to go back on sale.
            None if order.expires_at <= system_now() => {
                return Err(StoreError::Conflict("the order's time to pay is over".into()).into());
            }
            None => {
                let sale = self
                    .store
                    .view_sale(&order.sale_id)
                    .await?
                    .ok_or(StoreError::NotFound("sale"))?
                    .sale;
                let prepay_id = wechatpay
                    .client
                    .prepay(&PrepayOrder {
                        out_trade_no: order.id.as_str(),
                        description: &sale.title,
                        expires_at: order.expires_at,
                        amount_cents: order.amount_cents,
                        currency: &order.currency,
                        openid: shopper.as_str(),
                    })
                    .await
                    .inspect_err(|err| {
                        tracing::warn!(order = %order.id, error = %err, "WeChat Pay prepay failed");
                    })?;
                let kept = self.store.record_prepay(&order.id, &prepay_id).await?;
                tracing::info!(order = %order.id, "WeChat Pay order created");
                kept.prepay_id.unwrap_or(prepay_id)
            }
        };
        Ok(wechatpay
            .client
            .request_payment(&prepay_id, system_now() / 1000))
    }

    /// Closes the WeChat Pay order of `order` (one with a prepay id) before
    /// the order lets its units go. When WeChat Pay refuses because it is
    /// paid, the transaction is queried and the payment applied, so a
    /// payment that won the race with the close pays the order. With
    /// simulated payments there is nothing to close.
    pub async fn close_wechatpay_order(&self, order: &Order) -> Result<Closing, PaymentError> {
        let PaymentMethod::WeChatPay(wechatpay) = &self.method else {
            return Ok(Closing::Closed);
        };
        let out_trade_no = order.id.as_str();
        if wechatpay.client.close(out_trade_no).await? == Closed::Closed {
            tracing::info!(order = %order.id, "WeChat Pay order closed");
            return Ok(Closing::Closed);
        }
        let transaction = wechatpay.client.query(out_trade_no).await?;
        if !transaction.succeeded() || transaction.out_trade_no != out_trade_no {
            return Err(CallError::Malformed(format!(
                "the close of {out_trade_no} was refused as paid, but the query answers {} \
                 for {}",
                transaction.trade_state, transaction.out_trade_no
            ))
            .into());
        }
        checked_transaction_id(&transaction.transaction_id).map_err(CallError::from)?;
        tracing::info!(order = %order.id, "paid before its WeChat Pay order could be closed");
        let payment = Payment {
            amount: Some((transaction.amount_total, transaction.currency)),
            transaction_id: transaction.transaction_id,
        };
        match self.pay(&order.id, &payment).await {
            Ok(order) => Ok(Closing::Paid(order)),
            Err(PaymentError::AmountMismatch) => {
                self.record_exception(
                    PaymentExceptionKind::AmountMismatch,
                    out_trade_no.to_owned(),
                    payment,
                )
                .await?;
                Err(PaymentError::AmountMismatch)
            }
            Err(err) => Err(err),
        }
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

/// A transaction id fit to keep on an order: 1 to 64 printable ASCII
/// characters, no space and no `=` (the order record's separators).
fn checked_transaction_id(id: &str) -> Result<(), NotifyError> {
    let printable = !id.is_empty()
        && id.len() <= TRANSACTION_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'=');
    if printable {
        Ok(())
    } else {
        Err(NotifyError::Malformed(format!("transaction_id {id:?}")))
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
