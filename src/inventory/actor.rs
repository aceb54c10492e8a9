//! One sale's actor: it takes in its [`Inbox`], holds the sale's
//! [`Memory`], answers from it what is certain, sends the rest to the
//! store in batches ([`ReserveQueue`] keeps the queue and its bounds),
//! publishes on the sale's
//! [`SoldOutBoard`], re-reads the sale every `refresh` and stops after
//! `idle_stop` without a request, or once a re-read finds the sale
//! certainly finished (it then leaves the sale in the registry's record of
//! finished sales, which answers `ended` without an actor). Its timers and instants come from the
//! [`Clock`] in its settings, so tests move them by hand.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::batching::{ReserveQueue, Waiting};
use super::board::SoldOutBoard;
use super::inbox::{Inbox, Mail, ReserveReply, TakeIn};
use super::memory::{Memory, TimedView};
use super::{certainly_finished, InventoryError, Registry};
use crate::clock::{duration_ms, Clock};
use crate::domain::{Millis, ReserveRequest};
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

pub struct SaleActor {
    memory: Memory,
    queue: ReserveQueue,
    refreshing: bool,
    /// The steady instant of the last reservation or board refusal.
    last_request: Millis,
    board: Arc<SoldOutBoard>,
    /// News messages (returns, changes) taken in so far.
    news_taken_in: u64,
    /// Board refusals counted at the last tick.
    refusals_seen: u64,
    inbox: Arc<Inbox>,
    store: Arc<dyn Store>,
    registry: Registry,
    settings: ActorSettings,
}

impl SaleActor {
    pub fn new(
        first: TimedView,
        board: Arc<SoldOutBoard>,
        inbox: Arc<Inbox>,
        store: Arc<dyn Store>,
        registry: Registry,
        settings: ActorSettings,
    ) -> Self {
        Self {
            memory: Memory::new(
                &first,
                settings.clock_margin_ms,
                settings.known_shoppers_max,
            ),
            queue: ReserveQueue::new(
                settings.in_flight_max,
                settings.batch_max,
                settings.store_calls,
            ),
            refreshing: false,
            last_request: settings.clock.now(),
            board,
            news_taken_in: 0,
            refusals_seen: 0,
            inbox,
            store,
            registry,
            settings,
        }
    }

    /// Publishes on the board whether (and until when) every request is
    /// certainly `sold_out`. Called after every change of what the actor
    /// believes.
    fn publish_sold_out(&self) {
        let until = self.memory.sold_out_until(self.settings.clock.now());
        self.board
            .publish(until, self.memory.sale().per_user_limit, self.news_taken_in);
    }

    /// Takes in a snapshot this actor asked for under generation `sent_in`.
    fn take_snapshot(&mut self, read: TimedView, sent_in: u64, sent_registered: bool) {
        self.memory.take_snapshot(read, sent_in, sent_registered);
        self.publish_sold_out();
    }

    /// Takes in everything in the inbox, in order, and sends what waits
    /// for the store if a call slot is free; again while mail came in
    /// meanwhile. Then the inbox learns whether senders must tell the actor
    /// of new mail (not while every call slot is busy, since the actor
    /// takes the inbox in when a call returns) and how many reservations
    /// it holds (past `in_flight_max` it is told at once).
    fn take_in(&mut self, ctx: &mut Context<Self>) {
        loop {
            for mail in self.inbox.take() {
                self.receive(mail, ctx);
            }
            self.send_waiting(ctx);
            let will_look = !self.queue.has_free_call_slot();
            if !self.inbox.settle(will_look, self.queue.held()) {
                return;
            }
        }
    }

    fn receive(&mut self, mail: Mail, ctx: &mut Context<Self>) {
        match mail {
            Mail::Reserve { request, reply } => {
                self.last_request = self.settings.clock.now();
                self.admit(Waiting { request, reply });
            }
            Mail::Registered => {
                self.memory.register();
                // A read already under way began before registration: let
                // it land, the next tick reads again.
                self.refresh(ctx);
            }
            Mail::SaleUpdated(view) => {
                // Read by an HTTP handler at an unknown moment: it may raise
                // what the actor believes, never lower it (the store decides
                // until replies do).
                self.memory.apply(view, false);
                self.news_taken_in += 1;
                self.publish_sold_out();
            }
            Mail::StockReturned { shopper, quantity } => {
                self.memory.stock_returned(&shopper, quantity);
                self.news_taken_in += 1;
                self.publish_sold_out();
            }
        }
    }

    /// Answers from memory what it can, or queues the request for the
    /// store.
    fn admit(&mut self, waiting: Waiting) {
        let clock = self.settings.clock.as_ref();
        if let Some(waiting) = answer_from_memory(&self.memory, clock, waiting) {
            if !self.queue.has_room() {
                telemetry::count_mailbox_rejection();
                let _ = waiting.reply.send(Err(InventoryError::Overloaded));
                return;
            }
            self.queue.push(waiting);
        }
    }

    /// While a call slot is free and requests wait, sends up to
    /// `batch_max` of them, oldest first, in one store call.
    fn send_waiting(&mut self, ctx: &mut Context<Self>) {
        while let Some(batch) = self.queue.next_batch(|waiting| {
            answer_from_memory(&self.memory, self.settings.clock.as_ref(), waiting)
        }) {
            self.call_store(batch, ctx);
        }
    }

