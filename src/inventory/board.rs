//! The sold-out board: the front door's copy of one actor's certainty that
//! its sale is sold out. It is shared between the actor (which publishes)
//! and the [`Inventory`](super::Inventory) (which reads it on every
//! request), so a certainly sold-out sale refuses without a thread hop.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::domain::Millis;

/// What a sale's actor publishes for the front door, so that once the sale
/// is certainly sold out a request is refused before it reaches the
/// actor's mailbox (no thread hop): "sold out, certainly, until the steady
/// instant `until`". Like the actor's own memory it is only published while
/// the actor trusts its memory and the sale is surely open.
///
/// News that may give stock back (a return, a merchant's change) reaches
/// the actor as a message; whoever sends it first calls
/// [`news_coming`](Self::news_coming), and the board refuses nothing until
/// the actor has taken in as much news as was sent. So a request made after
/// a cancel or a restock was answered is never refused from an older belief.
///
/// The board reads neither the shopper nor the token: where the store would
/// refuse a request first for its shopper being at the limit or for its
/// purchase token (`limit_exceeded`, `purchase_token_*`), the board says
/// `sold_out`. A refusal either way, under another code.
#[derive(Debug, Default)]
pub struct SoldOutBoard {
    news_sent: AtomicU64,
    published: RwLock<Published>,
    /// Requests refused here: the actor counts them as activity, so a hot
    /// sold-out sale keeps its actor.
    refusals: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Published {
    until: Millis,
    per_user_limit: i64,
    news_taken_in: u64,
}

impl SoldOutBoard {
    /// True (and counted) when `quantity` units are certainly refused
    /// `sold_out` at the steady instant `now`. More than the per-user limit
    /// is left to the actor: that answer is `limit_exceeded`.
    pub fn refuses(&self, quantity: i64, now: Millis) -> bool {
        let sent = self.news_sent.load(Ordering::SeqCst);
        let published = *self.published.read();
        let refused = published.news_taken_in == sent
            && now < published.until
            && quantity <= published.per_user_limit;
        if refused {
            self.refusals.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Called before sending the actor news that may give stock back.
    pub fn news_coming(&self) {
        self.news_sent.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn publish(&self, until: Millis, per_user_limit: i64, news_taken_in: u64) {
        *self.published.write() = Published {
            until,
            per_user_limit,
            news_taken_in,
        };
    }

    pub(super) fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}
