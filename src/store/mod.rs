//! The source of truth for sales, stock and orders, behind one trait.
//!
//! - [`RedisStore`]: production. Every state change is one Lua script from
//!   `lua/`; a sale's keys share one hash tag (see [`keys`]).
//! - [`EmbeddedStore`]: in-process, in memory, the same semantics, so the
//!   engine runs on a bare machine. Nothing survives a restart.
//!
//! Only this module talks to Redis. `tests/integration/conformance.rs` runs
//! one suite against both implementations (Redis standalone and Cluster);
//! `tests/integration/store_model.rs` checks both against a reference model.

mod embedded;
pub mod keys;
mod redis;
mod scripts;

use std::time::Duration;

use async_trait::async_trait;
use smol_str::SmolStr;

pub use self::embedded::EmbeddedStore;
pub use self::redis::{RedisStore, RedisTarget};
pub use self::scripts::with_helpers;
use crate::domain::{
    Campaign, CampaignChange, CampaignId, Millis, Order, OrderEvent, OrderId, Payment,
    PaymentException, PaymentOutcome, QueuePlace, QueueStats, RefundSettledBy, Rejection,
    Reservation, ReserveRequest, Sale, SaleChange, SaleId, SaleRecords, SaleView, ShopperId,
    StockReturn,
};

/// The most orders one shopper may cancel in one sale, unless the store is
/// built with another bound (`FLASHSALE_CANCELS_PER_SHOPPER_MAX`). A
/// shopper at the bound can neither cancel (`Conflict`) nor reserve
/// (`unpaid_limit_exceeded`) in that sale again, so reserve-and-cancel cannot
/// repeat without end and the shopper's order list stays short.
pub const CANCELS_PER_SHOPPER_DEFAULT: i64 = 10;

/// The most orders one shopper may let expire unpaid in one sale, unless
/// the store is built with another bound
/// (`FLASHSALE_EXPIRIES_PER_SHOPPER_MAX`). A shopper at the bound reserves
/// no more in that sale (`unpaid_limit_exceeded`), so reserve-and-wait cannot
/// repeat without end either.
pub const EXPIRIES_PER_SHOPPER_DEFAULT: i64 = 10;

/// What one shopper may leave unpaid in one sale before they reserve no
/// more there: the bounds that keep a shopper's order list (read and
/// written whole by each of their reservations) short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShopperBounds {
    /// Orders cancelled, or being cancelled (see [`CANCELS_PER_SHOPPER_DEFAULT`]).
    pub cancels: i64,
    /// Orders expired unpaid (see [`EXPIRIES_PER_SHOPPER_DEFAULT`]).
    pub expiries: i64,
}

impl Default for ShopperBounds {
    fn default() -> Self {
        Self {
            cancels: CANCELS_PER_SHOPPER_DEFAULT,
            expiries: EXPIRIES_PER_SHOPPER_DEFAULT,
        }
    }
}

/// What [`Store::cancel_taken_order`] answers (`Conflict`) for an order
/// whose prepay id is not the one the caller closed.
pub const PREPAY_CHANGED: &str =
    "a WeChat Pay order was made for the order while it was cancelled; cancel again";

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
    /// The sale's waiting room is full.
    #[error("the waiting room is full")]
    QueueFull,
    /// A listing's cursor not of the kind the store gives.
    #[error("not a cursor of this listing")]
    BadCursor,
    /// The store answered something this code cannot read: a bug or a
    /// hand-edited key. Logged; clients see `unavailable`.
    #[error("unexpected store data: {0}")]
    Corrupt(String),
}

/// A reservation on a sale's stream, as the order service reads it. One
/// stream entry carries every order one reserve call made, so the orders of
/// a batch share the entry's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The stream's id of the entry, to acknowledge it with (held inline:
    /// each order of the entry carries it).
    pub id: SmolStr,
    /// `None`: the entry names no order this build can read (a field
    /// missing or not an order id: hand-edited or corrupt data). The order
    /// service drops such an entry rather than read it again forever.
    pub order_id: Option<OrderId>,
}

/// Which of a sale's reservation entries a consumer reads
/// ([`Store::read_reservations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRead {
    /// Entries never delivered to any consumer (`XREADGROUP … >`), now
    /// pending on the consumer until acknowledged.
    New,
    /// The consumer's own pending entries (`XREADGROUP … 0`), oldest
    /// first: read but never acknowledged, because the pass that read them
    /// failed or the process stopped (a restarted node keeps its name).
    /// Reading one again restarts its idle time, so no other consumer
    /// takes it over meanwhile.
    OwnPending,
}

