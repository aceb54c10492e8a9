//! Goal: unpaid orders expire at their deadline and their stock goes back
//! on sale, once, where the next shopper can buy it; the stock invariant
//! holds at every moment in between.
//! Method: the engine over HTTP with a 1-second payment timeout, on both
//! stores; the order service runs in the background as in production.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::on_both_stores;
use flashsale::store::keys::STOCK_RETURNS_CHANNEL;

use crate::support::{
    error_code, live_sale, test_config, Backend, Harness, RedisServer, Servers, TestApp,
};

const ORDERS: usize = 1_000;

async fn engine(backend: Backend) -> Harness {
    Harness::start_with(backend, |config| config.payment_timeout_min_secs = 1).await
}

/// A live sale whose orders must be paid within one second.
fn quick_sale(stock: usize) -> Value {
    let mut sale = live_sale(i64::try_from(stock).unwrap(), 1);
    sale["payment_timeout_secs"] = 1.into();
    sale
}

fn millis(rfc3339: &Value) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Keeps shoppers racing for another sale until `stop` is set; returns
/// how many orders they sent.
async fn background_race(app: Arc<TestApp>, stop: Arc<AtomicBool>) -> usize {
    let sale = app.create_sale(live_sale(1_000_000, 1)).await;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        stream::iter(0..64)
            .for_each_concurrent(64, |i| {
                let (app, sale) = (Arc::clone(&app), sale.clone());
                async move {
                    let response = app
                        .order(&sale, &format!("load-{sent}-{i}"), None, None)
                        .await;
                    assert_eq!(response.status(), StatusCode::CREATED);
                }
            })
            .await;
        sent += 64;
    }
    sent
}

