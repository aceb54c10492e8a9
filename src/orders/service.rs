//! The order service: a background task that carries every order from its
//! reservation to `paid`, `cancelled`, `expired` or `refund_required`, and
//! returns stock whenever an order does not complete.
//!
//! Every pass of [`OrderService::try_process_batch`], for each sale that may
//! still have work (live, upcoming, or ended with orders not yet settled):
//! 1. **Stream**: reads new reservations from the sale's stream with the
//!    `orders` consumer group, after taking over entries another consumer
//!    left unacknowledged for `claim_idle` (it died), and, after a pass of
//!    the sale that failed (a store error between reading and
//!    acknowledging) or when it starts watching the sale (a restart under
//!    the same name), after reading again its own unacknowledged entries.
//!    Each is accepted once (`accept_orders`: a redelivery changes
//!    nothing), then acknowledged and removed from the stream. Nothing is
//!    acknowledged before it was processed. An entry that cannot be taken
//!    (no such order, or hand-edited or corrupt data) is dropped, logged
//!    and counted, so it holds up no entry after it.
//! 2. **Deadlines**: expires unpaid orders past `expires_at`, a step of
//!    whole reserve calls (their orders share one deadline entry) in one
//!    atomic store call that returns their units; every engine node's
//!    actor is told the stock is back. Orders with a WeChat Pay order are
//!    held there and closed in a task beside the passes (see
//!    [`Orders::expire_due`]), so a slow WeChat Pay delays no other step.
//! 3. **Outbox**: sends the sale's due outbox entries, leased in the store
//!    so a crash or a second node never loses or doubles one beyond
//!    at-least-once: hand-offs to the merchant's webhook (see
//!    [`super::webhook`]) and refund calls to WeChat Pay
//!    ([`Payments::send_refund`]; WeChat Pay's one refund per
//!    `out_refund_no` makes a resend safe), each kept until WeChat Pay
//!    settles the refund, queried meanwhile. Only as many are leased as the
//!    cap on calls in flight lets start at once; the rest stay due in the
//!    outbox for a later pass. Entries in the dead letters are no work
//!    left: a sale with only those settles. An entry nothing here can send
//!    (queued under settings that had its sender) is moved to the dead
//!    letters, to be re-driven once it can be sent; with no sender at all
//!    the outbox is not read each pass, and such entries are moved once
//!    the sale is past its payment window, so it settles.
//!
//! Which sales it looks at: when it starts, every sale of the index (a
//! page at a time; retention bounds it); then, each pass, only the open
//! sales (upcoming, live, or within their payment window, from the store's
//! index of them) that it does not know yet. A sale past its payment
//! window with nothing left to do is settled (the store lists it among its
//! shoppers' sales: [`Store::settle_sale`]): not looked at again unless a
//! payment gives it new work (a notice), and forgotten by the store (its
//! keys deleted) once `retention` has passed since its payment window
//! closed (a campaign's sale: since its campaign's last round's did). Once
//! the last sale of a campaign is forgotten, so are the
//! campaign's own records (also looked for at start, after a crash in
//! between).
//!
//! A campaign round's reminder (`campaign.round_starting`, see
//! [`crate::campaigns::reminders`]) is an outbox entry of the round's first
//! item's sale, due before the sale opens, and leaves the outbox as a
//! hand-off does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use smol_str::SmolStr;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::webhook::{Backoff, GiveUp, Webhook};
use super::Orders;
use crate::campaigns::reminders;
use crate::clock::Clock;
use crate::domain::{CampaignId, Millis, OrderEvent, OrderId, SaleId, SaleState, SaleView};
use crate::payments::wechatpay::CallError;
use crate::payments::{PaymentError, Payments, RefundProgress};
use crate::store::{
    cut_page, Acceptance, Delivery, DeliveryFailure, Errand, Forgetting, Store, StoreError,
    StreamEntry, StreamRead,
};
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
    /// What the pauses between passes, and the check whether a sale's
    /// payment window is over, are timed on.
    pub clock: Arc<dyn Clock>,
    /// How long a settled sale's records are kept after its payment window
    /// closed, before the store deletes them.
    pub retention: Duration,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Reservations accepted for the first time.
    pub accepted: usize,
    /// Reservations that were already accepted (redeliveries), acknowledged
    /// again.
    pub redelivered: usize,
    /// Reservations not taken and dropped from the stream: the store knows
    /// no such order, or the entry cannot be read (written by a build
    /// before batches, or hand-edited or corrupt data). Each is logged.
    pub dropped: usize,
    /// Reservations read again (every order of each stream entry): taken
    /// over from a consumer that stopped acknowledging, or this consumer's
    /// own, left unacknowledged by a pass that failed or by the process
    /// before a restart.
    pub reclaimed: usize,
    /// Orders the expiry steps expired (their stock returned); those held
    /// for their WeChat Pay close expire later, in a task of their own.
    pub expired: usize,
    /// Orders of due payment deadline entries passed over, paid or
    /// cancelled already (see [`crate::store::Expiry::passed_over`]).
    pub passed_over: usize,
    /// Hand-offs leased and sent to the webhook (in the background: the
    /// pass does not wait for the merchant); at most the permits free
    /// under the cap on calls in flight.
    pub handed_off: usize,
    /// Settled sales whose records the store deleted (retention).
    pub forgotten: usize,
    /// Steps that stopped on a store error (retried next pass).
    pub store_errors: usize,
}

