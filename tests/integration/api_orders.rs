//! Goal: per-user limits, idempotent retries, order lookups and cancels
//! behave as the contract says, on both stores.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::support::{assert_stats_consistent, error_code, live_sale, Backend, Harness};

async fn limit_counts_units_across_orders(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let sale = app.create_sale(live_sale(100, 3)).await;

    let first = app
        .order(&sale, "ann", Some(json!({"quantity": 2})), None)
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let order: Value = first.json().await.unwrap();
    assert_eq!(order["quantity"], 2);
    assert_eq!(order["amount_cents"], 2 * 19900);
    assert_eq!(order["status"], "pending_payment");

    let over = app
        .order(&sale, "ann", Some(json!({"quantity": 2})), None)
        .await;
    assert_eq!(
        error_code(over).await,
        (StatusCode::CONFLICT, "limit_exceeded".into())
    );
    let fits = app
        .order(&sale, "ann", Some(json!({"quantity": 1})), None)
        .await;
    assert_eq!(fits.status(), StatusCode::CREATED);
    let at_limit = app.order(&sale, "ann", None, None).await;
    assert_eq!(
        error_code(at_limit).await,
        (StatusCode::CONFLICT, "limit_exceeded".into())
    );
    let too_many = app
        .order(&sale, "bob", Some(json!({"quantity": 4})), None)
        .await;
    assert_eq!(
        error_code(too_many).await,
        (StatusCode::CONFLICT, "limit_exceeded".into())
    );

    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["reserved"], 3);
    assert_eq!(view["stats"]["buyers"], 1);
    assert_stats_consistent(&view);
}

async fn idempotent_retry_returns_the_first_order(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let sale = app.create_sale(live_sale(10, 2)).await;

    let first = app
        .order(&sale, "cat", Some(json!({"quantity": 1})), Some("k-1"))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    for _ in 0..3 {
        let retry = app
            .order(&sale, "cat", Some(json!({"quantity": 1})), Some("k-1"))
            .await;
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        let retry: Value = retry.json().await.unwrap();
        assert_eq!(retry, first, "a retry returns the first order");
    }
    let different = app
        .order(&sale, "cat", Some(json!({"quantity": 2})), Some("k-1"))
        .await;
    assert_eq!(
        error_code(different).await,
        (StatusCode::CONFLICT, "conflict".into())
    );

    // The key is the shopper's own: another shopper's same key is a new order.
    let other = app
        .order(&sale, "dan", Some(json!({"quantity": 1})), Some("k-1"))
        .await;
    assert_eq!(other.status(), StatusCode::CREATED);
    let other: Value = other.json().await.unwrap();
    assert_ne!(other["id"], first["id"]);

    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["reserved"], 2, "retries took no stock");
    assert_stats_consistent(&view);
}

async fn cancel_returns_stock_to_someone_else(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let sale = app.create_sale(live_sale(1, 1)).await;

    let order: Value = app.buy(&sale, "eve").await;
    let sold_out = app.order(&sale, "fay", None, None).await;
    assert_eq!(
        error_code(sold_out).await,
        (StatusCode::CONFLICT, "sold_out".into())
    );

    let id = order["id"].as_str().unwrap();
    let stranger = app
        .shopper_post("fay", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(
        error_code(stranger).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let cancelled = app
        .shopper_post("eve", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let again = app
        .shopper_post("eve", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(
        error_code(again).await,
        (StatusCode::CONFLICT, "conflict".into())
    );

    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["remaining"], 1);
    assert_eq!(view["stats"]["cancelled"], 1);
    assert_eq!(view["stats"]["buyers"], 0);
    assert_stats_consistent(&view);

    let second_chance = app.order(&sale, "fay", None, None).await;
    assert_eq!(
        second_chance.status(),
        StatusCode::CREATED,
        "the unit is on sale again"
    );
    // The cancelled order no longer counts towards eve's limit.
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["remaining"], 0);
    assert_stats_consistent(&view);
}

async fn shoppers_see_only_their_own_orders(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let first_sale = app.create_sale(live_sale(10, 1)).await;
    let second_sale = app.create_sale(live_sale(10, 1)).await;
    let older: Value = app.buy(&first_sale, "gus").await;
    // Order times have millisecond resolution: make "newer" really newer.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let newer: Value = app.buy(&second_sale, "gus").await;

    let mine: Value = app
        .shopper_get("gus", "/api/v1/orders")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = mine["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["id"])
        .collect();
    assert_eq!(ids, vec![&newer["id"], &older["id"]], "newest first");

    let id = older["id"].as_str().unwrap();
    let own = app
        .shopper_get("gus", &format!("/api/v1/orders/{id}"))
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(own.json::<Value>().await.unwrap(), older);
    let other = app
        .shopper_get("hal", &format!("/api/v1/orders/{id}"))
        .await;
    assert_eq!(
        error_code(other).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let theirs: Value = app
        .shopper_get("hal", "/api/v1/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["orders"], json!([]));
}

/// Goal: the actors' memory never leaves stock unsold. Method: sell out,
/// then let every holder cancel while other shoppers keep ordering; when the
/// storm settles, every unit still on sale must be buyable at once.
async fn stock_freed_during_a_storm_is_sold_again(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let app = std::sync::Arc::new(app);
    const STOCK: usize = 10;
    let sale = app.create_sale(live_sale(STOCK as i64, 1)).await;
    let mut holders = Vec::new();
    for i in 0..STOCK {
        let order: Value = app.buy(&sale, &format!("holder-{i}")).await;
        holders.push((
            format!("holder-{i}"),
            order["id"].as_str().unwrap().to_owned(),
        ));
    }

    let cancels = holders.into_iter().map(|(shopper, id)| {
        let app = std::sync::Arc::clone(&app);
        tokio::spawn(async move {
            let response = app
                .shopper_post(&shopper, &format!("/api/v1/orders/{id}/cancel"))
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        })
    });
    let orders = (0..50).map(|i| {
        let app = std::sync::Arc::clone(&app);
        let sale = sale.clone();
        tokio::spawn(async move {
            app.order(&sale, &format!("stormer-{i}"), None, None)
                .await
                .status()
        })
    });
    let cancels: Vec<_> = cancels.collect();
    let orders: Vec<_> = orders.collect();
    let mut won = 0;
    for order in orders {
        let status = order.await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "{status}"
        );
        won += usize::from(status == StatusCode::CREATED);
    }
    for cancel in cancels {
        cancel.await.unwrap();
    }
    assert!(won <= STOCK);

    let view = app.sale(&sale).await;
    assert_stats_consistent(&view);
    let left = view["stats"]["remaining"].as_i64().unwrap();
    assert_eq!(left as usize, STOCK - won);
    for i in 0..left {
        let late = app.order(&sale, &format!("late-{i}"), None, None).await;
        assert_eq!(
            late.status(),
            StatusCode::CREATED,
            "unit {i} of {left} left is on sale"
        );
    }
    let after = app.order(&sale, "late-extra", None, None).await;
    assert_eq!(
        error_code(after).await,
        (StatusCode::CONFLICT, "sold_out".into())
    );
}

on_both_stores!(
    limit_counts_units_across_orders,
    idempotent_retry_returns_the_first_order,
    cancel_returns_stock_to_someone_else,
    shoppers_see_only_their_own_orders,
    stock_freed_during_a_storm_is_sold_again,
);