async fn thousand_unpaid_orders_expire_and_all_stock_returns(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let app = Arc::new(app);
    let sale = app.create_sale(quick_sale(ORDERS)).await;
    let orders: Vec<Value> = stream::iter(0..ORDERS)
        .map(|i| {
            let (app, sale) = (Arc::clone(&app), sale.clone());
            async move { app.buy(&sale, &format!("unpaid-{i}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let last_deadline = orders
        .iter()
        .map(|order| millis(&order["expires_at"]))
        .max()
        .unwrap();

    // Expiry happens while other shoppers race for another sale.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(background_race(Arc::clone(&app), Arc::clone(&stop)));
    let view = app
        .sale_when(&sale, Duration::from_secs(30), |view| {
            view["stats"]["remaining"] == ORDERS
        })
        .await;
    let back_after = chrono::Utc::now().timestamp_millis() - last_deadline;
    stop.store(true, Ordering::Relaxed);
    let load = load.await.unwrap();

    let stats = &view["stats"];
    assert_eq!(stats["expired"], ORDERS, "{stats}");
    assert_eq!(stats["reserved"], 0, "{stats}");
    assert_eq!(stats["buyers"], 0, "{stats}");
    for order in &orders {
        let shopper = order["user_id"].as_str().unwrap();
        let path = format!("/api/v1/orders/{}", order["id"].as_str().unwrap());
        let now: Value = app.shopper_get(shopper, &path).await.json().await.unwrap();
        assert_eq!(now["status"], "expired", "{now}");
    }
    eprintln!(
        "expiry: {ORDERS} unpaid orders, all stock back on sale {back_after} ms after the last \
         deadline, while {load} orders raced for another sale"
    );
}

/// The one unit of a sold-out sale comes back when its order expires, and
/// a shopper who was told `sold_out` can then buy it.
async fn sold_out_sale_sells_again_after_an_order_expires(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = app.create_sale(quick_sale(1)).await;
    app.buy(&sale, "first").await;
    let started = Instant::now();
    let mut refusals = 0;
    loop {
        let response = app.order(&sale, "second", None, None).await;
        if response.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(
            error_code(response).await,
            (StatusCode::CONFLICT, "sold_out".to_owned())
        );
        refusals += 1;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the expired unit never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refusals > 0, "the sale was sold out before the expiry");
    let view = app.sale(&sale).await;
    let stats = &view["stats"];
    assert_eq!(
        (&stats["expired"], &stats["reserved"], &stats["remaining"]),
        (&1.into(), &1.into(), &0.into()),
        "{stats}"
    );
}

/// An expired order stays expired: it cannot be cancelled, and a payment
/// that arrives late marks it for refund without touching stock.
async fn late_payment_of_an_expired_order_requires_a_refund(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = app.create_sale(quick_sale(5)).await;
    let order = app.buy(&sale, "slow-payer").await;
    app.sale_when(&sale, Duration::from_secs(10), |view| {
        view["stats"]["expired"] == 1
    })
    .await;
    let id = order["id"].as_str().unwrap();
    let cancel = app
        .shopper_post("slow-payer", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(
        error_code(cancel).await,
        (StatusCode::CONFLICT, "conflict".to_owned())
    );
    let paid = app
        .shopper_post("slow-payer", &format!("/api/v1/orders/{id}/pay"))
        .await;
    assert_eq!(paid.status(), StatusCode::OK);
    let paid: Value = paid.json().await.unwrap();
    assert_eq!(paid["status"], "refund_required", "{paid}");
    let view = app.sale(&sale).await;
    let stats = &view["stats"];
    assert_eq!(
        (
            &stats["refund_required"],
            &stats["paid"],
            &stats["remaining"]
        ),
        (&1.into(), &0.into(), &5.into()),
        "{stats}"
    );
}

on_both_stores!(
    thousand_unpaid_orders_expire_and_all_stock_returns,
    sold_out_sale_sells_again_after_an_order_expires,
    late_payment_of_an_expired_order_requires_a_refund,
);

/// Stock returned through one engine node reaches the sale's actor on
/// another node at once (pub/sub), not at its next refresh: the shopper
/// that node told `sold_out` can buy the returned unit.
async fn another_node_learns_returned_stock_at_once(backend: Backend) {
    returned_stock_reaches_the_other_node(Servers::start(backend), false).await;
}

/// The same after Redis restarted (from its AOF) between the sell-out and
/// the cancel: each node subscribes again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_learns_returned_stock_after_redis_restarts() {
    returned_stock_reaches_the_other_node(Servers::start(Backend::Redis), true).await;
}

/// Two engine nodes on `redis`: the second is told `sold_out`, the first
/// cancels the order that held the unit (after restarting a standalone
/// Redis with `restart_redis`), and the second must sell that unit within
/// seconds, which only the announcement can tell it.
async fn returned_stock_reaches_the_other_node(mut redis: Servers, restart_redis: bool) {
    let node = || {
        let mut config = test_config();
        redis.configure(&mut config);
        // Only an announcement can tell an actor within this test.
        config.sale_refresh_ms = 60_000;
        TestApp::spawn_with(config)
    };
    let (first, second) = (node().await, node().await);
    let sale = first.create_sale(live_sale(1, 1)).await;
    let order = first.buy(&sale, "keeper").await;
    let refused = second.order(&sale, "waiter", None, None).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::CONFLICT, "sold_out".to_owned())
    );
    let refused = second.order(&sale, "waiter", None, None).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::CONFLICT, "sold_out".to_owned()),
        "now answered from the second node's memory"
    );
    if let (true, Servers::Standalone(server)) = (restart_redis, &mut redis) {
        server.restart();
        wait_for_subscribers(server, 2);
    }
    let id = order["id"].as_str().unwrap();
    let cancelled = first
        .shopper_post("keeper", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let started = Instant::now();
    loop {
        let response = second.order(&sale, "waiter", None, None).await;
        if response.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(
            error_code(response).await,
            (StatusCode::CONFLICT, "sold_out".to_owned())
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second node never learned the unit came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "the second node sold the returned unit {} ms after the cancel",
        started.elapsed().as_millis()
    );
}

crate::store_tests!(
    [redis => Redis, redis_cluster => RedisCluster];
    another_node_learns_returned_stock_at_once,
);

/// Waits (at most 10 s) until `count` connections subscribe to the
/// stock-return channel of `redis`.
fn wait_for_subscribers(redis: &RedisServer, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_channel, subscribers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(STOCK_RETURNS_CHANNEL)
            .query(&mut redis.connection())
            .expect("PUBSUB NUMSUB");
        if subscribers == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{subscribers} subscribers, not {count}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
