//! Model-based test of the store: proptest draws sequences of operations,
//! each runs on a store and on a reference model, and after every step the
//! store's answers and state are compared with the model's.
//!
//! Goal: both `Store` implementations (embedded, and Redis with the scripts
//! of `lua/`) behave exactly like a small reference model, whatever the
//! order of reserve, resend, cancel, pay, the merchant's refund (with or
//! without restock), expire, restock, end, open, move the end, cancel the
//! sale and clock advance; after every step the store's state equals the
//! model's and the sale's invariants hold.
//!
//! Batches: `ReserveBatch` sends 1..=8 reservations in one `reserve_batch`
//! call (new ones drawn as `Reserve` draws them, resends of earlier orders,
//! and requests of the same batch sent again, so shoppers, idempotency keys
//! and order ids repeat within a batch); the model decides them one by one,
//! in order, and every outcome must equal the model's. Redis reads the
//! batch's state once and writes it back once, so these are the cases where
//! a batch could differ from the same reservations made one at a time.
//!
//! Method: proptest generates a sale (stock 1..=12, per-user limit 1..=4,
//! a price, a time window and a payment timeout) and a sequence of up to 30
//! operations by three shoppers (and a stranger). Each case runs on a fresh store (a new
//! `EmbeddedStore`, or `FLUSHDB` on the test's own `redis-server`). Each
//! operation goes to the store and to [`Model`], a plain struct written from
//! the contract and the README's order lifecycle (it shares no code with
//! either store, not even `domain::check_reservation`): the store's answer
//! (the whole order or reservation, the payment outcome, the error kind)
//! must equal the model's. Merchant changes go straight to `update_sale`
//! and `cancel_sale`, as `SaleChange`s built by the test (the HTTP layer's
//! field validation is not in the way, nor under test). After every step the test reads back
//! the sale view (the sale, its version and every stats counter), the order
//! service's backlog (stream entries, unpaid orders, queued hand-offs) and
//! every shopper's orders (`shopper_orders`), compares them with the model, and
//! checks the invariants on what the store returned, independently of the
//! model: `remaining + reserved + paid + refunded - restocked ==
//! stock_total`, no counter below 0, `reserved`/`paid`/`refund_required`/
//! `refunded` equal to the sums over the orders in those states and
//! `restocked` over the orders refunded with restock, `cancelled + expired`
//! equal to the units of every order that was cancelled or expired (those
//! paid late and `refund_required` included), nobody holding more than the
//! limit (a refund without restock leaves the units held), `buyers` equal to the shoppers holding units, and every
//! order's `expires_at - created_at` equal to the payment timeout.
//!
//! Time: both stores read the real clock (Redis `TIME`, `system_now()`);
//! there is no injectable clock and this test adds none. The sale is built
//! directly (bypassing the API's validation) so that time decides
//! deterministically where it can, and the model is told the time honestly
//! where it cannot:
//! - Each store call is bracketed by `system_now()` before and after (the
//!   test's `redis-server` runs on this machine: the same clock as `TIME`). The model evaluates the call at
//!   every instant that could give a different answer inside the bracket
//!   (its two ends, every start, end or payment deadline falling inside it,
//!   and the time the store stamped on the answer: `created_at`,
//!   `paid_at`), and the store's answer must equal one of those. So a call
//!   racing a deadline may go either way, but only a way the model allows.
//! - The main tests ([`CASES_EMBEDDED`], [`CASES_REDIS`] cases) use windows
//!   far from now (live for an hour either side, opening in an hour, or
//!   closed an hour ago) and a payment timeout of 0 (every unpaid order is
//!   due at once: `expire_due` expires it, a payment before that is still
//!   accepted) or 7,200 s (never due within a case). Crossing the start is
//!   covered by the merchant opening the sale early (`OpenNow`: a change of
//!   `starts_at` before the start); crossing the end by the merchant
//!   stopping it (`End`); `MoveEnd` moves the end (refused into the past).
//!   No real time passes.
//! - The real-clock test ([`CASES_REAL_CLOCK`] cases, each run on both
//!   stores at once) uses a 1 s payment timeout and a window that is open
//!   already or opens 50..250 ms after the case starts, and closes 1.2..3 s
//!   after it. `Advance` sleeps for real (100..300 ms now and then, and
//!   1.1 s once in every case, past every deadline so far; at most
//!   [`SLEEP_MS_MAX`] per case), and every case ends with an expiry step, so
//!   the start, the end and payment deadlines are crossed by the clock
//!   itself. Its cases are few: the sleeps are the cost.
//!
//! Campaigns: [`campaign`] draws a campaign of two rounds and checks the
//! limits across its items (per round, in total) and every item's counts
//! against a model of its own, on both stores.
//!
//! Not covered here: concurrency (one call at a time; the race tests and
//! `orders_races` cover that), purchase tokens, the reservation stream's
//! consumer side and webhook leases, Redis Cluster, and a
//! clock that jumps (NTP) during a case.
//!
//! Reproducing: cases per test honour `PROPTEST_CASES`; the seed is printed
//! and honoured from `PROPTEST_RNG_SEED` (real-clock cases replay the same
//! operations, not the same timings). No failure-persistence files are
//! written; a failure prints the shrunk case.

mod campaign;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flashsale::domain::{
    system_now, Millis, Order, OrderId, OrderStatus, Quantity, Rejection, Sale, SaleChange, SaleId,
    SaleState, SaleStats, ShopperId,
};
use flashsale::domain::{Payment, PaymentOutcome, RefundKind, Reservation, ReserveRequest};
use flashsale::store::{EmbeddedStore, FollowUps, OrderBacklog, ShopperBounds, Store, StoreError};
use futures::future::join_all;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestCaseError, TestRunner};

use crate::conformance::{subject_bounded, Subject};
use crate::support::Backend;

/// Cases of the main test on the embedded store (under 1 ms each in a debug
/// build).
const CASES_EMBEDDED: u32 = 5_000;
/// Cases of the main test on Redis (every step is several round trips).
/// Enough that its rarest labels (a sale called off, a key's quantity
/// changed midway through a batch: about one case in 80) are all reached,
/// which the run asserts.
const CASES_REDIS: u32 = 800;
/// Cases of the real-clock test: each may sleep up to [`SLEEP_MS_MAX`].
const CASES_REAL_CLOCK: u32 = 10;
/// Real time one real-clock case may sleep in all.
const SLEEP_MS_MAX: u64 = 2_000;
/// Operations per case at most.
const STEPS_MAX: usize = 30;
/// The stores' bounds on a shopper's cancels and expiries in a sale, low
/// enough that cases reach them.
const BOUNDS: ShopperBounds = ShopperBounds {
    cancels: 2,
    expiries: 3,
};
/// Reservations per `reserve_batch` call at most.
const BATCH_MAX: usize = 8;
/// The shoppers of every case; `mallory` owns nothing and tries to cancel.
const SHOPPERS: [&str; 3] = ["amy", "bo", "cy"];
const STRANGER: &str = "mallory";
const HOUR_MS: i64 = 3_600_000;

// ---------------------------------------------------------------------------
// Cases

/// The sale a case runs on, relative to the instant the case starts.
#[derive(Debug, Clone)]
struct Setup {
    stock_total: i64,
    per_user_limit: i64,
    price_cents: i64,
    starts_in_ms: i64,
    ends_in_ms: i64,
    payment_timeout_secs: i64,
}

