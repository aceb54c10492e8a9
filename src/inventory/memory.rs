//! What a sale's actor believes of its sale, and how sure it is. Kept apart
//! from the actor (no mailbox, no store, no clock of its own: instants come
//! in as arguments) so the rules of certainty read and test on their own.
//!
//! The store's clock is bracketed from each snapshot: it read `now` somewhere
//! between sending the read and receiving the answer, so its offset to this
//! process's steady clock lies in `[now - received, now - sent]`.
//!
//! Memory answers only when the answer is certain. It asks the domain's
//! reservation rule ([`check_reservation`]) at both ends of the range the
//! store's clock can be in, each widened by the clock margin, for the most
//! the store may still allow: the stock last heard of, the fewest units
//! the shopper can hold (the per-user limit if known to hold it, else none)
//! and a fresh purchase token. A refusal both ends agree on holds at every
//! instant between (the rule's window is one interval), so the store
//! refuses too. That gives:
//!
//! - `not_started`: even the latest possible store clock is before the start
//!   (by more than the clock margin). No order can exist yet, so this holds
//!   for idempotent retries too.
//! - `ended`: the merchant ended or cancelled the sale, or even the earliest
//!   possible store clock is past the end (by more than the margin).
//! - `limit_exceeded` / `sold_out`, only while the sale is surely open: the
//!   shopper asked for more than the limit or is known to hold it; or the
//!   store's last word left fewer units than asked.
//!
//! Where memory's answer differs from the store's: memory knows no purchase
//! tokens and checks as if the token were fresh. On a sale that requires
//! one, a request without a token (or with a used one) that memory finds
//! over the limit or sold out is told `limit_exceeded` / `sold_out` where
//! the store would say `purchase_token_required` (`purchase_token_used`):
//! a refusal either way, under another code. Likewise a shopper past
//! their cancels or expiries in the sale (which memory does not count) is
//! told `sold_out` when memory knows the sale sold out, where the store
//! would say `unpaid_limit_exceeded`.
//!
//! Memory only ever errs towards asking the store, never towards a wrong
//! refusal:
//! - An actor answers nothing from memory until a snapshot it read itself,
//!   after it was registered, came back with nothing having changed
//!   meanwhile. (Events before registration are in that snapshot; events
//!   after it reach the actor's mailbox.)
//! - Every event that may give stock or time back raises the actor's
//!   `generation`: a cancel told by the registry, a merchant's change (a new
//!   sale version), a snapshot showing returned units. An answer to a call
//!   sent under an older generation is not learned from, and an older
//!   snapshot may raise what the actor believes but never lower it.
//! - Stock returned through another engine node is seen at the next refresh
//!   (`FLASHSALE_SALE_REFRESH_MS`); until then the actor may still answer
//!   `sold_out` or `limit_exceeded` from memory.
//!
//! A request carrying an `Idempotency-Key` may be the retry of one that
//! succeeded, so only `not_started` is answered for it from memory.

use std::collections::HashSet;

use crate::clock::Clock;
use crate::domain::{check_reservation, PresentedToken};
use crate::domain::{Millis, Rejection, Sale, SaleId, SaleState, SaleStats, SaleView, ShopperId};
use crate::domain::{Reservation, ReserveRequest};
use crate::store::{Store, StoreError};

/// Shoppers hashed with foldhash, not SipHash (every order request looks
/// its shopper up, and a race adds one per order): a shopper id is the
/// `sub` of a token signed with the shopper secret, so no client can
/// choose ids that collide.
type ShopperSet = HashSet<ShopperId, foldhash::fast::RandomState>;

/// A sale snapshot with the steady instants its read was sent and answered.
pub struct TimedView {
    pub view: SaleView,
    pub sent_at: Millis,
    pub received_at: Millis,
}

impl TimedView {
    /// Reads the sale from the store, noting when on `clock`.
    pub async fn read(
        clock: &dyn Clock,
        store: &dyn Store,
        sale: &SaleId,
    ) -> Result<Option<Self>, StoreError> {
        let sent_at = clock.now();
        let view = store.view_sale(sale).await?;
        let received_at = clock.now();
        Ok(view.map(|view| Self {
            view,
            sent_at,
            received_at,
        }))
    }
}