impl Outcome {
    /// Whether the pass did anything (another may find more at once).
    pub fn did_work(&self) -> bool {
        self.accepted
            + self.redelivered
            + self.dropped
            + self.expired
            + self.passed_over
            + self.handed_off
            > 0
    }

    fn add(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.redelivered += other.redelivered;
        self.dropped += other.dropped;
        self.reclaimed += other.reclaimed;
        self.expired += other.expired;
        self.passed_over += other.passed_over;
        self.handed_off += other.handed_off;
        self.forgotten += other.forgotten;
        self.store_errors += other.store_errors;
    }
}

/// Sales that got new work while the order service may have stopped
/// watching them (a payment after the sale settled queues a hand-off).
#[derive(Clone, Default)]
pub struct WorkNotices(Arc<Mutex<HashSet<SaleId>>>);

impl WorkNotices {
    pub fn notify(&self, sale: &SaleId) {
        self.0.lock().insert(sale.clone());
    }

    fn take(&self) -> HashSet<SaleId> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// How refund calls leave the outbox (WeChat Pay mode).
#[derive(Debug, Clone, Copy)]
pub struct RefundSettings {
    /// How long a refund's entry is leased for one attempt: longer than the
    /// attempt's calls may take (a query, then the refund call).
    pub lease: Duration,
    /// Waits between failed attempts. A refund is never given up because
    /// of the number of attempts: only WeChat Pay refusing it for good
    /// moves it to the dead letters.
    pub backoff: Backoff,
    /// Waits between two queries of a refund WeChat Pay holds as
    /// `PROCESSING` (counted by the entry's attempts, as failures are).
    pub query_backoff: Backoff,
    /// Most refund calls in flight at once when no webhook is configured
    /// (else they share the webhook's cap).
    pub concurrency: usize,
}

/// The refund side of the outbox.
struct Refunds {
    payments: Arc<Payments>,
    settings: RefundSettings,
    /// One permit per call in flight (no webhook configured).
    sends: Arc<Semaphore>,
}

pub struct OrderService {
    store: Arc<dyn Store>,
    orders: Arc<Orders>,
    webhook: Option<Arc<Webhook>>,
    refunds: Option<Arc<Refunds>>,
    settings: OrderSettings,
    notices: WorkNotices,
    /// Sales that may have work, with when their payment window closes as
    /// last read.
    watched: HashMap<SaleId, Watch>,
    /// Sales with nothing left to do: looked at again only on a notice;
    /// with when the store may forget them (their payment window's close
    /// plus the retention; see [`Self::campaign_forget_at`] for a
    /// campaign's sale).
    settled: HashMap<SaleId, Millis>,
    /// Watched sales whose reservations this consumer may have read and
    /// not acknowledged: each when first watched (the process may have
    /// stopped mid-pass under the same name), during a pass of its stream
    /// until that pass acknowledges what it read, and while its reading of
    /// its own entries fills a batch. The next pass of such a sale reads
    /// them again at once, rather than leaving them until `claim_idle`
    /// passes.
    unacknowledged: HashSet<SaleId>,
    /// Whether the whole index of sales has been read (once, at the first
    /// pass); after it, only the open sales are.
    scanned: bool,
}

impl OrderService {
    pub fn new(
        store: Arc<dyn Store>,
        orders: Arc<Orders>,
        webhook: Option<Webhook>,
        settings: OrderSettings,
    ) -> Self {
        Self {
            store,
            notices: orders.work_notices(),
            orders,
            webhook: webhook.map(Arc::new),
            refunds: None,
            settings,
            watched: HashMap::new(),
            settled: HashMap::new(),
            unacknowledged: HashSet::new(),
            scanned: false,
        }
    }

    /// The same, sending the refund calls of the outbox through
    /// `payments` (WeChat Pay mode).
    pub fn with_refunds(mut self, payments: Arc<Payments>, settings: RefundSettings) -> Self {
        self.refunds = Some(Arc::new(Refunds {
            payments,
            sends: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
        }));
        self
    }

