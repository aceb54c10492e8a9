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
//! Refunds ([`Payments::refund`], the merchant's; and a late payment's,
//! queued by the payment step itself) go through the sale's outbox: the
//! order service sends each with [`Payments::send_refund`] until WeChat Pay
//! answers, then queries the refund while it is `PROCESSING`; the refund's
//! result notification ([`Payments::wechatpay_notified`]), or a `SUCCESS`
//! answer or query, settles the order `refunded`. A
//! refund WeChat Pay could not pay (`ABNORMAL`) or closed (`CLOSED`) is
//! kept as a payment exception for the merchant; once the merchant paid
//! the shopper back another way ([`Payments::settle_refund_by_hand`], or
//! settling that exception), the order is `refunded` too. With simulated
//! payments a refund is recorded at once.
//!
//! Both apply the payment through the store's one payment step, so an
//! order is paid (or marked for refund) exactly once whichever way money
//! arrives, and a payment, a cancel and an expiry of one order are decided
//! once, by the script that runs first.

pub mod wechatpay;

use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};

use self::wechatpay::{
    out_refund_no, CallError, Closed, Notice, NotifyError, PrepayOrder, RefundResult,
    RequestPayment, SignedHeaders, WeChatPay,
};
use crate::domain::{
    system_now, Order, OrderId, OrderStatus, Payment, PaymentException, PaymentExceptionKind,
    PaymentOutcome, RefundSettledBy, ShopperId,
};
use crate::orders::WorkNotices;
use crate::store::{FollowUps, RefundSettlement, Store, StoreError};
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
    /// It was paid before the close: the payment is applied.
    Paid,
}

/// Where a refund stands after one attempt of its outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundProgress {
    /// Nothing more to send or ask: WeChat Pay settled the refund (its
    /// result applied), or the order awaits no refund any more.
    Done,
    /// WeChat Pay holds the refund, still `PROCESSING`: ask again later.
    Processing,
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
    /// Where the order service learns of sales given outbox entries.
    notices: WorkNotices,
    /// Whether to queue hand-offs to the merchant's webhook (one is
    /// configured).
    hand_off: bool,
}

impl Payments {
    pub fn new(
        store: Arc<dyn Store>,
        method: PaymentMethod,
        notices: WorkNotices,
        hand_off: bool,
    ) -> Self {
        Self {
            store,
            method,
            notices,
            hand_off,
        }
    }

    pub fn method(&self) -> &PaymentMethod {
        &self.method
    }

    /// What a store step queues beside its change: the hand-off when a
    /// webhook is configured, the refund call with WeChat Pay.
    fn follow_ups(&self) -> FollowUps {
        FollowUps {
            hand_off: self.hand_off,
            refund: matches!(self.method, PaymentMethod::WeChatPay(_)),
        }
    }

    /// Tells the order service the sale has new outbox entries.
    fn wake(&self, order_id: &OrderId) {
        self.notices.notify(&order_id.sale_id());
    }

    /// [`Self::wake`] after a step that may queue outbox entries, whatever
    /// it answered but an unknown order: a step whose reply was lost (503)
    /// may have queued them all the same, and its retry is then told the
    /// order is refunding (409) or finds it unchanged, on a sale no order
    /// service may watch any more (one settled sleeps until a notice).
    fn wake_after<T>(&self, order_id: &OrderId, step: &Result<T, StoreError>) {
        if !matches!(step, Err(StoreError::NotFound(_))) {
            self.wake(order_id);
        }
    }

