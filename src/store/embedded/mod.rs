//! The embedded store: every sale in process memory behind its own mutex,
//! with the semantics of the Lua scripts (the same checks in the same order,
//! one critical section per state change). Used when no Redis is configured;
//! everything is lost when the process stops.
//!
//! - [`sale`]: a sale's record (the sale, its counts, shoppers and orders)
//!   and every change to it, each the twin of one script.
//! - [`waiting_room`]: a queued sale's line and admissions.
//! - [`queues`]: the order service's side: the reservation stream and the
//!   outbox of webhook hand-offs.
//! - here: the [`Store`] impl, which finds the sale's record and makes one
//!   change under its lock per call.
//!
//! One clock: every time the store decides by or stamps (the sale's
//! window, order times, payment deadlines, hand-offs due, payment
//! exceptions) is
//! `system_now()`, read inside the call, as the scripts read Redis `TIME`.

mod campaign;
mod queues;
mod sale;
mod waiting_room;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use smol_str::SmolStr;

use self::campaign::{CampaignEntry, CampaignHolds};
use self::sale::{CancelCounted, SaleRecord};
use super::{
    batch_sale, campaign_changed_meanwhile, campaign_sale_refused, campaign_started,
    sort_exceptions_newest_first, sort_newest_first, sort_oldest_first, Acceptance, DeadLetter,
    Delivery, DeliveryFailure, Expiry, FollowUps, Forgetting, IndexedCampaign, IndexedSale,
    OrderBacklog, QueueRules, RefundSettlement, ShopperBounds, StockReturnHandler, Store,
    StoreError, StoredCampaign, StreamEntry, StreamRead,
};
use crate::domain::{
    system_now, Campaign, CampaignChange, CampaignId, Order, OrderId, Payment, PaymentException,
    PaymentOutcome, QueuePlace, QueueStats, RecordedOrder, RefundSettledBy, Reservation,
    ReserveRequest, Sale, SaleChange, SaleId, SaleRecords, SaleStep, SaleView, ShopperId,
    StockReturn,
};

/// Whether the merchant settled a payment exception by hand.
struct Settled(bool);

pub struct EmbeddedStore {
    sales: DashMap<SaleId, Arc<Mutex<SaleRecord>>>,
    campaigns: DashMap<CampaignId, Arc<CampaignEntry>>,
    /// Verified payments that could not be applied, by transaction id, and
    /// whether the merchant settled each (kept, so a repeat of the same
    /// transaction is not recorded again).
    payment_exceptions: Mutex<HashMap<String, (PaymentException, Settled)>>,
    /// What one shopper may leave unpaid in one sale.
    shopper_bounds: ShopperBounds,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self {
            sales: DashMap::new(),
            campaigns: DashMap::new(),
            payment_exceptions: Mutex::default(),
            shopper_bounds: ShopperBounds::default(),
        }
    }
}

