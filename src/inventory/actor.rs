//! One sale's actor. It answers from memory when the answer is certain:
//!
//! - `not_started` / `ended`: the store's clock (estimated from the last
//!   snapshot) is outside the window by more than the clock margin, or the
//!   merchant ended the sale;
//! - `sold_out`: the last word from the store left fewer units than asked
//!   (stock only comes back through a cancel or expiry, which tells the
//!   actor, or through another engine node, which the periodic refresh sees);
//! - `limit_exceeded`: the shopper asked for more than the limit, or is known
//!   to hold the limit already.
//!
//! A request carrying an `Idempotency-Key` may be the retry of one that
//! succeeded, so only `not_started` (no order can exist yet) is answered for
//! it from memory; the store replays or decides the rest.
//!
//! Everything else goes to the store. Store calls run concurrently (the
//! scripts are atomic), bounded by `in_flight_max`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::InventoryError;
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
}

/// The store's latest view of the sale (after a merchant's change).
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

pub struct SaleActor {
    sale: Sale,
    /// Units left as last heard from the store (never below the truth for
    /// long: returns are told or refreshed).
    remaining: i64,
    /// Store clock minus this machine's clock, from the last snapshot.
    clock_offset_ms: Millis,
    /// Shoppers known to hold the full per-user limit.
    at_limit: HashSet<UserId>,
    /// Units cancelled or expired at the last snapshot: when it grows,
    /// someone got units back and `at_limit` may be stale.
    returned_units: i64,
    store_calls_in_flight: usize,
    refreshing: bool,
    last_request: Instant,
    store: Arc<dyn Store>,
    settings: ActorSettings,
}

impl SaleActor {
    pub fn new(view: SaleView, store: Arc<dyn Store>, settings: ActorSettings) -> Self {
        let mut actor = Self {
            sale: view.sale.clone(),
            remaining: 0,
            clock_offset_ms: 0,
            at_limit: HashSet::new(),
            returned_units: 0,
            store_calls_in_flight: 0,
            refreshing: false,
            last_request: Instant::now(),
            store,
            settings,
        };
        actor.apply(view);
        actor
    }

    fn apply(&mut self, view: SaleView) {
        let returned = view.stats.cancelled + view.stats.expired;
        if returned != self.returned_units {
            self.at_limit.clear();
            self.returned_units = returned;
        }
        self.clock_offset_ms = view.now - system_now();
        self.remaining = view.stats.remaining;
        self.sale = view.sale;
    }

    /// The answer to `request` if it is certain without the store.
    fn certain_rejection(&self, request: &ReserveRequest) -> Option<Rejection> {
        let now = system_now() + self.clock_offset_ms;
        let margin = self.settings.clock_margin_ms;
        let open = self.sale.state == SaleState::Scheduled;
        if open && now < self.sale.starts_at - margin {
            return Some(Rejection::NotStarted);
        }
        if request.idempotency_key.is_some() {
            return None;
        }
        let quantity = request.quantity.get();
        if !open || now >= self.sale.ends_at + margin {
            Some(Rejection::Ended)
        } else if quantity > self.sale.per_user_limit || self.at_limit.contains(&request.user_id) {
            Some(Rejection::LimitExceeded)
        } else if self.remaining < quantity {
            Some(Rejection::SoldOut)
        } else {
            None
        }
    }

    /// Updates the local view from the store's answer to `request`.
    fn learn(&mut self, request: &ReserveRequest, result: &Result<Reservation, StoreError>) {
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
            tracing::debug!(sale = %self.sale.id, "sale actor retires while idle");
            ctx.stop();
            return;
        }
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let store = Arc::clone(&self.store);
        let id = self.sale.id.clone();
        let read = async move { store.view_sale(&id).await };
        ctx.spawn(read.into_actor(self).map(|result, actor, _| {
            actor.refreshing = false;
            match result {
                Ok(Some(view)) => actor.apply(view),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(sale = %actor.sale.id, error = %err, "sale refresh failed")
                }
            }
        }));
    }
}

impl Actor for SaleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.settings.mailbox);
        ctx.run_interval(self.settings.refresh, Self::refresh);
    }
}

impl Handler<Reserve> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: Reserve, ctx: &mut Self::Context) {
        let Reserve { request, reply } = msg;
        self.last_request = Instant::now();
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
        let store = Arc::clone(&self.store);
        let call = async move {
            let result = store.reserve(&request).await;
            (request, result)
        };
        ctx.spawn(call.into_actor(self).map(|(request, result), actor, _| {
            actor.store_calls_in_flight -= 1;
            actor.learn(&request, &result);
            let _ = reply.send(result.map_err(InventoryError::from));
        }));
    }
}

impl Handler<SaleUpdated> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: SaleUpdated, _: &mut Self::Context) {
        self.apply(msg.0);
    }
}

impl Handler<StockReturned> for SaleActor {
    type Result = ();

    fn handle(&mut self, msg: StockReturned, _: &mut Self::Context) {
        self.remaining += msg.quantity;
        self.at_limit.remove(&msg.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderId, Quantity, SaleId, SaleStats};
    use crate::store::EmbeddedStore;

    const MARGIN_MS: Millis = 250;

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
        SaleActor::new(view, Arc::new(EmbeddedStore::new()), settings)
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
    fn window_is_answered_only_outside_the_clock_margin() {
        let early = actor(view(60_000, 10));
        for key in [None, Some("k")] {
            let request = ask(&early, "a", 1, key);
            assert_eq!(
                early.certain_rejection(&request),
                Some(Rejection::NotStarted)
            );
        }
        let almost = actor(view(MARGIN_MS / 2, 10));
        assert_eq!(
            almost.certain_rejection(&ask(&almost, "a", 1, None)),
            None,
            "store decides"
        );
    }

    #[test]
    fn sold_out_is_learned_and_cleared_by_a_return() {
        let mut actor = actor(view(-1_000, 1));
        let two = ask(&actor, "a", 2, None);
        assert_eq!(actor.certain_rejection(&two), Some(Rejection::SoldOut));
        let one = ask(&actor, "a", 1, None);
        assert_eq!(actor.certain_rejection(&one), None);
        actor.learn(&one, &Err(StoreError::Rejected(Rejection::SoldOut)));
        assert_eq!(actor.certain_rejection(&one), Some(Rejection::SoldOut));
        let keyed = ask(&actor, "a", 1, Some("k"));
        assert_eq!(
            actor.certain_rejection(&keyed),
            None,
            "a keyed retry may replay"
        );
        actor.remaining += 1; // what StockReturned does
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
        actor.learn(&first, &Err(StoreError::Rejected(Rejection::LimitExceeded)));
        let second = ask(&actor, "b", 1, None);
        actor.learn(
            &second,
            &Err(StoreError::Rejected(Rejection::LimitExceeded)),
        );
        assert_eq!(
            actor.certain_rejection(&first),
            Some(Rejection::LimitExceeded)
        );
        assert_eq!(
            actor.certain_rejection(&second),
            None,
            "known_shoppers_max is 1"
        );

        let mut returned = view(-1_000, 10);
        returned.sale = actor.sale.clone();
        returned.stats.cancelled = 1;
        actor.apply(returned);
        assert_eq!(
            actor.certain_rejection(&first),
            None,
            "a return elsewhere forgets"
        );
    }
}
