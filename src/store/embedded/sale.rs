//! The embedded store's state of one sale: the sale, its counts, its
//! shoppers and orders, and every change to them, each the twin of one
//! script of `lua/` (reserve, update and cancel the sale, cancel, pay,
//! expire and accept orders). Everything of a sale sits in one
//! [`SaleRecord`] behind one lock, so each change is one critical section,
//! as each script is one atomic step.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use std::sync::Arc;

use parking_lot::Mutex;
use smol_str::SmolStr;

use super::campaign::CampaignHolds;
use super::queues::{later, Outbox, ReservationStream};
use super::waiting_room::WaitingRoom;
use crate::domain::{
    check_reservation, system_now, Millis, Order, OrderEvent, OrderId, OrderStatus, Payment,
    PaymentOutcome, PresentedToken, RefundKind, RefundSettledBy, Rejection, Reservation,
    ReserveRequest, Sale, SaleChange, SaleState, SaleStats, SaleView, ShopperId,
    LIVE_CHANGEABLE_FIELDS,
};
use crate::store::{
    cancels_exhausted, changed_meanwhile, no_refund_asked, not_paid, not_pending,
    refund_call_queued, restock_not_live, Acceptance, Expiry, FollowUps, OrderBacklog,
    RefundSettlement, ShopperBounds, StoreError, StreamEntry, PREPAY_CHANGED,
};

/// Where a cancel counts against the shopper's allowance (see
/// `lua/cancel_order.lua`).
#[derive(Debug, Clone, Copy)]
pub(super) enum CancelCounted<'a> {
    /// In the cancel's step, at most `cancels_max`.
    Here { cancels_max: i64 },
    /// Taken before ([`SaleRecord::take_cancel`]), once the WeChat Pay
    /// order of `closed` was closed.
    Taken { closed: Option<&'a str> },
}

/// One sale and everything that hangs off it, changed under one lock.
pub(super) struct SaleRecord {
    pub sale: Sale,
    pub version: i64,
    pub stats: SaleStats,
    /// Shopper -> units held (reserved or paid).
    pub held: HashMap<ShopperId, i64>,
    /// (shopper, idempotency key) -> (order, quantity asked).
    idempotency: HashMap<(ShopperId, String), (OrderId, i64)>,
    pub orders: HashMap<OrderId, Order>,
    pub shopper_orders: HashMap<ShopperId, Vec<OrderId>>,
    /// The payment deadline index, as `lua/expire_orders.lua` keeps it:
    /// one entry per reserve call naming the orders it made, by their
    /// deadline, and one per held order (see `expire_due`) by the time in
    /// `due_again`. Ordered as Redis orders its members (by time, then
    /// the ids as one space-separated string: a space sorts before every
    /// character of an id).
    pub deadlines: BTreeSet<(Millis, Vec<OrderId>)>,
    /// Held orders -> when they are due again.
    due_again: HashMap<OrderId, Millis>,
    /// The reservation stream with the order service's consumer group.
    pub stream: ReservationStream,
    /// Orders the order service has taken.
    pub queued: HashSet<OrderId>,
    /// Hand-offs to the merchant's webhook.
    pub outbox: Outbox,
    /// Purchase tokens that bought (a sale that requires them).
    pub used_tokens: HashSet<String>,
    /// The waiting room of a queued sale.
    pub waiting_room: WaitingRoom,
    /// Shopper -> orders they cancelled, or are cancelling (taken).
    cancels: HashMap<ShopperId, i64>,
    /// Shopper -> their orders that expired unpaid.
    expiries: HashMap<ShopperId, i64>,
    /// A campaign's sale: the campaign's holds and the sale's round.
    campaign: Option<(Arc<Mutex<CampaignHolds>>, u32)>,
}

impl SaleRecord {
    /// What the order service still has to do for the sale.
    pub fn backlog(&self) -> OrderBacklog {
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        OrderBacklog {
            reservations: count(self.stream.len()),
            deadlines: count(self.deadlines.len()),
            hand_offs: count(self.outbox.len()),
        }
    }

