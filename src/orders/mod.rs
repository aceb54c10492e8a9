//! The order service: carries every order from its reservation to `paid`,
//! `cancelled`, `expired` or `refund_required`, and returns stock whenever
//! an order does not complete.
//!
//! Every pass of [`OrderService::try_process_batch`], for each sale that may
//! still have work (live, upcoming, or ended with orders not yet settled):
//! 1. **Stream**: reads new reservations from the sale's stream with the
//!    `orders` consumer group, after taking over entries another consumer
//!    left unacknowledged for `claim_idle` (it died). Each is accepted once
//!    by order id (`accept_orders`: a redelivery changes nothing), then
//!    acknowledged and removed from the stream. Nothing is acknowledged
//!    before it was processed.
//! 2. **Deadlines**: expires unpaid orders past `expires_at`, each in one
//!    atomic store step that returns its units; every engine node's actor
//!    is told the stock is back.
//! 3. **Hand-offs**: sends due webhook calls (see [`webhook`]), leased in
//!    the store so a crash or a second node never loses or doubles one
//!    beyond at-least-once.
//!
//! Payments ([`Payments`]) and cancellations change orders through the same
//! store scripts, so a payment, a cancel and an expiry of one order are
//! decided once, by whichever reaches the store first.

pub mod webhook;
pub mod wechatpay;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use self::webhook::Webhook;
use self::wechatpay::WeChatPayVerifier;
use crate::domain::{system_now, Millis, OrderId, SaleId, SaleState};
use crate::inventory::Inventory;
use crate::store::{Acceptance, Delivery, Payment, PaymentOutcome, Store, StoreError, StreamEntry};
use crate::telemetry;

/// How the order service works through its sales.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// Pause between passes that found nothing to do.
    pub sweep: Duration,
    /// Most reservations, expiries and hand-offs per sale per pass.
    pub batch: usize,
    /// Reservations another consumer left unacknowledged this long are
    /// taken over.
    pub claim_idle: Duration,
    /// This consumer's name in the consumer groups: unique per process.
    pub consumer: String,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Reservations accepted for the first time.
    pub accepted: usize,
    /// Entries that were already accepted (redeliveries), acknowledged again.
    pub redelivered: usize,
    /// Entries taken over from a consumer that stopped acknowledging.
    pub reclaimed: usize,
    /// Orders expired (their stock returned).
    pub expired: usize,
    /// Hand-offs the merchant acknowledged.
    pub delivered: usize,
    /// Hand-offs that failed and will be retried.
    pub delivery_failures: usize,
    /// Sales whose pass stopped on a store error (retried next pass).
    pub store_errors: usize,
}

impl Outcome {
    /// Whether the pass did anything (another may find more at once).
    pub fn did_work(&self) -> bool {
        self.accepted + self.redelivered + self.expired + self.delivered > 0
    }

    fn add(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.redelivered += other.redelivered;
        self.reclaimed += other.reclaimed;
        self.expired += other.expired;
        self.delivered += other.delivered;
        self.delivery_failures += other.delivery_failures;
        self.store_errors += other.store_errors;
    }
}

/// A sale the service works on until it has nothing left to settle.
struct Watched {
    /// After this (store clock), no order of the sale can still be unpaid:
    /// its end plus one payment timeout.
    settled_by: Millis,
    /// The consumer group exists on its stream.
    joined: bool,
}

pub struct OrderService {
    store: Arc<dyn Store>,
    inventory: Arc<Inventory>,
    webhook: Option<Webhook>,
    settings: OrderSettings,
    watched: HashMap<SaleId, Watched>,
    /// Sales settled for good: never looked at again by this process.
    settled: HashSet<SaleId>,
}

impl OrderService {
    pub fn new(
        store: Arc<dyn Store>,
        inventory: Arc<Inventory>,
        webhook: Option<Webhook>,
        settings: OrderSettings,
    ) -> Self {
        Self {
            store,
            inventory,
            webhook,
            settings,
            watched: HashMap::new(),
            settled: HashSet::new(),
        }
    }

    /// Passes until the task is dropped: at once again after a pass that
    /// did work, after `sweep` otherwise.
    pub async fn run(mut self) {
        loop {
            let outcome = self.try_process_batch().await;
            if !outcome.did_work() {
                tokio::time::sleep(self.settings.sweep).await;
            }
        }
    }