/// One sale as its actor knows it.
pub struct Memory {
    sale: Sale,
    /// The sale version `sale` is at.
    version: i64,
    /// Units left as last heard from the store.
    remaining: i64,
    /// The store clock minus the steady clock, bracketed.
    store_offset_min_ms: Millis,
    store_offset_max_ms: Millis,
    /// Around the sale's start and end, decisions are left to the store.
    clock_margin_ms: Millis,
    /// Shoppers known to hold the full per-user limit.
    at_limit: ShopperSet,
    known_shoppers_max: usize,
    /// Units given back by shoppers (cancelled, expired, refunded with
    /// restock) at the last snapshot.
    returned_units: i64,
    /// Raised by every event that may give stock or time back.
    generation: u64,
    /// Registered: every return and change reaches the actor from now on.
    registered: bool,
    /// Memory may answer: a snapshot read after registration came back
    /// with nothing changed meanwhile.
    trusted: bool,
}

/// Units shoppers gave back, each freeing its shopper's allowance: a
/// change in them means some shopper may be under their limit again.
fn returned_units(stats: &SaleStats) -> i64 {
    stats.cancelled + stats.expired + stats.restocked
}

impl Memory {
    /// Memory of the sale as `first` read it, trusted for nothing yet.
    pub fn new(first: &TimedView, clock_margin_ms: Millis, known_shoppers_max: usize) -> Self {
        let mut memory = Self {
            sale: first.view.sale.clone(),
            version: first.view.version,
            remaining: first.view.stats.remaining,
            store_offset_min_ms: 0,
            store_offset_max_ms: 0,
            clock_margin_ms,
            at_limit: ShopperSet::default(),
            known_shoppers_max,
            returned_units: returned_units(&first.view.stats),
            generation: 0,
            registered: false,
            trusted: false,
        };
        memory.observe_clock(first);
        memory
    }

    pub fn sale(&self) -> &Sale {
        &self.sale
    }

    /// The generation a call or read sent now is sent under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// From now on every return and change reaches the actor.
    pub fn register(&mut self) {
        self.registered = true;
    }

    fn observe_clock(&mut self, read: &TimedView) {
        self.store_offset_min_ms = read.view.now - read.received_at;
        self.store_offset_max_ms = read.view.now - read.sent_at;
    }

    /// Takes in a snapshot. `fresh`: nothing that may give stock back
    /// happened since it was read, so it may also lower what the actor
    /// believes; otherwise it may only raise it.
    pub fn apply(&mut self, view: SaleView, fresh: bool) {
        let mut raised = false;
        if view.version >= self.version {
            raised |= view.version > self.version;
            self.version = view.version;
            self.sale = view.sale;
        }
        let returned = returned_units(&view.stats);
        if returned != self.returned_units {
            raised = true;
            self.at_limit.clear();
            self.returned_units = returned;
        }
        raised |= view.stats.remaining > self.remaining;
        self.remaining = if fresh {
            view.stats.remaining
        } else {
            self.remaining.max(view.stats.remaining)
        };
        if raised {
            self.generation += 1;
        }
    }

    /// Takes in a snapshot the actor asked for under generation `sent_in`,
    /// registered or not (`sent_registered`).
    pub fn take_snapshot(&mut self, read: TimedView, sent_in: u64, sent_registered: bool) {
        self.observe_clock(&read);
        let fresh = sent_in == self.generation;
        self.apply(read.view, fresh);
        self.trusted |= fresh && sent_registered;
    }

    pub fn stock_returned(&mut self, shopper: &ShopperId, quantity: i64) {
        self.remaining += quantity;
        self.at_limit.remove(shopper);
        self.generation += 1;
    }

    /// The range the store's clock can be in at the steady instant
    /// `local`, each end widened by the clock margin.
    fn store_clock_range(&self, local: Millis) -> (Millis, Millis) {
        (
            local + self.store_offset_min_ms - self.clock_margin_ms,
            local + self.store_offset_max_ms + self.clock_margin_ms,
        )
    }