    /// Applies a WeChat Pay notification: verifies the headers over the raw
    /// body now, and pays the order a successful transaction names (an
    /// unsuccessful transaction changes nothing), or applies a refund's
    /// result.
    pub async fn wechatpay_notified(
        &self,
        headers: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<(), PaymentError> {
        let wechatpay = self.wechatpay()?;
        let notice = wechatpay
            .verifier
            .open_notice(headers, body, system_now() / 1000)
            .and_then(|notice| {
                if let Notice::Transaction(transaction) = &notice {
                    if transaction.succeeded() {
                        checked_transaction_id(&transaction.transaction_id)?;
                    }
                }
                Ok(notice)
            })
            .inspect_err(|err| {
                tracing::warn!(error = %err, "WeChat Pay notification refused");
                telemetry::count_payment("rejected");
            })?;
        let transaction = match notice {
            Notice::Transaction(transaction) => transaction,
            Notice::Refund(refund) => return self.refund_result(&refund).await.map(drop),
        };
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

    /// Whether orders may have WeChat Pay orders to close (WeChat Pay
    /// mode; simulated payments make none).
    pub fn closes_wechatpay_orders(&self) -> bool {
        matches!(self.method, PaymentMethod::WeChatPay(_))
    }

    /// Closes the WeChat Pay order of `order` (one with a prepay id) before
    /// the order lets its units go. When WeChat Pay refuses because it is
    /// paid, the transaction is queried and the payment applied, so a
    /// payment that won the race with the close pays the order; paid
    /// another amount than the order's, the payment is a payment exception
    /// and the order counts as closed. With simulated payments there is
    /// nothing to close.
    pub async fn close_wechatpay_order(&self, order: &Order) -> Result<Closing, PaymentError> {
        let PaymentMethod::WeChatPay(wechatpay) = &self.method else {
            return Ok(Closing::Closed);
        };
        let out_trade_no = order.id.as_str();
        if wechatpay.client.close(out_trade_no).await? == Closed::Closed {
            tracing::info!(order = %order.id, "WeChat Pay order closed");
            return Ok(Closing::Closed);
        }
        // Refused as paid or as closed already: the verified query says.
        let transaction = wechatpay.client.query(out_trade_no).await?;
        if transaction.out_trade_no == out_trade_no && transaction.trade_state == "CLOSED" {
            tracing::info!(order = %order.id, "WeChat Pay order closed already");
            return Ok(Closing::Closed);
        }
        if !transaction.succeeded() || transaction.out_trade_no != out_trade_no {
            return Err(CallError::Malformed(format!(
                "the close of {out_trade_no} was refused, but the query answers {} for {}",
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
            Ok(_) => Ok(Closing::Paid),
            // Paid, but not what the order asks: the money is the
            // merchant's to settle, and this WeChat Pay order can take no
            // other payment, so the order is as good as closed.
            Err(PaymentError::AmountMismatch) => {
                self.record_exception(
                    PaymentExceptionKind::AmountMismatch,
                    out_trade_no.to_owned(),
                    payment,
                )
                .await?;
                Ok(Closing::Closed)
            }
            Err(err) => Err(err),
        }
    }

    /// The merchant refunds a paid order (see [`Store::refund_order`]): with
    /// WeChat Pay the order is `refunding` and its refund call queued in
    /// the sale's outbox (the order service sends it); with simulated
    /// payments it is `refunded` at once.
    pub async fn refund(&self, order_id: &OrderId, restock: bool) -> Result<Order, StoreError> {
        let refunded = self
            .store
            .refund_order(order_id, restock, self.follow_ups())
            .await;
        self.wake_after(order_id, &refunded);
        let order = refunded?;
        tracing::info!(order = %order_id, restock, status = order.status.as_str(),
            "refund of a paid order asked for by the merchant");
        telemetry::count_refund("asked");
        Ok(order)
    }

    /// Sends one order's refund call to WeChat Pay, or asks where it is, as
    /// attempt `attempt` (from 1) of its outbox entry (the order service's
    /// side). The first attempt makes the call; every later one first
    /// queries the refund (`None` when WeChat Pay never took it: then the
    /// call is made), so a refund taken whose answer was lost, or still
    /// `PROCESSING`, is read rather than asked for again. WeChat Pay keeps
    /// one refund per `out_refund_no`, derived from the order id, so a
    /// resend refunds nothing twice either way. The result is applied as a
    /// notification's would be. An error means try again later
    /// (`Unavailable` and the like, a refused query among them) or never
    /// ([`CallError::Refused`]: WeChat Pay refused the refund call).
    pub async fn send_refund(
        &self,
        order_id: &OrderId,
        attempt: u32,
    ) -> Result<RefundProgress, PaymentError> {
        let wechatpay = self.wechatpay()?;
        let order = self
            .store
            .order(order_id)
            .await?
            .ok_or(StoreError::NotFound("order"))?;
        if !matches!(
            order.status,
            OrderStatus::Refunding | OrderStatus::RefundRequired
        ) {
            tracing::info!(order = %order_id, status = order.status.as_str(),
                "refund call not sent: the order is no longer awaiting one");
            return Ok(RefundProgress::Done);
        }
        // A failed query is tried again with backoff, the refund kept in
        // the outbox.
        let known = match attempt {
            1 => None,
            _ => query_refund(wechatpay, order_id, false).await?,
        };
        let refund = match known {
            Some(refund) => {
                tracing::info!(order = %order_id, status = %refund.status, "WeChat Pay's refund queried");
                refund
            }
            None => {
                let refund = wechatpay
                    .client
                    .refund(order.id.as_str(), order.amount_cents, &order.currency)
                    .await?;
                tracing::info!(order = %order_id, status = %refund.status, "WeChat Pay took the refund");
                refund
            }
        };
        self.refund_result(&refund).await
    }

    /// Applies a refund's result, from its notification, the refund call's
    /// answer or a query: `SUCCESS` settles the order `refunded` (and on an
    /// order the merchant settled by hand is kept as `refund_paid_twice`);
    /// `ABNORMAL` and `CLOSED` are kept as payment exceptions for the
    /// merchant (the order stays as it is) and end the order's refund
    /// call; `PROCESSING` (or a state WeChat Pay may add) changes nothing
    /// yet.
    async fn refund_result(&self, refund: &RefundResult) -> Result<RefundProgress, PaymentError> {
        let kind = match refund.status.as_str() {
            "SUCCESS" => None,
            "ABNORMAL" => Some(PaymentExceptionKind::RefundAbnormal),
            "CLOSED" => Some(PaymentExceptionKind::RefundClosed),
            _ => return Ok(RefundProgress::Processing),
        };
        let order_id = OrderId::parse(&refund.out_trade_no)
            .ok()
            .filter(|id| out_refund_no(id.as_str()) == refund.out_refund_no);
        let Some(order_id) = order_id else {
            tracing::error!(out_trade_no = %refund.out_trade_no, out_refund_no = %refund.out_refund_no,
                "refund result for no refund of ours; ignored");
            return Ok(RefundProgress::Done);
        };
        if let Some(kind) = kind {
            telemetry::count_refund(kind.as_str());
            tracing::error!(order = %order_id, status = %refund.status,
                "WeChat Pay could not complete the refund; kept for the merchant");
            let order = self.store.order(&order_id).await?;
            self.record_exception(
                kind,
                refund.out_trade_no.clone(),
                Payment {
                    amount: Some((
                        refund.refund,
                        order
                            .map(|order| String::from(order.currency))
                            .unwrap_or_default(),
                    )),
                    transaction_id: named_by(&refund.transaction_id, refund),
                },
            )
            .await?;
            // Nothing is left to send or ask: the merchant may settle it
            // by hand at once, not after the refund's next query.
            self.store.end_refund_call(&order_id).await?;
            return Ok(RefundProgress::Done);
        }
        match self
            .store
            .settle_refund(&order_id, RefundSettledBy::WeChatPay, self.hand_off)
            .await
        {
            Ok(RefundSettlement::Refunded(_)) => {
                self.wake(&order_id);
                telemetry::count_refund("refunded");
                tracing::info!(order = %order_id, "order refunded");
            }
            // WeChat Pay paid what the merchant had paid back by hand
            // (after an `ABNORMAL` fixed in WeChat Pay's own platform, say):
            // the shopper has it twice, which is the merchant's to recover.
            // Named by WeChat Pay's refund id: the refund's other names may
            // name its `ABNORMAL` exception, settled already.
            Ok(RefundSettlement::Unchanged(order)) if order.refund_settled_by_hand_at.is_some() => {
                tracing::error!(order = %order_id,
                    "WeChat Pay paid a refund the merchant had settled by hand; kept for the merchant");
                self.record_exception(
                    PaymentExceptionKind::RefundPaidTwice,
                    refund.out_trade_no.clone(),
                    Payment {
                        amount: Some((refund.refund, String::from(order.currency))),
                        transaction_id: named_by(&refund.refund_id, refund),
                    },
                )
                .await?;
            }
            Ok(RefundSettlement::Unchanged(_)) => {}
            // Nothing of ours to settle: acknowledged so WeChat Pay stops
            // repeating it.
            Err(err @ (StoreError::NotFound(_) | StoreError::Conflict(_))) => {
                tracing::error!(order = %order_id, error = %err,
                    "refund success for an order not awaiting one; ignored");
            }
            Err(err) => return Err(err.into()),
        }
        Ok(RefundProgress::Done)
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

    /// Marks a payment exception the merchant settled by hand settled (off
    /// the list, never recorded again), and answers it as it was listed. A
    /// refund's exception is settled with its order's refund (see
    /// [`Payments::settle_refund_by_hand`]): the merchant paid the shopper
    /// back, so the order is `refunded`. An order retention forgot since
    /// leaves only the exception to settle.
    pub async fn settle_exception(
        &self,
        transaction_id: &str,
    ) -> Result<PaymentException, PaymentError> {
        let exception = self
            .store
            .payment_exception(transaction_id)
            .await?
            .ok_or(StoreError::NotFound("payment exception"))?;
        if exception.kind.is_unpaid_refund() {
            if let Ok(order_id) = OrderId::parse(&exception.out_trade_no) {
                match self.settle_refund_by_hand(&order_id).await {
                    Ok(_) | Err(PaymentError::Store(StoreError::NotFound(_))) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        // Settled with its order just now, or here.
        self.store.settle_payment_exception(transaction_id).await?;
        Ok(exception)
    }

    /// The merchant paid an order's refund back outside WeChat Pay, after
    /// WeChat Pay could not (`ABNORMAL`, `CLOSED`, or a refund call it
    /// refused for good): the order is `refunded` (`order.refunded` to the
    /// webhook), its refund's dead letter dropped, and the payment
    /// exception WeChat Pay's result left settled. An order paid through
    /// WeChat Pay is asked about there first: a refund it paid is settled
    /// as its own. Refused (`Conflict`) while its refund call is in the
    /// sale's outbox or WeChat Pay holds the refund (`PROCESSING`), on a
    /// node without WeChat Pay for such an order, and for an order whose
    /// refund was never asked for. A repeat answers the order as it is.
    pub async fn settle_refund_by_hand(&self, order_id: &OrderId) -> Result<Order, PaymentError> {
        let order = self.settle_order_by_hand(order_id).await?;
        // The exception is named by the refunded payment's transaction id,
        // or by the refund's number when WeChat Pay's result carried none.
        let names = order
            .transaction_id
            .iter()
            .cloned()
            .chain([out_refund_no(order_id.as_str())]);
        for transaction_id in names {
            let exception = self.store.payment_exception(&transaction_id).await?;
            if exception.is_some_and(|exception| {
                exception.kind.is_unpaid_refund() && exception.out_trade_no == order_id.as_str()
            }) {
                self.store.settle_payment_exception(&transaction_id).await?;
            }
        }
        Ok(order)
    }

    /// The order step of [`Payments::settle_refund_by_hand`]. With WeChat
    /// Pay, an order still awaiting its refund is asked about first: a
    /// refund call dead-lettered may have reached WeChat Pay all the same
    /// (an unsigned 4xx on the way back is believed as a refusal; a node
    /// without WeChat Pay dead-letters a later attempt). A refund WeChat
    /// Pay never took, or ended `ABNORMAL` or `CLOSED`, is the merchant's
    /// to settle; one it paid is settled as WeChat Pay's (no by-hand stamp);
    /// one it still holds (`PROCESSING`) is refused: it may yet be paid.
    async fn settle_order_by_hand(&self, order_id: &OrderId) -> Result<Order, PaymentError> {
        let order = self
            .store
            .order(order_id)
            .await?
            .ok_or(StoreError::NotFound("order"))?;
        let awaiting = matches!(
            order.status,
            OrderStatus::Refunding | OrderStatus::RefundRequired
        );
        // Paid through WeChat Pay (only its prepay makes a WeChat Pay
        // order to pay): WeChat Pay may hold its refund.
        if awaiting && order.prepay_id.is_some() {
            let PaymentMethod::WeChatPay(wechatpay) = &self.method else {
                return Err(StoreError::Conflict(
                    "this order was paid through WeChat Pay, which this engine node is not \
                     configured to ask where its refund is: settle it on a node with WeChat Pay"
                        .into(),
                )
                .into());
            };
            if let Some(refund) = query_refund(wechatpay, order_id, true).await? {
                match refund.status.as_str() {
                    // Applied as its notification would be: the exception
                    // kept (and settled below), the refund call ended, or
                    // the order refunded as WeChat Pay's.
                    "ABNORMAL" | "CLOSED" | "SUCCESS" => {
                        self.refund_result(&refund).await?;
                    }
                    status => {
                        return Err(StoreError::Conflict(format!(
                            "WeChat Pay still holds this refund ({status}) and may pay it: wait \
                             for its result"
                        ))
                        .into())
                    }
                }
            }
        }
        let settled = self
            .store
            .settle_refund(order_id, RefundSettledBy::Merchant, self.hand_off)
            .await;
        self.wake_after(order_id, &settled);
        match settled? {
            RefundSettlement::Refunded(order) => {
                telemetry::count_refund("settled_by_hand");
                tracing::info!(order = %order_id, "refund settled by the merchant's hand");
                Ok(order)
            }
            RefundSettlement::Unchanged(order) => Ok(order),
        }
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
            .pay_order(order_id, payment, self.follow_ups())
            .await?;
        self.wake(order_id);
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

/// Where WeChat Pay holds the refund of order `id` (`None`: it never took
/// it; see [`wechatpay::WeChatPayClient::query_refund`] for
/// `require_signed_absence`). A refused query is no refusal of the refund
/// (that is the refund call's alone): it fails like WeChat Pay
/// unreachable, to try again.
async fn query_refund(
    wechatpay: &WeChatPay,
    id: &OrderId,
    require_signed_absence: bool,
) -> Result<Option<RefundResult>, CallError> {
    wechatpay
        .client
        .query_refund(id.as_str(), require_signed_absence)
        .await
        .map_err(|err| match err {
            CallError::Refused {
                status,
                code,
                message,
                ..
            } => CallError::Unavailable(format!(
                "the refund query was refused: {code} ({status}): {message}"
            )),
            other => other,
        })
}

/// The name of a refund's payment exception: WeChat Pay's `id`, or the
/// refund's number when WeChat Pay's result carried none.
fn named_by(id: &str, refund: &RefundResult) -> String {
    if id.is_empty() {
        refund.out_refund_no.clone()
    } else {
        id.to_owned()
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