    fn call_store(&mut self, batch: Vec<Waiting>, ctx: &mut Context<Self>) {
        let sent_in = self.memory.generation();
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
                    actor.queue.call_returned(requests.len());
                    match outcomes {
                        Ok(outcomes) => {
                            for ((request, outcome), reply) in
                                requests.iter().zip(outcomes).zip(replies)
                            {
                                actor.memory.learn(request, &outcome, sent_in);
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
                    actor.take_in(ctx);
                }),
        );
    }

    /// Every `refresh`: retires the actor after `idle_stop` without a
    /// request (a refusal on its board counts as one), or re-reads the sale.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let refusals = self.board.refusals();
        if refusals != self.refusals_seen {
            self.refusals_seen = refusals;
            self.last_request = self.settings.clock.now();
        }
        let idle = self.queue.is_idle()
            && self.inbox.is_empty()
            && self.settings.clock.now() - self.last_request
                >= duration_ms(self.settings.idle_stop);
        if idle {
            // Leave the registry first, so new requests start a new actor.
            let sale = &self.memory.sale().id;
            tracing::debug!(%sale, "sale actor retires while idle");
            self.registry.remove(sale, &ctx.address());
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
        ctx.spawn(sleep.into_actor(self).map(move |wakeup, actor, ctx| {
            actor.tick(ctx);
            if ctx.state().alive() {
                let next = deadline.saturating_add(duration_ms(actor.settings.refresh));
                actor.tick_at(next, ctx);
            }
            // Only now: a test's clock waits for the tick (see `Wakeup`).
            drop(wakeup);
        }));
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            return;
        }
        self.refreshing = true;
        let store = Arc::clone(&self.store);
        let id = self.memory.sale().id.clone();
        let sent_in = self.memory.generation();
        let sent_registered = self.memory.is_registered();
        let clock = Arc::clone(&self.settings.clock);
        let read = async move { TimedView::read(clock.as_ref(), store.as_ref(), &id).await };
        ctx.spawn(read.into_actor(self).map(move |result, actor, ctx| {
            actor.refreshing = false;
            match result {
                Ok(Some(read))
                    if actor.queue.is_idle()
                        && certainly_finished(&read.view, actor.settings.clock_margin_ms) =>
                {
                    let sale = &actor.memory.sale().id;
                    tracing::debug!(%sale, "sale actor retires: the sale is finished");
                    actor.registry.finished(sale);
                    actor.registry.remove(sale, &ctx.address());
                    ctx.stop();
                }
                Ok(Some(read)) => actor.take_snapshot(read, sent_in, sent_registered),
                Ok(None) => {}
                Err(err) => {
                    let sale = &actor.memory.sale().id;
                    tracing::debug!(%sale, error = %err, "sale refresh failed");
                }
            }
        }));
    }
}

/// Answers a request that needs no store call (its caller gone, or
/// memory certain), or gives it back.
fn answer_from_memory(memory: &Memory, clock: &dyn Clock, waiting: Waiting) -> Option<Waiting> {
    if waiting.reply.is_closed() {
        // The caller timed out while this waited: it was told 503, so
        // taking stock for it now would make an order nobody expects.
        return None;
    }
    if let Some(rejection) = memory.certain_rejection(&waiting.request, clock.now()) {
        telemetry::count_local_answer(rejection.as_str());
        // The caller may have timed out and gone: nothing to do then.
        let _ = waiting
            .reply
            .send(Err(StoreError::Rejected(rejection).into()));
        return None;
    }
    Some(waiting)
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
        self.registry.remove(&self.memory.sale().id, &ctx.address());
    }
}

impl Handler<TakeIn> for SaleActor {
    type Result = ();

    fn handle(&mut self, _: TakeIn, ctx: &mut Self::Context) {
        self.take_in(ctx);
    }
}

impl Drop for SaleActor {
    /// Stopped (retired, or its thread stopped): what waits in the inbox is
    /// dropped, so each caller sees its reply channel closed and asks the
    /// actor that replaces this one, and later posts are refused.
    fn drop(&mut self) {
        drop(self.inbox.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{SaleView, ShopperId};
    use crate::inventory::memory::tests::{timed, view, KNOWN_SHOPPERS_MAX, MARGIN_MS, NOW};
    use crate::store::EmbeddedStore;

    /// An actor (not started) of `view` that trusts its memory.
    fn actor(view: SaleView) -> SaleActor {
        let settings = ActorSettings {
            mailbox: 16,
            in_flight_max: 16,
            batch_max: 8,
            store_calls: 1,
            known_shoppers_max: KNOWN_SHOPPERS_MAX,
            refresh: Duration::from_secs(1),
            clock_margin_ms: MARGIN_MS,
            idle_stop: Duration::from_secs(60),
            clock: Arc::new(ManualClock::at(NOW)),
        };
        let store = Arc::new(EmbeddedStore::new());
        let mut actor = SaleActor::new(
            timed(view.clone(), 0),
            Arc::default(),
            Arc::new(Inbox::new(16, 16)),
            store,
            Registry::default(),
            settings,
        );
        actor.memory.register();
        actor.take_snapshot(timed(view, 0), actor.memory.generation(), true);
        actor
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
            !sold_out.board.refuses(1, sold_out.memory.sale().ends_at),
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
        sold_out
            .memory
            .stock_returned(&ShopperId::parse("a").expect("user"), 1);
        sold_out.news_taken_in += 1;
        sold_out.publish_sold_out();
        assert!(!sold_out.board.refuses(1, NOW), "a return clears it");

        let upcoming = actor(view(60_000, 0));
        assert!(!upcoming.board.refuses(1, NOW), "not before the start");
    }
}
