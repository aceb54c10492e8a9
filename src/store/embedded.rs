//! The embedded store: every sale in process memory behind its own mutex,
//! with the semantics of the Lua scripts (the same checks in the same order,
//! one critical section per state change). Used when no Redis is configured;
//! everything is lost when the process stops.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::{
    batch_sale, changed_meanwhile, sort_newest_first, Acceptance, Delivery, OrderBacklog,
    StockReturnHandler, Store, StoreError, StreamEntry,
};
use crate::domain::{
    check_reservation, system_now, Millis, Order, OrderEvent, OrderId, OrderStatus, Payment,
    PaymentOutcome, PresentedToken, RecordedOrder, Rejection, Reservation, ReserveRequest, Sale,
    SaleChange, SaleId, SaleRecords, SaleState, SaleStats, SaleView, ShopperId, StockReturn,
    LIVE_CHANGEABLE_FIELDS,
};

/// One sale and everything that hangs off it, changed under one lock.
struct SaleRecord {
    sale: Sale,
    version: i64,
    stats: SaleStats,
    /// Shopper -> units held (reserved or paid).
    held: HashMap<ShopperId, i64>,
    /// (shopper, idempotency key) -> (order, quantity asked).
    idempotency: HashMap<(ShopperId, String), (OrderId, i64)>,
    orders: HashMap<OrderId, Order>,
    shopper_orders: HashMap<ShopperId, Vec<OrderId>>,
    /// Unpaid orders by payment deadline.
    deadlines: BTreeSet<(Millis, OrderId)>,
    /// The reservation stream with the order service's consumer group.
    stream: ReservationStream,
    /// Orders the order service has taken.
    queued: HashSet<OrderId>,
    /// Hand-offs to the merchant's webhook.
    outbox: HashMap<(OrderEvent, OrderId), HandOff>,
    /// Purchase tokens that bought (a sale that requires them).
    used_tokens: HashSet<String>,
}

impl SaleRecord {
    /// The sale with its counts, now.
    fn view(&self) -> SaleView {
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
    /// go back on sale and off the shopper's count.
    fn release(&mut self, id: &OrderId, status: OrderStatus) -> Option<Order> {
        let order = self.orders.get_mut(id)?;
        order.status = status;
        let order = order.clone();
        self.deadlines.remove(&(order.expires_at, order.id.clone()));
        self.stats.remaining += order.quantity;
        self.stats.reserved -= order.quantity;
        match status {
            OrderStatus::Cancelled => self.stats.cancelled += order.quantity,
            _ => self.stats.expired += order.quantity,
        }
        if let Some(held) = self.held.get_mut(&order.shopper_id) {
            *held -= order.quantity;
            if *held <= 0 {
                self.held.remove(&order.shopper_id);
            }
        }
        Some(order)
    }

    /// Decides one reservation (see [`Store::reserve`]); a new order's id joins `made` (the orders
    /// the stream entry of this reserve call will carry).
    fn reserve(
        &mut self,
        request: &ReserveRequest,
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
            Some(_) => PresentedToken::Fresh,
        };
        check_reservation(
            &self.sale,
            now,
            self.stats.remaining,
            held,
            request.quantity,
            token,
        )?;
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
            currency: self.sale.currency.clone(),
            status: OrderStatus::PendingPayment,
            created_at: now,
            expires_at: now + self.sale.payment_timeout_secs * 1000,
            paid_at: None,
        };
        self.orders.insert(order.id.clone(), order.clone());
        self.deadlines.insert((order.expires_at, order.id.clone()));
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

    /// Queues a hand-off, due now, unless it is queued already.
    fn hand_off(&mut self, event: OrderEvent, id: &OrderId, now: Millis) {
        self.outbox.entry((event, id.clone())).or_insert(HandOff {
            due: now,
            attempts: 0,
        });
    }
}

/// A hand-off waiting for (another) attempt.
struct HandOff {
    due: Millis,
    attempts: u32,
}

/// The semantics of a Redis stream with one consumer group: entries are
/// delivered once to some consumer, stay pending until acknowledged, and
/// can be claimed by another consumer once idle. As on Redis, one entry
/// carries the orders one reserve call made, read as one [`StreamEntry`]
/// per order.
#[derive(Default)]
struct ReservationStream {
    next_seq: u64,
    /// Entries not yet acknowledged, by sequence number.
    entries: BTreeMap<u64, Vec<OrderId>>,
    /// The group's cursor: entries after it were never delivered.
    delivered_up_to: Option<u64>,
    /// Delivered, unacknowledged entries: consumer and delivery time.
    pending: BTreeMap<u64, (String, Instant)>,
}