    /// The answer to `request` at the steady instant `local` if it is
    /// certain without the store (see the module doc).
    pub fn certain_rejection(&self, request: &ReserveRequest, local: Millis) -> Option<Rejection> {
        if !self.trusted {
            return None;
        }
        let held_min = if self.at_limit.contains(&request.shopper_id) {
            self.sale.per_user_limit
        } else {
            0
        };
        let rule = |now| {
            let token = PresentedToken::Fresh;
            check_reservation(
                &self.sale,
                now,
                self.remaining,
                held_min,
                request.quantity,
                token,
            )
            .err()
        };
        let (earliest, latest) = self.store_clock_range(local);
        let rejection = rule(earliest)?;
        if rule(latest) != Some(rejection) {
            return None;
        }
        // A keyed request may be the retry of one that made an order: only
        // `not_started` (no order can exist yet) holds for it.
        if request.idempotency_key.is_some() && rejection != Rejection::NotStarted {
            return None;
        }
        Some(rejection)
    }

    /// Until which steady instant (seen at `local`) every request is
    /// certainly `sold_out`, 0 if none: memory trusted, the sale surely
    /// open, nothing left. What the actor publishes on its board.
    pub fn sold_out_until(&self, local: Millis) -> Millis {
        let (earliest, _) = self.store_clock_range(local);
        let certain = self.trusted
            && self.sale.state == SaleState::Scheduled
            && earliest >= self.sale.starts_at
            && self.remaining <= 0;
        // The latest the store's clock can be is before the end (by the
        // margin) as long as the steady clock is before this.
        if certain {
            self.sale.ends_at - self.clock_margin_ms - self.store_offset_max_ms
        } else {
            0
        }
    }

    /// Learns from the store's answer to a call sent under generation
    /// `sent_in`; an answer that may predate a stock return teaches nothing.
    pub fn learn(
        &mut self,
        request: &ReserveRequest,
        result: &Result<Reservation, StoreError>,
        sent_in: u64,
    ) {
        if sent_in != self.generation {
            return;
        }
        match result {
            Ok(reservation) => {
                if let Some(remaining) = reservation.remaining {
                    self.remaining = remaining;
                }
                if reservation.held >= Some(self.sale.per_user_limit) {
                    self.remember_at_limit(&request.shopper_id);
                }
            }
            Err(StoreError::Rejected(Rejection::SoldOut)) => {
                self.remaining = self.remaining.min(request.quantity.get() - 1);
            }
            Err(StoreError::Rejected(Rejection::LimitExceeded)) if request.quantity.get() == 1 => {
                self.remember_at_limit(&request.shopper_id);
            }
            Err(_) => {}
        }
    }