/// One step. Order indices pick among the orders made so far (none yet: an
/// unknown order id).
#[derive(Debug, Clone)]
enum Op {
    /// A shopper asks for units, maybe with an `Idempotency-Key`.
    Reserve {
        shopper: usize,
        quantity: i64,
        key: Option<u8>,
    },
    /// The very call that made an order, sent again (same order id).
    Resend { order: Index },
    /// Cancel by the owner, or by a stranger.
    Cancel { order: Index, by_owner: bool },
    /// A simulated payment, or one with the wrong amount.
    Pay { order: Index, wrong_amount: bool },
    /// The merchant refunds an order (simulated payments: refunded at
    /// once), putting its units back on sale or not.
    Refund { order: Index, restock: bool },
    /// The order service's expiry step, `limit` orders at most.
    Expire { limit: usize },
    /// The merchant changes `stock_total` by `delta` (at least 1 remains),
    /// from the current version or an old one.
    Restock { delta: i64, stale: bool },
    /// The merchant stops the sale now.
    End,
    /// The merchant moves the start to just now and changes the limit
    /// (allowed only before the start).
    OpenNow { per_user_limit: i64 },
    /// The merchant calls the sale off (allowed only before the start).
    CancelSale,
    /// The merchant moves the end to `by_ms` after now or the start,
    /// whichever is later (in the past when negative: refused).
    MoveEnd { by_ms: i64 },
    /// Real time passes (real-clock tests only).
    Advance { ms: u64 },
    /// 1..=[`BATCH_MAX`] reservations of the sale in one `reserve_batch`
    /// call (the model decides them one by one, in order).
    ReserveBatch(Vec<BatchItem>),
}

/// One reservation of a batch.
#[derive(Debug, Clone)]
enum BatchItem {
    /// A new order, drawn as [`Op::Reserve`] draws it.
    Reserve {
        shopper: usize,
        quantity: i64,
        key: Option<u8>,
    },
    /// An order made before the batch, resent (as [`Op::Resend`]).
    Resend { order: Index },
    /// An earlier request of this very batch, sent again (the same
    /// `ReserveRequest`: same order id, shopper, quantity and key). The
    /// batch's first item has none before it: it resends as `Resend` does.
    Again { request: Index },
    /// An earlier request of this very batch retried as a client retries:
    /// a new order id, the same shopper, quantity and key (with a key, a
    /// replay of the order the batch just made). The batch's first item
    /// has none before it: it resends as `Resend` does.
    Retry { request: Index },
}

/// A new reservation as `Reserve` draws it: (shopper, quantity, key).
fn reserve_strategy() -> impl Strategy<Value = (usize, i64, Option<u8>)> + Clone {
    (
        0..SHOPPERS.len(),
        1..=5_i64,
        proptest::option::weighted(0.4, 0..3_u8),
        proptest::bool::weighted(0.7),
    )
        .prop_map(|(shopper, quantity, key, usual)| {
            // A key usually comes with the same quantity (a retry
            // replays), sometimes with another (refused).
            let quantity = match key {
                Some(key) if usual => i64::from(key) + 1,
                _ => quantity,
            };
            (shopper, quantity, key)
        })
}

fn batch_strategy() -> impl Strategy<Value = Op> {
    let item = prop_oneof![
        6 => reserve_strategy().prop_map(|(shopper, quantity, key)| BatchItem::Reserve {
            shopper,
            quantity,
            key,
        }),
        1 => any::<Index>().prop_map(|order| BatchItem::Resend { order }),
        2 => any::<Index>().prop_map(|request| BatchItem::Again { request }),
        1 => any::<Index>().prop_map(|request| BatchItem::Retry { request }),
    ];
    proptest::collection::vec(item, 1..=BATCH_MAX).prop_map(Op::ReserveBatch)
}

fn op_strategy(real_clock: bool) -> BoxedStrategy<Op> {
    // On the real clock, more reservations and fewer merchant moves: its
    // few cases are there for what time does to orders.
    let w: [u32; 12] = if real_clock {
        [10, 1, 2, 3, 3, 1, 1, 1, 1, 1, 3, 1]
    } else {
        [16, 2, 6, 8, 6, 4, 1, 2, 1, 2, 6, 4]
    };
    let order = any::<Index>();
    let ops = prop_oneof![
        w[0] => reserve_strategy().prop_map(|(shopper, quantity, key)| Op::Reserve {
            shopper,
            quantity,
            key,
        }),
        w[1] => order.clone().prop_map(|order| Op::Resend { order }),
        w[2] => (order.clone(), proptest::bool::weighted(0.85))
            .prop_map(|(order, by_owner)| Op::Cancel { order, by_owner }),
        w[3] => (order.clone(), proptest::bool::weighted(0.1))
            .prop_map(|(order, wrong_amount)| Op::Pay { order, wrong_amount }),
        w[11] => (order, any::<bool>()).prop_map(|(order, restock)| Op::Refund { order, restock }),
        w[4] => (1..=4_usize).prop_map(|limit| Op::Expire { limit }),
        w[5] => (-4..=4_i64, proptest::bool::weighted(0.15))
            .prop_map(|(delta, stale)| Op::Restock { delta, stale }),
        w[6] => Just(Op::End),
        w[7] => (1..=4_i64).prop_map(|per_user_limit| Op::OpenNow { per_user_limit }),
        w[8] => Just(Op::CancelSale),
        w[9] => prop_oneof![Just(-2 * HOUR_MS), Just(HOUR_MS / 2), Just(2 * HOUR_MS)]
            .prop_map(|by_ms| Op::MoveEnd { by_ms }),
        w[10] => batch_strategy(),
    ];
    if real_clock {
        prop_oneof![
            12 => ops,
            1 => (100..=300_u64).prop_map(|ms| Op::Advance { ms }),
        ]
        .boxed()
    } else {
        ops.boxed()
    }
}

/// A case's operations. On the real clock: some operations, a sleep past
/// every payment deadline so far, more operations, and an expiry step, so
/// every case lets real time decide something.
fn ops_strategy(real_clock: bool) -> BoxedStrategy<Vec<Op>> {
    if real_clock {
        let part = |min| proptest::collection::vec(op_strategy(true), min..=STEPS_MAX / 2);
        (part(2), part(1))
            .prop_map(|(mut ops, later)| {
                ops.push(Op::Advance { ms: 1_100 });
                ops.extend(later);
                ops.push(Op::Expire { limit: 4 });
                ops
            })
            .boxed()
    } else {
        proptest::collection::vec(op_strategy(false), 1..=STEPS_MAX).boxed()
    }
}

fn setup_strategy(real_clock: bool) -> BoxedStrategy<Setup> {
    let shape = (1..=12_i64, 1..=4_i64, 0..=300_i64);
    if real_clock {
        // Open already, or opening within the first operations; closing
        // before, during or after the long sleep.
        let starts_in_ms = prop_oneof![2 => Just(-1_000_i64), 1 => 50..=250_i64];
        (shape, starts_in_ms, 1_200..=3_000_i64)
            .prop_map(
                |((stock_total, per_user_limit, price_cents), starts_in_ms, ends_in_ms)| Setup {
                    stock_total,
                    per_user_limit,
                    price_cents,
                    starts_in_ms,
                    ends_in_ms,
                    payment_timeout_secs: 1,
                },
            )
            .boxed()
    } else {
        // Live now, opening in an hour, or closed an hour ago.
        let window = prop_oneof![
            8 => Just((-HOUR_MS, HOUR_MS)),
            1 => Just((HOUR_MS, 2 * HOUR_MS)),
            1 => Just((-2 * HOUR_MS, -HOUR_MS)),
        ];
        // Due at once, or never within a case.
        let timeout = prop_oneof![Just(0_i64), Just(7_200_i64)];
        (shape, window, timeout)
            .prop_map(
                |(
                    (stock_total, per_user_limit, price_cents),
                    (starts_in_ms, ends_in_ms),
                    payment_timeout_secs,
                )| {
                    Setup {
                        stock_total,
                        per_user_limit,
                        price_cents,
                        starts_in_ms,
                        ends_in_ms,
                        payment_timeout_secs,
                    }
                },
            )
            .boxed()
    }
}