impl ReservationStream {
    /// One entry for the orders of one reserve call; none when it made
    /// none.
    fn append(&mut self, orders: Vec<OrderId>) {
        if !orders.is_empty() {
            self.entries.insert(self.next_seq, orders);
            self.next_seq += 1;
        }
    }

    fn entry(&self, seq: u64) -> impl Iterator<Item = StreamEntry> + '_ {
        self.entries
            .get(&seq)
            .into_iter()
            .flatten()
            .map(move |order_id| StreamEntry {
                id: format!("0-{seq}"),
                order_id: order_id.clone(),
            })
    }

    fn read(&mut self, consumer: &str, count: usize) -> Vec<StreamEntry> {
        let from = self.delivered_up_to.map_or(0, |seq| seq + 1);
        let seqs: Vec<u64> = self
            .entries
            .range(from..)
            .map(|(seq, _)| *seq)
            .take(count)
            .collect();
        let now = Instant::now();
        for seq in &seqs {
            self.pending.insert(*seq, (consumer.to_owned(), now));
            self.delivered_up_to = Some(*seq);
        }
        seqs.into_iter().flat_map(|seq| self.entry(seq)).collect()
    }

    fn claim(&mut self, consumer: &str, min_idle: Duration, count: usize) -> Vec<StreamEntry> {
        let now = Instant::now();
        let idle: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, delivered))| now.duration_since(*delivered) >= min_idle)
            .map(|(seq, _)| *seq)
            .take(count)
            .collect();
        for seq in &idle {
            self.pending.insert(*seq, (consumer.to_owned(), now));
        }
        idle.into_iter().flat_map(|seq| self.entry(seq)).collect()
    }

    fn ack(&mut self, ids: &[String]) {
        for seq in ids
            .iter()
            .filter_map(|id| id.strip_prefix("0-")?.parse::<u64>().ok())
        {
            self.pending.remove(&seq);
            self.entries.remove(&seq);
        }
    }
}

#[derive(Default)]
pub struct EmbeddedStore {
    sales: DashMap<SaleId, Arc<Mutex<SaleRecord>>>,
}