    /// A new sale with its full stock, at version 1.
    pub fn new(sale: &Sale) -> Self {
        Self {
            sale: sale.clone(),
            version: 1,
            stats: SaleStats {
                stock_total: sale.stock_total,
                remaining: sale.stock_total,
                ..SaleStats::default()
            },
            held: HashMap::new(),
            idempotency: HashMap::new(),
            orders: HashMap::new(),
            shopper_orders: HashMap::new(),
            deadlines: BTreeSet::new(),
            due_again: HashMap::new(),
            stream: ReservationStream::default(),
            queued: HashSet::new(),
            outbox: Outbox::default(),
            used_tokens: HashSet::new(),
            waiting_room: WaitingRoom::default(),
            cancels: HashMap::new(),
            expiries: HashMap::new(),
            campaign: None,
        }
    }

    /// A campaign's sale, counted in `holds` under round `round`.
    pub fn in_campaign(mut self, holds: Arc<Mutex<CampaignHolds>>, round: u32) -> Self {
        self.campaign = Some((holds, round));
        self
    }

    /// The sale with its counts, now.
    pub fn view(&self) -> SaleView {
        let mut stats = self.stats;
        stats.buyers = self.held.len() as i64;
        SaleView {
            sale: self.sale.clone(),
            stats,
            now: system_now(),
            version: self.version,
        }
    }

    /// Moves an unpaid order to `status` (cancelled or expired): its units
    /// go back on sale and off the shopper's count (an expired one onto
    /// their expiries).
    pub fn release(&mut self, id: &OrderId, status: OrderStatus) -> Option<Order> {
        let order = self.orders.get_mut(id)?;
        order.status = status;
        let order = order.clone();
        self.unschedule(&order);
        self.stats.remaining += order.quantity;
        self.stats.reserved -= order.quantity;
        match status {
            OrderStatus::Cancelled => self.stats.cancelled += order.quantity,
            _ => {
                self.stats.expired += order.quantity;
                *self.expiries.entry(order.shopper_id.clone()).or_default() += 1;
            }
        }
        self.unhold(&order);
        Some(order)
    }

    /// Takes an order's units off its shopper's count, and for a
    /// campaign's sale off the shopper's counts in the round and the
    /// campaign.
    fn unhold(&mut self, order: &Order) {
        if let Some(held) = self.held.get_mut(&order.shopper_id) {
            *held -= order.quantity;
            if *held <= 0 {
                self.held.remove(&order.shopper_id);
            }
        }
        if let Some((holds, round)) = &self.campaign {
            holds.lock().add(*round, &order.shopper_id, -order.quantity);
        }
    }

    /// Ends a reserve call: the orders it `made` get one entry of the
    /// deadline index, due at the latest of their deadlines, and one
    /// stream entry.
    pub fn made(&mut self, made: Vec<OrderId>) {
        let due = made
            .iter()
            .filter_map(|id| self.orders.get(id))
            .map(|order| order.expires_at)
            .max();
        if let Some(due) = due {
            self.deadlines.insert((due, made.clone()));
        }
        self.stream.append(made);
    }