/// What one expiry step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Orders expired, their units back on sale.
    pub expired: Vec<Order>,
    /// Due orders with a prepay id, left pending: close them first.
    pub held: Vec<Order>,
    /// Orders of the deadline entries taken that were no longer unpaid
    /// (paid or cancelled while their reserve call's entry was not yet
    /// due): they left the index with it. A step that only passed over
    /// such orders still did work: more may be due.
    pub passed_over: usize,
}

/// The order service's work left for one sale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderBacklog {
    /// Stream entries not yet processed (unread or unacknowledged), each the
    /// orders of one reserve call. On
    /// Redis, also entries acknowledged above one still pending: the stream
    /// is trimmed below the oldest unacknowledged entry.
    pub reservations: u64,
    /// Entries of the payment deadline index still to be processed: each
    /// the orders of one reserve call (paid or cancelled ones among them
    /// leave with it, when it comes due) or one held order. With none
    /// left, no order can still expire (an entry whose orders are all
    /// settled stays until it comes due, by the end of the sale's payment
    /// window).
    pub deadlines: u64,
    /// Hand-offs to the merchant not yet delivered.
    pub hand_offs: u64,
}

impl OrderBacklog {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A sale's place in the index of every sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedSale {
    pub created_at: Millis,
    pub id: SaleId,
}

impl IndexedSale {
    /// Newest first: later creation, then the greater id.
    fn listed_before(&self, other: &Self) -> bool {
        (self.created_at, &self.id) > (other.created_at, &other.id)
    }
}

/// Cuts a listing read past its page (at least `limit + 1` items when
/// more follow) to the page, with where the next page starts (`next` of
/// the page's last item) when an item past it showed there is one. A page
/// holding the listing's last items names no next page.
pub fn cut_page<T, N>(
    mut items: Vec<T>,
    limit: usize,
    next: impl FnOnce(&T) -> N,
) -> (Vec<T>, Option<N>) {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = items.last().filter(|_| more).map(next);
    (items, next)
}

/// A campaign's place in the index of every campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedCampaign {
    pub created_at: Millis,
    pub id: CampaignId,
}

/// What [`Store::forget_sale`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgetting {
    /// Deleted, and off the indexes.
    Forgotten,
    /// Its retention has not passed yet, or it still has work.
    Kept,
    /// Kept: a refund call among its dead letters is money owed to a
    /// shopper, until the merchant re-drives it and it is made, or
    /// settles it by hand.
    Owed,
    /// No such sale (deleted before; taken off the indexes again).
    Gone,
}

/// What accepting one reservation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// First time: the order is counted as queued.
    Queued,
    /// Already accepted: a redelivery, nothing changed.
    Unchanged,
    /// Not taken: no such order (embedded store), an entry written by a
    /// build before batches (Redis: it names no batch; see
    /// `lua/accept_orders.lua`), or one that cannot be read (a field
    /// missing or malformed: hand-edited or corrupt data).
    NotFound,
}

/// What a store step queues in the sale's outbox beside its change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowUps {
    /// The hand-off of the change to the merchant's webhook (one is
    /// configured).
    pub hand_off: bool,
    /// The refund call to WeChat Pay, when the change needs one (payments
    /// are taken with WeChat Pay).
    pub refund: bool,
}

/// What a confirmation of an order's refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundSettlement {
    /// The order is refunded now.
    Refunded(Order),
    /// It was refunded already: a repeat.
    Unchanged(Order),
}

/// What an outbox entry does once sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Errand {
    /// An order's event: its hand-off to the merchant's webhook, or (for
    /// [`OrderEvent::Refund`]) its refund call to WeChat Pay.
    Order(OrderEvent, OrderId),
    /// The `campaign.round_starting` hand-off of a campaign's round, kept
    /// in the outbox of the round's first item's sale (see
    /// `campaigns::reminders`): the sale names the campaign and the round.
    RoundStarting,
}

