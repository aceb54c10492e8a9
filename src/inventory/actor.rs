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
//! machine's clock lies in `[now - received, now - sent]`.
//!
//! Memory only ever errs towards asking the store, never towards a wrong
//! refusal: every event that gives stock back (a cancel told by the registry,
//! a restock, a snapshot showing returned units) raises the actor's
//! `generation`, and an answer to a store call sent under an older
//! generation is not learned from, since it may predate the return. Returns
//! made through another engine node are seen at the next refresh
//! (`FLASHSALE_SALE_REFRESH_MS`).
//!
//! A request carrying an `Idempotency-Key` may be the retry of one that
//! succeeded, so only `not_started` is answered for it from memory. Store
//! calls run concurrently (the scripts are atomic), bounded by
//! `in_flight_max`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{InventoryError, MailboxTicket, Registry};
use crate::domain::{system_now, Millis, Rejection, Sale, SaleState, SaleView, UserId};
use crate::store::{Reservation, ReserveRequest, Store, StoreError};
use crate::telemetry;

#[derive(Debug, Clone)]
pub struct ActorSettings {
    pub mailbox: usize,
    pub in_flight_max: usize,
    pub known_shoppers_max: usize,
    pub refresh: Duration,
    pub clock_margin_ms: Millis,
    /// An actor with no reservation for this long stops (the registry
    /// starts a new one on the next request).
    pub idle_stop: Duration,
}

type ReserveReply = oneshot::Sender<Result<Reservation, InventoryError>>;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Reserve {
    pub request: ReserveRequest,
    pub reply: ReserveReply,
    /// Holds this request's place in the mailbox bound until handled.
    pub ticket: MailboxTicket,
}

/// The store's view of the sale right after a merchant's change.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaleUpdated(pub SaleView);

/// An order gave units back (cancelled): stock is on sale again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StockReturned {
    pub user: UserId,
    pub quantity: i64,
}

/// A sale snapshot with the local instants its read was sent and answered.
pub struct TimedView {
    pub view: SaleView,
    pub sent_at: Millis,
    pub received_at: Millis,
}

impl TimedView {
    /// Reads the sale from the store, noting when.
    pub async fn read(
        store: &dyn Store,
        sale: &crate::domain::SaleId,
    ) -> Result<Option<Self>, StoreError> {
        let sent_at = system_now();
        let view = store.view_sale(sale).await?;
        let received_at = system_now();
        Ok(view.map(|view| Self {
            view,
            sent_at,
            received_at,
        }))
    }
}

pub struct SaleActor {
    sale: Sale,
    /// Units left as last heard from the store (never lower than the truth,
    /// but for returns made through another node until the next refresh).
    remaining: i64,
    /// The store clock minus this machine's, bracketed.
    store_offset_min_ms: Millis,
    store_offset_max_ms: Millis,
    /// Shoppers known to hold the full per-user limit.
    at_limit: HashSet<UserId>,
    /// Units cancelled or expired at the last snapshot.
    returned_units: i64,
    /// Raised by every event that gives stock back.
    generation: u64,
    store_calls_in_flight: usize,
    refreshing: bool,
    last_request: Instant,
    store: Arc<dyn Store>,
    registry: Registry,
    settings: ActorSettings,
}

impl SaleActor {
    pub fn new(
        first: TimedView,
        store: Arc<dyn Store>,
        registry: Registry,
        settings: ActorSettings,
    ) -> Self {
        let mut actor = Self {
            sale: first.view.sale.clone(),
            remaining: 0,
            store_offset_min_ms: 0,
            store_offset_max_ms: 0,
            at_limit: HashSet::new(),
            returned_units: first.view.stats.cancelled + first.view.stats.expired,
            generation: 0,
            store_calls_in_flight: 0,
            refreshing: false,
            last_request: Instant::now(),
            store,
            registry,
            settings,
        };
        actor.observe_clock(&first);
        actor.apply(first.view, true);
        actor
    }

    fn observe_clock(&mut self, read: &TimedView) {
        self.store_offset_min_ms = read.view.now - read.received_at;
        self.store_offset_max_ms = read.view.now - read.sent_at;
    }

    /// Takes in a snapshot. `fresh`: it was read after the last stock return
    /// this actor knows of, so it may also lower what the actor believes.
    fn apply(&mut self, view: SaleView, fresh: bool) {
        let returned = view.stats.cancelled + view.stats.expired;
        let mut raised = returned != self.returned_units;
        if raised {
            self.at_limit.clear();
            self.returned_units = returned;
        }
        raised |= view.stats.remaining > self.remaining;
        self.remaining = if fresh {
            view.stats.remaining
        } else {
            self.remaining.max(view.stats.remaining)
        };
        self.sale = view.sale;
        if raised {
            self.generation += 1;
        }
    }

    fn stock_returned(&mut self, user: &UserId, quantity: i64) {
        self.remaining += quantity;
        self.at_limit.remove(user);
        self.generation += 1;
    }

