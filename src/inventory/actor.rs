//! One sale's actor. It answers from memory only when the answer is certain:
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
//! The store's clock is bracketed from each snapshot: it read `now` somewhere
//! between sending the read and receiving the answer, so its offset to this
//! process's steady clock lies in `[now - received, now - sent]`.
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
//!
//! Natural batching: what memory cannot answer joins a queue. While the
//! actor's store call is in flight (`store_calls` of them at most), the next
//! requests wait; when a call returns, everything that waited, up to
//! `batch_max`, goes to the store in one atomic call, first come first
//! served, and each caller gets its own answer. Nothing waits on a timer: a
//! lone buyer on an idle sale is sent at once. Before a request is sent,
//! memory is asked again (the last call may have sold the sale out) and a
//! caller that gave up is dropped. Past `in_flight_max` requests waiting or
//! in calls, 503 `overloaded` at once.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::board::SoldOutBoard;
use super::messages::{Registered, Reserve, ReserveReply, SaleUpdated, StockReturned};
use super::{InventoryError, Registry};
use crate::clock::{duration_ms, Clock};
use crate::domain::{Millis, Rejection, Sale, SaleId, SaleState, SaleView, ShopperId};
use crate::domain::{Reservation, ReserveRequest};
use crate::store::{Store, StoreError};
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct ActorSettings {
    pub mailbox: usize,
    /// Reservations waiting for or in store calls; past it, `Overloaded`.
    pub in_flight_max: usize,
    /// Reservations sent in one store call.
    pub batch_max: usize,
    /// Store calls in flight at once.
    pub store_calls: usize,
    pub known_shoppers_max: usize,
    pub refresh: Duration,
    pub clock_margin_ms: Millis,
    /// An actor with no reservation for this long stops (the registry
    /// starts a new one on the next request).
    pub idle_stop: Duration,
    /// The steady clock the actors estimate the store's clock on and time
    /// `refresh` and `idle_stop` with.
    pub clock: Arc<dyn Clock>,
}

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

/// A reservation waiting for the actor's next store call.
struct Waiting {
    request: ReserveRequest,
    reply: ReserveReply,
}

pub struct SaleActor {
    sale: Sale,
    /// The sale version `sale` is at.
    version: i64,
    /// Units left as last heard from the store.
    remaining: i64,
    /// The store clock minus the steady clock, bracketed.
    store_offset_min_ms: Millis,
    store_offset_max_ms: Millis,
    /// Shoppers known to hold the full per-user limit.
    at_limit: HashSet<ShopperId>,
    /// Units cancelled or expired at the last snapshot.
    returned_units: i64,
    /// Raised by every event that may give stock or time back.
    generation: u64,
    /// Registered: every return and change reaches this actor from now on.
    registered: bool,
    /// Memory may answer: a snapshot read after registration came back
    /// with nothing changed meanwhile.
    trusted: bool,
    /// Reservations waiting for a store call, first come first.
    waiting: VecDeque<Waiting>,
    /// Reservations in store calls now.
    reservations_in_calls: usize,
    store_calls_in_flight: usize,
    refreshing: bool,
    /// The steady instant of the last reservation or board refusal.
    last_request: Millis,
    board: Arc<SoldOutBoard>,
    /// News messages (returns, changes) taken in so far.
    news_taken_in: u64,
    /// Board refusals counted at the last tick.
    refusals_seen: u64,
    store: Arc<dyn Store>,
    registry: Registry,
    settings: ActorSettings,
}

impl SaleActor {
    pub fn new(
        first: TimedView,
        board: Arc<SoldOutBoard>,
        store: Arc<dyn Store>,
        registry: Registry,
        settings: ActorSettings,
    ) -> Self {
        let mut actor = Self {
            sale: first.view.sale.clone(),
            version: first.view.version,
            remaining: first.view.stats.remaining,
            store_offset_min_ms: 0,
            store_offset_max_ms: 0,
            at_limit: HashSet::new(),
            returned_units: first.view.stats.cancelled + first.view.stats.expired,
            generation: 0,
            registered: false,
            trusted: false,
            waiting: VecDeque::new(),
            reservations_in_calls: 0,
            store_calls_in_flight: 0,
            refreshing: false,
            last_request: settings.clock.now(),
            board,
            news_taken_in: 0,
            refusals_seen: 0,
            store,
            registry,
            settings,
        };
        actor.observe_clock(&first);
        actor
    }

