//! The inventory actors: one actix actor per sale holds that sale's state in
//! memory (window, a local view of the stock, shoppers known to be at their
//! limit) and answers what it can without a store round trip. Only requests
//! that may succeed reach the store, which stays the source of truth.
//!
//! Actors run on a few dedicated threads (actix arbiters, see `system`);
//! the [`Inventory`] routes each request to its sale's actor by id, starting
//! the actor on first use (an actor with no reservation for `idle_stop`
//! retires), and bounds every queue: a full mailbox answers `overloaded` at
//! once.
//!
//! A finished sale has no actor: once a read of the sale shows it certainly
//! over (see [`certainly_finished`]) the sale joins a bounded per-node
//! record, and its requests are answered `ended` at once (a request with an
//! `Idempotency-Key` may be the retry of one that succeeded: it goes to the
//! store, still without an actor). An actor whose refresh finds its sale
//! finished records it and retires.
//!
//! # Layout
//! - `actor`: one sale's actor: its lifecycle, timers and store calls.
//! - `memory`: what an actor believes and when it is certain (no I/O).
//! - `batching`: the queue of reservations waiting for store calls.
//! - `board`: the sold-out board the front door reads without a hop.
//! - `inbox`: what reaches an actor, and when its thread is woken for it.
//! - `system`: the actix threads the actors run on.

mod actor;
mod batching;
mod board;
mod inbox;
mod memory;
mod system;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use tokio::sync::oneshot;

pub use self::actor::ActorSettings;
use self::actor::SaleActor;
use self::board::SoldOutBoard;
use self::inbox::{Inbox, Mail, Refused, TakeIn};
use self::memory::TimedView;
use self::system::ActorSystem;
use crate::domain::{Millis, Order, Rejection, SaleId, SaleState, SaleView};
use crate::domain::{OrderAsk, Reservation, ReserveRequest, StockReturn};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// Why a reservation did not go through the inventory.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sale's actor has no room: shed the request.
    #[error("too many reservations in flight for this sale")]
    Overloaded,
    /// No answer within the reserve timeout. A request still queued is
    /// dropped; one already at the store may have succeeded.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// A running actor, shared behind an `Arc`: every request takes it from
/// the registry, and a copy of the `Addr` allocates (actix gives each
/// sender its own queue state), which no request needs.
struct ActorEntry {
    address: Addr<SaleActor>,
    inbox: Arc<Inbox>,
    board: Arc<SoldOutBoard>,
}

impl ActorEntry {
    /// Posts `mail` to the actor, telling it when it will not look by
    /// itself. An actor whose thread is gone (it stopped, or its arbiter
    /// stopped before it could start) takes nothing in: its inbox is closed.
    fn post(&self, mail: Mail) -> Result<(), Refused> {
        if !self.address.connected() {
            drop(self.inbox.close());
            return Err(Refused::Closed);
        }
        if self.inbox.post(mail)? {
            self.address.do_send(TakeIn);
        }
        Ok(())
    }
}

/// The most finished sales one node remembers, unless set otherwise
/// (`FLASHSALE_FINISHED_SALES_MAX`). A sale forgotten to make room costs one
/// store read on its next request, which finds it finished again.
pub const FINISHED_SALES_DEFAULT: usize = 10_000;

/// Whether a read of the sale shows it over for good: the merchant ended or
/// cancelled it (final), or the store's own clock, read in the same step,
/// was past its end by more than `margin_ms` (from then on the store refuses
/// every change of `ends_at`, so no merchant can reopen it). This node's
/// estimate of the store's clock never decides it.
pub fn certainly_finished(view: &SaleView, margin_ms: Millis) -> bool {
    view.sale.state != SaleState::Scheduled
        || view.now >= view.sale.ends_at.saturating_add(margin_ms)
}

/// The running actors by sale, and the sales known to be finished; shared
/// with the actors so they can leave.
#[derive(Clone)]
pub struct Registry {
    actors: Arc<SaleMap<Arc<ActorEntry>>>,
    finished: Arc<SaleMap<()>>,
    finished_max: usize,
}

/// Sales hashed with foldhash, not SipHash (each order request looks its
/// sale up twice): only sales read from the store go in, so no client can
/// fill a map with keys that collide.
type SaleMap<V> = DashMap<SaleId, V, foldhash::fast::RandomState>;

impl Default for Registry {
    fn default() -> Self {
        Self::new(FINISHED_SALES_DEFAULT)
    }
}

impl Registry {
    fn new(finished_max: usize) -> Self {
        Self {
            actors: Arc::default(),
            finished: Arc::default(),
            finished_max,
        }
    }

    fn get(&self, sale: &SaleId) -> Option<Arc<ActorEntry>> {
        self.actors.get(sale).map(|entry| Arc::clone(&entry))
    }

