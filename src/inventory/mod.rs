//! The inventory actors: one actix actor per sale holds that sale's state in
//! memory (window, a local view of the stock, shoppers known to be at their
//! limit) and answers what it can without a store round trip. Only requests
//! that may succeed reach the store, which stays the source of truth.
//!
//! Actors run on a few dedicated threads (actix arbiters, see [`system`]);
//! the [`Inventory`] registry routes each request to its sale's actor by id,
//! starting the actor on first use (an actor with no reservation for
//! `idle_stop` retires), and bounds every queue: a full mailbox answers
//! `overloaded` at once.

mod actor;
mod system;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use tokio::sync::oneshot;

pub use self::actor::ActorSettings;
use self::actor::{Reserve, SaleActor, SaleUpdated, StockReturned};
use self::system::ActorSystem;
use crate::domain::{Order, SaleId, SaleView};
use crate::store::{Reservation, ReserveRequest, Store, StoreError};
use crate::telemetry;

/// Why a reservation did not go through the inventory.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sale's actor has no room: shed the request.
    #[error("too many reservations in flight for this sale")]
    Overloaded,
    /// No answer within the reserve timeout (the reservation may still
    /// have happened: retry with the same Idempotency-Key).
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

pub struct Inventory {
    store: Arc<dyn Store>,
    system: ActorSystem,
    actors: DashMap<SaleId, Addr<SaleActor>>,
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
            actors: DashMap::new(),
            settings,
            reserve_timeout,
        })
    }

    /// Routes a reservation through its sale's actor.
    pub async fn reserve(&self, request: ReserveRequest) -> Result<Reservation, InventoryError> {
        let (reply, answer) = oneshot::channel();
        let mut message = Reserve { request, reply };
        // An actor that retired while idle is restarted once.
        for _ in 0..2 {
            let actor = self.actor_for(&message.request.sale_id).await?;
            match actor.try_send(message) {
                Ok(()) => return self.await_answer(answer).await,
                Err(SendError::Full(_)) => {
                    telemetry::count_mailbox_rejection();
                    return Err(InventoryError::Overloaded);
                }
                Err(SendError::Closed(returned)) => {
                    self.actors
                        .remove_if(&returned.request.sale_id, |_, known| known == &actor);
                    message = returned;
                }
            }
        }
        Err(StoreError::Unavailable("the sale's actor keeps stopping".into()).into())
    }

    async fn await_answer(
        &self,
        answer: oneshot::Receiver<Result<Reservation, InventoryError>>,
    ) -> Result<Reservation, InventoryError> {
        match tokio::time::timeout(self.reserve_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => {
                Err(StoreError::Unavailable("the sale's actor dropped the request".into()).into())
            }
            Err(_elapsed) => Err(InventoryError::TimedOut(self.reserve_timeout)),
        }
    }

    /// Tells the sale's actor (if running) what the store now says of it.
    pub fn sale_changed(&self, view: SaleView) {
        if let Some(actor) = self.actors.get(&view.sale.id) {
            actor.do_send(SaleUpdated(view));
        }
    }

    /// Tells the sale's actor that an order gave its units back.
    pub fn stock_returned(&self, order: &Order) {
        if let Some(actor) = self.actors.get(&order.sale_id) {
            actor.do_send(StockReturned {
                user: order.user_id.clone(),
                quantity: order.quantity,
            });
        }
    }

    /// Stops the actor threads.
    pub fn stop(&self) {
        self.system.stop();
    }

    async fn actor_for(&self, id: &SaleId) -> Result<Addr<SaleActor>, InventoryError> {
        if let Some(actor) = self.actors.get(id) {
            return Ok(actor.clone());
        }
        let view = self
            .store
            .view_sale(id)
            .await?
            .ok_or(StoreError::NotFound("sale"))?;
        let actor = self.actors.entry(id.clone()).or_insert_with(|| {
            let store = Arc::clone(&self.store);
            let settings = self.settings.clone();
            SaleActor::start_in_arbiter(self.system.arbiter_for(id), move |_| {
                SaleActor::new(view, store, settings)
            })
        });
        Ok(actor.clone())
    }
}