    fn observe_clock(&mut self, read: &TimedView) {
        self.store_offset_min_ms = read.view.now - read.received_at;
        self.store_offset_max_ms = read.view.now - read.sent_at;
    }

    /// Takes in a snapshot. `fresh`: nothing that may give stock back
    /// happened since it was read, so it may also lower what the actor
    /// believes; otherwise it may only raise it.
    fn apply(&mut self, view: SaleView, fresh: bool) {
        let mut raised = false;
        if view.version >= self.version {
            raised |= view.version > self.version;
            self.version = view.version;
            self.sale = view.sale;
        }
        let returned = view.stats.cancelled + view.stats.expired;
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

    fn stock_returned(&mut self, shopper: &ShopperId, quantity: i64) {
        self.remaining += quantity;
        self.at_limit.remove(shopper);
        self.generation += 1;
    }

    /// The answer to `request` if it is certain without the store.
    fn certain_rejection(&self, request: &ReserveRequest) -> Option<Rejection> {
        if !self.trusted {
            return None;
        }
        let local = self.settings.clock.now();
        let earliest = local + self.store_offset_min_ms;
        let latest = local + self.store_offset_max_ms;
        let margin = self.settings.clock_margin_ms;
        let scheduled = self.sale.state == SaleState::Scheduled;
        if scheduled && latest < self.sale.starts_at - margin {
            return Some(Rejection::NotStarted);
        }
        if request.idempotency_key.is_some() {
            return None;
        }
        if !scheduled || earliest >= self.sale.ends_at + margin {
            return Some(Rejection::Ended);
        }
        let surely_open =
            earliest >= self.sale.starts_at + margin && latest < self.sale.ends_at - margin;
        if !surely_open {
            return None;
        }
        let quantity = request.quantity.get();
        if quantity > self.sale.per_user_limit || self.at_limit.contains(&request.shopper_id) {
            Some(Rejection::LimitExceeded)
        } else if self.remaining < quantity {
            Some(Rejection::SoldOut)
        } else {
            None
        }
    }

    /// Publishes on the board whether (and until when) every request is
    /// certainly `sold_out`: memory trusted, the sale surely open, nothing
    /// left. Called after every change of what the actor believes.
    fn publish_sold_out(&self) {
        let margin = self.settings.clock_margin_ms;
        let local = self.settings.clock.now();
        let surely_started = local + self.store_offset_min_ms >= self.sale.starts_at + margin;
        let certain = self.trusted
            && self.sale.state == SaleState::Scheduled
            && surely_started
            && self.remaining <= 0;
        // The latest the store's clock can be is before the end (by the
        // margin) as long as the steady clock is before this.
        let until = if certain {
            self.sale.ends_at - margin - self.store_offset_max_ms
        } else {
            0
        };
        self.board
            .publish(until, self.sale.per_user_limit, self.news_taken_in);
    }

    /// Learns from the store's answer to a call sent under generation
    /// `sent_in`; an answer that may predate a stock return teaches nothing.
    fn learn(
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
        if self.at_limit.len() < self.settings.known_shoppers_max {
            self.at_limit.insert(shopper.clone());
        }
    }

    /// Takes in a snapshot this actor asked for under generation `sent_in`.
    fn take_snapshot(&mut self, read: TimedView, sent_in: u64, sent_registered: bool) {
        self.observe_clock(&read);
        let fresh = sent_in == self.generation;
        self.apply(read.view, fresh);
        self.trusted |= fresh && sent_registered;
        self.publish_sold_out();
    }

    /// Answers from memory what it can, or queues the request for the
    /// store; then sends what waits if a call slot is free.
    fn accept(&mut self, waiting: Waiting, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.answer_from_memory(waiting) {
            if self.waiting.len() + self.reservations_in_calls >= self.settings.in_flight_max {
                telemetry::count_mailbox_rejection();
                let _ = waiting.reply.send(Err(InventoryError::Overloaded));
                return;
            }
            self.waiting.push_back(waiting);
        }
        self.send_waiting(ctx);
    }

    /// Answers a request that needs no store call (its caller gone, or
    /// memory certain), or gives it back.
    fn answer_from_memory(&self, waiting: Waiting) -> Option<Waiting> {
        if waiting.reply.is_closed() {
            // The caller timed out while this waited: it was told 503, so
            // taking stock for it now would make an order nobody expects.
            return None;
        }
        if let Some(rejection) = self.certain_rejection(&waiting.request) {
            telemetry::count_local_answer(rejection.as_str());
            // The caller may have timed out and gone: nothing to do then.
            let _ = waiting
                .reply
                .send(Err(StoreError::Rejected(rejection).into()));
            return None;
        }
        Some(waiting)
    }

    /// While a call slot is free and requests wait, sends up to
    /// `batch_max` of them, oldest first, in one store call.
    fn send_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.store_calls_in_flight < self.settings.store_calls {
            let mut batch = Vec::new();
            while batch.len() < self.settings.batch_max {
                let Some(waiting) = self.waiting.pop_front() else {
                    break;
                };
                batch.extend(self.answer_from_memory(waiting));
            }
            if batch.is_empty() {
                return;
            }
            self.call_store(batch, ctx);
        }
    }