    /// Whether the sale is watched: looked at every pass, not yet settled.
    pub fn watches(&self, sale: &SaleId) -> bool {
        self.watched.contains_key(sale)
    }

    /// Passes until the task is dropped: at once again after a pass that
    /// did work, after `sweep` otherwise. The wake-up of a pause is held
    /// through the pass it starts, so a test that moves a manual clock past
    /// the pause sees that pass done.
    pub async fn run(mut self) {
        let mut wakeup = None;
        loop {
            let outcome = self.try_process_batch().await;
            drop(wakeup.take());
            if !outcome.did_work() {
                wakeup = Some(self.settings.clock.sleep(self.settings.sweep).await);
            }
        }
    }

    /// One pass over every sale that may have work (see the module docs).
    /// Store errors are logged and counted; the work is retried next pass.
    pub async fn try_process_batch(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        for sale in self.notices.take() {
            self.settled.remove(&sale);
            if let Err(err) = self.watch_if_new(sale.clone()).await {
                // Kept for the next pass.
                self.notices.notify(&sale);
                outcome.store_errors += failed(&sale, "watching the sale again", &err);
            }
        }
        if let Err(err) = self.watch_new_sales().await {
            tracing::warn!(error = %err, "order service: cannot list sales");
            outcome.store_errors += 1;
        }
        outcome.add(self.forget_due().await);
        let sales: Vec<SaleId> = self.watched.keys().cloned().collect();
        for sale in sales {
            let done = self.process_sale(&sale).await;
            if !done.did_work() && done.store_errors == 0 {
                self.settle_if_done(&sale).await;
            }
            outcome.add(done);
        }
        outcome
    }

    /// Starts watching the sales it does not know: at the first pass every
    /// sale of the index, then the open ones.
    async fn watch_new_sales(&mut self) -> Result<(), StoreError> {
        if self.scanned {
            for sale in self.store.open_sale_ids().await? {
                self.watch_if_new(sale).await?;
            }
            return Ok(());
        }
        let mut after = None;
        loop {
            let read = self
                .store
                .sale_index(after.as_ref(), INDEX_PAGE + 1)
                .await?;
            let (page, next) = cut_page(read, INDEX_PAGE, Clone::clone);
            for indexed in page {
                self.watch_if_new(indexed.id).await?;
            }
            let Some(next) = next else { break };
            after = Some(next);
        }
        // A campaign whose last sale was forgotten just before a crash is
        // forgotten here.
        for campaign in self.store.campaign_ids().await? {
            self.forget_campaign(&campaign).await;
        }
        self.scanned = true;
        Ok(())
    }

    async fn watch_if_new(&mut self, sale: SaleId) -> Result<(), StoreError> {
        if self.settled.contains_key(&sale) || self.watched.contains_key(&sale) {
            return Ok(());
        }
        // The index is written before the sale: a sale being created is
        // listed a moment before it can be read. Looked at again next pass
        // (an open sale), or at the next start.
        let Some(view) = self.store.view_sale(&sale).await? else {
            // An id that names no sale once its window is over: a crash
            // between indexing and writing the sale, or in the middle of
            // forgetting it (its shoppers, their indexes and its id left).
            // Settled, it is forgotten at once, which finishes either.
            if settled(&sale, self.store.settle_sale(&sale).await) {
                self.settled.insert(sale, self.settings.clock.now());
            }
            return Ok(());
        };
        match last_payment_deadline(&view) {
            Some(settled_by) => {
                match self.store.join_reservations(&sale).await {
                    // Forgotten since it was read: nothing to watch.
                    Err(StoreError::NotFound("sale")) => return Ok(()),
                    joined => joined?,
                }
                let watch = self.watch(settled_by);
                self.unacknowledged.insert(sale.clone());
                self.watched.insert(sale, watch);
            }
            // Cancelled: looked at again next pass while its indexed window
            // is open, else at the next start, if it cannot be settled now.
            None => {
                if settled(&sale, self.store.settle_sale(&sale).await) {
                    let forget_at = self.forget_at(&view);
                    self.settled.insert(sale, forget_at);
                }
            }
        }
        Ok(())
    }

    /// A watch on a sale whose payment window closes at `settled_by`, read
    /// now.
    fn watch(&self, settled_by: Millis) -> Watch {
        let recheck = self.settings.sweep.saturating_mul(RECHECK_SWEEPS);
        let recheck_ms = i64::try_from(recheck.as_millis()).unwrap_or(i64::MAX);
        Watch {
            settled_by,
            recheck_at: self.settings.clock.now().saturating_add(recheck_ms),
        }
    }