    /// One pass over every sale that may have work (see the module docs).
    /// Store errors are logged and counted; the work is retried next pass.
    pub async fn try_process_batch(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        if let Err(err) = self.watch_new_sales().await {
            tracing::warn!(error = %err, "order service: cannot list sales");
            outcome.store_errors += 1;
        }
        let sales: Vec<SaleId> = self.watched.keys().cloned().collect();
        for sale in sales {
            match self.process_sale(&sale).await {
                Ok(done) => {
                    if !done.did_work() {
                        self.settle_if_done(&sale).await;
                    }
                    outcome.add(done);
                }
                Err(err) => {
                    tracing::warn!(%sale, error = %err, "order service: pass failed; retrying");
                    outcome.store_errors += 1;
                }
            }
        }
        outcome
    }

    async fn watch_new_sales(&mut self) -> Result<(), StoreError> {
        for sale in self.store.sale_ids().await? {
            if self.settled.contains(&sale) || self.watched.contains_key(&sale) {
                continue;
            }
            if let Some(settled_by) = self.settled_by(&sale).await? {
                self.watched.insert(
                    sale,
                    Watched {
                        settled_by,
                        joined: false,
                    },
                );
            }
        }
        Ok(())
    }

    /// When the sale can have no unpaid order left (`None`: cancelled
    /// before it started, or gone: it never had one).
    async fn settled_by(&self, sale: &SaleId) -> Result<Option<Millis>, StoreError> {
        let Some(view) = self.store.view_sale(sale).await? else {
            return Ok(None);
        };
        if view.sale.state == SaleState::Cancelled {
            return Ok(None);
        }
        Ok(Some(view.sale.ends_at.saturating_add(
            view.sale.payment_timeout_secs.saturating_mul(1000),
        )))
    }

    /// Stops watching a sale whose pass found nothing, once no order of it
    /// can still be unpaid (its end may have moved: read it again).
    async fn settle_if_done(&mut self, sale: &SaleId) {
        let Some(watched) = self.watched.get(sale) else {
            return;
        };
        if system_now() <= watched.settled_by {
            return;
        }
        match self.settled_by(sale).await {
            Ok(Some(settled_by)) if system_now() <= settled_by => {
                if let Some(watched) = self.watched.get_mut(sale) {
                    watched.settled_by = settled_by;
                }
            }
            Ok(_) => {
                self.watched.remove(sale);
                self.settled.insert(sale.clone());
            }
            Err(err) => tracing::warn!(%sale, error = %err, "order service: cannot read sale"),
        }
    }

    async fn process_sale(&mut self, sale: &SaleId) -> Result<Outcome, StoreError> {
        if let Some(watched) = self.watched.get_mut(sale) {
            if !watched.joined {
                self.store.join_reservations(sale).await?;
                watched.joined = true;
            }
        }
        let mut outcome = self.process_reservations(sale).await?;
        outcome.expired = self.expire_due(sale).await?;
        if let Some(webhook) = &self.webhook {
            let (delivered, failed) = self.hand_off(webhook, sale).await?;
            outcome.delivered = delivered;
            outcome.delivery_failures = failed;
        }
        Ok(outcome)
    }

    /// Takes over stale entries, reads new ones, accepts each, and
    /// acknowledges those accepted.
    async fn process_reservations(&self, sale: &SaleId) -> Result<Outcome, StoreError> {
        let consumer = self.settings.consumer.as_str();
        let batch = self.settings.batch;
        let reclaimed = self
            .store
            .claim_reservations(sale, consumer, self.settings.claim_idle, batch)
            .await?;
        let fresh = self.store.read_reservations(sale, consumer, batch).await?;
        let mut outcome = Outcome {
            reclaimed: reclaimed.len(),
            ..Outcome::default()
        };
        let entries: Vec<StreamEntry> = reclaimed.into_iter().chain(fresh).collect();
        if entries.is_empty() {
            return Ok(outcome);
        }
        let ids: Vec<OrderId> = entries.iter().map(|entry| entry.order_id.clone()).collect();
        let acceptances = self
            .store
            .accept_orders(sale, &ids, self.webhook.is_some())
            .await?;
        for (entry, acceptance) in entries.iter().zip(&acceptances) {
            match acceptance {
                Acceptance::Queued => outcome.accepted += 1,
                Acceptance::Unchanged => outcome.redelivered += 1,
                // Nothing to carry: keeping the entry would only redeliver
                // it forever.
                Acceptance::NotFound => tracing::error!(%sale, order = %entry.order_id,
                    entry = %entry.id, "reservation names no order; dropping the entry"),
            }
        }
        let processed: Vec<String> = entries.into_iter().map(|entry| entry.id).collect();
        self.store.ack_reservations(sale, &processed).await?;
        telemetry::count_orders_accepted(outcome.accepted);
        Ok(outcome)
    }