// ---------------------------------------------------------------------------
// The reference model

/// A store's answer with its error reduced to what the contract
/// distinguishes (the kind, not the message).
type Answer<T> = Result<T, Refusal>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    NotFound,
    Conflict,
    Rejected(Rejection),
    /// Unavailable or corrupt: never expected.
    Broken(String),
}

fn answer<T>(result: Result<T, StoreError>) -> Answer<T> {
    result.map_err(|err| match err {
        StoreError::NotFound(_) => Refusal::NotFound,
        StoreError::Conflict(_) => Refusal::Conflict,
        StoreError::Rejected(rejection) => Refusal::Rejected(rejection),
        other => Refusal::Broken(other.to_string()),
    })
}

/// The payment deadline index as both stores keep it
/// (`lua/expire_orders.lua`): one entry per reserve call that made orders,
/// naming them, due at their latest deadline; a payment or a cancel takes
/// out only an order's entry of its own; an expiry step takes due entries
/// whole, in order, until `limit` orders were looked at. Ordered as Redis
/// orders the members.
#[derive(Debug, Clone, Default)]
struct DeadlineIndex(BTreeSet<(Millis, Vec<OrderId>)>);

impl DeadlineIndex {
    /// The orders one reserve call made.
    fn add_call(&mut self, made: &[Order]) {
        if let Some(due) = made.iter().map(|order| order.expires_at).max() {
            let ids = made.iter().map(|order| order.id.clone()).collect();
            self.0.insert((due, ids));
        }
    }

    /// `order` was paid or cancelled.
    fn settled(&mut self, order: &Order) {
        self.0.remove(&(order.expires_at, vec![order.id.clone()]));
    }

    /// An expiry step at `now`: the ids it looks at, in order, their
    /// entries taken out.
    fn take_due(&mut self, now: Millis, limit: usize) -> Vec<OrderId> {
        let due: Vec<(Millis, Vec<OrderId>)> = self
            .0
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(limit)
            .cloned()
            .collect();
        let mut looked = Vec::new();
        for entry in due {
            if looked.len() >= limit {
                break;
            }
            self.0.remove(&entry);
            looked.extend(entry.1);
        }
        looked
    }

    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// One sale as the contract describes it, kept in the simplest structures.
#[derive(Debug, Clone)]
struct Model {
    sale: Sale,
    version: i64,
    stock_remaining: i64,
    units_reserved: i64,
    units_paid: i64,
    units_cancelled: i64,
    units_expired: i64,
    units_refund_required: i64,
    units_refunded: i64,
    units_restocked: i64,
    /// Shopper -> units held (reserved or paid); absent when none.
    held: BTreeMap<ShopperId, i64>,
    /// (shopper, idempotency key) -> (order, quantity asked).
    keys: BTreeMap<(ShopperId, String), (OrderId, i64)>,
    /// Every order, oldest first.
    orders: Vec<Order>,
    /// Hand-offs queued to the merchant: (event, order).
    hand_offs: BTreeSet<(&'static str, OrderId)>,
    /// Entries on the reservation stream: one per reserve call (a lone
    /// reservation or a batch) that made at least one order.
    stream_entries: u64,
    deadlines: DeadlineIndex,
    /// Shopper -> orders they cancelled (at most
    /// `BOUNDS.cancels`).
    cancels: BTreeMap<ShopperId, i64>,
    /// Shopper -> orders they let expire (reserving no more at
    /// `BOUNDS.expiries`).
    expiries: BTreeMap<ShopperId, i64>,
}

impl Model {
    fn new(sale: Sale) -> Self {
        Self {
            version: 1,
            stock_remaining: sale.stock_total,
            units_reserved: 0,
            units_paid: 0,
            units_cancelled: 0,
            units_expired: 0,
            units_refund_required: 0,
            units_refunded: 0,
            units_restocked: 0,
            held: BTreeMap::new(),
            keys: BTreeMap::new(),
            orders: Vec::new(),
            hand_offs: BTreeSet::new(),
            stream_entries: 0,
            deadlines: DeadlineIndex::default(),
            cancels: BTreeMap::new(),
            expiries: BTreeMap::new(),
            sale,
        }
    }

    fn stats(&self) -> SaleStats {
        SaleStats {
            stock_total: self.sale.stock_total,
            remaining: self.stock_remaining,
            reserved: self.units_reserved,
            paid: self.units_paid,
            cancelled: self.units_cancelled,
            expired: self.units_expired,
            refund_required: self.units_refund_required,
            refunded: self.units_refunded,
            restocked: self.units_restocked,
            // Nothing here runs the order service.
            queued: 0,
            buyers: self.held.len() as i64,
        }
    }

    fn backlog(&self) -> OrderBacklog {
        let count = |n: usize| n as u64;
        OrderBacklog {
            // Nothing acknowledges the stream here.
            reservations: self.stream_entries,
            deadlines: self.deadlines.len(),
            hand_offs: count(self.hand_offs.len()),
        }
    }

    /// The shopper's orders as `shopper_orders` lists them: newest first, ties
    /// by id.
    fn orders_of(&self, shopper: &ShopperId) -> Vec<Order> {
        let mut orders: Vec<Order> = self
            .orders
            .iter()
            .filter(|order| &order.shopper_id == shopper)
            .cloned()
            .collect();
        orders.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        orders
    }

    /// Instants inside `[before, after]` at which some answer of the model
    /// may change: the ends, and every start, end and deadline between.
    fn instants(&self, before: Millis, after: Millis, stamp: Option<Millis>) -> Vec<Millis> {
        let inside = |t: Millis| before < t && t <= after;
        let mut instants = vec![before, after];
        instants.extend(stamp.filter(|t| (before..=after).contains(t)));
        instants.extend(
            [self.sale.starts_at, self.sale.ends_at]
                .into_iter()
                .chain(self.orders.iter().map(|order| order.expires_at))
                .filter(|t| inside(*t)),
        );
        instants.sort_unstable();
        instants.dedup();
        instants
    }