impl EmbeddedStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, id: &SaleId) -> Result<Arc<Mutex<SaleRecord>>, StoreError> {
        self.sales
            .get(id)
            .map(|entry| Arc::clone(entry.value()))
            .ok_or(StoreError::NotFound("sale"))
    }

    /// The record of an order's sale (an unknown sale: no such order).
    fn order_record(&self, id: &OrderId) -> Result<Arc<Mutex<SaleRecord>>, StoreError> {
        self.record(&id.sale_id())
            .map_err(|_| StoreError::NotFound("order"))
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

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create_sale(&self, sale: &Sale) -> Result<(), StoreError> {
        let record = SaleRecord {
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
            stream: ReservationStream::default(),
            queued: HashSet::new(),
            outbox: HashMap::new(),
            used_tokens: HashSet::new(),
        };
        match self.sales.entry(sale.id.clone()) {
            dashmap::Entry::Occupied(_) => Err(StoreError::Conflict(format!(
                "sale {} already exists",
                sale.id
            ))),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Arc::new(Mutex::new(record)));
                Ok(())
            }
        }
    }

    async fn sale_ids(&self) -> Result<Vec<SaleId>, StoreError> {
        let mut sales: Vec<(i64, SaleId)> = self
            .sales
            .iter()
            .map(|entry| (entry.value().lock().sale.created_at, entry.key().clone()))
            .collect();
        sales.sort_by(|a, b| b.cmp(a));
        Ok(sales.into_iter().map(|(_, id)| id).collect())
    }

    async fn view_sale(&self, id: &SaleId) -> Result<Option<SaleView>, StoreError> {
        let Ok(record) = self.record(id) else {
            return Ok(None);
        };
        let view = record.lock().view();
        Ok(Some(view))
    }

    async fn sale_records(&self, id: &SaleId) -> Result<Option<SaleRecords>, StoreError> {
        let Ok(record) = self.record(id) else {
            return Ok(None);
        };
        let record = record.lock();
        Ok(Some(SaleRecords {
            view: record.view(),
            held: record
                .held
                .iter()
                .map(|(shopper, units)| (shopper.clone(), *units))
                .collect(),
            indexed: record.shopper_orders.values().flatten().cloned().collect(),
            orders: record
                .orders
                .values()
                .map(|order| RecordedOrder {
                    order: order.clone(),
                    queued: record.queued.contains(&order.id),
                })
                .collect(),
            deadlines: record.deadlines.iter().map(|(_, id)| id.clone()).collect(),
            stream: record.stream.entries.values().flatten().cloned().collect(),
        }))
    }

    async fn update_sale(
        &self,
        id: &SaleId,
        change: &SaleChange,
        version: i64,
    ) -> Result<(), StoreError> {
        let record = self.record(id)?;
        let mut record = record.lock();
        let now = system_now();
        ensure_scheduled(&record.sale)?;
        if record.version != version {
            return Err(changed_meanwhile());
        }
        let started = record.sale.has_started(now);
        if started && now >= record.sale.ends_at {
            return Err(StoreError::Conflict("the sale has ended".into()));
        }
        if started && change.restricted {
            return Err(StoreError::Conflict(format!(
                "the sale has started: only {LIVE_CHANGEABLE_FIELDS} can change"
            )));
        }
        let held = record.stats.reserved + record.stats.paid;
        if change.sale.stock_total < held {
            return Err(StoreError::Conflict(format!(
                "stock_total cannot go below the {held} units reserved or paid"
            )));
        }
        if change.sale.ends_at != record.sale.ends_at && change.sale.ends_at <= now {
            return Err(StoreError::Conflict(
                "ends_at must be in the future; set status to ended to stop now".into(),
            ));
        }
        let mut sale = if change.restricted {
            change.sale.clone()
        } else {
            record.sale.clone()
        };
        sale.stock_total = change.sale.stock_total;
        sale.ends_at = change.sale.ends_at;
        if change.end_now {
            sale.state = SaleState::Ended;
        }
        record.stats.stock_total = sale.stock_total;
        record.stats.remaining = sale.stock_total - held;
        record.sale = sale;
        record.version += 1;
        Ok(())
    }

    async fn cancel_sale(&self, id: &SaleId) -> Result<(), StoreError> {
        let record = self.record(id)?;
        let mut record = record.lock();
        ensure_scheduled(&record.sale)?;
        if record.sale.has_started(system_now()) {
            return Err(StoreError::Conflict(
                "the sale has started and can no longer be cancelled; set status to ended instead"
                    .into(),
            ));
        }
        record.sale.state = SaleState::Cancelled;
        record.version += 1;
        Ok(())
    }

    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<Result<Reservation, StoreError>>, StoreError> {
        let sale = batch_sale(requests)?;
        let Ok(record) = self.record(sale) else {
            return Ok(requests
                .iter()
                .map(|_| Err(StoreError::NotFound("sale")))
                .collect());
        };
        let mut guard = record.lock();
        let mut made = Vec::new();
        let outcomes = requests
            .iter()
            .map(|request| guard.reserve(request, &mut made))
            .collect();
        guard.stream.append(made);
        Ok(outcomes)
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let Ok(record) = self.record(&id.sale_id()) else {
            return Ok(None);
        };
        let order = record.lock().orders.get(id).cloned();
        Ok(order)
    }

    async fn shopper_orders(&self, shopper: &ShopperId) -> Result<Vec<Order>, StoreError> {
        let mut orders: Vec<Order> = Vec::new();
        for entry in self.sales.iter() {
            let record = entry.value().lock();
            let ids = record.shopper_orders.get(shopper).into_iter().flatten();
            orders.extend(ids.filter_map(|id| record.orders.get(id).cloned()));
        }
        sort_newest_first(&mut orders);
        Ok(orders)
    }

    async fn cancel_order(&self, id: &OrderId, shopper: &ShopperId) -> Result<Order, StoreError> {
        let record = self.order_record(id)?;
        let mut guard = record.lock();
        let record = &mut *guard;
        let order = record
            .orders
            .get_mut(id)
            .filter(|order| &order.shopper_id == shopper)
            .ok_or(StoreError::NotFound("order"))?;
        if order.status != OrderStatus::PendingPayment {
            return Err(StoreError::Conflict(format!(
                "the order is {} and can no longer be cancelled",
                order.status.as_str()
            )));
        }
        record
            .release(id, OrderStatus::Cancelled)
            .ok_or(StoreError::NotFound("order"))
    }

    async fn pay_order(
        &self,
        id: &OrderId,
        payment: &Payment,
        hand_off: bool,
    ) -> Result<PaymentOutcome, StoreError> {
        let record = self.order_record(id)?;
        let mut guard = record.lock();
        let record = &mut *guard;
        let order = record
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
            OrderStatus::Paid | OrderStatus::RefundRequired => {
                return Ok(PaymentOutcome::Unchanged(order.clone()));
            }
            OrderStatus::PendingPayment => (OrderStatus::Paid, OrderEvent::Paid),
            OrderStatus::Cancelled | OrderStatus::Expired => {
                (OrderStatus::RefundRequired, OrderEvent::RefundRequired)
            }
        };
        order.status = status;
        order.paid_at = Some(now);
        let order = order.clone();
        if status == OrderStatus::Paid {
            record.stats.reserved -= order.quantity;
            record.stats.paid += order.quantity;
            record
                .deadlines
                .remove(&(order.expires_at, order.id.clone()));
        } else {
            record.stats.refund_required += order.quantity;
        }
        if hand_off {
            record.hand_off(event, id, now);
        }
        Ok(if status == OrderStatus::Paid {
            PaymentOutcome::Paid(order)
        } else {
            PaymentOutcome::RefundRequired(order)
        })
    }

    async fn expire_due(&self, sale: &SaleId, limit: usize) -> Result<Vec<Order>, StoreError> {
        let record = self.record(sale)?;
        let mut record = record.lock();
        let now = system_now();
        let due: Vec<OrderId> = record
            .deadlines
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect();
        Ok(due
            .iter()
            .filter_map(|id| record.release(id, OrderStatus::Expired))
            .collect())
    }

    async fn join_reservations(&self, sale: &SaleId) -> Result<(), StoreError> {
        self.record(sale).map(|_| ())
    }

    async fn read_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        Ok(self.record(sale)?.lock().stream.read(consumer, count))
    }

    async fn claim_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        Ok(self
            .record(sale)?
            .lock()
            .stream
            .claim(consumer, min_idle, count))
    }

    async fn accept_orders(
        &self,
        sale: &SaleId,
        ids: &[OrderId],
        hand_off: bool,
    ) -> Result<Vec<Acceptance>, StoreError> {
        let record = self.record(sale)?;
        let mut record = record.lock();
        let now = system_now();
        Ok(ids
            .iter()
            .map(|id| {
                let Some(quantity) = record.orders.get(id).map(|order| order.quantity) else {
                    return Acceptance::NotFound;
                };
                if !record.queued.insert(id.clone()) {
                    return Acceptance::Unchanged;
                }
                record.stats.queued += quantity;
                if hand_off {
                    record.hand_off(OrderEvent::Reserved, id, now);
                }
                Acceptance::Queued
            })
            .collect())
    }

    async fn order_backlog(&self, sale: &SaleId) -> Result<OrderBacklog, StoreError> {
        let record = self.record(sale)?;
        let record = record.lock();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Ok(OrderBacklog {
            reservations: count(record.stream.entries.len()),
            unpaid: count(record.deadlines.len()),
            hand_offs: count(record.outbox.len()),
        })
    }

    async fn ack_reservations(
        &self,
        sale: &SaleId,
        entry_ids: &[String],
    ) -> Result<(), StoreError> {
        self.record(sale)?.lock().stream.ack(entry_ids);
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        sale: &SaleId,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let record = self.record(sale)?;
        let mut record = record.lock();
        let now = system_now();
        let mut due: Vec<(Millis, (OrderEvent, OrderId))> = record
            .outbox
            .iter()
            .filter(|(_, hand_off)| hand_off.due <= now)
            .map(|(key, hand_off)| (hand_off.due, key.clone()))
            .collect();
        due.sort_by_key(|(due, _)| *due);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        Ok(due
            .into_iter()
            .take(limit)
            .filter_map(|(_, key)| {
                let hand_off = record.outbox.get_mut(&key)?;
                hand_off.due = now.saturating_add(lease_ms);
                hand_off.attempts += 1;
                Some(Delivery {
                    event: key.0,
                    order_id: key.1,
                    attempt: hand_off.attempts,
                })
            })
            .collect())
    }

    async fn delivered(&self, sale: &SaleId, delivery: &Delivery) -> Result<(), StoreError> {
        self.record(sale)?
            .lock()
            .outbox
            .remove(&(delivery.event, delivery.order_id.clone()));
        Ok(())
    }

    async fn postpone_delivery(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        after: Duration,
    ) -> Result<(), StoreError> {
        let record = self.record(sale)?;
        let mut record = record.lock();
        if let Some(hand_off) = record
            .outbox
            .get_mut(&(delivery.event, delivery.order_id.clone()))
        {
            hand_off.due =
                system_now().saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// One process: nobody else to tell.
    async fn announce_stock_returns(&self, _: &[StockReturn]) -> Result<(), StoreError> {
        Ok(())
    }

    /// One process: nobody else announces.
    async fn watch_stock_returns(&self, _: StockReturnHandler) {}
}