    /// When the store may forget the sale: its payment window's close plus
    /// the retention (for a campaign's sale, see also
    /// [`Self::campaign_forget_at`]).
    fn forget_at(&self, view: &SaleView) -> Millis {
        view.sale
            .payment_window_closes_at()
            .saturating_add(self.retention_ms())
    }

    /// When a campaign's sale may be forgotten, whatever its own round:
    /// once the campaign's last round's payment window closed, plus the
    /// retention. Its sales go together, so the campaign stays whole (its
    /// page, its changes, its merchant's stop) while a later round runs,
    /// however far apart its rounds are. `None`: not a campaign's sale, or
    /// its campaign is gone.
    async fn campaign_forget_at(&self, sale: &SaleId) -> Result<Option<Millis>, StoreError> {
        let Some(slot) = sale.campaign() else {
            return Ok(None);
        };
        let Some(stored) = self.store.campaign(&slot.campaign).await? else {
            return Ok(None);
        };
        let campaign = &stored.campaign;
        Ok(Some(
            campaign
                .ends_at()
                .saturating_add(campaign.payment_timeout_secs.saturating_mul(1000))
                .saturating_add(self.retention_ms()),
        ))
    }

    fn retention_ms(&self) -> i64 {
        i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX)
    }

    /// Asks the store to forget the settled sales whose retention has
    /// passed (by this service's clock; the store checks again by its
    /// own, and that the sale is still settled).
    async fn forget_due(&mut self) -> Outcome {
        let now = self.settings.clock.now();
        let due: Vec<SaleId> = self
            .settled
            .iter()
            .filter(|(_, &forget_at)| forget_at <= now)
            .map(|(sale, _)| sale.clone())
            .collect();
        let mut outcome = Outcome::default();
        for sale in due {
            match self.campaign_forget_at(&sale).await {
                Ok(Some(later)) if later > now => {
                    self.settled.insert(sale, later);
                    continue;
                }
                Ok(_) => {}
                // Asked again later, not every pass: retention can wait.
                Err(err) => {
                    outcome.store_errors += failed(&sale, "reading the sale's campaign", &err);
                    self.settled
                        .insert(sale, now.saturating_add(FORGET_RECHECK_MS));
                    continue;
                }
            }
            match self.store.forget_sale(&sale, self.settings.retention).await {
                Ok(Forgetting::Forgotten) => {
                    tracing::info!(%sale, "retention: sale settled and its records deleted");
                    telemetry::count_sales_forgotten();
                    self.settled.remove(&sale);
                    outcome.forgotten += 1;
                    outcome.store_errors += self.forget_campaign_of(&sale).await;
                }
                Ok(Forgetting::Gone) => {
                    self.settled.remove(&sale);
                    outcome.store_errors += self.forget_campaign_of(&sale).await;
                }
                // Not yet by the store's clock, or it has work again (a
                // notice will wake it): asked again next pass.
                Ok(Forgetting::Kept) => {}
                Ok(Forgetting::Owed) => {
                    tracing::warn!(%sale, "retention: a refund WeChat Pay refused is among the \
                        sale's dead letters; the sale is kept until it is re-driven and made, or \
                        settled by hand");
                    if let Some(forget_at) = self.settled.get_mut(&sale) {
                        *forget_at = now.saturating_add(FORGET_RECHECK_MS);
                    }
                }
                Err(err) => outcome.store_errors += failed(&sale, "forgetting the sale", &err),
            }
        }
        outcome
    }

    /// Once a campaign's sale is forgotten, asks the store to forget the
    /// campaign's own records too: it does when no sale of the campaign is
    /// left (the last one forgotten) and the campaign's retention has
    /// passed. Returns the store errors (0 or 1).
    async fn forget_campaign_of(&self, sale: &SaleId) -> usize {
        match sale.campaign() {
            Some(slot) => self.forget_campaign(&slot.campaign).await,
            None => 0,
        }
    }

    /// Asks the store to forget a campaign's own records (see
    /// [`Store::forget_campaign`]); returns the store errors (0 or 1).
    async fn forget_campaign(&self, campaign: &CampaignId) -> usize {
        match self.store.forget_campaign(campaign).await {
            Ok(Forgetting::Forgotten) => {
                tracing::info!(%campaign, "retention: every sale of the campaign forgotten; its records deleted");
                0
            }
            Ok(Forgetting::Kept | Forgetting::Owed | Forgetting::Gone) => 0,
            Err(err) => {
                tracing::warn!(%campaign, error = %err,
                    "order service: cannot forget a campaign; asked again at the next start");
                1
            }
        }
    }

