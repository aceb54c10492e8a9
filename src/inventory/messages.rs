//! What reaches a sale's actor through its mailbox: reservations from the
//! [`Inventory`](super::Inventory), and the news that may change what the
//! actor believes (its registration, a merchant's change, returned stock).
//! Kept apart from the actor so the senders see the whole protocol at once.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{InventoryError, MailboxTicket};
use crate::domain::{Reservation, ReserveRequest, SaleView, ShopperId};

/// Where a reservation's answer goes.
pub type ReserveReply = oneshot::Sender<Result<Reservation, InventoryError>>;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Reserve {
    pub request: ReserveRequest,
    pub reply: ReserveReply,
    /// Holds this request's place in the mailbox bound until handled.
    pub ticket: MailboxTicket,
}

/// Sent once by the registry right after it registered the actor: from now
/// on every stock return and change reaches this actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Registered;

/// The store's view of the sale right after a merchant's change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaleUpdated(pub SaleView);

/// An order gave units back (cancelled): stock is on sale again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StockReturned {
    pub shopper: ShopperId,
    pub quantity: i64,
}