    /// Decides one reservation (see
    /// [`Store::reserve`](crate::store::Store::reserve)); a new order's id joins `made` (the orders
    /// the stream entry of this reserve call will carry). A shopper who
    /// cancelled, or let expire, the most orders `bounds` allow is refused
    /// `unpaid_limit_exceeded`.
    pub fn reserve(
        &mut self,
        request: &ReserveRequest,
        bounds: &ShopperBounds,
        made: &mut Vec<OrderId>,
    ) -> Result<Reservation, StoreError> {
        let quantity = request.quantity.get();
        if let Some(order) = self.orders.get(&request.order_id) {
            // The same call made twice (a retrying caller): same answer.
            return Ok(Reservation {
                order: order.clone(),
                remaining: None,
                held: None,
                replayed: false,
            });
        }
        let idempotency = request
            .idempotency_key
            .as_ref()
            .map(|key| (request.shopper_id.clone(), key.clone()));
        if let Some((order_id, asked)) = idempotency
            .as_ref()
            .and_then(|key| self.idempotency.get(key))
        {
            if *asked != quantity {
                return Err(Rejection::IdempotencyMismatch.into());
            }
            let order = self
                .orders
                .get(order_id)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("missing order {order_id}")))?;
            return Ok(Reservation {
                order,
                remaining: None,
                held: None,
                replayed: true,
            });
        }
        let now = system_now();
        let held = self.held.get(&request.shopper_id).copied().unwrap_or(0);
        let token = match &request.purchase_token {
            None => PresentedToken::Missing,
            Some(id) if self.used_tokens.contains(id) => PresentedToken::Used,
            Some(id)
                if self.sale.admission.is_queue()
                    && !self.waiting_room.admits(id, &request.shopper_id) =>
            {
                PresentedToken::Lapsed
            }
            Some(_) => PresentedToken::Fresh,
        };
        let checked = check_reservation(
            &self.sale,
            now,
            self.stats.remaining,
            held,
            request.quantity,
            token,
        );
        // The cancels and expiries, then a campaign's limits, are checked
        // after the sale's limit, before the stock. A campaign's holds stay
        // locked until the units are counted, so no other sale of the
        // campaign decides in between.
        let counted = |counts: &HashMap<ShopperId, i64>| {
            counts.get(&request.shopper_id).copied().unwrap_or(0)
        };
        let unpaid_left =
            counted(&self.cancels) < bounds.cancels && counted(&self.expiries) < bounds.expiries;
        let campaign = self.campaign.clone();
        let mut campaign = campaign
            .as_ref()
            .map(|(holds, round)| (holds.lock(), *round));
        if matches!(checked, Ok(()) | Err(Rejection::SoldOut)) {
            if !unpaid_left {
                return Err(Rejection::UnpaidLimitExceeded.into());
            }
            if let Some((holds, round)) = &campaign {
                holds.check(*round, &request.shopper_id, quantity)?;
            }
        }
        checked?;
        if let Some((holds, round)) = &mut campaign {
            holds.add(*round, &request.shopper_id, quantity);
        }
        if let (true, Some(id)) = (self.sale.require_purchase_token, &request.purchase_token) {
            self.used_tokens.insert(id.clone());
        }
        self.stats.remaining -= quantity;
        self.stats.reserved += quantity;
        let held = held + quantity;
        self.held.insert(request.shopper_id.clone(), held);
        let order = Order {
            id: request.order_id.clone(),
            sale_id: request.sale_id.clone(),
            shopper_id: request.shopper_id.clone(),
            quantity,
            amount_cents: quantity * self.sale.price_cents,
            currency: SmolStr::new(&self.sale.currency),
            status: OrderStatus::PendingPayment,
            created_at: now,
            expires_at: now + self.sale.payment_timeout_secs * 1000,
            paid_at: None,
            prepay_id: None,
            transaction_id: None,
            refund: None,
            refund_settled_by_hand_at: None,
        };
        self.orders.insert(order.id.clone(), order.clone());
        made.push(order.id.clone());
        self.shopper_orders
            .entry(request.shopper_id.clone())
            .or_default()
            .push(order.id.clone());
        if let Some(key) = idempotency {
            self.idempotency.insert(key, (order.id.clone(), quantity));
        }
        Ok(Reservation {
            order,
            remaining: Some(self.stats.remaining),
            held: Some(held),
            replayed: false,
        })
    }

    /// Applies a merchant's change (see
    /// [`Store::update_sale`](crate::store::Store::update_sale)): the twin
    /// of `lua/update_sale.lua`.
    pub fn update(&mut self, change: &SaleChange, version: i64) -> Result<(), StoreError> {
        let now = system_now();
        self.change_refusal(change, version, now)?;
        self.apply_change(change, now);
        // A sale switched back to open keeps no line (as
        // `lua/update_sale.lua`).
        if !self.sale.admission.is_queue() {
            self.waiting_room = WaitingRoom::default();
        }
        Ok(())
    }

    /// Whether a merchant's change computed from the sale at `version` is
    /// allowed at `now`: the twin of `sale_change_refusal` in
    /// `lua/common.lua`. Writes nothing.
    pub fn change_refusal(
        &self,
        change: &SaleChange,
        version: i64,
        now: Millis,
    ) -> Result<(), StoreError> {
        ensure_scheduled(&self.sale)?;
        if self.version != version {
            return Err(changed_meanwhile());
        }
        let started = self.sale.has_started(now);
        if started && now >= self.sale.ends_at {
            return Err(StoreError::Conflict("the sale has ended".into()));
        }
        if started && change.restricted {
            return Err(StoreError::Conflict(format!(
                "the sale has started: only {LIVE_CHANGEABLE_FIELDS} can change"
            )));
        }
        let taken = self.stats.taken();
        if change.sale.stock_total < taken {
            return Err(StoreError::Conflict(format!(
                "stock_total cannot go below the {taken} units reserved, paid or refunded without restock"
            )));
        }
        if change.sale.ends_at != self.sale.ends_at && change.sale.ends_at <= now {
            return Err(StoreError::Conflict(
                "ends_at must be in the future; set status to ended to stop now".into(),
            ));
        }
        Ok(())
    }

    /// Writes a change [`Self::change_refusal`] allowed.
    pub fn apply_change(&mut self, change: &SaleChange, now: Millis) {
        let taken = self.stats.taken();
        let mut sale = if change.restricted {
            change.sale.clone()
        } else {
            self.sale.clone()
        };
        sale.stock_total = change.sale.stock_total;
        sale.ends_at = change.sale.ends_at;
        if change.end_now {
            sale.state = SaleState::Ended;
            sale.ends_at = sale.ends_at.min(now.max(sale.starts_at));
        }
        self.stats.stock_total = sale.stock_total;
        self.stats.remaining = sale.stock_total - taken;
        self.sale = sale;
        self.version += 1;
    }

    /// Calls off a sale that has not started: the twin of
    /// `lua/cancel_sale.lua`.
    pub fn call_off(&mut self) -> Result<(), StoreError> {
        self.call_off_refusal(system_now())?;
        self.apply_call_off();
        Ok(())
    }

    /// Whether the sale may be called off at `now`. Writes nothing.
    pub fn call_off_refusal(&self, now: Millis) -> Result<(), StoreError> {
        ensure_scheduled(&self.sale)?;
        if self.sale.has_started(now) {
            return Err(StoreError::Conflict(
                "the sale has started and can no longer be cancelled; set status to ended instead"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn apply_call_off(&mut self) {
        self.sale.state = SaleState::Cancelled;
        self.version += 1;
        self.outbox.clear();
    }

    /// Queues a campaign round's reminder, due at `due`, unless the sale
    /// has started or is no longer scheduled (and drops one queued then):
    /// the twin of `queue_reminder` in `lua/common.lua`.
    pub fn schedule_reminder(&mut self, due: Millis) {
        if self.sale.state != SaleState::Scheduled || self.sale.has_started(system_now()) {
            self.outbox.drop_reminder();
            return;
        }
        self.outbox.schedule_reminder(due);
    }

    /// The shopper cancels an unpaid order: the twin of
    /// `lua/cancel_order.lua`.
    pub fn cancel_order(
        &mut self,
        id: &OrderId,
        shopper: &ShopperId,
        counted: CancelCounted<'_>,
    ) -> Result<Order, StoreError> {
        let order = self
            .orders
            .get(id)
            .filter(|order| &order.shopper_id == shopper)
            .ok_or(StoreError::NotFound("order"))?;
        if order.status != OrderStatus::PendingPayment {
            return Err(StoreError::Conflict(format!(
                "the order is {} and can no longer be cancelled",
                order.status.as_str()
            )));
        }
        match counted {
            CancelCounted::Here { cancels_max } => self.take_cancel(shopper, cancels_max)?,
            CancelCounted::Taken { closed } => {
                if order.prepay_id.as_deref() != closed {
                    return Err(StoreError::Conflict(PREPAY_CHANGED.into()));
                }
            }
        }
        self.release(id, OrderStatus::Cancelled)
            .ok_or(StoreError::NotFound("order"))
    }

    /// [`Store::take_cancel`]: one of the shopper's at most `cancels_max`.
    pub fn take_cancel(&mut self, shopper: &ShopperId, cancels_max: i64) -> Result<(), StoreError> {
        let cancelled = self.cancels.entry(shopper.clone()).or_default();
        if *cancelled >= cancels_max {
            return Err(cancels_exhausted(*cancelled));
        }
        *cancelled += 1;
        Ok(())
    }

    /// [`Store::give_back_cancel`].
    pub fn give_back_cancel(&mut self, shopper: &ShopperId) {
        if let Some(cancelled) = self.cancels.get_mut(shopper) {
            *cancelled = (*cancelled - 1).max(0);
        }
    }

    /// A payment for an order (see [`PaymentOutcome`]): the twin of
    /// `lua/pay_order.lua`.
    pub fn pay(
        &mut self,
        id: &OrderId,
        payment: &Payment,
        follow_ups: FollowUps,
    ) -> Result<PaymentOutcome, StoreError> {
        let order = self
            .orders
            .get_mut(id)
            .ok_or(StoreError::NotFound("order"))?;
        if let Some((amount, currency)) = &payment.amount {
            if *amount != order.amount_cents || *currency != order.currency {
                return Ok(PaymentOutcome::AmountMismatch(order.clone()));
            }
        }
        let now = system_now();
        let (status, event) = match order.status {
            OrderStatus::Paid
            | OrderStatus::RefundRequired
            | OrderStatus::Refunding
            | OrderStatus::Refunded => {
                return Ok(PaymentOutcome::Unchanged(order.clone()));
            }
            OrderStatus::PendingPayment => (OrderStatus::Paid, OrderEvent::Paid),
            OrderStatus::Cancelled | OrderStatus::Expired => {
                (OrderStatus::RefundRequired, OrderEvent::RefundRequired)
            }
        };
        order.status = status;
        order.paid_at = Some(now);
        order.transaction_id = Some(payment.transaction_id.clone());
        let refund = status == OrderStatus::RefundRequired && follow_ups.refund;
        if refund {
            order.refund = Some(RefundKind::Late);
        }
        let order = order.clone();
        if refund {
            self.outbox.queue(OrderEvent::Refund, id, now);
        }
        if status == OrderStatus::Paid {
            self.stats.reserved -= order.quantity;
            self.stats.paid += order.quantity;
            self.unschedule(&order);
        } else {
            self.stats.refund_required += order.quantity;
        }
        if follow_ups.hand_off {
            self.outbox.queue(event, id, now);
        }
        Ok(if status == OrderStatus::Paid {
            PaymentOutcome::Paid(order)
        } else {
            PaymentOutcome::RefundRequired(order)
        })
    }

    /// The merchant refunds a paid order: the twin of
    /// `lua/refund_order.lua`.
    pub fn refund(
        &mut self,
        id: &OrderId,
        restock: bool,
        follow_ups: FollowUps,
    ) -> Result<Order, StoreError> {
        let now = system_now();
        let live = self.sale.state == SaleState::Scheduled
            && self.sale.has_started(now)
            && now < self.sale.ends_at;
        let order = self
            .orders
            .get_mut(id)
            .ok_or(StoreError::NotFound("order"))?;
        if order.status != OrderStatus::Paid {
            return Err(not_paid(order.status.as_str()));
        }
        if restock && !live {
            return Err(restock_not_live());
        }
        order.refund = Some(if restock {
            RefundKind::Restocked
        } else {
            RefundKind::Kept
        });
        order.status = if follow_ups.refund {
            OrderStatus::Refunding
        } else {
            OrderStatus::Refunded
        };
        let order = order.clone();
        self.stats.paid -= order.quantity;
        self.stats.refunded += order.quantity;
        if restock {
            self.stats.remaining += order.quantity;
            self.stats.restocked += order.quantity;
            self.unhold(&order);
        }
        if follow_ups.refund {
            self.outbox.queue(OrderEvent::Refund, id, now);
        } else if follow_ups.hand_off {
            self.outbox.queue(OrderEvent::Refunded, id, now);
        }
        Ok(order)
    }

    /// An order's refund is settled, by WeChat Pay or by the merchant's
    /// hand: the twin of `lua/settle_refund.lua`.
    pub fn settle_refund(
        &mut self,
        id: &OrderId,
        by: RefundSettledBy,
        hand_off: bool,
    ) -> Result<RefundSettlement, StoreError> {
        let order = self
            .orders
            .get_mut(id)
            .ok_or(StoreError::NotFound("order"))?;
        match order.status {
            OrderStatus::Refunded => return Ok(RefundSettlement::Unchanged(order.clone())),
            OrderStatus::RefundRequired | OrderStatus::Refunding => {}
            status => return Err(no_refund_asked(status.as_str())),
        }
        let now = system_now();
        if by == RefundSettledBy::Merchant {
            if self.outbox.holds_refund_call(id) {
                return Err(refund_call_queued());
            }
            order.refund_settled_by_hand_at = Some(now);
        }
        self.outbox.drop_dead_refund(id);
        if order.status == OrderStatus::RefundRequired {
            order.refund = Some(RefundKind::Late);
        }
        order.status = OrderStatus::Refunded;
        let order = order.clone();
        if hand_off {
            self.outbox.queue(OrderEvent::Refunded, id, now);
        }
        Ok(RefundSettlement::Refunded(order))
    }

    /// Keeps a prepay id on an unpaid order, once: the twin of
    /// `lua/record_prepay.lua`.
    pub fn record_prepay(&mut self, id: &OrderId, prepay_id: &str) -> Result<Order, StoreError> {
        let order = self
            .orders
            .get_mut(id)
            .ok_or(StoreError::NotFound("order"))?;
        if order.status != OrderStatus::PendingPayment {
            return Err(not_pending(order.status.as_str()));
        }
        order.prepay_id.get_or_insert_with(|| prepay_id.to_owned());
        Ok(order.clone())
    }

    /// Expires the unpaid orders of the deadline entries due, whole
    /// entries until `limit` orders were looked at: the twin of
    /// `lua/expire_orders.lua`.
    pub fn expire_due(&mut self, limit: usize, hold: Duration) -> Expiry {
        let now = system_now();
        let due: Vec<(Millis, Vec<OrderId>)> = self
            .deadlines
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(limit)
            .cloned()
            .collect();
        let mut expiry = Expiry::default();
        let mut looked = 0;
        for entry in due {
            if looked >= limit {
                break;
            }
            self.deadlines.remove(&entry);
            for id in entry.1 {
                looked += 1;
                let Some(order) = self
                    .orders
                    .get(&id)
                    .filter(|order| order.status == OrderStatus::PendingPayment)
                    .cloned()
                else {
                    expiry.passed_over += 1;
                    continue;
                };
                if order.prepay_id.is_some() {
                    self.schedule(&order, later(now, hold));
                    expiry.held.push(order);
                } else {
                    expiry
                        .expired
                        .extend(self.release(&id, OrderStatus::Expired));
                }
            }
        }
        expiry
    }

    /// Expires one held order past its deadline: the twin of
    /// `lua/expire_order.lua`.
    pub fn expire_order(&mut self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let order = self.orders.get(id).ok_or(StoreError::NotFound("order"))?;
        if order.status != OrderStatus::PendingPayment || order.expires_at > system_now() {
            return Ok(None);
        }
        Ok(self.release(id, OrderStatus::Expired))
    }

    /// Makes a held order due again `after` from now: the twin of
    /// `lua/postpone_expiry.lua` (an order with no entry of its own is
    /// left alone).
    pub fn postpone_expiry(&mut self, id: &OrderId, after: Duration) {
        let Some(order) = self.orders.get(id).cloned() else {
            return;
        };
        if order.status == OrderStatus::PendingPayment && self.has_own_entry(&order) {
            self.schedule(&order, later(system_now(), after));
        }
    }

    /// Gives an unpaid order an entry of its own in the deadline index, due
    /// at `at`.
    fn schedule(&mut self, order: &Order, at: Millis) {
        self.unschedule(order);
        self.due_again.insert(order.id.clone(), at);
        self.deadlines.insert((at, vec![order.id.clone()]));
    }

    /// Whether the order has an entry of its own in the deadline index (an
    /// order of a reserve call's larger entry has none).
    fn has_own_entry(&self, order: &Order) -> bool {
        let due = self
            .due_again
            .get(&order.id)
            .copied()
            .unwrap_or(order.expires_at);
        self.deadlines.contains(&(due, vec![order.id.clone()]))
    }

    /// Takes the order's own entry out of the deadline index: the twin of
    /// the scripts' `ZREM` of an order id (an order of a reserve call's
    /// larger entry stays in it until it comes due).
    fn unschedule(&mut self, order: &Order) {
        let due = self.due_again.remove(&order.id).unwrap_or(order.expires_at);
        self.deadlines.remove(&(due, vec![order.id.clone()]));
    }

    /// The order service took these orders, each once (the Redis store
    /// takes an entry's orders together: `lua/accept_orders.lua`; the
    /// order service passes whole entries to both).
    pub fn accept(&mut self, entries: &[StreamEntry], hand_off: bool) -> Vec<Acceptance> {
        let now = system_now();
        entries
            .iter()
            .map(|StreamEntry { order_id, .. }| {
                let Some((id, quantity)) = order_id
                    .as_ref()
                    .and_then(|id| Some((id, self.orders.get(id)?.quantity)))
                else {
                    return Acceptance::NotFound;
                };
                if !self.queued.insert(id.clone()) {
                    return Acceptance::Unchanged;
                }
                self.stats.queued += quantity;
                if hand_off {
                    self.outbox.queue(OrderEvent::Reserved, id, now);
                }
                Acceptance::Queued
            })
            .collect()
    }
}

fn ensure_scheduled(sale: &Sale) -> Result<(), StoreError> {
    if sale.state == SaleState::Scheduled {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "the sale is {}",
            sale.state.as_str()
        )))
    }
}