    /// The answer to `request` if it is certain without the store.
    fn certain_rejection(&self, request: &ReserveRequest) -> Option<Rejection> {
        let local = system_now();
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
        if quantity > self.sale.per_user_limit || self.at_limit.contains(&request.user_id) {
            Some(Rejection::LimitExceeded)
        } else if self.remaining < quantity {
            Some(Rejection::SoldOut)
        } else {
            None
        }
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
                    self.remember_at_limit(&request.user_id);
                }
            }
            Err(StoreError::Rejected(Rejection::SoldOut)) => {
                self.remaining = self.remaining.min(request.quantity.get() - 1);
            }
            Err(StoreError::Rejected(Rejection::LimitExceeded)) if request.quantity.get() == 1 => {
                self.remember_at_limit(&request.user_id);
            }
            Err(_) => {}
        }
    }

    fn remember_at_limit(&mut self, user: &UserId) {
        if self.at_limit.len() < self.settings.known_shoppers_max {
            self.at_limit.insert(user.clone());
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let idle = self.store_calls_in_flight == 0
            && self.last_request.elapsed() >= self.settings.idle_stop;
        if idle {
            // Leave the registry first, so new requests start a new actor.
            tracing::debug!(sale = %self.sale.id, "sale actor retires while idle");
            self.registry.remove(&self.sale.id, &ctx.address());
            ctx.stop();
            return;
        }
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let store = Arc::clone(&self.store);
        let id = self.sale.id.clone();
        let sent_in = self.generation;
        let read = async move { TimedView::read(store.as_ref(), &id).await };
        ctx.spawn(read.into_actor(self).map(move |result, actor, _| {
            actor.refreshing = false;
            match result {
                Ok(Some(read)) => {
                    actor.observe_clock(&read);
                    let fresh = sent_in == actor.generation;
                    actor.apply(read.view, fresh);
                }
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
        ctx.run_interval(self.settings.refresh, Self::refresh);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        self.registry.remove(&self.sale.id, &ctx.address());
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
        self.last_request = Instant::now();
        if reply.is_closed() {
            // The caller timed out while this waited: it was told 503, so
            // taking stock for it now would make an order nobody expects.
            return;
        }
        if let Some(rejection) = self.certain_rejection(&request) {
            telemetry::count_local_answer(rejection.code());
            // The caller may have timed out and gone: nothing to do then.
            let _ = reply.send(Err(StoreError::Rejected(rejection).into()));
            return;
        }
        if self.store_calls_in_flight >= self.settings.in_flight_max {
            telemetry::count_mailbox_rejection();
            let _ = reply.send(Err(InventoryError::Overloaded));
            return;
        }
        self.store_calls_in_flight += 1;
        let sent_in = self.generation;
        let store = Arc::clone(&self.store);
        let call = async move {
            let result = store.reserve(&request).await;
            (request, result)
        };
        ctx.spawn(
            call.into_actor(self)
                .map(move |(request, result), actor, _| {
                    actor.store_calls_in_flight -= 1;
                    actor.learn(&request, &result, sent_in);
                    let _ = reply.send(result.map_err(InventoryError::from));
                }),
        );
    }
}

impl Handler<SaleUpdated> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: SaleUpdated, _: &mut Self::Context) {
        // Read by an HTTP handler at an unknown moment: it may raise what the
        // actor believes, never lower it (the store decides until replies do).
        self.apply(msg.0, false);
    }
}

impl Handler<StockReturned> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: StockReturned, _: &mut Self::Context) {
        self.stock_returned(&msg.user, msg.quantity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderId, Quantity, SaleId, SaleStats};
    use crate::store::EmbeddedStore;

    const MARGIN_MS: Millis = 50;

    fn view(starts_in_ms: Millis, remaining: i64) -> SaleView {
        let now = system_now();
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
            known_shoppers_max: 1,
            refresh: Duration::from_secs(1),
            clock_margin_ms: MARGIN_MS,
            idle_stop: Duration::from_secs(60),
        };
        let store = Arc::new(EmbeddedStore::new());
        SaleActor::new(timed(view, 0), store, Registry::default(), settings)
    }

    fn ask(actor: &SaleActor, user: &str, quantity: i64, key: Option<&str>) -> ReserveRequest {
        ReserveRequest {
            sale_id: actor.sale.id.clone(),
            user_id: UserId::parse(user).expect("user"),
            quantity: Quantity::parse(quantity).expect("quantity"),
            order_id: OrderId::generate(&actor.sale.id),
            idempotency_key: key.map(str::to_owned),
        }
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

        actor.stock_returned(&UserId::parse("b").expect("user"), 1);
        assert_eq!(actor.certain_rejection(&one), None);
    }

    #[test]
    fn answers_older_than_a_return_are_not_learned() {
        let mut actor = actor(view(-1_000, 1));
        let one = ask(&actor, "a", 1, None);
        let sent_in = actor.generation;
        actor.stock_returned(&UserId::parse("b").expect("user"), 1);
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

        actor.stock_returned(&UserId::parse("a").expect("user"), 1);
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