    async fn expire_due(&self, sale: &SaleId) -> Result<usize, StoreError> {
        let expired = self.store.expire_due(sale, self.settings.batch).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let now = system_now();
        for order in &expired {
            telemetry::observe_expiry_lag(now.saturating_sub(order.expires_at));
        }
        self.inventory.stock_returned(&expired).await;
        tracing::info!(%sale, orders = expired.len(), "unpaid orders expired; stock returned");
        Ok(expired.len())
    }

    /// Sends the sale's due hand-offs at once; returns (delivered, failed).
    async fn hand_off(
        &self,
        webhook: &Webhook,
        sale: &SaleId,
    ) -> Result<(usize, usize), StoreError> {
        let due = self
            .store
            .claim_deliveries(sale, self.settings.batch, webhook.lease())
            .await?;
        let results = join_all(due.iter().map(|delivery| self.deliver(webhook, delivery))).await;
        let mut delivered = 0;
        for (delivery, result) in due.iter().zip(results) {
            match result {
                Ok(()) => {
                    delivered += 1;
                    self.store.delivered(sale, delivery).await?;
                }
                Err(reason) => {
                    tracing::warn!(%sale, order = %delivery.order_id, event = delivery.event.as_str(),
                        attempt = delivery.attempt, %reason, "webhook call failed; will retry");
                    self.store
                        .postpone_delivery(sale, delivery, webhook.backoff(delivery.attempt))
                        .await?;
                }
            }
        }
        telemetry::count_webhook_calls(delivered, due.len() - delivered);
        Ok((delivered, due.len() - delivered))
    }

    async fn deliver(&self, webhook: &Webhook, delivery: &Delivery) -> Result<(), String> {
        let order = self
            .store
            .order(&delivery.order_id)
            .await
            .map_err(|err| err.to_string())?
            .ok_or_else(|| "the order is gone".to_owned())?;
        webhook
            .send(delivery.event, &order)
            .await
            .map_err(|err| err.to_string())
    }
}

/// How payments are taken: the WeChat Pay verifier, or simulated.
pub enum PaymentMethod {
    WeChatPay(Box<WeChatPayVerifier>),
    Simulated,
}

/// Pays orders through the store's one payment step, for every way a
/// payment arrives.
pub struct Payments {
    store: Arc<dyn Store>,
    method: PaymentMethod,
    /// Queue a hand-off to the merchant's webhook (one is configured).
    hand_off: bool,
}

impl Payments {
    pub fn new(store: Arc<dyn Store>, method: PaymentMethod, hand_off: bool) -> Self {
        Self {
            store,
            method,
            hand_off,
        }
    }

    pub fn method(&self) -> &PaymentMethod {
        &self.method
    }

    /// Applies a payment to its order and logs what it did.
    pub async fn pay(
        &self,
        order_id: &OrderId,
        payment: &Payment,
    ) -> Result<PaymentOutcome, StoreError> {
        let outcome = self
            .store
            .pay_order(order_id, payment, self.hand_off)
            .await?;
        let transaction = payment.transaction_id.as_str();
        match &outcome {
            PaymentOutcome::Paid(_) => {
                tracing::info!(order = %order_id, transaction, "order paid");
            }
            PaymentOutcome::Unchanged(order) => {
                tracing::info!(order = %order_id, transaction, status = order.status.as_str(),
                    "repeated payment notification; nothing changed");
            }
            PaymentOutcome::RefundRequired(order) => {
                tracing::warn!(order = %order_id, transaction, amount_cents = order.amount_cents,
                    "payment arrived after the order expired or was cancelled: refund required");
            }
            PaymentOutcome::AmountMismatch(order) => {
                tracing::error!(order = %order_id, transaction, expected = order.amount_cents,
                    paid = ?payment.amount, "payment amount differs from the order's; refused");
            }
        }
        telemetry::count_payment(outcome_name(&outcome));
        Ok(outcome)
    }
}

fn outcome_name(outcome: &PaymentOutcome) -> &'static str {
    match outcome {
        PaymentOutcome::Paid(_) => "paid",
        PaymentOutcome::Unchanged(_) => "unchanged",
        PaymentOutcome::RefundRequired(_) => "refund_required",
        PaymentOutcome::AmountMismatch(_) => "amount_mismatch",
    }
}
