//! Orders: every workflow on a shopper's order, each written once.
//!
//! - [`Orders`]: reserve (through the sale's inventory actor), look up,
//!   list, cancel, expire, and the merchant's refund. Cancel, expiry and a
//!   refund with restock give units back and tell every engine node's
//!   actor so.
//! - [`service`]: the order service, the background task that carries each
//!   order from its reservation on: consumes the sales' reservation
//!   streams, expires unpaid orders (through [`Orders::expire_due`]) and
//!   sends hand-offs. Hand-offs that failed for good wait in their sale's
//!   dead letters until [`Orders::redrive_dead_letters`].
//! - [`webhook`]: the hand-off call to the merchant's webhook.
//!
//! Payments change orders too, through `payments`; a payment, a cancel and
//! an expiry of one order are decided once, by the store script that runs
//! first. An order with a WeChat Pay prepay id lets its units go (expiry,
//! cancel) only once its WeChat Pay order is closed
//! (`Payments::close_wechatpay_order`), so a shopper cannot pay for a unit
//! that went back on sale; while WeChat Pay cannot be reached the order
//! stays held and the close is retried with backoff.

pub mod service;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

pub use self::service::{OrderService, OrderSettings, Outcome, RefundSettings, WorkNotices};
use self::webhook::Backoff;
use crate::domain::{
    system_now, Millis, Order, OrderAsk, OrderId, OrderStatus, RefundKind, Reservation, SaleId,
    ShopperId,
};
use crate::inventory::{Inventory, InventoryError};
use crate::payments::{Closing, PaymentError, Payments};
use crate::store::{cut_page, DeadLetter, Expiry, Store, StoreError, PREPAY_CHANGED};
use crate::telemetry;

/// How orders with a WeChat Pay order are closed before they let their
/// units go.
#[derive(Debug, Clone, Copy)]
pub struct CloseSettings {
    /// How long a held order is left to this node's close before another
    /// pass (of any node) looks at it again: longer than a close and a
    /// query take.
    pub hold: Duration,
    /// Waits between failed closes of one order.
    pub backoff: Backoff,
    /// Closes of held orders in flight at once; an order past it waits
    /// for a place (see `Orders::close_then_expire`).
    pub in_flight_max: usize,
}

/// Why a cancel did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The WeChat Pay order could not be closed (or was paid).
    #[error(transparent)]
    Payment(#[from] PaymentError),
}

/// A cancel under a taken cancel that failed: surely not made (the
/// taken cancel is given back), or perhaps made (the store's answer was
/// lost: it stays taken, erring towards fewer cancels).
enum CancelFailure {
    NotCancelled(CancelError),
    Unknown(CancelError),
}

/// Closes WeChat Pay orders, remembering each held order's failed closes
/// for its backoff (forgotten once closed; a restart starts them again).
struct Closer {
    payments: Arc<Payments>,
    settings: CloseSettings,
    failures: Mutex<CloseFailures>,
    /// One permit per close of a held order in flight.
    places: Semaphore,
}

/// Each held order's failed closes on this node. An order paid or closed
/// on another node after a failed close here is never closed here again:
/// its count stays until [`CLOSE_FAILURES_MAX`] orders are counted; then
/// each new one takes the place of one counted before (whose backoff
/// starts again from the first, which only brings its next close sooner).
#[derive(Default)]
struct CloseFailures(HashMap<OrderId, u32>);

/// Most orders whose failed closes a node counts (see [`CloseFailures`]).
const CLOSE_FAILURES_MAX: usize = 10_000;