impl Errand {
    /// The event's name, as the webhook's `type` says it.
    pub fn event(&self) -> &'static str {
        match self {
            Self::Order(event, _) => event.as_str(),
            Self::RoundStarting => ROUND_STARTING,
        }
    }

    /// The order it is about; `None` for a round's reminder.
    pub fn order_id(&self) -> Option<&OrderId> {
        match self {
            Self::Order(_, id) => Some(id),
            Self::RoundStarting => None,
        }
    }

    /// `<order id>.<event>`, or the event alone: how listings order and
    /// page entries (no space: it fits in a paging cursor).
    pub fn listing_key(&self) -> String {
        match self {
            Self::Order(event, id) => format!("{id}.{}", event.as_str()),
            Self::RoundStarting => ROUND_STARTING.to_owned(),
        }
    }
}

/// `event order_id` for an order's entry, the event alone for a round's
/// reminder: the entry's name in the outbox.
impl std::fmt::Display for Errand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Order(event, id) => write!(f, "{} {id}", event.as_str()),
            Self::RoundStarting => f.write_str(ROUND_STARTING),
        }
    }
}

impl std::str::FromStr for Errand {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        if text == ROUND_STARTING {
            return Ok(Self::RoundStarting);
        }
        let (event, order) = text.split_once(' ').ok_or(())?;
        let event = OrderEvent::parse(event).ok_or(())?;
        Ok(Self::Order(event, OrderId::parse(order).map_err(|_| ())?))
    }
}

/// The webhook event that a campaign's round is about to start.
pub const ROUND_STARTING: &str = "campaign.round_starting";

/// An outbox entry, leased for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub errand: Errand,
    /// This attempt's number, from 1.
    pub attempt: u32,
}

/// Why an attempt of a hand-off failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// The webhook's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: String,
}

/// A hand-off taken out of the outbox after it failed for good (a
/// permanent refusal, or its last allowed attempt), kept in the sale's
/// dead letters until an operator re-drives it (or, a refund call, until
/// its refund is settled: see [`Store::settle_refund`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub errand: Errand,
    /// Attempts made before it was taken out.
    pub attempts: u32,
    /// The last attempt's failure.
    pub failure: DeliveryFailure,
    /// When it was taken out (store clock).
    pub at: Millis,
}

/// The most places of admissions that expired unused one waiting-room
/// poll frees: its work in the store stays bounded (the rest are freed by
/// the next polls, which the line's shoppers keep sending).
pub const QUEUE_FREED_PER_POLL_MAX: usize = 1_000;

/// The bounds a waiting room is kept in, the same for every sale of a
/// deployment (see `FLASHSALE_QUEUE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRules {
    /// The most members one sale's line may hold.
    pub size_max: u64,
    /// Admissions outstanding may reach `remaining × headroom_pct / 100`
    /// (in units of `per_user_limit`), rounded up.
    pub headroom_pct: u64,
    /// How long past an admission's expiry its place is freed (covers the
    /// clock difference between an engine node checking the token and the
    /// store).
    pub expiry_grace_ms: i64,
}

/// A campaign as stored, with its version (bumped by every merchant
/// change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCampaign {
    pub campaign: Campaign,
    pub version: i64,
}

