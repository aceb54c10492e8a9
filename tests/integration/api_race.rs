//! Goal: however hard shoppers race, exactly `stock_total` orders come out.
//! Method: 1,000 distinct shoppers each send 2 concurrent orders to a sale
//! with stock 100 and limit 1, through HTTP; then count the answers and
//! check the exact stats and every winner's orders.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::on_every_store;
use crate::support::{assert_stats_consistent, live_sale, Backend, Harness};

const SHOPPERS: usize = 1_000;
const ATTEMPTS_PER_SHOPPER: usize = 2;
const STOCK: i64 = 100;
const CONCURRENCY: usize = 256;

async fn race_sells_exactly_the_stock(backend: Backend) {
    let harness = Harness::start(backend).await;
    let app = Arc::new(harness.app);
    let sale = app.create_sale(live_sale(STOCK, 1)).await;

    let started = Instant::now();
    // Both attempts of a shopper are adjacent, so they are in flight together.
    let attempts = (0..SHOPPERS).flat_map(|i| (0..ATTEMPTS_PER_SHOPPER).map(move |_| i));
    let answers: Vec<(usize, StatusCode, Value)> = stream::iter(attempts)
        .map(|shopper| {
            let app = Arc::clone(&app);
            let sale = sale.clone();
            async move {
                let response = app
                    .order(&sale, &format!("racer-{shopper}"), None, None)
                    .await;
                let status = response.status();
                (shopper, status, response.json().await.expect("json answer"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    println!(
        "race on {backend:?}: {} attempts in {elapsed:?} ({:.0} req/s)",
        answers.len(),
        answers.len() as f64 / elapsed.as_secs_f64()
    );

    let mut wins: HashMap<usize, usize> = HashMap::new();
    for (shopper, status, body) in &answers {
        match *status {
            StatusCode::CREATED => *wins.entry(*shopper).or_default() += 1,
            StatusCode::CONFLICT => {
                let code = body["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    code == "sold_out" || code == "limit_exceeded",
                    "unexpected refusal {body}"
                );
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(
        wins.values().sum::<usize>(),
        STOCK as usize,
        "orders created"
    );
    assert!(wins.values().all(|&n| n == 1), "a shopper won twice");

    let view = app.sale(&sale).await;
    assert_stats_consistent(&view);
    assert_eq!(view["stats"]["remaining"], 0);
    assert_eq!(view["stats"]["reserved"], STOCK);
    assert_eq!(view["stats"]["buyers"], STOCK);
    assert_eq!(view["status"], "sold_out");

    for shopper in wins.keys() {
        let orders: Value = app
            .shopper_get(&format!("racer-{shopper}"), "/api/v1/orders")
            .await
            .json()
            .await
            .expect("orders json");
        let orders = orders["orders"].as_array().expect("orders");
        assert_eq!(orders.len(), 1, "winner {shopper} has one order");
        assert_eq!(orders[0]["sale_id"], sale.as_str());
    }

    // Every order reaches the order service, once.
    let sale_view = app
        .sale_when(&sale, Duration::from_secs(10), |view| {
            view["stats"]["queued"] == STOCK
        })
        .await;
    assert_eq!(sale_view["stats"]["reserved"], STOCK, "{sale_view}");
    let audit = app.assert_audit_clean(&sale).await;
    assert_eq!(audit["recounted"]["orders"], STOCK, "{audit}");
    assert_eq!(audit["recounted"]["awaiting_order_service"], 0, "{audit}");

    if let Some(redis) = harness.redis.standalone() {
        let mut conn = redis.connection();
        let stock: i64 = redis::cmd("GET")
            .arg(format!("fs:{{{sale}}}:stock"))
            .query(&mut conn)
            .expect("stock");
        assert_eq!(stock, 0, "stock never below zero");
        // Each shopper's entry: `units order_id ...`.
        let entries: Vec<String> = redis::cmd("HVALS")
            .arg(format!("fs:{{{sale}}}:shoppers"))
            .query(&mut conn)
            .expect("shoppers");
        let held: Vec<i64> = entries
            .iter()
            .map(|entry| {
                entry
                    .split(' ')
                    .next()
                    .and_then(|units| units.parse().ok())
                    .expect("units")
            })
            .collect();
        assert_eq!(held.iter().sum::<i64>(), STOCK, "per-shopper counts add up");
        assert!(
            held.iter().all(|&units| units == 1),
            "nobody above the limit"
        );
    }
}

on_every_store!(race_sells_exactly_the_stock);