    fn call_store(&mut self, batch: Vec<Waiting>, ctx: &mut Context<Self>) {
        self.store_calls_in_flight += 1;
        self.reservations_in_calls += batch.len();
        let sent_in = self.generation;
        let store = Arc::clone(&self.store);
        let (requests, replies): (Vec<ReserveRequest>, Vec<ReserveReply>) = batch
            .into_iter()
            .map(|waiting| (waiting.request, waiting.reply))
            .unzip();
        let call = async move {
            let outcomes = store.reserve_batch(&requests).await;
            (requests, outcomes)
        };
        ctx.spawn(
            call.into_actor(self)
                .map(move |(requests, outcomes), actor, ctx| {
                    actor.store_calls_in_flight -= 1;
                    actor.reservations_in_calls -= requests.len();
                    match outcomes {
                        Ok(outcomes) => {
                            for ((request, outcome), reply) in
                                requests.iter().zip(outcomes).zip(replies)
                            {
                                actor.learn(request, &outcome, sent_in);
                                let _ = reply.send(outcome.map_err(InventoryError::from));
                            }
                        }
                        Err(err) => {
                            for reply in replies {
                                let _ = reply.send(Err(err.clone().into()));
                            }
                        }
                    }
                    actor.publish_sold_out();
                    actor.send_waiting(ctx);
                }),
        );
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let refusals = self.board.refusals();
        if refusals != self.refusals_seen {
            self.refusals_seen = refusals;
            self.last_request = self.settings.clock.now();
        }
        let idle = self.store_calls_in_flight == 0
            && self.waiting.is_empty()
            && self.settings.clock.now() - self.last_request
                >= duration_ms(self.settings.idle_stop);
        if idle {
            // Leave the registry first, so new requests start a new actor.
            tracing::debug!(sale = %self.sale.id, "sale actor retires while idle");
            self.registry.remove(&self.sale.id, &ctx.address());
            ctx.stop();
            return;
        }
        self.refresh(ctx);
    }

    /// Runs [`tick`](Self::tick) at `deadline` on the actor's clock, and
    /// every `refresh` after it while the actor runs. Deadlines are fixed
    /// instants: a late tick does not move the next ones.
    fn tick_at(&mut self, deadline: Millis, ctx: &mut Context<Self>) {
        let sleep = self.settings.clock.sleep_until(deadline);
        ctx.spawn(sleep.into_actor(self).map(move |(), actor, ctx| {
            actor.tick(ctx);
            if ctx.state().alive() {
                let next = deadline.saturating_add(duration_ms(actor.settings.refresh));
                actor.tick_at(next, ctx);
            }
        }));
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let store = Arc::clone(&self.store);
        let id = self.sale.id.clone();
        let sent_in = self.generation;
        let sent_registered = self.registered;
        let clock = Arc::clone(&self.settings.clock);
        let read = async move { TimedView::read(clock.as_ref(), store.as_ref(), &id).await };
        ctx.spawn(read.into_actor(self).map(move |result, actor, _| {
            actor.refreshing = false;
            match result {
                Ok(Some(read)) => actor.take_snapshot(read, sent_in, sent_registered),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(sale = %actor.sale.id, error = %err, "sale refresh failed");
                }
            }
        }));
    }
}

