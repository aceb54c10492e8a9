//! What the benches share: a long open sale, requests from many shoppers,
//! actor settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flashsale::clock::SystemClock;
use flashsale::domain::{
    system_now, OrderAsk, Quantity, ReserveRequest, Sale, SaleId, SaleState, ShopperId,
};
use flashsale::inventory::ActorSettings;
use flashsale::store::Store;

/// Distinct shoppers, each allowed up to the largest per-user limit.
const SHOPPERS: u64 = 100_000;

/// A sale open for an hour with `stock` units and no real per-user limit.
pub fn sale(stock: i64) -> Sale {
    let now = system_now();
    Sale {
        id: SaleId::generate(),
        sku: "BENCH".into(),
        title: "bench".into(),
        price_cents: 100,
        currency: "CNY".into(),
        stock_total: stock,
        per_user_limit: flashsale::domain::QUANTITY_MAX,
        starts_at: now - 1_000,
        ends_at: now + 3_600_000,
        payment_timeout_secs: 900,
        require_purchase_token: false,
        admission: Default::default(),
        state: SaleState::Scheduled,
        created_at: now,
    }
}

/// One unit for the next shopper in turn.
pub fn ask(sale: &SaleId, counter: &AtomicU64) -> OrderAsk {
    let n = counter.fetch_add(1, Ordering::Relaxed) % SHOPPERS;
    OrderAsk {
        sale_id: sale.clone(),
        shopper_id: ShopperId::parse(&format!("shopper-{n}")).expect("valid shopper id"),
        quantity: Quantity::parse(1).expect("valid quantity"),
        idempotency_key: None,
        purchase_token: None,
    }
}

/// The next shopper's ask with a new order id, as the store gets it.
pub fn request(sale: &SaleId, counter: &AtomicU64) -> ReserveRequest {
    ReserveRequest::new(ask(sale, counter))
}

/// Ends every benchmark run: the sale sold no more than its stock and its
/// counts balance (`remaining + reserved + paid == stock_total`); with
/// `made`, exactly that many units were reserved.
pub async fn assert_no_oversell(store: &dyn Store, sale: &Sale, made: Option<u64>) {
    let stats = store
        .view_sale(&sale.id)
        .await
        .expect("read the sale")
        .expect("the sale exists")
        .stats;
    let held = stats.reserved + stats.paid;
    assert!(
        stats.remaining >= 0 && held <= sale.stock_total,
        "oversold: {stats:?}"
    );
    assert_eq!(stats.remaining + held, sale.stock_total, "{stats:?}");
    if let Some(made) = made {
        assert_eq!(u64::try_from(held).ok(), Some(made), "{stats:?}");
    }
}

/// The engine's default actor settings with the given batching.
pub fn settings(batch_max: usize, store_calls: usize) -> ActorSettings {
    ActorSettings {
        mailbox: 4096,
        in_flight_max: 4096,
        batch_max,
        store_calls,
        known_shoppers_max: 100_000,
        refresh: Duration::from_secs(1),
        clock_margin_ms: 50,
        idle_stop: Duration::from_secs(300),
        clock: Arc::new(SystemClock),
    }
}