    /// Stops watching a sale whose pass found nothing, once no order of it
    /// can still be unpaid and the store holds nothing left to do for it.
    /// The window is read again once it seems closed, and every
    /// [`RECHECK_SWEEPS`] sweeps before that: a merchant may have ended
    /// the sale early, on any node.
    async fn settle_if_done(&mut self, sale: &SaleId) {
        let Some(watch) = self.watched.get(sale) else {
            return;
        };
        let now = self.settings.clock.now();
        if now <= watch.settled_by && now < watch.recheck_at {
            return;
        }
        let checked = async {
            let view = self.store.view_sale(sale).await?;
            let backlog = self.store.order_backlog(sale).await?;
            Ok::<_, StoreError>((view, backlog))
        }
        .await;
        match checked {
            Ok((view, backlog)) => {
                let settled_by = view.as_ref().and_then(last_payment_deadline);
                match settled_by {
                    Some(settled_by) if self.settings.clock.now() <= settled_by => {
                        let watch = self.watch(settled_by);
                        self.watched.insert(sale.clone(), watch);
                    }
                    _ if backlog.is_empty() => {
                        if !settled(sale, self.store.settle_sale(sale).await) {
                            return;
                        }
                        self.watched.remove(sale);
                        self.unacknowledged.remove(sale);
                        // A sale gone meanwhile (forgotten by another
                        // node) is simply no longer watched.
                        if let Some(view) = view {
                            let forget_at = self.forget_at(&view);
                            self.settled.insert(sale.clone(), forget_at);
                        }
                    }
                    _ if backlog.hand_offs > 0 && self.sends_nothing() => {
                        if let Err(err) = self.dead_letter_unsendable(sale).await {
                            failed(sale, "moving unsendable hand-offs", &err);
                        }
                    }
                    _ => tracing::debug!(%sale, ?backlog,
                        "sale past its payment window still has work"),
                }
            }
            Err(err) => tracing::warn!(%sale, error = %err, "order service: cannot read sale"),
        }
    }

    /// The three steps of a sale's pass, each on its own: one failing (say a
    /// lost consumer group) does not hold up the others.
    async fn process_sale(&mut self, sale: &SaleId) -> Outcome {
        let mut outcome = Outcome::default();
        match self.process_reservations(sale).await {
            Ok(done) => outcome.add(done),
            // Forgotten meanwhile, by another node's retention: nothing is
            // left to watch.
            Err(StoreError::NotFound("sale")) => {
                self.watched.remove(sale);
                self.unacknowledged.remove(sale);
                return outcome;
            }
            Err(err) => outcome.store_errors += failed(sale, "reading reservations", &err),
        }
        match self.orders.expire_due(sale, self.settings.batch).await {
            Ok(step) => {
                outcome.expired = step.expired.len();
                outcome.passed_over = step.passed_over;
            }
            Err(err) => outcome.store_errors += failed(sale, "expiring orders", &err),
        }
        if self.webhook.is_some() || self.refunds.is_some() {
            match self.hand_off(sale).await {
                Ok(sent) => outcome.handed_off = sent,
                Err(err) => outcome.store_errors += failed(sale, "leasing hand-offs", &err),
            }
        }
        outcome
    }