    fn reserve(&mut self, request: &ReserveRequest, now: Millis) -> Answer<Reservation> {
        if let Some(order) = self.orders.iter().find(|o| o.id == request.order_id) {
            // A resent call: the order as it is, not a second one.
            return Ok(Reservation {
                order: order.clone(),
                remaining: None,
                held: None,
                replayed: false,
            });
        }
        let quantity = request.quantity.get();
        let key = request
            .idempotency_key
            .clone()
            .map(|key| (request.shopper_id.clone(), key));
        if let Some((id, asked)) = key.as_ref().and_then(|key| self.keys.get(key)) {
            if *asked != quantity {
                return Err(Refusal::Rejected(Rejection::IdempotencyMismatch));
            }
            let order = self.orders.iter().find(|o| &o.id == id).cloned();
            return order
                .map(|order| Reservation {
                    order,
                    remaining: None,
                    held: None,
                    replayed: true,
                })
                .ok_or_else(|| Refusal::Broken("model lost an order".into()));
        }
        // The rule in the contract's order: merchant's decision, window,
        // limit (and the shopper's cancels and expiries), stock.
        let counted = |counts: &BTreeMap<ShopperId, i64>| {
            counts.get(&request.shopper_id).copied().unwrap_or(0)
        };
        let held = counted(&self.held);
        let refused = if self.sale.state != SaleState::Scheduled {
            Some(Rejection::Ended)
        } else if now < self.sale.starts_at {
            Some(Rejection::NotStarted)
        } else if now >= self.sale.ends_at {
            Some(Rejection::Ended)
        } else if held + quantity > self.sale.per_user_limit {
            Some(Rejection::LimitExceeded)
        } else if counted(&self.cancels) >= BOUNDS.cancels
            || counted(&self.expiries) >= BOUNDS.expiries
        {
            Some(Rejection::UnpaidLimitExceeded)
        } else if self.stock_remaining < quantity {
            Some(Rejection::SoldOut)
        } else {
            None
        };
        if let Some(rejection) = refused {
            return Err(Refusal::Rejected(rejection));
        }
        self.stock_remaining -= quantity;
        self.units_reserved += quantity;
        self.held
            .insert(request.shopper_id.clone(), held + quantity);
        let order = Order {
            id: request.order_id.clone(),
            sale_id: self.sale.id.clone(),
            shopper_id: request.shopper_id.clone(),
            quantity,
            amount_cents: quantity * self.sale.price_cents,
            currency: self.sale.currency.as_str().into(),
            status: OrderStatus::PendingPayment,
            created_at: now,
            expires_at: now + self.sale.payment_timeout_secs * 1_000,
            paid_at: None,
            prepay_id: None,
            transaction_id: None,
            refund: None,
            refund_settled_by_hand_at: None,
        };
        self.orders.push(order.clone());
        if let Some(key) = key {
            self.keys.insert(key, (order.id.clone(), quantity));
        }
        Ok(Reservation {
            order,
            remaining: Some(self.stock_remaining),
            held: Some(held + quantity),
            replayed: false,
        })
    }

    /// An unpaid order gives its units back (cancelled or expired).
    fn release(&mut self, at: usize, status: OrderStatus) -> Order {
        let order = &mut self.orders[at];
        order.status = status;
        let order = order.clone();
        self.stock_remaining += order.quantity;
        self.units_reserved -= order.quantity;
        if status == OrderStatus::Cancelled {
            self.units_cancelled += order.quantity;
        } else {
            self.units_expired += order.quantity;
            *self.expiries.entry(order.shopper_id.clone()).or_default() += 1;
        }
        if let Some(held) = self.held.get_mut(&order.shopper_id) {
            *held -= order.quantity;
            if *held <= 0 {
                self.held.remove(&order.shopper_id);
            }
        }
        self.deadlines.settled(&order);
        order
    }

    fn cancel(&mut self, id: &OrderId, shopper: &ShopperId) -> Answer<Order> {
        let at = self
            .orders
            .iter()
            .position(|order| &order.id == id && &order.shopper_id == shopper)
            .ok_or(Refusal::NotFound)?;
        if self.orders[at].status != OrderStatus::PendingPayment {
            return Err(Refusal::Conflict);
        }
        let cancelled = self.cancels.entry(shopper.clone()).or_default();
        if *cancelled >= BOUNDS.cancels {
            return Err(Refusal::Conflict);
        }
        *cancelled += 1;
        Ok(self.release(at, OrderStatus::Cancelled))
    }

    fn pay(&mut self, id: &OrderId, payment: &Payment, now: Millis) -> Answer<PaymentOutcome> {
        let at = self
            .orders
            .iter()
            .position(|order| &order.id == id)
            .ok_or(Refusal::NotFound)?;
        let order = &mut self.orders[at];
        if let Some((amount, currency)) = &payment.amount {
            if *amount != order.amount_cents || *currency != order.currency {
                return Ok(PaymentOutcome::AmountMismatch(order.clone()));
            }
        }
        match order.status {
            OrderStatus::Paid
            | OrderStatus::RefundRequired
            | OrderStatus::Refunding
            | OrderStatus::Refunded => Ok(PaymentOutcome::Unchanged(order.clone())),
            // Paid in time, or late but before the expiry step ran: paid.
            OrderStatus::PendingPayment => {
                order.status = OrderStatus::Paid;
                order.paid_at = Some(now);
                order.transaction_id = Some(payment.transaction_id.clone());
                let order = order.clone();
                self.units_reserved -= order.quantity;
                self.units_paid += order.quantity;
                self.hand_offs.insert(("order.paid", order.id.clone()));
                self.deadlines.settled(&order);
                Ok(PaymentOutcome::Paid(order))
            }
            // The units are back on sale already: the money goes back.
            OrderStatus::Cancelled | OrderStatus::Expired => {
                order.status = OrderStatus::RefundRequired;
                order.paid_at = Some(now);
                order.transaction_id = Some(payment.transaction_id.clone());
                let order = order.clone();
                self.units_refund_required += order.quantity;
                self.hand_offs
                    .insert(("order.refund_required", order.id.clone()));
                Ok(PaymentOutcome::RefundRequired(order))
            }
        }
    }

    /// The orders expired and how many settled ones were passed over.
    fn expire(&mut self, limit: usize, now: Millis) -> Answer<(Vec<Order>, usize)> {
        let (mut expired, mut passed_over) = (Vec::new(), 0);
        for id in self.deadlines.take_due(now, limit) {
            let at = self.orders.iter().position(|order| order.id == id);
            match at.filter(|at| self.orders[*at].status == OrderStatus::PendingPayment) {
                Some(at) => expired.push(self.release(at, OrderStatus::Expired)),
                None => passed_over += 1,
            }
        }
        Ok((expired, passed_over))
    }

    fn update(&mut self, change: &SaleChange, version: i64, now: Millis) -> Answer<()> {
        if self.sale.state != SaleState::Scheduled || version != self.version {
            return Err(Refusal::Conflict);
        }
        let started = now >= self.sale.starts_at;
        if started && (now >= self.sale.ends_at || change.restricted) {
            return Err(Refusal::Conflict);
        }
        let held = self.units_off_sale();
        if change.sale.stock_total < held {
            return Err(Refusal::Conflict);
        }
        if change.sale.ends_at != self.sale.ends_at && change.sale.ends_at <= now {
            return Err(Refusal::Conflict);
        }
        if change.restricted {
            self.sale = Sale {
                state: self.sale.state,
                ..change.sale.clone()
            };
        }
        self.sale.stock_total = change.sale.stock_total;
        self.sale.ends_at = change.sale.ends_at;
        if change.end_now {
            self.sale.state = SaleState::Ended;
            self.sale.ends_at = self.sale.ends_at.min(now.max(self.sale.starts_at));
        }
        self.stock_remaining = self.sale.stock_total - held;
        self.version += 1;
        Ok(())
    }

    /// The units no change of the stock may take back: reserved, paid, or
    /// refunded without restock.
    fn units_off_sale(&self) -> i64 {
        self.units_reserved + self.units_paid + self.units_refunded - self.units_restocked
    }

    /// The merchant's refund of a paid order: its units leave `paid` for
    /// `refunded` (handed off as `order.refunded`), and with restock, only
    /// while the sale is live, go back on sale and off the shopper's count;
    /// without, they stay the shopper's.
    fn refund(&mut self, id: &OrderId, restock: bool, now: Millis) -> Answer<Order> {
        let live = self.sale.state == SaleState::Scheduled
            && now >= self.sale.starts_at
            && now < self.sale.ends_at;
        let order = self
            .orders
            .iter_mut()
            .find(|order| &order.id == id)
            .ok_or(Refusal::NotFound)?;
        if order.status != OrderStatus::Paid || (restock && !live) {
            return Err(Refusal::Conflict);
        }
        order.status = OrderStatus::Refunded;
        order.refund = Some(if restock {
            RefundKind::Restocked
        } else {
            RefundKind::Kept
        });
        let order = order.clone();
        self.units_paid -= order.quantity;
        self.units_refunded += order.quantity;
        self.hand_offs.insert(("order.refunded", order.id.clone()));
        if restock {
            self.stock_remaining += order.quantity;
            self.units_restocked += order.quantity;
            if let Some(held) = self.held.get_mut(&order.shopper_id) {
                *held -= order.quantity;
                if *held <= 0 {
                    self.held.remove(&order.shopper_id);
                }
            }
        }
        Ok(order)
    }