/// Called for each stock return another engine node announces.
pub type StockReturnHandler = Box<dyn Fn(StockReturn) + Send + Sync>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"redis"` or `"embedded"`, for logs and `/readyz`.
    fn kind(&self) -> &'static str;

    /// Reachable and ready to serve (scripts loaded).
    async fn ready(&self) -> Result<(), StoreError>;

    /// Stores a new sale with its full stock.
    async fn create_sale(&self, sale: &Sale) -> Result<(), StoreError>;

    // Campaigns: rounds × items, each a sale whose id names the campaign.

    /// Stores a new campaign (its record and the limits across its items,
    /// at version 1), then each of its sales ([`Campaign::sales`]), then
    /// lists it. Its limits are in place before any of its sales exists,
    /// so no reservation can pass them.
    async fn create_campaign(&self, campaign: &Campaign) -> Result<(), StoreError>;

    async fn campaign(&self, id: &CampaignId) -> Result<Option<StoredCampaign>, StoreError>;

    /// Applies a merchant's change to a campaign if it is still at
    /// `version` (and each sale the change touches at the version it was
    /// read at), in one atomic step: every step is checked first, then the
    /// sales, the record and the limits across items are written, and the
    /// round reminders it moves ([`CampaignChange::reminders`]) are
    /// (re)scheduled, or nothing is. A reminder goes in the outbox of its
    /// round's first item's sale, due at its time (store clock; at once
    /// when past), its attempts from zero, moving one queued there already;
    /// a sale that has started (store clock) or is no longer scheduled
    /// gets none, and one queued before goes. `Conflict` when the
    /// campaign's first round has started (store clock) and the change
    /// needs it not to
    /// ([`CampaignChange::before_start`]), or when a sale's step breaks the
    /// sale's own rules (the message names the round, item and sale).
    async fn update_campaign(
        &self,
        change: &CampaignChange,
        version: i64,
    ) -> Result<(), StoreError>;

    /// Every campaign's id, newest first.
    async fn campaign_ids(&self) -> Result<Vec<CampaignId>, StoreError>;

    /// Deletes a campaign's own records (its record and limits, the
    /// shoppers' counts per round and in all) once no sale of it is left
    /// (retention forgot each, after its own payment window: a round the
    /// merchant stopped early goes by when it stopped, not by the window
    /// the record planned), in one atomic step, then takes it off the
    /// index of campaigns. An id with no campaign is taken off the index
    /// (`Gone`) once it is older than a creation could take (a creation
    /// that was refused or crashed; `Kept` before). Never touches a sale.
    async fn forget_campaign(&self, id: &CampaignId) -> Result<Forgetting, StoreError>;
    /// Up to `limit` campaigns of the index of every campaign, newest
    /// first (by creation time, then id), after `after` when given.
    async fn campaign_index(
        &self,
        after: Option<&IndexedCampaign>,
        limit: usize,
    ) -> Result<Vec<IndexedCampaign>, StoreError>;

    /// The units a shopper holds (reserved or paid) in round `round` of the
    /// campaign, and in the whole campaign.
    async fn campaign_holds(
        &self,
        id: &CampaignId,
        round: u32,
        shopper: &ShopperId,
    ) -> Result<(i64, i64), StoreError>;

    /// Up to `limit` sales of the index of every sale, newest first (by
    /// creation time, then id), after `after` when given. May name a sale
    /// being created (indexed a moment before it exists) or one retention
    /// is deleting: readers skip ids that name no sale.
    async fn sale_index(
        &self,
        after: Option<&IndexedSale>,
        limit: usize,
    ) -> Result<Vec<IndexedSale>, StoreError>;

    /// The sales whose payment window may not be over by the store's clock
    /// (upcoming, live, or ended less than one payment timeout ago; one
    /// whose end moved earlier may stay a little longer), read from an
    /// index rather than from every sale ever made.
    async fn open_sale_ids(&self) -> Result<Vec<SaleId>, StoreError>;

    /// The order service is done with the sale (its payment window is
    /// over and nothing is left to do): lists it among each of its
    /// shoppers' sales, then takes it off the sales a shopper's order list
    /// reads whole (see [`shopper_orders`](Self::shopper_orders)), so the
    /// list finds its orders throughout. On Redis, `Conflict` (try again
    /// later) while the sale may still take reservations by the store's
    /// clock, or while another engine node holds the lease to settle it
    /// (60 s; a node that crashed midway leaves it, and the next call
    /// after it expires finishes the work). Does nothing for a sale
    /// already settled.
    async fn settle_sale(&self, sale: &SaleId) -> Result<(), StoreError>;

    /// A sale with its exact counts and the store's clock, in one atomic read.
    async fn view_sale(&self, id: &SaleId) -> Result<Option<SaleView>, StoreError>;

    /// Every record of a sale (counters, shopper counts, orders, deadline
    /// index, stream entries), in one atomic read, for
    /// [`SaleRecords::audit`]. Reads every order: an operator's tool, not a
    /// hot path.
    async fn sale_records(&self, id: &SaleId) -> Result<Option<SaleRecords>, StoreError>;

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
    async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation, StoreError> {
        self.reserve_batch(std::slice::from_ref(request))
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("no reply to a reservation".into())))
    }

    /// Reservations of one sale in one atomic step: each decided in order,
    /// exactly as [`reserve`](Self::reserve) would decide it alone; one
    /// outcome per request, in order. The outer error means no request's
    /// outcome is known: the call failed, or its reply could not be read (a
    /// call that timed out, or whose reply was malformed, may have been
    /// decided; the same requests sent again are recognised as replays). An
    /// empty batch, or one mixing sales, is a caller's bug: `Corrupt`.
    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<Result<Reservation, StoreError>>, StoreError>;

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// The shopper's orders, newest first: in the settled sales the
    /// shopper bought in (see [`settle_sale`](Self::settle_sale)) and in the
    /// sales not settled yet. Reads only those sales, never every sale ever
    /// made.
    async fn shopper_orders(&self, shopper: &ShopperId) -> Result<Vec<Order>, StoreError>;

    /// Up to about `limit` of the sale's orders, in the store's order,
    /// from `cursor` (`None`: the first page); the cursor of the next page,
    /// `None` after the last. An order changed or added while the pages are
    /// read may be listed twice or (added) not at all: the export of a
    /// settled sale, which no longer changes. [`StoreError::BadCursor`] for
    /// a cursor that is not of the kind this store gives.
    async fn sale_orders(
        &self,
        sale: &SaleId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Order>, Option<String>), StoreError>;

    /// Deletes every record of a settled sale once `retention` has passed
    /// since its payment window closed (store clock), in one atomic step,
    /// then takes it off the indexes (on Redis, the list of its shoppers
    /// goes last, so a call after a failure in between finishes the job
    /// and answers `Forgotten`). Settled: no order unpaid, no
    /// reservation unprocessed, no hand-off in the outbox, and no refund
    /// call among the dead letters (money owed stays until the merchant
    /// re-drives it or settles it by hand; the other dead letters go with
    /// the sale). Never
    /// touches another sale.
    async fn forget_sale(
        &self,
        sale: &SaleId,
        retention: Duration,
    ) -> Result<Forgetting, StoreError>;

    /// Cancels the shopper's unpaid order and puts its units back on sale,
    /// counting the cancel against the shopper's; `Conflict` once the
    /// shopper cancelled the most orders of the sale allowed (see
    /// [`CANCELS_PER_SHOPPER_DEFAULT`]). Whatever WeChat Pay order it has
    /// is not looked at: the cancel of an engine that makes none (simulated
    /// payments).
    async fn cancel_order(&self, id: &OrderId, shopper: &ShopperId) -> Result<Order, StoreError>;

    /// Takes one cancel from the shopper's allowance in the sale (the
    /// refusal [`Store::cancel_order`] would answer once it is spent),
    /// before a cancel whose WeChat Pay close cannot be undone: then
    /// [`Store::cancel_taken_order`], or [`Store::give_back_cancel`] when
    /// the cancel does not happen.
    async fn take_cancel(&self, sale: &SaleId, shopper: &ShopperId) -> Result<(), StoreError>;

    /// Gives back a cancel [`Store::take_cancel`] took (never below none).
    async fn give_back_cancel(&self, sale: &SaleId, shopper: &ShopperId) -> Result<(), StoreError>;

    /// [`Store::cancel_order`] under a cancel taken already, once the
    /// WeChat Pay order of the prepay id `closed` was closed (`None`: the
    /// order had none when read). An order that holds another prepay id
    /// (one recorded since it was read) is refused with
    /// [`PREPAY_CHANGED`] (`Conflict`): close that one, then cancel again.
    async fn cancel_taken_order(
        &self,
        id: &OrderId,
        shopper: &ShopperId,
        closed: Option<&str>,
    ) -> Result<Order, StoreError>;

    /// Pays an order (see [`PaymentOutcome`]), queueing the hand-off to the
    /// merchant when `follow_ups.hand_off`, and for a late payment
    /// (`refund_required`) its refund call when `follow_ups.refund`.
    async fn pay_order(
        &self,
        id: &OrderId,
        payment: &Payment,
        follow_ups: FollowUps,
    ) -> Result<PaymentOutcome, StoreError>;

    /// The merchant refunds a paid order: its units move from `paid` to
    /// `refunded`, and with `restock` back on sale and off the shopper's
    /// count (`Conflict` unless the sale is live, store clock). With
    /// `follow_ups.refund` the order is `refunding` and its refund call is
    /// queued; else it is `refunded` at once (and its hand-off queued
    /// when `follow_ups.hand_off`). `Conflict` unless the order is paid.
    async fn refund_order(
        &self,
        id: &OrderId,
        restock: bool,
        follow_ups: FollowUps,
    ) -> Result<Order, StoreError>;

    /// The order's refund is settled (`by` WeChat Pay, or by the
    /// merchant's hand: see [`RefundSettledBy`]): a `refunding` or
    /// `refund_required` order is `refunded` (its hand-off queued when
    /// `hand_off`) and its refund call's dead letter, if any, dropped; a
    /// repeat changes nothing; `Conflict` for an order whose refund was
    /// never asked for, and by hand while its refund call is in the sale's
    /// outbox.
    async fn settle_refund(
        &self,
        id: &OrderId,
        by: RefundSettledBy,
        hand_off: bool,
    ) -> Result<RefundSettlement, StoreError>;

    /// WeChat Pay ended the order's refund unpaid (`ABNORMAL`, `CLOSED`):
    /// its refund call leaves the sale's outbox, whichever attempt holds
    /// it (nothing is left to send or ask), so the merchant may settle the
    /// refund by hand at once. Nothing else changes; a repeat, an order
    /// with no refund call queued, or a sale forgotten since, changes
    /// nothing.
    async fn end_refund_call(&self, id: &OrderId) -> Result<(), StoreError>;

    /// Keeps WeChat Pay's prepay id on an unpaid order, once: answers the
    /// order with the prepay id kept first (this one, or an earlier one).
    /// `Conflict` once the order is no longer `pending_payment`.
    async fn record_prepay(&self, id: &OrderId, prepay_id: &str) -> Result<Order, StoreError>;

    /// Looks at the orders whose payment deadline has passed (store
    /// clock), a reserve call's orders at once (they share one entry of
    /// the deadline index), until `limit` orders were looked at: each
    /// still unpaid and without a prepay id is expired, its units back on
    /// sale; each with one (the shopper may still pay it until WeChat Pay
    /// closes it) is held, left pending and not due again for `hold`; paid
    /// and cancelled ones are passed over. A step looks at up to `limit`
    /// plus one call's orders.
    async fn expire_due(
        &self,
        sale: &SaleId,
        limit: usize,
        hold: Duration,
    ) -> Result<Expiry, StoreError>;

    /// Expires one unpaid order past its `expires_at` (store clock), its
    /// units back on sale: a held order once its WeChat Pay order is
    /// closed. `None` when it is no longer pending (or not yet due).
    async fn expire_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Makes a held order due again `after` from now (its WeChat Pay order
    /// could not be closed yet); one no longer pending, or not held (still
    /// in its reserve call's deadline entry), is left alone.
    async fn postpone_expiry(&self, id: &OrderId, after: Duration) -> Result<(), StoreError>;

    // The order service's side of a sale's reservation stream.

    /// Creates the order service's consumer group on the sale's stream (if
    /// missing), from the stream's first entry; `NotFound` for a sale that
    /// is gone (forgotten by retention).
    async fn join_reservations(&self, sale: &SaleId) -> Result<(), StoreError>;

    /// Up to `count` entries for `consumer`: new ones, or those it read
    /// and has not acknowledged (see [`StreamRead`]).
    async fn read_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        which: StreamRead,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError>;

    /// Up to `count` entries delivered but unacknowledged for at least
    /// `idle_min` (their consumer died), moved to `consumer`.
    async fn claim_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        idle_min: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError>;

    /// Marks the orders of these entries taken by the order service, each
    /// once: counts it as queued and, when `hand_off`, queues the hand-off
    /// to the merchant. One outcome per entry, in order; an entry that
    /// cannot be read (its order, its batch or its units) is `NotFound`
    /// and changes nothing. Pass whole stream entries, as read: on Redis
    /// the orders of one entry (one reserve call) are taken together, so
    /// an entry's orders split across two calls would be told `Unchanged`
    /// in the second.
    async fn accept_orders(
        &self,
        sale: &SaleId,
        entries: &[StreamEntry],
        hand_off: bool,
    ) -> Result<Vec<Acceptance>, StoreError>;

    /// What the order service still has to do for the sale.
    async fn order_backlog(&self, sale: &SaleId) -> Result<OrderBacklog, StoreError>;

    /// Acknowledges processed entries and removes them from the stream (on
    /// Redis, once no older entry is still unacknowledged).
    async fn ack_reservations(
        &self,
        sale: &SaleId,
        entry_ids: &[SmolStr],
    ) -> Result<(), StoreError>;

    // Hand-offs to the merchant's webhook (an outbox kept with the sale).

    /// Leases up to `limit` due hand-offs of the sale for one attempt each:
    /// none is due again (to this or another engine node) before `lease`.
    async fn claim_deliveries(
        &self,
        sale: &SaleId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Forgets a hand-off the merchant acknowledged. This, and
    /// [`Store::postpone_delivery`] and [`Store::dead_letter`], apply only
    /// to the attempt leased: an entry whose attempts moved on since
    /// (queued again, as a moved round's reminder is, or leased again once
    /// the lease ran out) is left as it is.
    async fn delivered(&self, sale: &SaleId, delivery: &Delivery) -> Result<(), StoreError>;

    /// Makes a failed hand-off due again `after` from now.
    async fn postpone_delivery(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        after: Duration,
    ) -> Result<(), StoreError>;

    /// Takes a leased hand-off that failed for good out of the outbox onto
    /// the sale's dead letters, with its attempts, `failure` and the store
    /// clock's time. A dead letter is no work left for the order service
    /// ([`OrderBacklog::hand_offs`] does not count it). One no longer
    /// queued (delivered meanwhile) stays gone. Returns whether it moved.
    async fn dead_letter(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        failure: &DeliveryFailure,
    ) -> Result<bool, StoreError>;

    /// The sale's dead letters, oldest first.
    async fn dead_letters(&self, sale: &SaleId) -> Result<Vec<DeadLetter>, StoreError>;

    /// Moves every dead letter of the sale back into the outbox, due now,
    /// its attempts counted from zero again; returns how many moved.
    async fn redrive_dead_letters(&self, sale: &SaleId) -> Result<u64, StoreError>;

    // The waiting room of a queued sale (`lua/queue_*.lua`).

    /// Puts the shopper in the sale's line, once (joining again keeps the
    /// place): in the pre-queue under `shuffle_key` before the opening
    /// (store clock), first come, first served behind it after.
    /// `Rejected` (not started: before the pre-queue opens; ended; sold
    /// out), `Conflict` on an open sale, [`StoreError::QueueFull`] once
    /// the line holds `rules.size_max`.
    async fn queue_join(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
        shuffle_key: &str,
        rules: &QueueRules,
    ) -> Result<(), StoreError>;

    /// Admits whoever's turn has come (at the sale's rate, within the
    /// stock bound of `rules`, freeing the places of admissions that
    /// expired unused), then answers the shopper's place; `None` when the
    /// shopper is not in the line (never joined, or their admission
    /// expired unused). `Conflict` on an open sale.
    async fn queue_poll(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
        rules: &QueueRules,
    ) -> Result<Option<QueuePlace>, StoreError>;

    /// The line's counts as the last admission step left them (a read:
    /// it admits nobody). `NotFound` for no such sale, `Conflict` on an
    /// open sale.
    async fn queue_stats(&self, sale: &SaleId) -> Result<QueueStats, StoreError>;

    // Telling every engine node that stock came back.

    /// Tells the other engine nodes sharing this store, in one message.
    async fn announce_stock_returns(&self, returns: &[StockReturn]) -> Result<(), StoreError>;

    /// Calls `handler` for every return other nodes announce, until the
    /// process stops (reconnecting after failures). Returns at once when
    /// no other node can share the store.
    async fn watch_stock_returns(&self, handler: StockReturnHandler);

    // Verified payments that could not be applied.

    /// Records a payment exception, once per transaction (a repeat of the
    /// same transaction keeps the first record); stamps it with the store's
    /// clock. Returns whether it was new.
    async fn record_payment_exception(
        &self,
        exception: &PaymentException,
    ) -> Result<bool, StoreError>;

    /// Every payment exception not settled, newest first.
    async fn payment_exceptions(&self) -> Result<Vec<PaymentException>, StoreError>;

    /// The payment exception of `transaction_id`, unless there is none or
    /// it was settled.
    async fn payment_exception(
        &self,
        transaction_id: &str,
    ) -> Result<Option<PaymentException>, StoreError>;

    /// Marks the payment exception of `transaction_id` settled (the
    /// merchant settled it by hand): it leaves the list, and a repeat of
    /// that transaction is not recorded again. Answers it as it was
    /// listed; `None` when there is none not settled.
    async fn settle_payment_exception(
        &self,
        transaction_id: &str,
    ) -> Result<Option<PaymentException>, StoreError>;
}

/// The one sale of a batch of reservations.
fn batch_sale(requests: &[ReserveRequest]) -> Result<&SaleId, StoreError> {
    let first = requests
        .first()
        .ok_or_else(|| StoreError::Corrupt("an empty batch of reservations".into()))?;
    if requests.iter().any(|r| r.sale_id != first.sale_id) {
        return Err(StoreError::Corrupt(
            "a batch of reservations mixes sales".into(),
        ));
    }
    Ok(&first.sale_id)
}

/// The answer to a shopper who already cancelled `cancelled` orders of the
/// sale, the most allowed.
fn cancels_exhausted(cancelled: i64) -> StoreError {
    StoreError::Conflict(format!(
        "this shopper has cancelled {cancelled} orders of this sale, the most allowed"
    ))
}

/// The answer when an order to refund is `status`, not paid.
fn not_paid(status: &str) -> StoreError {
    StoreError::Conflict(format!("the order is {status}, not paid"))
}

/// The answer when units would go back on sale that is not live.
fn restock_not_live() -> StoreError {
    StoreError::Conflict("the sale is not live: its units cannot go back on sale".into())
}

/// The answer when a refund is confirmed for an order never refunded.
fn no_refund_asked(status: &str) -> StoreError {
    StoreError::Conflict(format!(
        "the order is {status}; no refund of it was asked for"
    ))
}

/// The answer when the merchant would settle by hand a refund whose call
/// is still in the sale's outbox: WeChat Pay may still pay it.
fn refund_call_queued() -> StoreError {
    StoreError::Conflict(
        "the order's refund is still with WeChat Pay (queued, or processing): wait for its \
         result; settle it by hand only once WeChat Pay could not pay it"
            .into(),
    )
}

/// The answer when an order that must be unpaid is `status`.
fn not_pending(status: &str) -> StoreError {
    StoreError::Conflict(format!("the order is {status}, not pending_payment"))
}

/// The answer to a waiting-room call on a sale without one.
pub(crate) fn not_queued() -> StoreError {
    StoreError::Conflict("this sale has no waiting room (its admission mode is open)".into())
}

/// The answer when a merchant's change was computed from an older version.
fn changed_meanwhile() -> StoreError {
    StoreError::Conflict("the sale changed meanwhile; read it again and retry".into())
}

/// The answer when a campaign's change was computed from an older version.
fn campaign_changed_meanwhile() -> StoreError {
    StoreError::Conflict("the campaign changed meanwhile; read it again and retry".into())
}

/// The answer when a campaign's change needs its first round not started.
fn campaign_started(what: &str) -> StoreError {
    StoreError::Conflict(format!(
        "the campaign has started; {what}: only before its first round starts (after it: \
         top up items, move rounds not started, end a round now, change remind_before_secs)"
    ))
}

/// The answer when one sale of a campaign refuses its step.
fn campaign_sale_refused(sale: &SaleId, reason: &str) -> StoreError {
    let place = sale.campaign().map_or_else(String::new, |slot| {
        format!("round {}, item {} ", slot.round, slot.item)
    });
    StoreError::Conflict(format!("{place}({sale}): {reason}"))
}

/// Payment exceptions newest first, ties by transaction so the listing is
/// stable.
fn sort_exceptions_newest_first(exceptions: &mut [PaymentException]) {
    exceptions.sort_by(|a, b| {
        b.recorded_at
            .cmp(&a.recorded_at)
            .then(b.transaction_id.cmp(&a.transaction_id))
    });
}

/// Dead letters oldest first, ties by hand-off so the listing is stable.
fn sort_oldest_first(letters: &mut [DeadLetter]) {
    letters.sort_by_cached_key(|letter| (letter.at, letter.errand.listing_key()));
}

/// Orders newest first, ties by id so the listing is stable.
fn sort_newest_first(orders: &mut [Order]) {
    orders.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errand_reads_back_as_it_names_itself() {
        let order = OrderId::generate(&SaleId::generate());
        for errand in [
            Errand::Order(OrderEvent::Paid, order.clone()),
            Errand::Order(OrderEvent::Refund, order),
            Errand::RoundStarting,
        ] {
            assert_eq!(errand.to_string().parse(), Ok(errand.clone()));
            assert!(!errand.listing_key().contains(' '), "{errand}");
        }
        assert_eq!(Errand::RoundStarting.to_string(), "campaign.round_starting");
        assert!("campaign.round_starting o_x".parse::<Errand>().is_err());
        assert!("order.paid".parse::<Errand>().is_err());
    }
}