    fn remember_at_limit(&mut self, shopper: &ShopperId) {
        if self.at_limit.len() < self.known_shoppers_max {
            self.at_limit.insert(shopper.clone());
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::domain::{OrderId, Quantity, SaleId, SaleStats};

    pub(in crate::inventory) const MARGIN_MS: Millis = 50;
    pub(in crate::inventory) const KNOWN_SHOPPERS_MAX: usize = 1;
    /// The steady clock in these tests: it stands still.
    pub(in crate::inventory) const NOW: Millis = 1_800_000_000_000;

    /// The store's view at `NOW` of a sale starting `starts_in_ms` from
    /// then, with `remaining` of its 10 units left.
    pub(in crate::inventory) fn view(starts_in_ms: Millis, remaining: i64) -> SaleView {
        let sale = Sale {
            id: SaleId::generate(),
            sku: "sku".into(),
            title: "title".into(),
            price_cents: 1,
            currency: "CNY".into(),
            stock_total: 10,
            per_user_limit: 2,
            starts_at: NOW + starts_in_ms,
            ends_at: NOW + 3_600_000,
            payment_timeout_secs: 900,
            require_purchase_token: false,
            admission: Default::default(),
            state: SaleState::Scheduled,
            created_at: NOW,
        };
        SaleView {
            sale,
            stats: SaleStats {
                stock_total: 10,
                remaining,
                reserved: 10 - remaining,
                ..SaleStats::default()
            },
            now: NOW,
            version: 1,
        }
    }

    pub(in crate::inventory) fn timed(view: SaleView, round_trip_ms: Millis) -> TimedView {
        TimedView {
            sent_at: view.now - round_trip_ms,
            received_at: view.now,
            view,
        }
    }

    /// What `memory` answers to `request` at `NOW`.
    fn answer(memory: &Memory, request: &ReserveRequest) -> Option<Rejection> {
        memory.certain_rejection(request, NOW)
    }

    /// Memory of `view` that trusts itself: registered, then a snapshot.
    fn trusted(view: SaleView) -> Memory {
        let mut memory = Memory::new(&timed(view.clone(), 0), MARGIN_MS, KNOWN_SHOPPERS_MAX);
        memory.register();
        memory.take_snapshot(timed(view, 0), memory.generation, true);
        memory
    }

    pub(in crate::inventory) fn ask(
        sale: &Sale,
        shopper: &str,
        quantity: i64,
        key: Option<&str>,
    ) -> ReserveRequest {
        ReserveRequest {
            sale_id: sale.id.clone(),
            shopper_id: ShopperId::parse(shopper).expect("user"),
            quantity: Quantity::parse(quantity).expect("quantity"),
            order_id: OrderId::generate(&sale.id),
            idempotency_key: key.map(str::to_owned),
            purchase_token: None,
        }
    }

    #[test]
    fn nothing_is_answered_before_a_snapshot_read_after_registration() {
        let upcoming = view(60_000, 10);
        let mut fresh = Memory::new(&timed(upcoming.clone(), 0), MARGIN_MS, KNOWN_SHOPPERS_MAX);
        let request = ask(&fresh.sale, "a", 1, None);
        assert_eq!(answer(&fresh, &request), None, "not yet trusted");
        fresh.take_snapshot(timed(upcoming.clone(), 0), fresh.generation, false);
        assert_eq!(answer(&fresh, &request), None, "read before registration");
        let sent_in = fresh.generation;
        fresh.stock_returned(&ShopperId::parse("b").expect("user"), 1);
        fresh.take_snapshot(timed(upcoming.clone(), 0), sent_in, true);
        assert_eq!(
            answer(&fresh, &request),
            None,
            "something changed meanwhile"
        );
        fresh.take_snapshot(timed(upcoming, 0), fresh.generation, true);
        assert_eq!(answer(&fresh, &request), Some(Rejection::NotStarted));
    }

    #[test]
    fn an_older_snapshot_never_undoes_a_merchant_change() {
        let mut memory = trusted(view(-1_000, 0));
        let sent_in = memory.generation;
        let mut extended = view(-1_000, 1);
        extended.sale = Sale {
            ends_at: memory.sale.ends_at + 3_600_000,
            ..memory.sale.clone()
        };
        extended.version = memory.version + 1;
        let new_end = extended.sale.ends_at;
        memory.apply(extended, false);
        assert!(
            memory.generation > sent_in,
            "a new version raises the generation"
        );

        // A refresh sent before the change lands after it.
        let mut old = view(-1_000, 0);
        old.sale = Sale {
            ends_at: new_end - 3_600_000,
            ..memory.sale.clone()
        };
        old.version = memory.version - 1;
        memory.take_snapshot(timed(old, 0), sent_in, true);
        assert_eq!(memory.sale.ends_at, new_end);
        let one = ask(&memory.sale, "a", 1, None);
        assert_eq!(
            answer(&memory, &one),
            None,
            "the restocked unit is not lost"
        );
        // And a sold-out answer sent before the restock teaches nothing.
        memory.learn(
            &one,
            &Err(StoreError::Rejected(Rejection::SoldOut)),
            sent_in,
        );
        assert_eq!(answer(&memory, &one), None);
    }

    #[test]
    fn window_is_answered_only_when_certain() {
        let early = trusted(view(60_000, 10));
        for key in [None, Some("k")] {
            let request = ask(&early.sale, "a", 1, key);
            assert_eq!(answer(&early, &request), Some(Rejection::NotStarted));
        }
        let almost = trusted(view(MARGIN_MS / 2, 10));
        let request = ask(&almost.sale, "a", 1, None);
        assert_eq!(answer(&almost, &request), None, "the store decides");

        // A slow read widens the bracket: the store may already be open.
        let mut slow = trusted(view(1_000, 10));
        slow.observe_clock(&timed(view(1_000, 10), 2_000));
        let request = ask(&slow.sale, "a", 1, None);
        assert_eq!(answer(&slow, &request), None);
    }

    #[test]
    fn sold_out_is_learned_and_a_return_clears_it() {
        let mut memory = trusted(view(-1_000, 1));
        let two = ask(&memory.sale, "a", 2, None);
        assert_eq!(answer(&memory, &two), Some(Rejection::SoldOut));
        let one = ask(&memory.sale, "a", 1, None);
        assert_eq!(answer(&memory, &one), None);
        let sold_out = Err(StoreError::Rejected(Rejection::SoldOut));
        memory.learn(&one, &sold_out, memory.generation);
        assert_eq!(answer(&memory, &one), Some(Rejection::SoldOut));
        let keyed = ask(&memory.sale, "a", 1, Some("k"));
        assert_eq!(answer(&memory, &keyed), None, "a keyed retry may replay");

        memory.stock_returned(&ShopperId::parse("b").expect("user"), 1);
        assert_eq!(answer(&memory, &one), None);
    }

    #[test]
    fn answers_older_than_a_return_are_not_learned() {
        let mut memory = trusted(view(-1_000, 1));
        let one = ask(&memory.sale, "a", 1, None);
        let sent_in = memory.generation;
        memory.stock_returned(&ShopperId::parse("b").expect("user"), 1);
        // The store said sold out before the unit came back.
        memory.learn(
            &one,
            &Err(StoreError::Rejected(Rejection::SoldOut)),
            sent_in,
        );
        memory.learn(
            &one,
            &Err(StoreError::Rejected(Rejection::LimitExceeded)),
            sent_in,
        );
        assert_eq!(answer(&memory, &one), None);

        // A snapshot read before the return may raise but never lower.
        let mut stale = view(-1_000, 0);
        stale.sale = memory.sale.clone();
        memory.apply(stale, false);
        assert_eq!(answer(&memory, &one), None);
    }

    #[test]
    fn shoppers_at_their_limit_are_remembered_within_the_bound() {
        let mut memory = trusted(view(-1_000, 10));
        let over_limit = ask(&memory.sale, "a", 3, None);
        assert_eq!(
            answer(&memory, &over_limit),
            Some(Rejection::LimitExceeded),
            "more than the limit in one request"
        );
        let first = ask(&memory.sale, "a", 1, None);
        let limit = Err(StoreError::Rejected(Rejection::LimitExceeded));
        memory.learn(&first, &limit, memory.generation);
        let second = ask(&memory.sale, "b", 1, None);
        memory.learn(&second, &limit, memory.generation);
        assert_eq!(answer(&memory, &first), Some(Rejection::LimitExceeded));
        assert_eq!(answer(&memory, &second), None, "known_shoppers_max is 1");

        memory.stock_returned(&ShopperId::parse("a").expect("user"), 1);
        assert_eq!(answer(&memory, &first), None, "a's cancel frees a");
        memory.learn(&first, &limit, memory.generation);
        let mut returned = view(-1_000, 10);
        returned.sale = memory.sale.clone();
        returned.stats.cancelled = 2;
        memory.apply(returned.clone(), true);
        assert_eq!(answer(&memory, &first), None, "a return elsewhere forgets");

        memory.learn(&first, &limit, memory.generation);
        returned.stats.restocked = 1;
        memory.apply(returned, true);
        assert_eq!(
            answer(&memory, &first),
            None,
            "a refund with restock elsewhere forgets too"
        );
    }

    /// Memory knows no purchase tokens and checks as if the token were
    /// fresh: a refusal it is sure of stands whatever the token; anything
    /// else about the token is the store's to say.
    #[test]
    fn purchase_tokens_are_checked_as_if_fresh() {
        let guarded = |remaining| {
            let mut view = view(-1_000, remaining);
            view.sale.require_purchase_token = true;
            trusted(view)
        };
        let sold_out = guarded(0);
        let without_token = ask(&sold_out.sale, "a", 1, None);
        assert_eq!(answer(&sold_out, &without_token), Some(Rejection::SoldOut));
        let open = guarded(10);
        let without_token = ask(&open.sale, "a", 1, None);
        assert_eq!(
            answer(&open, &without_token),
            None,
            "purchase_token_required is the store's answer"
        );
    }
}
