//! The embedded store: every sale in process memory behind its own mutex,
//! with the semantics of the Lua scripts (the same checks in the same order,
//! one critical section per state change). Used when no Redis is configured;
//! everything is lost when the process stops.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::{changed_meanwhile, sort_newest_first, Reservation, ReserveRequest, Store, StoreError};
use crate::domain::{
    check_reservation, system_now, Order, OrderId, OrderStatus, Rejection, Sale, SaleChange,
    SaleId, SaleState, SaleStats, SaleView, UserId, LIVE_CHANGEABLE_FIELDS,
};

/// One sale and everything that hangs off it, changed under one lock.
struct SaleRecord {
    sale: Sale,
    version: i64,
    stats: SaleStats,
    /// Shopper -> units held (reserved or paid).
    held: HashMap<UserId, i64>,
    /// (shopper, idempotency key) -> (order, quantity asked).
    idempotency: HashMap<(UserId, String), (OrderId, i64)>,
    orders: HashMap<OrderId, Order>,
    user_orders: HashMap<UserId, Vec<OrderId>>,
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
            user_orders: HashMap::new(),
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
        let record = record.lock();
        let mut stats = record.stats;
        stats.buyers = record.held.len() as i64;
        Ok(Some(SaleView {
            sale: record.sale.clone(),
            stats,
            now: system_now(),
            version: record.version,
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

    async fn reserve(&self, request: &ReserveRequest) -> Result<Reservation, StoreError> {
        let record = self.record(&request.sale_id)?;
        let mut guard = record.lock();
        let record = &mut *guard;
        let quantity = request.quantity.get();
        if let Some(order) = record.orders.get(&request.order_id) {
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
            .map(|key| (request.user_id.clone(), key.clone()));
        if let Some((order_id, asked)) = idempotency
            .as_ref()
            .and_then(|key| record.idempotency.get(key))
        {
            if *asked != quantity {
                return Err(Rejection::IdempotencyMismatch.into());
            }
            let order = record
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
        let held = record.held.get(&request.user_id).copied().unwrap_or(0);
        check_reservation(
            &record.sale,
            now,
            record.stats.remaining,
            held,
            request.quantity,
        )?;
        record.stats.remaining -= quantity;
        record.stats.reserved += quantity;
        let held = held + quantity;
        record.held.insert(request.user_id.clone(), held);
        let order = Order {
            id: request.order_id.clone(),
            sale_id: request.sale_id.clone(),
            user_id: request.user_id.clone(),
            quantity,
            amount_cents: quantity * record.sale.price_cents,
            currency: record.sale.currency.clone(),
            status: OrderStatus::PendingPayment,
            created_at: now,
            expires_at: now + record.sale.payment_timeout_secs * 1000,
            paid_at: None,
        };
        record.orders.insert(order.id.clone(), order.clone());
        record
            .user_orders
            .entry(request.user_id.clone())
            .or_default()
            .push(order.id.clone());
        if let Some(key) = idempotency {
            record.idempotency.insert(key, (order.id.clone(), quantity));
        }
        Ok(Reservation {
            order,
            remaining: Some(record.stats.remaining),
            held: Some(held),
            replayed: false,
        })
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let Ok(record) = self.record(&id.sale_id()) else {
            return Ok(None);
        };
        let order = record.lock().orders.get(id).cloned();
        Ok(order)
    }

    async fn user_orders(&self, user: &UserId) -> Result<Vec<Order>, StoreError> {
        let mut orders: Vec<Order> = Vec::new();
        for entry in self.sales.iter() {
            let record = entry.value().lock();
            let ids = record.user_orders.get(user).into_iter().flatten();
            orders.extend(ids.filter_map(|id| record.orders.get(id).cloned()));
        }
        sort_newest_first(&mut orders);
        Ok(orders)
    }

    async fn cancel_order(&self, id: &OrderId, user: &UserId) -> Result<Order, StoreError> {
        let record = self
            .record(&id.sale_id())
            .map_err(|_| StoreError::NotFound("order"))?;
        let mut guard = record.lock();
        let record = &mut *guard;
        let order = record
            .orders
            .get_mut(id)
            .filter(|order| &order.user_id == user)
            .ok_or(StoreError::NotFound("order"))?;
        if order.status != OrderStatus::PendingPayment {
            return Err(StoreError::Conflict(format!(
                "the order is {} and can no longer be cancelled",
                order.status.as_str()
            )));
        }
        order.status = OrderStatus::Cancelled;
        let quantity = order.quantity;
        let order = order.clone();
        record.stats.remaining += quantity;
        record.stats.reserved -= quantity;
        record.stats.cancelled += quantity;
        if let Some(held) = record.held.get_mut(user) {
            *held -= quantity;
            if *held <= 0 {
                record.held.remove(user);
            }
        }
        Ok(order)
    }
}