impl CloseFailures {
    /// Counts one more failed close of `order`; answers its count.
    fn count(&mut self, order: &OrderId) -> u32 {
        if self.0.len() >= CLOSE_FAILURES_MAX && !self.0.contains_key(order) {
            let evicted = self.0.keys().next().cloned();
            if let Some(evicted) = evicted {
                self.0.remove(&evicted);
            }
        }
        let count = self.0.entry(order.clone()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    fn forget(&mut self, order: &OrderId) {
        self.0.remove(order);
    }
}

pub struct Orders {
    store: Arc<dyn Store>,
    inventory: Arc<Inventory>,
    /// Sales given new hand-offs: the order service's notices.
    notices: WorkNotices,
    /// `None`: nothing to close (an order with a prepay id is released at
    /// once).
    closer: Option<Closer>,
}

/// How long held orders are left alone without a closer: nothing is
/// closed, so they expire at once, beside the pass that held them.
const HOLD_WITHOUT_CLOSER: Duration = Duration::from_secs(1);

impl Orders {
    pub fn new(store: Arc<dyn Store>, inventory: Arc<Inventory>) -> Self {
        Self {
            store,
            inventory,
            notices: WorkNotices::default(),
            closer: None,
        }
    }

    /// The same, closing orders' WeChat Pay orders through `payments`
    /// before they let their units go.
    pub fn with_payments(mut self, payments: Arc<Payments>, settings: CloseSettings) -> Self {
        self.closer = Some(Closer {
            payments,
            settings,
            failures: Mutex::default(),
            places: Semaphore::new(settings.in_flight_max),
        });
        self
    }

    /// Where the order service learns of sales given work while it may
    /// have stopped watching them.
    pub fn work_notices(&self) -> WorkNotices {
        self.notices.clone()
    }

    /// The sale's dead letters, oldest first.
    pub async fn dead_letters(&self, sale: &SaleId) -> Result<Vec<DeadLetter>, StoreError> {
        self.existing(sale).await?;
        self.store.dead_letters(sale).await
    }

    /// Puts the sale's dead letters back into its outbox, due now with
    /// their attempts reset, and has the order service watch the sale
    /// again; returns how many.
    pub async fn redrive_dead_letters(&self, sale: &SaleId) -> Result<u64, StoreError> {
        self.existing(sale).await?;
        let moved = self.store.redrive_dead_letters(sale).await;
        // Whatever the answer: a re-drive whose reply was lost (503) may
        // have moved them all the same, and its retry then moves none.
        self.notices.notify(sale);
        moved
    }

    /// Expires a held order once its WeChat Pay order is closed; `None`
    /// when it was paid first, or could not be closed yet (then it is due
    /// again after its backoff). The close waits for a place among the
    /// closes in flight ([`CloseSettings::in_flight_max`]); an order still
    /// without one after a quarter of its hold is left to the pass that
    /// takes it again once its hold runs out (the rest of the hold leaves
    /// a close, a query and the store's steps their time, so no other node
    /// takes the order meanwhile).
    async fn close_then_expire(&self, order: &Order) -> Result<Option<Order>, StoreError> {
        let Some(closer) = &self.closer else {
            return self.store.expire_order(&order.id).await;
        };
        let waited = tokio::time::timeout(closer.settings.hold / 4, closer.places.acquire()).await;
        let Ok(Ok(_place)) = waited else {
            tracing::warn!(order = %order.id,
                "no place among the WeChat Pay closes in flight; the order waits out its hold");
            return Ok(None);
        };
        match closer.payments.close_wechatpay_order(order).await {
            Ok(Closing::Closed) => {
                closer.failures.lock().forget(&order.id);
                self.store.expire_order(&order.id).await
            }
            Ok(Closing::Paid) => {
                closer.failures.lock().forget(&order.id);
                Ok(None)
            }
            Err(err) => {
                let failures = closer.failures.lock().count(&order.id);
                let after = closer.settings.backoff.after(failures);
                tracing::warn!(order = %order.id, error = %err, failures, retry_in_ms = after.as_millis(),
                    "cannot close the WeChat Pay order; the order stays held");
                telemetry::count_wechatpay_close_failure();
                self.store.postpone_expiry(&order.id, after).await?;
                Ok(None)
            }
        }
    }

    async fn existing(&self, sale: &SaleId) -> Result<(), StoreError> {
        match self.store.view_sale(sale).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound("sale")),
        }
    }

    /// Takes stock for a shopper through the sale's actor: answered from
    /// the actor's memory when certain, else in one atomic store step that
    /// also records the order.
    pub async fn reserve(&self, ask: OrderAsk) -> Result<Reservation, InventoryError> {
        self.inventory.reserve(ask).await
    }

    /// Any order (the merchant's view).
    pub async fn order(&self, id: &OrderId) -> Result<Order, StoreError> {
        self.store
            .order(id)
            .await?
            .ok_or(StoreError::NotFound("order"))
    }

    /// The shopper's own order; another shopper's is not found.
    pub async fn shopper_order(
        &self,
        id: &OrderId,
        shopper: &ShopperId,
    ) -> Result<Order, StoreError> {
        self.store
            .order(id)
            .await?
            .filter(|order| &order.shopper_id == shopper)
            .ok_or(StoreError::NotFound("order"))
    }

    /// Up to `limit` of the shopper's orders, newest first (created at,
    /// then id), after `after`; with the last order of the page when more
    /// follow. Reads the sales the shopper bought in and the open ones
    /// (see [`Store::shopper_orders`]).
    pub async fn shopper_orders(
        &self,
        shopper: &ShopperId,
        after: Option<&(Millis, OrderId)>,
        limit: usize,
    ) -> Result<(Vec<Order>, Option<Order>), StoreError> {
        let mut orders = self.store.shopper_orders(shopper).await?;
        orders
            .retain(|order| after.is_none_or(|(at, id)| (order.created_at, &order.id) < (*at, id)));
        Ok(cut_page(orders, limit, Order::clone))
    }