impl EmbeddedStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same store with other bounds on what one shopper may leave
    /// unpaid in one sale.
    pub fn with_shopper_bounds(mut self, bounds: ShopperBounds) -> Self {
        self.shopper_bounds = bounds;
        self
    }

    fn insert_sale(&self, record: SaleRecord) -> Result<(), StoreError> {
        match self.sales.entry(record.sale.id.clone()) {
            dashmap::Entry::Occupied(_) => Err(StoreError::Conflict(format!(
                "sale {} already exists",
                record.sale.id
            ))),
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Arc::new(Mutex::new(record)));
                Ok(())
            }
        }
    }

    /// Every sale and its record, taken out of the map before any record
    /// is locked: a reader never waits for a sale's lock while it holds a
    /// part of the map, which a campaign change inserts the sales it
    /// creates into while it holds its other sales' locks.
    fn records(&self) -> Vec<(SaleId, Arc<Mutex<SaleRecord>>)> {
        self.sales
            .iter()
            .map(|entry| (entry.key().clone(), Arc::clone(entry.value())))
            .collect()
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

/// A campaign's sale with its full stock, counted in the campaign's holds.
fn campaign_sale(sale: &Sale, holds: &Arc<Mutex<CampaignHolds>>) -> SaleRecord {
    let round = sale.id.campaign().map_or(0, |slot| slot.round);
    SaleRecord::new(sale).in_campaign(Arc::clone(holds), round)
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
        self.insert_sale(SaleRecord::new(sale))
    }

    async fn create_campaign(&self, campaign: &Campaign) -> Result<(), StoreError> {
        // Whole or not at all, as on Redis: a sale of it that exists
        // refuses the campaign before anything of it is stored.
        let sales = campaign.sales();
        if sales.iter().any(|sale| self.sales.contains_key(&sale.id)) {
            return Err(StoreError::Conflict(format!(
                "campaign {} or one of its sales already exists",
                campaign.id
            )));
        }
        let holds = Arc::new(Mutex::new(CampaignHolds::new(campaign.limits)));
        let entry = CampaignEntry {
            stored: Mutex::new(StoredCampaign {
                campaign: campaign.clone(),
                version: 1,
            }),
            holds: Arc::clone(&holds),
        };
        match self.campaigns.entry(campaign.id.clone()) {
            dashmap::Entry::Occupied(_) => {
                return Err(StoreError::Conflict(format!(
                    "campaign {} already exists",
                    campaign.id
                )))
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Arc::new(entry));
            }
        }
        for sale in sales {
            self.insert_sale(campaign_sale(&sale, &holds))?;
        }
        for (sale, due) in campaign.reminders() {
            self.record(&sale)?.lock().schedule_reminder(due);
        }
        Ok(())
    }

    async fn forget_campaign(&self, id: &CampaignId) -> Result<Forgetting, StoreError> {
        let forgotten = self.campaigns.remove_if(id, |_, entry| {
            let campaign = &entry.stored.lock().campaign;
            campaign
                .sales()
                .iter()
                .all(|sale| !self.sales.contains_key(&sale.id))
        });
        Ok(match forgotten {
            Some(_) => Forgetting::Forgotten,
            None if self.campaigns.contains_key(id) => Forgetting::Kept,
            None => Forgetting::Gone,
        })
    }

    async fn update_campaign(
        &self,
        change: &CampaignChange,
        version: i64,
    ) -> Result<(), StoreError> {
        let entry = self
            .campaigns
            .get(&change.campaign.id)
            .map(|entry| Arc::clone(entry.value()))
            .ok_or(StoreError::NotFound("campaign"))?;
        // The record's lock first, then each sale's in the change's order,
        // then the holds': one change of a campaign at a time, and a
        // reservation takes its sale's lock, then the holds' (never a
        // second sale's). The clock is read with all of them held, so no
        // reservation runs between the check that the campaign has not
        // started and the change (as the script is one step on Redis).
        let mut stored = entry.stored.lock();
        if stored.version != version {
            return Err(campaign_changed_meanwhile());
        }
        let records: Vec<Option<Arc<Mutex<SaleRecord>>>> = change
            .steps
            .iter()
            .map(|step| {
                self.sales
                    .get(step.sale_id())
                    .map(|entry| Arc::clone(entry.value()))
            })
            .collect();
        let mut locked: Vec<_> = records
            .iter()
            .map(|record| record.as_ref().map(|record| record.lock()))
            .collect();
        let mut holds = entry.holds.lock();
        let now = system_now();
        if let Some(what) = &change.before_start {
            if now >= change.starts_at {
                return Err(campaign_started(what));
            }
        }
        for (step, record) in change.steps.iter().zip(&locked) {
            let refused = match (step, record) {
                (SaleStep::Create(_), None) => Ok(()),
                (SaleStep::Create(_), Some(_)) => Err("the sale already exists".to_owned()),
                (_, None) => Err("the sale does not exist".to_owned()),
                (SaleStep::Cancel(_), Some(record)) => {
                    record.call_off_refusal(now).map_err(|err| err.to_string())
                }
                (SaleStep::Change { change, version }, Some(record)) => {
                    if record.version != *version {
                        return Err(campaign_changed_meanwhile());
                    }
                    record
                        .change_refusal(change, *version, now)
                        .map_err(|err| err.to_string())
                }
            };
            refused.map_err(|reason| campaign_sale_refused(step.sale_id(), &reason))?;
        }
        for (step, record) in change.steps.iter().zip(&mut locked) {
            match (step, record) {
                (SaleStep::Create(sale), _) => {
                    self.insert_sale(campaign_sale(sale, &entry.holds))?;
                }
                (SaleStep::Cancel(_), Some(record)) => record.apply_call_off(),
                (SaleStep::Change { change, .. }, Some(record)) => record.apply_change(change, now),
                (_, None) => {}
            }
        }
        holds.limits = change.campaign.limits;
        // The holds' and the sales' locks go before the reminders take
        // theirs (a reminder's sale may be a step's); the record's lock,
        // held until the end, keeps any other change of the campaign out
        // meanwhile.
        drop(holds);
        drop(locked);
        for (sale, due) in &change.reminders {
            if let Ok(record) = self.record(sale) {
                record.lock().schedule_reminder(*due);
            }
        }
        *stored = StoredCampaign {
            campaign: change.campaign.clone(),
            version: version + 1,
        };
        Ok(())
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<StoredCampaign>, StoreError> {
        Ok(self
            .campaigns
            .get(id)
            .map(|entry| entry.value().stored.lock().clone()))
    }

    async fn campaign_ids(&self) -> Result<Vec<CampaignId>, StoreError> {
        let mut campaigns: Vec<(i64, CampaignId)> = self
            .campaigns
            .iter()
            .map(|entry| {
                let created_at = entry.value().stored.lock().campaign.created_at;
                (created_at, entry.key().clone())
            })
            .collect();
        campaigns.sort_by(|a, b| b.cmp(a));
        Ok(campaigns.into_iter().map(|(_, id)| id).collect())
    }

    async fn campaign_index(
        &self,
        after: Option<&IndexedCampaign>,
        limit: usize,
    ) -> Result<Vec<IndexedCampaign>, StoreError> {
        let mut campaigns: Vec<IndexedCampaign> = self
            .campaigns
            .iter()
            .map(|entry| IndexedCampaign {
                created_at: entry.value().stored.lock().campaign.created_at,
                id: entry.key().clone(),
            })
            .filter(|campaign| {
                after.is_none_or(|after| {
                    (after.created_at, &after.id) > (campaign.created_at, &campaign.id)
                })
            })
            .collect();
        campaigns.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        campaigns.truncate(limit);
        Ok(campaigns)
    }

    async fn campaign_holds(
        &self,
        id: &CampaignId,
        round: u32,
        shopper: &ShopperId,
    ) -> Result<(i64, i64), StoreError> {
        let entry = self
            .campaigns
            .get(id)
            .map(|entry| Arc::clone(entry.value()))
            .ok_or(StoreError::NotFound("campaign"))?;
        let held = entry.holds.lock().held(round, shopper);
        Ok(held)
    }

    async fn sale_index(
        &self,
        after: Option<&IndexedSale>,
        limit: usize,
    ) -> Result<Vec<IndexedSale>, StoreError> {
        let mut sales: Vec<IndexedSale> = self
            .records()
            .into_iter()
            .map(|(id, record)| IndexedSale {
                created_at: record.lock().sale.created_at,
                id,
            })
            .filter(|sale| after.is_none_or(|after| after.listed_before(sale)))
            .collect();
        sales.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        sales.truncate(limit);
        Ok(sales)
    }

    async fn open_sale_ids(&self) -> Result<Vec<SaleId>, StoreError> {
        let now = system_now();
        Ok(self
            .records()
            .into_iter()
            .filter(|(_, record)| record.lock().sale.payment_window_closes_at() >= now)
            .map(|(id, _)| id)
            .collect())
    }

    /// A shopper's order list here reads every sale in memory: nothing to
    /// list.
    async fn settle_sale(&self, _sale: &SaleId) -> Result<(), StoreError> {
        Ok(())
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
            deadlines: record
                .deadlines
                .iter()
                .map(|(_, ids)| ids.clone())
                .collect(),
            stream: record.stream.orders().cloned().collect(),
        }))
    }

    async fn update_sale(
        &self,
        id: &SaleId,
        change: &SaleChange,
        version: i64,
    ) -> Result<(), StoreError> {
        self.record(id)?.lock().update(change, version)
    }

    async fn cancel_sale(&self, id: &SaleId) -> Result<(), StoreError> {
        self.record(id)?.lock().call_off()
    }

    async fn queue_join(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
        shuffle_key: &str,
        rules: &QueueRules,
    ) -> Result<(), StoreError> {
        let record = self.record(sale)?;
        let mut record = record.lock();
        let record = &mut *record;
        record.waiting_room.join(
            &record.sale,
            &record.stats,
            shopper,
            shuffle_key,
            rules,
            system_now(),
        )
    }

    async fn queue_poll(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
        rules: &QueueRules,
    ) -> Result<Option<QueuePlace>, StoreError> {
        let record = self.record(sale)?;
        let mut record = record.lock();
        let record = &mut *record;
        record.waiting_room.poll(
            &record.sale,
            &record.stats,
            &record.used_tokens,
            shopper,
            rules,
            system_now(),
        )
    }

    async fn queue_stats(&self, sale: &SaleId) -> Result<QueueStats, StoreError> {
        let record = self.record(sale)?;
        let record = record.lock();
        record
            .waiting_room
            .stats(&record.sale, record.used_tokens.len() as u64)
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
            .map(|request| guard.reserve(request, &self.shopper_bounds, &mut made))
            .collect();
        guard.made(made);
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
        for (_, record) in self.records() {
            let record = record.lock();
            let ids = record.shopper_orders.get(shopper).into_iter().flatten();
            orders.extend(ids.filter_map(|id| record.orders.get(id).cloned()));
        }
        sort_newest_first(&mut orders);
        Ok(orders)
    }

    async fn sale_orders(
        &self,
        sale: &SaleId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Order>, Option<String>), StoreError> {
        // The cursor is the last order id of the page before: one of this
        // sale's.
        let of_this_sale =
            |after: &str| OrderId::parse(after).is_ok_and(|id| id.sale_id() == *sale);
        if !cursor.is_none_or(of_this_sale) {
            return Err(StoreError::BadCursor);
        }
        let Ok(record) = self.record(sale) else {
            return Ok((Vec::new(), None));
        };
        let record = record.lock();
        let mut orders: Vec<&Order> = record
            .orders
            .values()
            .filter(|order| cursor.is_none_or(|after| order.id.as_str() > after))
            .collect();
        orders.sort_by(|a, b| a.id.cmp(&b.id));
        let more = orders.len() > limit;
        orders.truncate(limit);
        let next = more
            .then(|| orders.last().map(|order| order.id.to_string()))
            .flatten();
        Ok((orders.into_iter().cloned().collect(), next))
    }

    async fn forget_sale(
        &self,
        sale: &SaleId,
        retention: Duration,
    ) -> Result<Forgetting, StoreError> {
        let Ok(record) = self.record(sale) else {
            return Ok(Forgetting::Gone);
        };
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        // The sale's lock, then the map's: the order a campaign change
        // takes them in (it inserts the sales it creates while it holds
        // the others' locks).
        let held = record.lock();
        let settled = system_now()
            >= held
                .sale
                .payment_window_closes_at()
                .saturating_add(retention_ms)
            && held.backlog().is_empty();
        if !settled {
            return Ok(Forgetting::Kept);
        }
        if held.outbox.holds_a_dead_refund() {
            return Ok(Forgetting::Owed);
        }
        let forgotten = self
            .sales
            .remove_if(sale, |_, stored| Arc::ptr_eq(stored, &record));
        drop(held);
        Ok(match forgotten {
            Some(_) => Forgetting::Forgotten,
            None => Forgetting::Gone,
        })
    }

    async fn cancel_order(&self, id: &OrderId, shopper: &ShopperId) -> Result<Order, StoreError> {
        let counted = CancelCounted::Here {
            cancels_max: self.shopper_bounds.cancels,
        };
        self.order_record(id)?
            .lock()
            .cancel_order(id, shopper, counted)
    }

    async fn take_cancel(&self, sale: &SaleId, shopper: &ShopperId) -> Result<(), StoreError> {
        self.record(sale)?
            .lock()
            .take_cancel(shopper, self.shopper_bounds.cancels)
    }

    async fn give_back_cancel(&self, sale: &SaleId, shopper: &ShopperId) -> Result<(), StoreError> {
        self.record(sale)?.lock().give_back_cancel(shopper);
        Ok(())
    }

    async fn cancel_taken_order(
        &self,
        id: &OrderId,
        shopper: &ShopperId,
        closed: Option<&str>,
    ) -> Result<Order, StoreError> {
        self.order_record(id)?
            .lock()
            .cancel_order(id, shopper, CancelCounted::Taken { closed })
    }

    async fn pay_order(
        &self,
        id: &OrderId,
        payment: &Payment,
        follow_ups: FollowUps,
    ) -> Result<PaymentOutcome, StoreError> {
        self.order_record(id)?.lock().pay(id, payment, follow_ups)
    }

    async fn refund_order(
        &self,
        id: &OrderId,
        restock: bool,
        follow_ups: FollowUps,
    ) -> Result<Order, StoreError> {
        self.order_record(id)?
            .lock()
            .refund(id, restock, follow_ups)
    }

    async fn settle_refund(
        &self,
        id: &OrderId,
        by: RefundSettledBy,
        hand_off: bool,
    ) -> Result<RefundSettlement, StoreError> {
        self.order_record(id)?
            .lock()
            .settle_refund(id, by, hand_off)
    }

    async fn end_refund_call(&self, id: &OrderId) -> Result<(), StoreError> {
        // A sale forgotten since has no outbox left, as on Redis.
        if let Ok(record) = self.record(&id.sale_id()) {
            record.lock().outbox.end_refund_call(id);
        }
        Ok(())
    }

    async fn record_prepay(&self, id: &OrderId, prepay_id: &str) -> Result<Order, StoreError> {
        self.order_record(id)?.lock().record_prepay(id, prepay_id)
    }

    async fn expire_due(
        &self,
        sale: &SaleId,
        limit: usize,
        hold: Duration,
    ) -> Result<Expiry, StoreError> {
        Ok(self.record(sale)?.lock().expire_due(limit, hold))
    }

    async fn expire_order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.order_record(id)?.lock().expire_order(id)
    }

    async fn postpone_expiry(&self, id: &OrderId, after: Duration) -> Result<(), StoreError> {
        self.order_record(id)?.lock().postpone_expiry(id, after);
        Ok(())
    }

    async fn join_reservations(&self, sale: &SaleId) -> Result<(), StoreError> {
        self.record(sale).map(|_| ())
    }

    async fn read_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        which: StreamRead,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        Ok(self
            .record(sale)?
            .lock()
            .stream
            .read(consumer, which, count))
    }

    async fn claim_reservations(
        &self,
        sale: &SaleId,
        consumer: &str,
        idle_min: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        Ok(self
            .record(sale)?
            .lock()
            .stream
            .claim(consumer, idle_min, count))
    }

    async fn accept_orders(
        &self,
        sale: &SaleId,
        entries: &[StreamEntry],
        hand_off: bool,
    ) -> Result<Vec<Acceptance>, StoreError> {
        Ok(self.record(sale)?.lock().accept(entries, hand_off))
    }

    async fn order_backlog(&self, sale: &SaleId) -> Result<OrderBacklog, StoreError> {
        Ok(self.record(sale)?.lock().backlog())
    }

    async fn ack_reservations(
        &self,
        sale: &SaleId,
        entry_ids: &[SmolStr],
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
        Ok(self
            .record(sale)?
            .lock()
            .outbox
            .claim(system_now(), limit, lease))
    }

    async fn delivered(&self, sale: &SaleId, delivery: &Delivery) -> Result<(), StoreError> {
        self.record(sale)?.lock().outbox.remove(delivery);
        Ok(())
    }

    async fn postpone_delivery(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        after: Duration,
    ) -> Result<(), StoreError> {
        self.record(sale)?
            .lock()
            .outbox
            .postpone(delivery, system_now(), after);
        Ok(())
    }

    async fn dead_letter(
        &self,
        sale: &SaleId,
        delivery: &Delivery,
        failure: &DeliveryFailure,
    ) -> Result<bool, StoreError> {
        Ok(self
            .record(sale)?
            .lock()
            .outbox
            .dead_letter(delivery, failure, system_now()))
    }

    async fn dead_letters(&self, sale: &SaleId) -> Result<Vec<DeadLetter>, StoreError> {
        let mut letters = self.record(sale)?.lock().outbox.dead_letters();
        sort_oldest_first(&mut letters);
        Ok(letters)
    }

    async fn redrive_dead_letters(&self, sale: &SaleId) -> Result<u64, StoreError> {
        let moved = self.record(sale)?.lock().outbox.redrive(system_now());
        Ok(u64::try_from(moved).unwrap_or(u64::MAX))
    }

    /// One process: nobody else to tell.
    async fn announce_stock_returns(&self, _: &[StockReturn]) -> Result<(), StoreError> {
        Ok(())
    }

    /// One process: nobody else announces.
    async fn watch_stock_returns(&self, _: StockReturnHandler) {}

    async fn record_payment_exception(
        &self,
        exception: &PaymentException,
    ) -> Result<bool, StoreError> {
        let mut exceptions = self.payment_exceptions.lock();
        if exceptions.contains_key(&exception.transaction_id) {
            return Ok(false);
        }
        let recorded = PaymentException {
            recorded_at: system_now(),
            ..exception.clone()
        };
        exceptions.insert(exception.transaction_id.clone(), (recorded, Settled(false)));
        Ok(true)
    }

    async fn payment_exceptions(&self) -> Result<Vec<PaymentException>, StoreError> {
        let mut exceptions: Vec<PaymentException> = self
            .payment_exceptions
            .lock()
            .values()
            .filter(|(_, settled)| !settled.0)
            .map(|(exception, _)| exception.clone())
            .collect();
        sort_exceptions_newest_first(&mut exceptions);
        Ok(exceptions)
    }

    async fn payment_exception(
        &self,
        transaction_id: &str,
    ) -> Result<Option<PaymentException>, StoreError> {
        Ok(self
            .payment_exceptions
            .lock()
            .get(transaction_id)
            .filter(|(_, settled)| !settled.0)
            .map(|(exception, _)| exception.clone()))
    }

    async fn settle_payment_exception(
        &self,
        transaction_id: &str,
    ) -> Result<Option<PaymentException>, StoreError> {
        let mut exceptions = self.payment_exceptions.lock();
        Ok(exceptions
            .get_mut(transaction_id)
            .filter(|(_, settled)| !settled.0)
            .map(|(exception, settled)| {
                settled.0 = true;
                exception.clone()
            }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::executor::block_on;

    use super::*;
    use crate::domain::{
        CampaignPatch, NewCampaign, NewItem, NewRound, Quantity, SaleRules, Timestamp,
    };

    /// A change allowed only before a campaign starts is checked against
    /// the clock with the sales it changes locked: one that waited for its
    /// sale while a reservation made at the opening held it is refused as
    /// started, not applied over that order (on Redis the script is one
    /// step).
    #[test]
    fn a_change_that_waited_past_the_opening_for_its_sale_is_refused() {
        let store = Arc::new(EmbeddedStore::new());
        let rules = SaleRules {
            payment_timeout_secs_min: 1,
        };
        let opens_at = system_now() + 300;
        let campaign = NewCampaign {
            title: "11.11".into(),
            rounds: vec![NewRound {
                starts_at: Timestamp(opens_at).to_string(),
                ends_at: Timestamp(opens_at + 3_600_000).to_string(),
            }],
            items: vec![NewItem {
                sku: "SKU-0".into(),
                title: "item 0".into(),
                price_cents: 990,
                original_price_cents: 1990,
                stock_per_round: 5,
                stock_by_round: None,
                per_user_limit: Some(2),
            }],
            per_user_limit_per_round: 2,
            per_user_limit_total: None,
            currency: None,
            payment_timeout_secs: Some(600),
            require_purchase_token: None,
            remind_before_secs: None,
        }
        .into_campaign(CampaignId::generate(), system_now(), &rules)
        .expect("a valid campaign");
        block_on(store.create_campaign(&campaign)).unwrap();
        let sale = campaign.sales()[0].id.clone();
        let stored = block_on(store.campaign(&campaign.id)).unwrap().unwrap();
        let view = block_on(store.view_sale(&sale)).unwrap().unwrap();
        let patch: CampaignPatch = serde_json::from_value(
            serde_json::json!({"items": [{"number": 0, "per_user_limit": 1}]}),
        )
        .unwrap();
        let change = stored
            .campaign
            .patched(patch, &[view], system_now(), &rules)
            .expect("a valid change");

        // A reserve call holds the sale as the change comes, before the
        // opening, and reserves once the round has opened.
        let record = store.record(&sale).unwrap();
        let mut busy = record.lock();
        let updating = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || block_on(store.update_campaign(&change, stored.version)))
        };
        std::thread::sleep(Duration::from_millis(400));
        let request = ReserveRequest {
            sale_id: sale.clone(),
            shopper_id: ShopperId::parse("ann").unwrap(),
            quantity: Quantity::parse(2).unwrap(),
            order_id: OrderId::generate(&sale),
            idempotency_key: None,
            purchase_token: None,
        };
        let mut made = Vec::new();
        busy.reserve(&request, &ShopperBounds::default(), &mut made)
            .expect("reserved at the opening");
        busy.made(made);
        drop(busy);

        let updated = updating.join().unwrap();
        assert!(
            matches!(&updated, Err(StoreError::Conflict(message)) if message.contains("has started")),
            "{updated:?}"
        );
        assert_eq!(record.lock().sale.per_user_limit, 2, "the terms it sold at");
    }
}