    /// Forgets `address` for `sale` (and nothing newer).
    fn remove(&self, sale: &SaleId, address: &Addr<SaleActor>) {
        self.actors
            .remove_if(sale, |_, entry| &entry.address == address);
        telemetry::set_sale_actors(self.actors.len());
    }

    fn is_finished(&self, sale: &SaleId) -> bool {
        self.finished.contains_key(sale)
    }

    /// Records `sale` as finished; at the bound, an arbitrary other sale is
    /// forgotten first.
    fn finished(&self, sale: &SaleId) {
        if self.finished.len() >= self.finished_max && !self.finished.contains_key(sale) {
            let evicted = self.finished.iter().next().map(|entry| entry.key().clone());
            if let Some(evicted) = evicted {
                self.finished.remove(&evicted);
            }
        }
        self.finished.insert(sale.clone(), ());
    }
}

/// A refusal answered by this node without the sale's actor or the store,
/// counted as such.
fn answered_here(rejection: Rejection) -> InventoryError {
    telemetry::count_local_answer(rejection.as_str());
    StoreError::Rejected(rejection).into()
}

pub struct Inventory {
    store: Arc<dyn Store>,
    system: ActorSystem,
    registry: Registry,
    settings: ActorSettings,
    reserve_timeout: Duration,
}