    /// Reads again its own unacknowledged entries (see
    /// [`Self::unacknowledged`]), takes over stale ones, reads new ones,
    /// accepts each, and acknowledges those accepted.
    async fn process_reservations(&mut self, sale: &SaleId) -> Result<Outcome, StoreError> {
        // Marked for the whole pass: a store error below leaves it marked.
        let reread = !self.unacknowledged.insert(sale.clone());
        let consumer = self.settings.consumer.as_str();
        let batch = self.settings.batch;
        let mut reclaimed = if reread {
            self.store
                .read_reservations(sale, consumer, StreamRead::OwnPending, batch)
                .await?
        } else {
            Vec::new()
        };
        // A full batch of its own may have left more behind.
        let own_left = entry_count(&reclaimed) >= batch;
        let own: HashSet<SmolStr> = reclaimed.iter().map(|entry| entry.id.clone()).collect();
        let claimed = self
            .store
            .claim_reservations(sale, consumer, self.settings.claim_idle, batch)
            .await?;
        // Under a `claim_idle` shorter than the read just now, what it read
        // of its own is idle enough to be claimed again.
        reclaimed.extend(claimed.into_iter().filter(|entry| !own.contains(&entry.id)));
        let fresh = self
            .store
            .read_reservations(sale, consumer, StreamRead::New, batch)
            .await?;
        let mut outcome = Outcome {
            reclaimed: reclaimed.len(),
            ..Outcome::default()
        };
        let entries: Vec<StreamEntry> = reclaimed.into_iter().chain(fresh).collect();
        if entries.is_empty() {
            self.unacknowledged.remove(sale);
            return Ok(outcome);
        }
        // An entry carries the orders of one reserve call (up to the
        // actor's batch) and is accepted whole, so a call takes about
        // `batch` orders, never part of an entry: one script call never
        // holds Redis for long.
        let mut acceptances = Vec::with_capacity(entries.len());
        let mut rest = entries.as_slice();
        while !rest.is_empty() {
            let mut end = batch.min(rest.len());
            while end < rest.len() && rest[end].id == rest[end - 1].id {
                end += 1;
            }
            let (chunk, after) = rest.split_at(end);
            acceptances.extend(
                self.store
                    .accept_orders(sale, chunk, self.webhook.is_some())
                    .await?,
            );
            rest = after;
        }
        for (entry, acceptance) in entries.iter().zip(&acceptances) {
            match acceptance {
                Acceptance::Queued => outcome.accepted += 1,
                Acceptance::Unchanged => outcome.redelivered += 1,
                // Nothing to carry: keeping the entry would only redeliver
                // it forever, and hold up the sale's entries after it.
                Acceptance::NotFound => {
                    outcome.dropped += 1;
                    let order = entry.order_id.as_ref().map(OrderId::as_str);
                    tracing::error!(%sale, order = order.unwrap_or("unreadable"),
                        entry = %entry.id, "reservation cannot be taken (no such order, an \
                        entry of a build before batches, or one that cannot be read); \
                        dropping the entry");
                }
            }
        }
        let mut processed: Vec<SmolStr> = entries.into_iter().map(|entry| entry.id).collect();
        // The orders of one entry are read side by side.
        processed.dedup();
        self.store.ack_reservations(sale, &processed).await?;
        if !own_left {
            self.unacknowledged.remove(sale);
        }
        telemetry::count_orders_accepted(outcome.accepted);
        telemetry::count_orders_dropped(outcome.dropped);
        Ok(outcome)
    }

    /// Leases the sale's due hand-offs and sends them in the background,
    /// so a slow webhook never holds up reservations or expiry; returns how
    /// many were leased. The permits of the cap on calls in flight are
    /// taken first and only that many hand-offs leased, each send holding
    /// one: a leased hand-off never waits for a permit, so its lease (twice
    /// the call's timeout) runs from when its call starts. With no permit
    /// free, nothing is leased. A send that fails is postponed by its
    /// backoff or dead-lettered; one lost with this process is sent again
    /// when its lease runs out.
    async fn hand_off(&self, sale: &SaleId) -> Result<usize, StoreError> {
        let Some(mut permits) = self.free_sends() else {
            return Ok(0);
        };
        let lease = self
            .webhook
            .as_ref()
            .map(|webhook| webhook.lease())
            .into_iter()
            .chain(self.refunds.as_ref().map(|refunds| refunds.settings.lease))
            .max()
            .unwrap_or_default();
        let due = self
            .store
            .claim_deliveries(sale, permits.num_permits(), lease)
            .await?;
        let leased = due.len();
        // One permit per send; the rest are freed here.
        let sends: Vec<_> = due
            .into_iter()
            .filter_map(|delivery| Some((delivery, permits.split(1)?)))
            .collect();
        if leased > 0 {
            let senders = Senders {
                store: Arc::clone(&self.store),
                webhook: self.webhook.clone(),
                refunds: self.refunds.clone(),
            };
            let sale = sale.clone();
            tokio::spawn(async move {
                join_all(sends.into_iter().map(|(delivery, permit)| {
                    let (senders, sale) = (&senders, &sale);
                    async move {
                        senders.send(sale, &delivery).await;
                        drop(permit);
                    }
                }))
                .await;
            });
        }
        Ok(leased)
    }

    /// Whether this engine has no sender for any outbox entry (neither a
    /// webhook nor WeChat Pay refunds): then no pass reads the outbox.
    fn sends_nothing(&self) -> bool {
        self.webhook.is_none() && self.refunds.is_none()
    }

    /// Moves the sale's due outbox entries, queued under a configuration
    /// that had a sender, to the dead letters (a batch a call), so a sale
    /// past its payment window settles; re-driven once a sender is back.
    async fn dead_letter_unsendable(&self, sale: &SaleId) -> Result<(), StoreError> {
        let due = self
            .store
            .claim_deliveries(sale, self.settings.batch, UNSENDABLE_LEASE)
            .await?;
        let senders = Senders {
            store: Arc::clone(&self.store),
            webhook: None,
            refunds: None,
        };
        for delivery in &due {
            senders.send(sale, delivery).await;
        }
        Ok(())
    }