impl Actor for SaleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let first = self
            .settings
            .clock
            .now()
            .saturating_add(duration_ms(self.settings.refresh));
        self.tick_at(first, ctx);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        // A request that found this actor's entry must not be refused from
        // beliefs nobody updates any more.
        self.board.publish(0, 0, self.news_taken_in);
        self.registry.remove(&self.sale.id, &ctx.address());
    }
}

impl Handler<Registered> for SaleActor {
    type Result = ();

    fn handle(&mut self, _: Registered, ctx: &mut Self::Context) {
        self.registered = true;
        // A read already under way began before registration: let it land,
        // the next tick reads again.
        self.refresh(ctx);
    }
}

impl Handler<Reserve> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: Reserve, ctx: &mut Self::Context) {
        let Reserve {
            request,
            reply,
            ticket,
        } = msg;
        drop(ticket);
        self.last_request = self.settings.clock.now();
        self.accept(Waiting { request, reply }, ctx);
    }
}

impl Handler<SaleUpdated> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: SaleUpdated, _: &mut Self::Context) {
        // Read by an HTTP handler at an unknown moment: it may raise what the
        // actor believes, never lower it (the store decides until replies do).
        self.apply(msg.0, false);
        self.news_taken_in += 1;
        self.publish_sold_out();
    }
}

impl Handler<StockReturned> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: StockReturned, _: &mut Self::Context) {
        self.stock_returned(&msg.shopper, msg.quantity);
        self.news_taken_in += 1;
        self.publish_sold_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{OrderId, Quantity, SaleId, SaleStats};
    use crate::store::EmbeddedStore;

    const MARGIN_MS: Millis = 50;
    /// The actors' steady clock in these tests: it stands still.
    const NOW: Millis = 1_800_000_000_000;

    fn view(starts_in_ms: Millis, remaining: i64) -> SaleView {
        let now = NOW;
        let sale = Sale {
            id: SaleId::generate(),
            sku: "sku".into(),
            title: "title".into(),
            price_cents: 1,
            currency: "CNY".into(),
            stock_total: 10,
            per_user_limit: 2,
            starts_at: now + starts_in_ms,
            ends_at: now + 3_600_000,
            payment_timeout_secs: 900,
            require_purchase_token: false,
            state: SaleState::Scheduled,
            created_at: now,
        };
        SaleView {
            sale,
            stats: SaleStats {
                stock_total: 10,
                remaining,
                reserved: 10 - remaining,
                ..SaleStats::default()
            },
            now,
            version: 1,
        }
    }

    fn timed(view: SaleView, round_trip_ms: Millis) -> TimedView {
        TimedView {
            sent_at: view.now - round_trip_ms,
            received_at: view.now,
            view,
        }
    }

    fn actor(view: SaleView) -> SaleActor {
        let settings = ActorSettings {
            mailbox: 16,
            in_flight_max: 16,
            batch_max: 8,
            store_calls: 1,
            known_shoppers_max: 1,
            refresh: Duration::from_secs(1),
            clock_margin_ms: MARGIN_MS,
            idle_stop: Duration::from_secs(60),
            clock: Arc::new(ManualClock::at(NOW)),
        };
        let store = Arc::new(EmbeddedStore::new());
        let mut actor = SaleActor::new(
            timed(view.clone(), 0),
            Arc::default(),
            store,
            Registry::default(),
            settings,
        );
        actor.registered = true;
        actor.take_snapshot(timed(view, 0), actor.generation, true);
        actor
    }