    fn cancel_sale(&mut self, now: Millis) -> Answer<()> {
        if self.sale.state != SaleState::Scheduled || now >= self.sale.starts_at {
            return Err(Refusal::Conflict);
        }
        self.sale.state = SaleState::Cancelled;
        self.version += 1;
        Ok(())
    }
}

/// Accepts the store's answer if the model gives the same one at one of
/// `instants`, and moves the model to that outcome.
fn settle<T: PartialEq + Debug>(
    model: &mut Model,
    what: &str,
    actual: &T,
    instants: &[Millis],
    step: impl Fn(&mut Model, Millis) -> T,
) -> Result<(), TestCaseError> {
    let mut expected = Vec::new();
    for &now in instants {
        let mut next = model.clone();
        let answer = step(&mut next, now);
        if &answer == actual {
            *model = next;
            return Ok(());
        }
        expected.push((now, answer));
    }
    Err(TestCaseError::fail(format!(
        "{what}: the store answered {actual:?}; the model expects, by instant, {expected:?}"
    )))
}

// ---------------------------------------------------------------------------
// Running a case

fn shopper_id(name: &str) -> ShopperId {
    ShopperId::parse(name).expect("valid shopper id")
}

fn broken(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// What every case counts, to show the runs reach each outcome.
type Tally = Mutex<BTreeMap<String, u64>>;

fn count(tally: &Tally, label: String) {
    add(tally, label, 1);
}

fn add(tally: &Tally, label: String, n: u64) {
    *tally.lock().expect("tally lock").entry(label).or_default() += n;
}

/// `"op: outcome"`, the outcome named by `ok` or the refusal.
fn outcome<T>(op: &str, answer: &Answer<T>, ok: impl FnOnce(&T) -> &'static str) -> String {
    match answer {
        Ok(value) => format!("{op}: {}", ok(value)),
        Err(refusal) => format!("{op}: {refusal:?}"),
    }
}

/// The order an operation names: one made so far, or an unknown id.
fn pick(model: &Model, index: &Index) -> Option<Order> {
    (!model.orders.is_empty()).then(|| model.orders[index.index(model.orders.len())].clone())
}

/// A new reservation, as `Op::Reserve` and `BatchItem::Reserve` ask it.
fn new_request(
    model: &Model,
    shopper: usize,
    quantity: i64,
    key: Option<u8>,
) -> Result<ReserveRequest, TestCaseError> {
    Ok(ReserveRequest {
        sale_id: model.sale.id.clone(),
        shopper_id: shopper_id(SHOPPERS[shopper]),
        quantity: Quantity::parse(quantity).map_err(broken)?,
        order_id: OrderId::generate(&model.sale.id),
        idempotency_key: key.map(|k| format!("key-{k}")),
        purchase_token: None,
    })
}

/// The call that made an order of the case, sent again (an unknown order
/// id when there is none yet).
fn resend_request(model: &Model, order: &Index) -> Result<ReserveRequest, TestCaseError> {
    let original = pick(model, order);
    Ok(ReserveRequest {
        sale_id: model.sale.id.clone(),
        shopper_id: original
            .as_ref()
            .map_or_else(|| shopper_id(SHOPPERS[0]), |o| o.shopper_id.clone()),
        quantity: Quantity::parse(original.as_ref().map_or(1, |o| o.quantity)).map_err(broken)?,
        order_id: original
            .as_ref()
            .map_or_else(|| OrderId::generate(&model.sale.id), |o| o.id.clone()),
        idempotency_key: None,
        purchase_token: None,
    })
}

/// What a batch reached: each request's outcome (`"batch: reserved"`,
/// `"batch: replayed"`, `"batch: same order"` for a resent call, or the
/// refusal), and the shapes where a batch's read-once state matters.
fn batch_labels(requests: &[ReserveRequest], actual: &[Answer<Reservation>]) -> Vec<String> {
    let mut labels: Vec<String> = actual
        .iter()
        .map(|answer| {
            outcome("batch", answer, |r| {
                if r.replayed {
                    "replayed"
                } else if r.remaining.is_none() {
                    "same order"
                } else {
                    "reserved"
                }
            })
        })
        .collect();
    let twice = |key: &dyn Fn(&ReserveRequest) -> Option<String>| {
        let keys: Vec<String> = requests.iter().filter_map(key).collect();
        keys.iter().collect::<BTreeSet<_>>().len() < keys.len()
    };
    if twice(&|r| Some(r.shopper_id.to_string())) {
        labels.push("batch: shopper twice".into());
    }
    if twice(&|r| {
        r.idempotency_key
            .as_ref()
            .map(|key| format!("{}/{key}", r.shopper_id))
    }) {
        labels.push("batch: key twice".into());
    }
    if twice(&|r| Some(r.order_id.to_string())) {
        labels.push("batch: order twice".into());
    }
    // Orders this batch made, and what came after one of them.
    let mut made: BTreeSet<&OrderId> = BTreeSet::new();
    for (request, answer) in requests.iter().zip(actual) {
        match answer {
            Ok(r) if r.remaining.is_some() => {
                made.insert(&r.order.id);
            }
            Ok(r) if made.contains(&r.order.id) => labels.push(if r.replayed {
                "batch: replayed an order of the batch".into()
            } else {
                "batch: resent an order of the batch".into()
            }),
            Err(Refusal::Rejected(rejection)) if !made.is_empty() => {
                let same_shopper = made.iter().any(|id| {
                    requests
                        .iter()
                        .any(|r| &r.order_id == *id && r.shopper_id == request.shopper_id)
                });
                match rejection {
                    Rejection::SoldOut => labels.push("batch: sold out midway".into()),
                    Rejection::LimitExceeded if same_shopper => {
                        labels.push("batch: limit reached midway".into())
                    }
                    Rejection::IdempotencyMismatch if same_shopper => {
                        labels.push("batch: key mismatch midway".into())
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    labels
}

/// Accepts a batch's outcomes if the model, deciding its requests one by
/// one in order, gives the same ones: each at one of the instants of the
/// call's bracket (as [`Model::instants`], plus every time the store stamped
/// on an order of the batch), never earlier than the one before it (Redis
/// decides a batch at one instant, the embedded store reads the clock per
/// request).
fn settle_batch(
    model: &mut Model,
    what: &str,
    requests: &[ReserveRequest],
    actual: &[Answer<Reservation>],
    before: Millis,
    after: Millis,
) -> Result<(), TestCaseError> {
    let answers = actual;
    let mut earliest = before;
    // Every time the store stamped on an order of the batch: a refusal
    // between two reservations made at one instant was decided at it too.
    let stamps: Vec<Millis> = actual
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .map(|r| r.order.created_at)
        .filter(|t| (before..=after).contains(t))
        .collect();
    for (at, (request, actual)) in requests.iter().zip(actual).enumerate() {
        let mut instants = model.instants(before, after, None);
        instants.extend(&stamps);
        instants.retain(|t| *t >= earliest);
        instants.sort_unstable();
        instants.dedup();
        let mut expected = Vec::new();
        let mut settled = false;
        for now in instants {
            let mut next = model.clone();
            let answer = next.reserve(request, now);
            if &answer == actual {
                *model = next;
                earliest = now;
                settled = true;
                break;
            }
            expected.push((now, answer));
        }
        if !settled {
            return Err(TestCaseError::fail(format!(
                "{what}: request {at} of the batch ({request:?}): the store answered \
                 {actual:?}; the model expects, by instant, {expected:?} (the call's \
                 bracket: [{before}, {after}]; the whole batch's outcomes: {answers:?})"
            )));
        }
    }
    Ok(())
}

async fn run_case(
    store: &dyn Store,
    setup: Setup,
    ops: Vec<Op>,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let now = system_now();
    let sale = Sale {
        id: SaleId::generate(),
        sku: "MODEL-1".into(),
        title: "Model sale".into(),
        price_cents: setup.price_cents,
        currency: "CNY".into(),
        stock_total: setup.stock_total,
        per_user_limit: setup.per_user_limit,
        starts_at: now + setup.starts_in_ms,
        ends_at: now + setup.ends_in_ms,
        payment_timeout_secs: setup.payment_timeout_secs,
        require_purchase_token: false,
        admission: Default::default(),
        state: SaleState::Scheduled,
        created_at: now,
    };
    store.create_sale(&sale).await.map_err(broken)?;
    let mut model = Model::new(sale);
    check(store, &model).await?;
    let mut slept_ms = 0;
    for (step, op) in ops.into_iter().enumerate() {
        let what = format!("step {step}: {op:?}");
        apply(store, &mut model, op, &what, tally, &mut slept_ms).await?;
        check(store, &model)
            .await
            .map_err(|err| broken(format!("after {what}: {err}")))?;
    }
    // Each order read by its id, as the order routes do.
    for order in &model.orders {
        let read = store.order(&order.id).await.map_err(broken)?;
        prop_assert_eq!(read.as_ref(), Some(order), "order read by id");
    }
    let unknown = OrderId::generate(&model.sale.id);
    prop_assert_eq!(
        store.order(&unknown).await.map_err(broken)?,
        None,
        "unknown order"
    );
    Ok(())
}

async fn apply(
    store: &dyn Store,
    model: &mut Model,
    op: Op,
    what: &str,
    tally: &Tally,
    slept_ms: &mut u64,
) -> Result<(), TestCaseError> {
    let sale_id = model.sale.id.clone();
    let before = system_now();
    // A merchant's change: sent at `version`, counted under `label` (`done`
    // when it went through), settled against the model.
    let merchant_change = async |model: &mut Model,
                                 change: SaleChange,
                                 version: i64,
                                 label: &str,
                                 done: &'static str| {
        let actual = answer(store.update_sale(&sale_id, &change, version).await);
        let after = system_now();
        count(tally, outcome(label, &actual, |_| done));
        let instants = model.instants(before, after, None);
        settle(model, what, &actual, &instants, |m, now| {
            m.update(&change, version, now)
        })
    };
    let orders_before = model.orders.len();
    let applied = match op {
        Op::Reserve {
            shopper,
            quantity,
            key,
        } => {
            let request = new_request(model, shopper, quantity, key)?;
            let actual = answer(store.reserve(&request).await);
            let after = system_now();
            count(
                tally,
                outcome("reserve", &actual, |r| {
                    if r.replayed {
                        "replayed"
                    } else {
                        "reserved"
                    }
                }),
            );
            let stamp = actual.as_ref().ok().map(|r| r.order.created_at);
            let instants = model.instants(before, after, stamp);
            settle(model, what, &actual, &instants, |m, now| {
                m.reserve(&request, now)
            })
        }
        Op::Resend { order } => {
            let request = resend_request(model, &order)?;
            let actual = answer(store.reserve(&request).await);
            let after = system_now();
            count(
                tally,
                outcome("resend", &actual, |r| {
                    if r.remaining.is_none() {
                        "same order"
                    } else {
                        "reserved"
                    }
                }),
            );
            let stamp = actual.as_ref().ok().map(|r| r.order.created_at);
            let instants = model.instants(before, after, stamp);
            settle(model, what, &actual, &instants, |m, now| {
                m.reserve(&request, now)
            })
        }
        Op::Cancel { order, by_owner } => {
            let target = pick(model, &order);
            let id = target
                .as_ref()
                .map_or_else(|| OrderId::generate(&model.sale.id), |o| o.id.clone());
            let who = match (&target, by_owner) {
                (Some(order), true) => order.shopper_id.clone(),
                _ => shopper_id(STRANGER),
            };
            let actual = answer(store.cancel_order(&id, &who).await);
            let after = system_now();
            count(tally, outcome("cancel", &actual, |_| "cancelled"));
            let instants = model.instants(before, after, None);
            settle(model, what, &actual, &instants, |m, _| m.cancel(&id, &who))
        }
        Op::Pay {
            order,
            wrong_amount,
        } => {
            let target = pick(model, &order);
            let id = target
                .as_ref()
                .map_or_else(|| OrderId::generate(&model.sale.id), |o| o.id.clone());
            let payment = Payment {
                amount: target
                    .as_ref()
                    .filter(|_| wrong_amount)
                    .map(|o| (o.amount_cents + 1, o.currency.to_string())),
                transaction_id: format!("tx-{before}"),
            };
            let actual = answer(
                store
                    .pay_order(
                        &id,
                        &payment,
                        FollowUps {
                            hand_off: true,
                            refund: false,
                        },
                    )
                    .await,
            );
            let after = system_now();
            count(
                tally,
                outcome("pay", &actual, |o| match o {
                    PaymentOutcome::Paid(_) => "paid",
                    PaymentOutcome::Unchanged(_) => "unchanged",
                    PaymentOutcome::RefundRequired(_) => "refund_required",
                    PaymentOutcome::AmountMismatch(_) => "amount_mismatch",
                }),
            );
            let stamp = match &actual {
                Ok(PaymentOutcome::Paid(o) | PaymentOutcome::RefundRequired(o)) => o.paid_at,
                _ => None,
            };
            let instants = model.instants(before, after, stamp);
            settle(model, what, &actual, &instants, |m, now| {
                m.pay(&id, &payment, now)
            })
        }
        Op::Refund { order, restock } => {
            let id =
                pick(model, &order).map_or_else(|| OrderId::generate(&model.sale.id), |o| o.id);
            let follow_ups = FollowUps {
                hand_off: true,
                refund: false,
            };
            let actual = answer(store.refund_order(&id, restock, follow_ups).await);
            let after = system_now();
            count(
                tally,
                outcome("refund", &actual, |order| match order.refund {
                    Some(RefundKind::Restocked) => "restocked",
                    _ => "kept",
                }),
            );
            let instants = model.instants(before, after, None);
            settle(model, what, &actual, &instants, |m, now| {
                m.refund(&id, restock, now)
            })
        }
        Op::Expire { limit } => {
            // The model makes no prepay: nothing is ever held.
            let actual = answer(
                store
                    .expire_due(&sale_id, limit, Duration::from_secs(1))
                    .await
                    .map(|expiry| (expiry.expired, expiry.passed_over)),
            );
            let after = system_now();
            count(
                tally,
                outcome("expire", &actual, |(orders, passed_over)| {
                    match (orders.is_empty(), *passed_over == 0) {
                        (true, true) => "none due",
                        (true, false) => "passed over settled orders only",
                        (false, _) => "expired some",
                    }
                }),
            );
            let instants = model.instants(before, after, None);
            settle(model, what, &actual, &instants, |m, now| {
                m.expire(limit, now)
            })
        }
        Op::Restock { delta, stale } => {
            let change = SaleChange {
                sale: Sale {
                    stock_total: (model.sale.stock_total + delta).max(1),
                    ..model.sale.clone()
                },
                restricted: false,
                end_now: false,
            };
            let version = if stale {
                model.version - 1
            } else {
                model.version
            };
            merchant_change(model, change, version, "restock", "changed").await
        }
        Op::End => {
            let change = SaleChange {
                sale: model.sale.clone(),
                restricted: false,
                end_now: true,
            };
            let version = model.version;
            let scheduled_end = model.sale.ends_at;
            let applied = merchant_change(model, change, version, "end", "ended").await;
            // Stopped at the store's instant inside the call: the model
            // takes the end the store stamped, once it is one it allows.
            if applied.is_ok() && model.sale.state == SaleState::Ended {
                let after = system_now();
                let stamped = store
                    .view_sale(&sale_id)
                    .await
                    .map_err(broken)?
                    .ok_or_else(|| broken("the sale is gone"))?
                    .sale
                    .ends_at;
                let allowed = |at: Millis| scheduled_end.min(at.max(model.sale.starts_at));
                prop_assert!(
                    (allowed(before)..=allowed(after)).contains(&stamped),
                    "{what}: ended at {stamped}, outside the call's bracket"
                );
                model.sale.ends_at = stamped;
            }
            applied
        }
        Op::OpenNow { per_user_limit } => {
            let change = SaleChange {
                sale: Sale {
                    starts_at: before - 1_000,
                    per_user_limit,
                    ..model.sale.clone()
                },
                restricted: true,
                end_now: false,
            };
            let version = model.version;
            merchant_change(model, change, version, "open now", "opened").await
        }
        Op::MoveEnd { by_ms } => {
            let change = SaleChange {
                sale: Sale {
                    ends_at: before.max(model.sale.starts_at) + by_ms,
                    ..model.sale.clone()
                },
                restricted: false,
                end_now: false,
            };
            let version = model.version;
            merchant_change(model, change, version, "move end", "moved").await
        }
        Op::CancelSale => {
            let actual = answer(store.cancel_sale(&sale_id).await);
            let after = system_now();
            count(tally, outcome("cancel sale", &actual, |_| "cancelled"));
            let instants = model.instants(before, after, None);
            settle(model, what, &actual, &instants, |m, now| m.cancel_sale(now))
        }
        Op::ReserveBatch(items) => {
            let mut requests: Vec<ReserveRequest> = Vec::with_capacity(items.len());
            for item in items {
                let request = match item {
                    BatchItem::Reserve {
                        shopper,
                        quantity,
                        key,
                    } => new_request(model, shopper, quantity, key)?,
                    BatchItem::Again { request } if !requests.is_empty() => {
                        requests[request.index(requests.len())].clone()
                    }
                    BatchItem::Retry { request } if !requests.is_empty() => ReserveRequest {
                        order_id: OrderId::generate(&model.sale.id),
                        ..requests[request.index(requests.len())].clone()
                    },
                    BatchItem::Resend { order: index }
                    | BatchItem::Again { request: index }
                    | BatchItem::Retry { request: index } => resend_request(model, &index)?,
                };
                requests.push(request);
            }
            let actual: Vec<Answer<Reservation>> = store
                .reserve_batch(&requests)
                .await
                .map_err(|err| broken(format!("{what}: reserve_batch failed: {err}")))?
                .into_iter()
                .map(answer)
                .collect();
            let after = system_now();
            prop_assert_eq!(
                actual.len(),
                requests.len(),
                "{}: one outcome per request",
                what
            );
            for label in batch_labels(&requests, &actual) {
                count(tally, label);
            }
            settle_batch(model, what, &requests, &actual, before, after)
        }
        Op::Advance { ms } => {
            let ms = ms.min(SLEEP_MS_MAX.saturating_sub(*slept_ms));
            *slept_ms += ms;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            count(tally, "advance".into());
            Ok(())
        }
    };
    if model.orders.len() > orders_before {
        model.stream_entries += 1;
        model.deadlines.add_call(&model.orders[orders_before..]);
    }
    applied
}

/// Reads the store back and compares it with the model; checks the
/// invariants on what the store returned.
async fn check(store: &dyn Store, model: &Model) -> Result<(), TestCaseError> {
    let id = &model.sale.id;
    let before = system_now();
    let view = store
        .view_sale(id)
        .await
        .map_err(broken)?
        .ok_or_else(|| broken("the sale is gone"))?;
    let after = system_now();
    prop_assert!(
        (before..=after).contains(&view.now),
        "store clock {} outside [{before}, {after}]",
        view.now
    );
    // Left: the store; right: the model.
    prop_assert_eq!(&view.sale, &model.sale, "sale");
    prop_assert_eq!(view.version, model.version, "version");
    prop_assert_eq!(view.stats, model.stats(), "stats");
    let backlog = store.order_backlog(id).await.map_err(broken)?;
    prop_assert_eq!(backlog, model.backlog(), "order backlog");

    let shoppers: Vec<ShopperId> = SHOPPERS
        .iter()
        .chain([&STRANGER])
        .map(|u| shopper_id(u))
        .collect();
    let listed = join_all(shoppers.iter().map(|u| store.shopper_orders(u))).await;
    let mut orders = Vec::new();
    for (shopper, list) in shoppers.iter().zip(listed) {
        let list = list.map_err(broken)?;
        prop_assert_eq!(&list, &model.orders_of(shopper), "orders of {}", shopper);
        orders.extend(list);
    }
    invariants(&view.sale, &view.stats, &orders)
}

/// The sale's invariants, from the store's own answers alone.
fn invariants(sale: &Sale, stats: &SaleStats, orders: &[Order]) -> Result<(), TestCaseError> {
    let units = |statuses: &[OrderStatus]| -> i64 {
        orders
            .iter()
            .filter(|order| statuses.contains(&order.status))
            .map(|order| order.quantity)
            .sum()
    };
    prop_assert_eq!(
        stats.remaining + stats.reserved + stats.paid + stats.refunded - stats.restocked,
        stats.stock_total,
        "remaining + reserved + paid + refunded - restocked == stock_total: {:?}",
        stats
    );
    prop_assert!(
        [
            stats.remaining,
            stats.reserved,
            stats.paid,
            stats.cancelled,
            stats.expired,
            stats.refunded,
            stats.restocked
        ]
        .iter()
        .all(|n| *n >= 0),
        "no counter below 0: {:?}",
        stats
    );
    prop_assert_eq!(stats.stock_total, sale.stock_total);
    prop_assert_eq!(stats.reserved, units(&[OrderStatus::PendingPayment]));
    prop_assert_eq!(stats.paid, units(&[OrderStatus::Paid]));
    prop_assert_eq!(stats.refund_required, units(&[OrderStatus::RefundRequired]));
    prop_assert_eq!(stats.refunded, units(&[OrderStatus::Refunded]));
    let restocked: i64 = orders
        .iter()
        .filter(|order| order.refund == Some(RefundKind::Restocked))
        .map(|order| order.quantity)
        .sum();
    prop_assert_eq!(stats.restocked, restocked);
    prop_assert_eq!(
        stats.cancelled + stats.expired,
        units(&[
            OrderStatus::Cancelled,
            OrderStatus::Expired,
            OrderStatus::RefundRequired
        ])
    );
    let mut held: BTreeMap<&ShopperId, i64> = BTreeMap::new();
    for order in orders {
        prop_assert_eq!(
            order.expires_at - order.created_at,
            sale.payment_timeout_secs * 1_000
        );
        // A refund without restock leaves the units the shopper's.
        let kept = order.status == OrderStatus::Refunded && order.refund == Some(RefundKind::Kept);
        if kept
            || matches!(
                order.status,
                OrderStatus::PendingPayment | OrderStatus::Paid
            )
        {
            *held.entry(&order.shopper_id).or_default() += order.quantity;
        }
    }
    for (shopper, units) in &held {
        prop_assert!(
            *units <= sale.per_user_limit,
            "{} holds {} units, limit {}",
            shopper,
            units,
            sale.per_user_limit
        );
    }
    prop_assert_eq!(stats.buyers, held.len() as i64, "buyers");
    Ok(())
}

// ---------------------------------------------------------------------------
// The tests

/// The runner's settings: `cases` unless `PROPTEST_CASES` says otherwise,
/// a seed (`PROPTEST_RNG_SEED` to replay one), no persistence files. Also
/// returns how to replay the run.
fn runner(name: &str, cases: u32) -> (TestRunner, String) {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if config.rng_seed == RngSeed::Random {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64);
        config.rng_seed = RngSeed::Fixed(seed);
    }
    let replay = match config.rng_seed {
        RngSeed::Fixed(seed) => format!("PROPTEST_RNG_SEED={seed} PROPTEST_CASES={}", config.cases),
        RngSeed::Random => String::new(),
    };
    println!("{name}: {} cases; replay with {replay}", config.cases);
    config.failure_persistence = None;
    config.max_shrink_iters = 2_000;
    (TestRunner::new(config), replay)
}

/// Outcomes every full run of the main test reaches (a model test that
/// never reaches them proves nothing about them).
const REACHED: [&str; 43] = [
    "reserve: reserved",
    "reserve: replayed",
    "reserve: Rejected(NotStarted)",
    "reserve: Rejected(Ended)",
    "reserve: Rejected(SoldOut)",
    "reserve: Rejected(LimitExceeded)",
    "reserve: Rejected(UnpaidLimitExceeded)",
    "reserve: Rejected(IdempotencyMismatch)",
    "resend: same order",
    "cancel: cancelled",
    "cancel: NotFound",
    "cancel: Conflict",
    "pay: paid",
    "pay: unchanged",
    "pay: refund_required",
    "pay: amount_mismatch",
    "refund: kept",
    "refund: restocked",
    "refund: Conflict",
    "expire: expired some",
    "expire: none due",
    "restock: changed",
    "restock: Conflict",
    "end: ended",
    "open now: opened",
    "move end: moved",
    "move end: Conflict",
    "batch: reserved",
    "batch: replayed",
    "batch: same order",
    "batch: Rejected(NotStarted)",
    "batch: Rejected(Ended)",
    "batch: Rejected(SoldOut)",
    "batch: Rejected(LimitExceeded)",
    "batch: Rejected(IdempotencyMismatch)",
    "batch: shopper twice",
    "batch: key twice",
    "batch: order twice",
    "batch: replayed an order of the batch",
    "batch: resent an order of the batch",
    "batch: sold out midway",
    "batch: limit reached midway",
    "batch: key mismatch midway",
];

/// A store under test and, on Redis, the connection that empties it.
struct Target {
    name: &'static str,
    subject: Subject,
    flush: Option<Mutex<redis::Connection>>,
}

impl Target {
    async fn start(name: &'static str, backend: Backend) -> Self {
        let subject = subject_bounded(backend, BOUNDS).await;
        let flush = subject
            .redis
            .standalone()
            .map(|server| Mutex::new(server.connection()));
        Self {
            name,
            subject,
            flush,
        }
    }

    /// A fresh store for one case: a new embedded one, or the emptied Redis.
    fn fresh(&self) -> Result<Arc<dyn Store>, TestCaseError> {
        match &self.flush {
            Some(conn) => {
                let mut conn = conn.lock().expect("flush lock");
                redis::cmd("FLUSHDB")
                    .query::<()>(&mut *conn)
                    .map_err(broken)?;
                Ok(Arc::clone(&self.subject.store))
            }
            None => Ok(Arc::new(EmbeddedStore::new().with_shopper_bounds(BOUNDS))),
        }
    }
}

/// Runs `cases` generated cases; each runs on a fresh store of every one of
/// `backends` at once (the same operations, one model per store), and
/// prints what they reached.
fn run(name: &str, backends: &[(&'static str, Backend)], cases: u32, real_clock: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut runner, replay) = runner(name, cases);
    let full_run = runner.config().cases >= cases;
    let targets: Vec<Target> = runtime.block_on(join_all(
        backends
            .iter()
            .map(|(name, backend)| Target::start(name, *backend)),
    ));
    let tally = Tally::default();
    let strategy = (setup_strategy(real_clock), ops_strategy(real_clock));
    let started = Instant::now();
    let result = runner.run(&strategy, |(setup, ops)| {
        let stores = targets
            .iter()
            .map(Target::fresh)
            .collect::<Result<Vec<_>, _>>()?;
        count(&tally, "case".into());
        let batches = ops
            .iter()
            .filter(|op| matches!(op, Op::ReserveBatch(_)))
            .count();
        if batches > 0 {
            count(&tally, "case with a batch".into());
            add(&tally, "batch".into(), batches as u64);
        }
        add(&tally, "step".into(), ops.len() as u64);
        let runs = targets.iter().zip(&stores).map(|(target, store)| {
            let (setup, ops, tally) = (setup.clone(), ops.clone(), &tally);
            async move {
                run_case(store.as_ref(), setup, ops, tally)
                    .await
                    .map_err(|err| broken(format!("{} store: {err}", target.name)))
            }
        });
        runtime
            .block_on(futures::future::try_join_all(runs))
            .map(|_| ())
    });
    let elapsed = started.elapsed();
    let tally = tally.into_inner().expect("tally");
    println!(
        "{name}: {} cases run (shrinking included) in {:.1} s",
        tally.get("case").copied().unwrap_or(0),
        elapsed.as_secs_f64()
    );
    let required: &[&str] = if full_run && !real_clock {
        &REACHED
    } else {
        &[]
    };
    conclude(name, &tally, result, &replay, required);
}

/// Prints what a run reached; fails on a failed case (with how to replay
/// it), and when the run missed an outcome of `required`.
fn conclude(
    name: &str,
    tally: &BTreeMap<String, u64>,
    result: Result<(), impl std::fmt::Display>,
    replay: &str,
    required: &[&str],
) {
    println!("{name}: {tally:?}");
    if let Err(failure) = result {
        panic!("{name}: {failure}\nreplay with {replay}");
    }
    let missed: Vec<&str> = required
        .iter()
        .copied()
        .filter(|label| !tally.contains_key(*label))
        .collect();
    assert!(missed.is_empty(), "{name}: never reached {missed:?}");
}

#[test]
fn embedded_store_follows_the_model() {
    run(
        "store_model embedded",
        &[("embedded", Backend::Embedded)],
        CASES_EMBEDDED,
        false,
    );
}

#[test]
fn redis_store_follows_the_model() {
    run(
        "store_model redis",
        &[("redis", Backend::Redis)],
        CASES_REDIS,
        false,
    );
}

/// Both stores in one test, each case on both at once: the sleeps overlap.
#[test]
fn both_stores_follow_the_model_on_the_real_clock() {
    run(
        "store_model real clock",
        &[("embedded", Backend::Embedded), ("redis", Backend::Redis)],
        CASES_REAL_CLOCK,
        true,
    );
}