    /// Permits for up to a batch of outbox sends: the webhook's cap on
    /// calls in flight when one is configured, else the refunds' own.
    fn free_sends(&self) -> Option<OwnedSemaphorePermit> {
        let most = self.settings.batch;
        match (&self.webhook, &self.refunds) {
            (Some(webhook), _) => webhook.free_sends(most),
            (None, Some(refunds)) => {
                let free = u32::try_from(refunds.sends.available_permits().min(most)).ok()?;
                if free == 0 {
                    return None;
                }
                Arc::clone(&refunds.sends).try_acquire_many_owned(free).ok()
            }
            (None, None) => None,
        }
    }
}

/// What sends the outbox's entries, each kind to its place.
struct Senders {
    store: Arc<dyn Store>,
    webhook: Option<Arc<Webhook>>,
    refunds: Option<Arc<Refunds>>,
}

impl Senders {
    /// Sends one leased entry and records the result.
    async fn send(&self, sale: &SaleId, delivery: &Delivery) {
        match (&delivery.errand, &self.webhook, &self.refunds) {
            (Errand::Order(OrderEvent::Refund, order_id), _, Some(refunds)) => {
                self.refund(refunds, sale, order_id, delivery).await;
            }
            (Errand::Order(OrderEvent::Refund, _), _, None) => {
                self.unsendable(sale, delivery, "WeChat Pay is not configured")
                    .await;
            }
            (_, Some(webhook), _) => deliver(&self.store, webhook, sale, delivery).await,
            (_, None, _) => {
                self.unsendable(sale, delivery, "no webhook is configured")
                    .await;
            }
        }
    }

    /// Sends one order's refund call, or queries the refund (see
    /// [`Payments::send_refund`]): done once WeChat Pay settled it (or the
    /// order awaits none); postponed by the query backoff while it is
    /// `PROCESSING`, and by the failure backoff while WeChat Pay cannot be
    /// reached (or answers what cannot be believed); dead-lettered when
    /// WeChat Pay refuses it for good. The entry stays in the outbox until
    /// then, so its sale is neither settled nor forgotten meanwhile.
    async fn refund(
        &self,
        refunds: &Refunds,
        sale: &SaleId,
        order_id: &OrderId,
        delivery: &Delivery,
    ) {
        let sent = refunds
            .payments
            .send_refund(order_id, delivery.attempt)
            .await;
        let recorded = match &sent {
            Ok(RefundProgress::Done) => self.store.delivered(sale, delivery).await,
            Ok(RefundProgress::Processing) => {
                let after = refunds.settings.query_backoff.after(delivery.attempt);
                tracing::info!(%sale, order = %order_id, attempt = delivery.attempt,
                    query_in_ms = after.as_millis(), "refund processing at WeChat Pay; will ask again");
                telemetry::count_refund("processing");
                self.store.postpone_delivery(sale, delivery, after).await
            }
            Err(PaymentError::WeChatPay(CallError::Refused {
                status,
                code,
                message,
                ..
            })) => {
                tracing::error!(%sale, order = %order_id, %code, %message,
                    "WeChat Pay refused the refund; moved to the dead letters");
                let failure = DeliveryFailure {
                    status: Some(*status),
                    error: format!("WeChat Pay refused the refund: {code}: {message}"),
                };
                let moved = self.store.dead_letter(sale, delivery, &failure).await;
                if let Ok(true) = moved {
                    telemetry::count_webhook_dead_letter(GiveUp::Refused.as_str());
                }
                moved.map(|_| ())
            }
            Err(err) => {
                let after = refunds.settings.backoff.after(delivery.attempt);
                tracing::warn!(%sale, order = %order_id, attempt = delivery.attempt,
                    error = %err, retry_in_ms = after.as_millis(), "refund call failed; will retry");
                telemetry::count_refund("call_failed");
                self.store.postpone_delivery(sale, delivery, after).await
            }
        };
        if let Err(err) = recorded {
            // The lease runs out and the refund is sent again, safely.
            tracing::warn!(%sale, order = %order_id, error = %err,
                "cannot record a refund call's result");
        }
    }

    /// An entry nothing here can send (the engine's settings changed since
    /// it was queued): kept in the dead letters for an operator to
    /// re-drive once it can be sent.
    async fn unsendable(&self, sale: &SaleId, delivery: &Delivery, why: &str) {
        tracing::error!(%sale, errand = %delivery.errand, why,
            "outbox entry cannot be sent; moved to the dead letters");
        let failure = DeliveryFailure {
            status: None,
            error: why.to_owned(),
        };
        match self.store.dead_letter(sale, delivery, &failure).await {
            Ok(true) => telemetry::count_webhook_dead_letter(GiveUp::Unsendable.as_str()),
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(%sale, error = %err, "cannot move an outbox entry to the dead letters");
            }
        }
    }
}

/// How long an entry no sender can take is leased while it is moved to
/// the dead letters (in the same pass: only a crash lets it run out).
const UNSENDABLE_LEASE: Duration = Duration::from_secs(30);

