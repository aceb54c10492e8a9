//! The source of truth for sales, stock and orders, behind one trait.
//!
//! - [`RedisStore`]: production. Every state change is one Lua script from
//!   `lua/`; a sale's keys share one hash tag (see [`keys`]).
//! - [`EmbeddedStore`]: in-process, in memory, the same semantics, so the
//!   engine runs on a bare machine. Nothing survives a restart.
//!
//! Only this module talks to Redis. `tests/store_conformance.rs` runs one
//! suite against both implementations.

mod embedded;
pub mod keys;
mod redis;

use async_trait::async_trait;

pub use self::embedded::EmbeddedStore;
pub use self::redis::{RedisStore, RedisTarget};
use crate::domain::{
    Order, OrderId, Quantity, Rejection, Sale, SaleChange, SaleId, SaleView, UserId,
};

/// What can go wrong in a store call. Mapped to HTTP in `http::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The sale or order does not exist (or is not the shopper's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change is not allowed in the current state.
    #[error("{0}")]
    Conflict(String),
    /// The reservation rule said no.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this code cannot read: a bug or a
    /// hand-edited key. Logged; clients see `unavailable`.
    #[error("unexpected store data: {0}")]
    Corrupt(String),
}

/// A shopper's attempt to take stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRequest {
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub quantity: Quantity,
    /// The id the order gets if this request creates one.
    pub order_id: OrderId,
    /// `Idempotency-Key`: a retry with the same key and quantity returns the
    /// first order; the same key with another quantity is refused.
    pub idempotency_key: Option<String>,
}

/// A successful reservation (or the replay of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order: Order,
    /// Units left in the sale right after this reservation (`None` on a
    /// replay, which reads no stock).
    pub remaining: Option<i64>,
    /// Units the shopper holds after it.
    pub held: Option<i64>,
    /// The order already existed under this idempotency key.
    pub replayed: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"redis"` or `"embedded"`, for logs and `/readyz`.
    fn kind(&self) -> &'static str;

    /// Reachable and ready to serve (scripts loaded).
    async fn ready(&self) -> Result<(), StoreError>;

    /// Stores a new sale with its full stock.
    async fn create_sale(&self, sale: &Sale) -> Result<(), StoreError>;

    /// Every sale id, newest first.
    async fn sale_ids(&self) -> Result<Vec<SaleId>, StoreError>;

    /// A sale with its exact counts and the store's clock, in one atomic read.
    async fn view_sale(&self, id: &SaleId) -> Result<Option<SaleView>, StoreError>;

    /// Applies a merchant's change if the sale is still at `version` (the
    /// view the change was computed from) and its phase (store clock)
    /// allows it.
    async fn update_sale(
        &self,
        id: &SaleId,
        change: &SaleChange,
        version: i64,
    ) -> Result<(), StoreError>;

    /// Calls off a sale that has not started.
    async fn cancel_sale(&self, id: &SaleId) -> Result<(), StoreError>;

    /// Checks and takes stock, counts the shopper and records the order, all
    /// in one atomic step.
    async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation, StoreError>;

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// The shopper's orders in every sale, newest first.
    async fn user_orders(&self, user: &UserId) -> Result<Vec<Order>, StoreError>;

    /// Cancels the shopper's unpaid order and puts its units back on sale.
    async fn cancel_order(&self, id: &OrderId, user: &UserId) -> Result<Order, StoreError>;
}

/// The answer when a merchant's change was computed from an older version.
fn changed_meanwhile() -> StoreError {
    StoreError::Conflict("the sale changed meanwhile; read it again and retry".into())
}

/// Orders newest first, ties by id so the listing is stable.
fn sort_newest_first(orders: &mut [Order]) {
    orders.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
}
