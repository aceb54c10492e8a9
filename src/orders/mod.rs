//! Orders: every workflow on a shopper's order, each written once.
//!
//! - [`Orders`]: reserve (through the sale's inventory actor), look up,
//!   list, cancel, and expire. Cancel and expiry both give units back and
//!   tell every engine node's actor so.
//! - [`service`]: the order service, the background task that carries each
//!   order from its reservation on: consumes the sales' reservation
//!   streams, expires unpaid orders (through [`Orders::expire_due`]) and
//!   sends hand-offs. Hand-offs that failed for good wait in their sale's
//!   dead letters until [`Orders::redrive_dead_letters`].
//! - [`webhook`]: the hand-off call to the merchant's webhook.
//!
//! Payments change orders too, through `payments`; a payment, a cancel and
//! an expiry of one order are decided once, by the store script that runs
//! first.

pub mod service;
pub mod webhook;

use std::sync::Arc;

pub use self::service::{OrderService, OrderSettings, Outcome, WorkNotices};
use crate::domain::{
    system_now, Millis, Order, OrderId, Reservation, ReserveRequest, SaleId, ShopperId,
};
use crate::inventory::{Inventory, InventoryError};
use crate::store::{DeadLetter, Store, StoreError};
use crate::telemetry;

pub struct Orders {
    store: Arc<dyn Store>,
    inventory: Arc<Inventory>,
    /// Sales given new hand-offs: the order service's notices.
    notices: WorkNotices,
}

impl Orders {
    pub fn new(store: Arc<dyn Store>, inventory: Arc<Inventory>) -> Self {
        Self {
            store,
            inventory,
            notices: WorkNotices::default(),
        }
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
        let moved = self.store.redrive_dead_letters(sale).await?;
        if moved > 0 {
            self.notices.notify(sale);
        }
        Ok(moved)
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
    pub async fn reserve(&self, request: ReserveRequest) -> Result<Reservation, InventoryError> {
        self.inventory.reserve(request).await
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
        let more = orders.len() > limit;
        orders.truncate(limit);
        let last = orders.last().filter(|_| more).cloned();
        Ok((orders, last))
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
    pub async fn cancel(&self, id: &OrderId, shopper: &ShopperId) -> Result<Order, StoreError> {
        let order = self.store.cancel_order(id, shopper).await?;
        self.inventory
            .stock_returned(std::slice::from_ref(&order))
            .await;
        Ok(order)
    }

    /// Expires up to `limit` of the sale's unpaid orders past their
    /// deadline (store clock); their units are on sale again.
    pub async fn expire_due(&self, sale: &SaleId, limit: usize) -> Result<Vec<Order>, StoreError> {
        let expired = self.store.expire_due(sale, limit).await?;
        if !expired.is_empty() {
            let now = system_now();
            for order in &expired {
                telemetry::observe_expiry_lag(now.saturating_sub(order.expires_at));
            }
            self.inventory.stock_returned(&expired).await;
            tracing::info!(%sale, orders = expired.len(), "unpaid orders expired; stock returned");
        }
        Ok(expired)
    }
}