/// Sales read from the index of every sale per store call, at start.
const INDEX_PAGE: usize = 1000;

/// Sweeps between two reads of a watched sale's window while it seems
/// open.
const RECHECK_SWEEPS: u32 = 10;

/// How long a sale kept from retention by a dead refund (its dead letters
/// are read at each ask), or whose campaign could not be read, waits
/// before it is asked about again (ms).
const FORGET_RECHECK_MS: Millis = 60 * 60 * 1000;

/// How many stream entries these are: the orders of one entry are read
/// side by side.
fn entry_count(entries: &[StreamEntry]) -> usize {
    entries.chunk_by(|a, b| a.id == b.id).count()
}

/// A watched sale's payment window as last read.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// When no order of it can still be unpaid (its end plus one payment
    /// timeout).
    settled_by: Millis,
    /// When to read the window again, should it still seem open.
    recheck_at: Millis,
}

/// When the sale can have no unpaid order left (`None`: cancelled before
/// it started, so it never had one).
fn last_payment_deadline(view: &SaleView) -> Option<Millis> {
    if view.sale.state == SaleState::Cancelled {
        return None;
    }
    Some(view.sale.payment_window_closes_at())
}

/// Whether the store settled the sale; logs why not (tried again later:
/// another node settling it, or the store's clock behind this node's, is
/// expected).
fn settled(sale: &SaleId, outcome: Result<(), StoreError>) -> bool {
    match outcome {
        Ok(()) => true,
        Err(StoreError::Conflict(why)) => {
            tracing::debug!(%sale, why, "sale not settled yet");
            false
        }
        Err(err) => {
            tracing::warn!(%sale, error = %err, "order service: cannot settle sale; retrying");
            false
        }
    }
}

/// Logs a failed step of a sale's pass; counts as one store error.
fn failed(sale: &SaleId, step: &str, err: &StoreError) -> usize {
    tracing::warn!(%sale, step, error = %err, "order service step failed; retrying next pass");
    1
}

/// Sends one leased hand-off and records the result: delivered,
/// postponed by its backoff, or (see [`Webhook::gives_up`]) moved to the
/// sale's dead letters. A round's reminder with nothing left to remind of
/// (see [`reminders::read`]) leaves the outbox unsent.
async fn deliver(store: &Arc<dyn Store>, webhook: &Webhook, sale: &SaleId, delivery: &Delivery) {
    let unanswered = |error: String| DeliveryFailure {
        status: None,
        error,
    };
    let errand = &delivery.errand;
    let sent = match errand {
        Errand::Order(event, order_id) => match store.order(order_id).await {
            Ok(Some(order)) => webhook
                .send(*event, &order)
                .await
                .map_err(|err| DeliveryFailure::from(&err)),
            Ok(None) => Err(unanswered("the order is gone".to_owned())),
            Err(err) => Err(unanswered(err.to_string())),
        },
        Errand::RoundStarting => match reminders::read(store.as_ref(), sale).await {
            Ok(Some(reminder)) => webhook
                .post(
                    errand.event(),
                    &reminder.idempotency_key(),
                    &reminder.body(),
                )
                .await
                .map_err(|err| DeliveryFailure::from(&err)),
            Ok(None) => {
                tracing::info!(%sale, "round called off; its reminder is dropped unsent");
                if let Err(err) = store.delivered(sale, delivery).await {
                    tracing::warn!(%sale, error = %err, "cannot drop a called-off round's reminder");
                }
                return;
            }
            Err(err) => Err(unanswered(err.to_string())),
        },
    };
    let recorded = match &sent {
        Ok(()) => store.delivered(sale, delivery).await,
        Err(failure) => match webhook.gives_up(delivery.attempt, failure) {
            Some(why) => {
                tracing::warn!(%sale, %errand, attempt = delivery.attempt, reason = %failure.error,
                    why = why.as_str(), "webhook call failed for good; hand-off moved to the dead letters");
                let moved = store.dead_letter(sale, delivery, failure).await;
                if let Ok(true) = moved {
                    telemetry::count_webhook_dead_letter(why.as_str());
                }
                moved.map(|_| ())
            }
            None => {
                tracing::warn!(%sale, %errand, attempt = delivery.attempt, reason = %failure.error,
                    "webhook call failed; will retry");
                store
                    .postpone_delivery(sale, delivery, webhook.backoff(delivery.attempt))
                    .await
            }
        },
    };
    telemetry::count_webhook_call(sent.is_ok());
    if let Err(err) = recorded {
        // The lease runs out and the hand-off is sent again: at least once.
        tracing::warn!(%sale, %errand, error = %err, "cannot record a webhook call's result");
    }
}