    /// A page of the sale's orders for export (see [`Store::sale_orders`]):
    /// `NotFound` once the sale is gone.
    pub async fn sale_orders(
        &self,
        sale: &SaleId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Order>, Option<String>), StoreError> {
        if self.store.view_sale(sale).await?.is_none() {
            return Err(StoreError::NotFound("sale"));
        }
        self.store.sale_orders(sale, cursor, limit).await
    }

    /// Cancels the shopper's unpaid order; its units are on sale again.
    /// With WeChat Pay, an order with a WeChat Pay order is cancelled only
    /// once that is closed, and closed only under a cancel taken from the
    /// shopper's allowance first (a closed WeChat Pay order cannot be paid
    /// again, so two cancels at once with one left never both close): the
    /// store refuses the cancel if a prepay was recorded after the order
    /// was read, and that WeChat Pay order is closed in turn. WeChat Pay
    /// unreachable fails the cancel (the order stays held), and a payment
    /// that came first makes it `Conflict` (the order is paid); a cancel
    /// that did not happen is given back.
    ///
    /// It runs to its end in a task of its own, even when the request is
    /// dropped (its timeout while WeChat Pay is slow): a cancel taken is
    /// never left with nothing done.
    pub async fn cancel(
        self: &Arc<Self>,
        id: &OrderId,
        shopper: &ShopperId,
    ) -> Result<Order, CancelError> {
        let orders = Arc::clone(self);
        let (id, shopper) = (id.clone(), shopper.clone());
        tokio::spawn(async move { orders.cancel_to_the_end(&id, &shopper).await })
            .await
            .unwrap_or_else(|stopped| {
                Err(StoreError::Unavailable(format!("the cancel stopped: {stopped}")).into())
            })
    }

    /// [`Orders::cancel`], in its own task.
    async fn cancel_to_the_end(
        &self,
        id: &OrderId,
        shopper: &ShopperId,
    ) -> Result<Order, CancelError> {
        let closer = self
            .closer
            .as_ref()
            .filter(|closer| closer.payments.closes_wechatpay_orders());
        let Some(closer) = closer else {
            let order = self.store.cancel_order(id, shopper).await?;
            return Ok(self.cancelled(order).await);
        };
        let order = self.shopper_order(id, shopper).await?;
        let sale = order.sale_id.clone();
        self.store.take_cancel(&sale, shopper).await?;
        match self.close_then_cancel(closer, order, shopper).await {
            Ok(order) => Ok(self.cancelled(order).await),
            Err(CancelFailure::Unknown(err)) => Err(err),
            Err(CancelFailure::NotCancelled(err)) => {
                // No actor remembers a refusal the taken cancel caused
                // (`unpaid_limit_exceeded`), so nothing is announced.
                if let Err(give_back) = self.store.give_back_cancel(&sale, shopper).await {
                    tracing::warn!(%sale, %shopper, error = %give_back,
                        "cannot give back a cancel that did not happen; the shopper has one fewer");
                }
                Err(err)
            }
        }
    }

    /// Under a cancel taken: closes the order's WeChat Pay order, if any,
    /// then cancels it; a prepay recorded meanwhile (once at most: the
    /// first one is kept) is closed in turn.
    async fn close_then_cancel(
        &self,
        closer: &Closer,
        mut order: Order,
        shopper: &ShopperId,
    ) -> Result<Order, CancelFailure> {
        let not_cancelled = |err: CancelError| CancelFailure::NotCancelled(err);
        for _ in 0..2 {
            if let (Some(_), OrderStatus::PendingPayment) = (&order.prepay_id, order.status) {
                let closing = closer.payments.close_wechatpay_order(&order).await;
                if let Closing::Paid = closing.map_err(|err| not_cancelled(err.into()))? {
                    return Err(not_cancelled(
                        StoreError::Conflict(
                            "the order was paid in WeChat Pay before it could be cancelled".into(),
                        )
                        .into(),
                    ));
                }
            }
            let closed = order.prepay_id.as_deref();
            match self
                .store
                .cancel_taken_order(&order.id, shopper, closed)
                .await
            {
                Ok(cancelled) => return Ok(cancelled),
                Err(StoreError::Conflict(why)) if why == PREPAY_CHANGED => {
                    order = self
                        .shopper_order(&order.id, shopper)
                        .await
                        .map_err(|err| not_cancelled(err.into()))?;
                }
                Err(err @ (StoreError::Unavailable(_) | StoreError::Corrupt(_))) => {
                    return Err(CancelFailure::Unknown(err.into()));
                }
                Err(err) => return Err(not_cancelled(err.into())),
            }
        }
        // A prepay id is recorded once, so a second pass always cancels
        // or fails above; the loop is bounded all the same.
        Err(not_cancelled(
            StoreError::Conflict(PREPAY_CHANGED.into()).into(),
        ))
    }