    fn ask(actor: &SaleActor, shopper: &str, quantity: i64, key: Option<&str>) -> ReserveRequest {
        ReserveRequest {
            sale_id: actor.sale.id.clone(),
            shopper_id: ShopperId::parse(shopper).expect("user"),
            quantity: Quantity::parse(quantity).expect("quantity"),
            order_id: OrderId::generate(&actor.sale.id),
            idempotency_key: key.map(str::to_owned),
            purchase_token: None,
        }
    }

    #[test]
    fn nothing_is_answered_before_a_snapshot_read_after_registration() {
        let upcoming = view(60_000, 10);
        let settings = actor(upcoming.clone()).settings;
        let store = Arc::new(EmbeddedStore::new());
        let mut fresh = SaleActor::new(
            timed(upcoming.clone(), 0),
            Arc::default(),
            store,
            Registry::default(),
            settings,
        );
        let request = ask(&fresh, "a", 1, None);
        assert_eq!(fresh.certain_rejection(&request), None, "not yet trusted");
        fresh.take_snapshot(timed(upcoming.clone(), 0), fresh.generation, false);
        assert_eq!(
            fresh.certain_rejection(&request),
            None,
            "read before registration"
        );
        let sent_in = fresh.generation;
        fresh.stock_returned(&ShopperId::parse("b").expect("user"), 1);
        fresh.take_snapshot(timed(upcoming.clone(), 0), sent_in, true);
        assert_eq!(
            fresh.certain_rejection(&request),
            None,
            "something changed meanwhile"
        );
        fresh.take_snapshot(timed(upcoming, 0), fresh.generation, true);
        assert_eq!(
            fresh.certain_rejection(&request),
            Some(Rejection::NotStarted)
        );
    }

    #[test]
    fn the_sold_out_board_follows_what_memory_is_sure_of() {
        let mut sold_out = actor(view(-1_000, 0));
        let now = NOW;
        assert!(
            sold_out.board.refuses(1, now),
            "trusted, open, nothing left"
        );
        assert!(sold_out.board.refuses(2, now));
        assert!(
            !sold_out.board.refuses(3, now),
            "over the limit: the actor answers"
        );
        assert!(
            !sold_out.board.refuses(1, sold_out.sale.ends_at),
            "not past the end"
        );
        sold_out.board.news_coming();
        assert!(
            !sold_out.board.refuses(1, NOW),
            "news on its way: nothing refused until the actor took it in"
        );
        sold_out.publish_sold_out();
        assert!(
            !sold_out.board.refuses(1, NOW),
            "republishing before the news arrived changes nothing"
        );
        sold_out.stock_returned(&ShopperId::parse("a").expect("user"), 1);
        sold_out.news_taken_in += 1;
        sold_out.publish_sold_out();
        assert!(!sold_out.board.refuses(1, NOW), "a return clears it");

        let upcoming = actor(view(60_000, 0));
        assert!(!upcoming.board.refuses(1, NOW), "not before the start");
    }

    #[test]
    fn an_older_snapshot_never_undoes_a_merchant_change() {
        let mut actor = actor(view(-1_000, 0));
        let sent_in = actor.generation;
        let mut extended = view(-1_000, 1);
        extended.sale = Sale {
            ends_at: actor.sale.ends_at + 3_600_000,
            ..actor.sale.clone()
        };
        extended.version = actor.version + 1;
        let new_end = extended.sale.ends_at;
        actor.apply(extended, false);
        assert!(
            actor.generation > sent_in,
            "a new version raises the generation"
        );

        // A refresh sent before the change lands after it.
        let mut old = view(-1_000, 0);
        old.sale = Sale {
            ends_at: new_end - 3_600_000,
            ..actor.sale.clone()
        };
        old.version = actor.version - 1;
        actor.take_snapshot(timed(old, 0), sent_in, true);
        assert_eq!(actor.sale.ends_at, new_end);
        let one = ask(&actor, "a", 1, None);
        assert_eq!(
            actor.certain_rejection(&one),
            None,
            "the restocked unit is not lost"
        );
        // And a sold-out answer sent before the restock teaches nothing.
        actor.learn(
            &one,
            &Err(StoreError::Rejected(Rejection::SoldOut)),
            sent_in,
        );
        assert_eq!(actor.certain_rejection(&one), None);
    }