impl Inventory {
    /// Starts the actor threads. Actors themselves start on first use.
    pub fn start(
        store: Arc<dyn Store>,
        arbiters: usize,
        settings: ActorSettings,
        reserve_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            system: ActorSystem::start(arbiters)?,
            registry: Registry::new(FINISHED_SALES_DEFAULT),
            settings,
            reserve_timeout,
        })
    }

    /// The same inventory remembering at most `max` finished sales.
    pub fn with_finished_sales_max(mut self, max: usize) -> Self {
        self.registry = Registry::new(max);
        self
    }

    /// Routes a shopper's ask through its sale's actor, or answers it
    /// without one: sold out for certain (the actor's board), or the sale
    /// finished. Only an ask that goes on draws its order id.
    pub async fn reserve(&self, ask: OrderAsk) -> Result<Reservation, InventoryError> {
        let mut actor = self.actor_for(&ask.sale_id).await?;
        // Answered here when certain, without a thread hop: the sale
        // finished, or sold out by its board. A keyed ask may be the retry
        // of one that succeeded: the store answers it.
        if ask.idempotency_key.is_none() {
            let refused = match &actor {
                None => Some(Rejection::Ended),
                Some(running) => running
                    .board
                    .refuses(ask.quantity.get(), self.settings.clock.now())
                    .then_some(Rejection::SoldOut),
            };
            if let Some(rejection) = refused {
                return Err(answered_here(rejection));
            }
        }
        let request = ReserveRequest::new(ask);
        // An actor that retired just as this request reached it is replaced,
        // once. The retry is safe even if the first attempt reached the
        // store: the same order id is recognised there and takes nothing.
        // The replacement's board is not read: its actor answers from
        // memory as well.
        for retry in [false, true] {
            if retry {
                actor = self.actor_for(&request.sale_id).await?;
            }
            let Some(running) = actor.take() else {
                return self.reserve_finished(&request).await;
            };
            let (reply, answer) = oneshot::channel();
            let mail = Mail::Reserve {
                request: request.clone(),
                reply,
            };
            match running.post(mail) {
                Ok(()) => match tokio::time::timeout(self.reserve_timeout, answer).await {
                    Ok(Ok(result)) => return result,
                    Ok(Err(_dropped_by_a_stopping_actor)) => {}
                    Err(_elapsed) => return Err(InventoryError::TimedOut(self.reserve_timeout)),
                },
                Err(Refused::Full) => {
                    telemetry::count_mailbox_rejection();
                    return Err(InventoryError::Overloaded);
                }
                Err(Refused::Closed) => {}
            }
            self.registry.remove(&request.sale_id, &running.address);
        }
        Err(StoreError::Unavailable("the sale's actor keeps stopping".into()).into())
    }

    /// Tells the sale's actor (if running) what the store now says of it.
    pub fn sale_changed(&self, view: SaleView) {
        if let Some(actor) = self.registry.get(&view.sale.id) {
            actor.board.news_coming();
            // Refused only by a stopped actor: its successor reads the sale.
            let _ = actor.post(Mail::SaleUpdated(view));
        }
    }

    /// Tells the sales' actors here, and every other engine node sharing
    /// the store (in one message), that orders gave their units back. Never
    /// fails: a node that misses the news learns it at its actor's next
    /// refresh.
    pub async fn stock_returned(&self, orders: &[Order]) {
        let returns: Vec<StockReturn> = orders.iter().map(StockReturn::from).collect();
        self.announce(&returns).await;
    }

    /// Tells the actors here, then the other nodes, of `returns`.
    async fn announce(&self, returns: &[StockReturn]) {
        for stock_return in returns {
            self.stock_returned_elsewhere(stock_return.clone());
        }
        if let Err(err) = self.store.announce_stock_returns(returns).await {
            tracing::warn!(error = %err, "cannot announce returned stock");
        }
    }

    /// Tells the sale's actor here (if running) that units came back.
    pub fn stock_returned_elsewhere(&self, stock_return: StockReturn) {
        if let Some(actor) = self.registry.get(&stock_return.sale_id) {
            actor.board.news_coming();
            // Refused only by a stopped actor: its successor reads the sale.
            let _ = actor.post(Mail::StockReturned {
                shopper: stock_return.shopper_id,
                quantity: stock_return.quantity,
            });
        }
    }

    /// How many sale actors are running.
    pub fn actor_count(&self) -> usize {
        self.registry.actors.len()
    }

    /// How many finished sales this node remembers.
    pub fn finished_count(&self) -> usize {
        self.registry.finished.len()
    }

    /// A reservation for a finished sale: `ended`, or, for a request with
    /// an `Idempotency-Key` (the retry of one that may have succeeded), the
    /// store's answer.
    async fn reserve_finished(
        &self,
        request: &ReserveRequest,
    ) -> Result<Reservation, InventoryError> {
        if request.idempotency_key.is_some() {
            return Ok(self.store.reserve(request).await?);
        }
        Err(answered_here(Rejection::Ended))
    }

    /// Stops the actor threads.
    pub fn stop(&self) {
        self.system.stop();
    }

    /// The sale's actor, started if needed; `None` for a finished sale.
    async fn actor_for(&self, id: &SaleId) -> Result<Option<Arc<ActorEntry>>, InventoryError> {
        if self.registry.is_finished(id) {
            return Ok(None);
        }
        if let Some(actor) = self.registry.get(id) {
            return Ok(Some(actor));
        }
        let first = TimedView::read(self.settings.clock.as_ref(), self.store.as_ref(), id)
            .await?
            .ok_or(StoreError::NotFound("sale"))?;
        if certainly_finished(&first.view, self.settings.clock_margin_ms) {
            self.registry.finished(id);
            return Ok(None);
        }
        let actor = match self.registry.actors.entry(id.clone()) {
            dashmap::Entry::Occupied(entry) => Arc::clone(entry.get()),
            dashmap::Entry::Vacant(slot) => {
                let store = Arc::clone(&self.store);
                let registry = self.registry.clone();
                let settings = self.settings.clone();
                let inbox = Arc::new(Inbox::new(settings.mailbox, settings.in_flight_max));
                let board = Arc::new(SoldOutBoard::default());
                let (actor_board, actor_inbox) = (Arc::clone(&board), Arc::clone(&inbox));
                let address = SaleActor::start_in_arbiter(self.system.arbiter_for(id), move |_| {
                    SaleActor::new(first, actor_board, actor_inbox, store, registry, settings)
                });
                let entry = slot
                    .insert(Arc::new(ActorEntry {
                        address,
                        inbox,
                        board,
                    }))
                    .clone();
                // Only now can every return and change reach the actor. A
                // new actor's inbox is open.
                let _ = entry.post(Mail::Registered);
                entry
            }
        };
        telemetry::set_sale_actors(self.registry.actors.len());
        Ok(Some(actor))
    }
}

#[cfg(test)]
mod tests {
    use super::memory::tests::{ask, view};
    use super::*;

    #[test]
    fn a_post_to_an_actor_whose_thread_is_gone_is_refused_and_closes_its_inbox() {
        // Goal: a caller is told at once to ask the next actor, instead of
        // waiting out the reserve timeout for an actor that never runs.
        // Method: an address whose receiver is gone, as when the actor's
        // arbiter stopped before the actor could start.
        let (sender, receiver) = actix::dev::channel::channel::<SaleActor>(16);
        drop(receiver);
        let entry = ActorEntry {
            address: Addr::new(sender),
            inbox: Arc::new(Inbox::new(8, 8)),
            board: Arc::default(),
        };
        let (reply, _answer) = oneshot::channel();
        let mail = Mail::Reserve {
            request: ask(&view(-1_000, 10).sale, "a", 1, None),
            reply,
        };
        assert!(matches!(entry.post(mail), Err(Refused::Closed)));
        assert!(
            matches!(entry.inbox.post(Mail::Registered), Err(Refused::Closed)),
            "the inbox is closed for good"
        );
    }
}