    /// Announces a cancelled order's units back on sale.
    async fn cancelled(&self, order: Order) -> Order {
        self.inventory
            .stock_returned(std::slice::from_ref(&order))
            .await;
        order
    }

    /// The merchant refunds a paid order through `payments` (see
    /// [`Payments::refund`]); units put back on sale are announced to every
    /// engine node's actor, as a cancel's are.
    pub async fn refund(
        &self,
        payments: &Payments,
        id: &OrderId,
        restock: bool,
    ) -> Result<Order, StoreError> {
        let order = payments.refund(id, restock).await?;
        if order.refund == Some(RefundKind::Restocked) {
            self.inventory
                .stock_returned(std::slice::from_ref(&order))
                .await;
        }
        Ok(order)
    }

    /// Expires the sale's unpaid orders past their deadline (store clock),
    /// a reserve call's orders at once, until `limit` orders were looked at
    /// (see [`Store::expire_due`]); their units are on sale again. Those with a
    /// WeChat Pay order are held, and closed first in a task beside the
    /// order service's passes, so a slow WeChat Pay delays no other step
    /// (see `Orders::close_then_expire`): closed, each expires and is
    /// announced on its own; paid first, it is paid; WeChat Pay unreachable,
    /// it stays held and is tried again after its backoff. Answers the
    /// step: `expired` the orders it expired itself.
    pub async fn expire_due(
        self: &Arc<Self>,
        sale: &SaleId,
        limit: usize,
    ) -> Result<Expiry, StoreError> {
        let hold = self
            .closer
            .as_ref()
            .map_or(HOLD_WITHOUT_CLOSER, |closer| closer.settings.hold);
        let step = self.store.expire_due(sale, limit, hold).await?;
        self.returned(sale, &step.expired).await;
        if !step.held.is_empty() {
            let (orders, sale, held) = (Arc::clone(self), sale.clone(), step.held.clone());
            tokio::spawn(async move {
                join_all(
                    held.iter()
                        .map(|order| orders.close_then_announce(&sale, order)),
                )
                .await;
            });
        }
        Ok(step)
    }

    /// Closes then expires one held order, announcing it once expired. A
    /// store call that fails leaves the order held: a later pass takes it
    /// again once its hold runs out.
    async fn close_then_announce(&self, sale: &SaleId, order: &Order) {
        match self.close_then_expire(order).await {
            Ok(Some(expired)) => self.returned(sale, std::slice::from_ref(&expired)).await,
            Ok(None) => {}
            Err(err) => tracing::warn!(%sale, order = %order.id, error = %err,
                "cannot finish the held order's close in the store; it stays held"),
        }
    }

    /// Announces orders expired: their units are on sale again.
    async fn returned(&self, sale: &SaleId, expired: &[Order]) {
        if expired.is_empty() {
            return;
        }
        let now = system_now();
        for order in expired {
            telemetry::observe_expiry_lag(now.saturating_sub(order.expires_at));
        }
        self.inventory.stock_returned(expired).await;
        tracing::info!(%sale, orders = expired.len(), "unpaid orders expired; stock returned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_closes_are_counted_within_a_bound() {
        let sale = SaleId::generate();
        let mut failures = CloseFailures::default();
        let first = OrderId::generate(&sale);
        assert_eq!(failures.count(&first), 1);
        assert_eq!(failures.count(&first), 2);
        for _ in 1..CLOSE_FAILURES_MAX {
            failures.count(&OrderId::generate(&sale));
        }
        assert_eq!(failures.0.len(), CLOSE_FAILURES_MAX);
        assert_eq!(failures.count(&first), 3, "a counted order counts on");
        let newest = OrderId::generate(&sale);
        failures.count(&newest);
        assert_eq!(failures.0.len(), CLOSE_FAILURES_MAX, "one taken out");
        assert_eq!(failures.count(&newest), 2);
        failures.forget(&newest);
        assert_eq!(failures.0.len(), CLOSE_FAILURES_MAX - 1);
    }
}