    #[test]
    fn window_is_answered_only_when_certain() {
        let early = actor(view(60_000, 10));
        for key in [None, Some("k")] {
            let request = ask(&early, "a", 1, key);
            assert_eq!(
                early.certain_rejection(&request),
                Some(Rejection::NotStarted)
            );
        }
        let almost = actor(view(MARGIN_MS / 2, 10));
        let request = ask(&almost, "a", 1, None);
        assert_eq!(
            almost.certain_rejection(&request),
            None,
            "the store decides"
        );

        // A slow read widens the bracket: the store may already be open.
        let mut slow = actor(view(1_000, 10));
        slow.observe_clock(&timed(view(1_000, 10), 2_000));
        let request = ask(&slow, "a", 1, None);
        assert_eq!(slow.certain_rejection(&request), None);
    }

    #[test]
    fn sold_out_is_learned_and_a_return_clears_it() {
        let mut actor = actor(view(-1_000, 1));
        let two = ask(&actor, "a", 2, None);
        assert_eq!(actor.certain_rejection(&two), Some(Rejection::SoldOut));
        let one = ask(&actor, "a", 1, None);
        assert_eq!(actor.certain_rejection(&one), None);
        let sold_out = Err(StoreError::Rejected(Rejection::SoldOut));
        actor.learn(&one, &sold_out, actor.generation);
        assert_eq!(actor.certain_rejection(&one), Some(Rejection::SoldOut));
        let keyed = ask(&actor, "a", 1, Some("k"));
        assert_eq!(
            actor.certain_rejection(&keyed),
            None,
            "a keyed retry may replay"
        );

        actor.stock_returned(&ShopperId::parse("b").expect("user"), 1);
        assert_eq!(actor.certain_rejection(&one), None);
    }

    #[test]
    fn answers_older_than_a_return_are_not_learned() {
        let mut actor = actor(view(-1_000, 1));
        let one = ask(&actor, "a", 1, None);
        let sent_in = actor.generation;
        actor.stock_returned(&ShopperId::parse("b").expect("user"), 1);
        // The store said sold out before the unit came back.
        actor.learn(
            &one,
            &Err(StoreError::Rejected(Rejection::SoldOut)),
            sent_in,
        );
        actor.learn(
            &one,
            &Err(StoreError::Rejected(Rejection::LimitExceeded)),
            sent_in,
        );
        assert_eq!(actor.certain_rejection(&one), None);

        // A snapshot read before the return may raise but never lower.
        let mut stale = view(-1_000, 0);
        stale.sale = actor.sale.clone();
        actor.apply(stale, false);
        assert_eq!(actor.certain_rejection(&one), None);
    }

    #[test]
    fn shoppers_at_their_limit_are_remembered_within_the_bound() {
        let mut actor = actor(view(-1_000, 10));
        let over_limit = ask(&actor, "a", 3, None);
        assert_eq!(
            actor.certain_rejection(&over_limit),
            Some(Rejection::LimitExceeded)
        );
        let first = ask(&actor, "a", 1, None);
        let limit = Err(StoreError::Rejected(Rejection::LimitExceeded));
        actor.learn(&first, &limit, actor.generation);
        let second = ask(&actor, "b", 1, None);
        actor.learn(&second, &limit, actor.generation);
        assert_eq!(
            actor.certain_rejection(&first),
            Some(Rejection::LimitExceeded)
        );
        assert_eq!(
            actor.certain_rejection(&second),
            None,
            "known_shoppers_max is 1"
        );

        actor.stock_returned(&ShopperId::parse("a").expect("user"), 1);
        assert_eq!(actor.certain_rejection(&first), None, "a's cancel frees a");
        actor.learn(&first, &limit, actor.generation);
        let mut returned = view(-1_000, 10);
        returned.sale = actor.sale.clone();
        returned.stats.cancelled = 2;
        actor.apply(returned, true);
        assert_eq!(
            actor.certain_rejection(&first),
            None,
            "a return elsewhere forgets"
        );
    }
}
