//! Goal: a restarted engine on the same Redis keeps every sale, order and
//! per-shopper count. Method: sell, cancel and key an order on one engine,
//! stop it, start a fresh one on the same Redis and check everything.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{assert_stats_consistent, error_code, live_sale, RedisServer, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_engine_keeps_sales_orders_and_counts() {
    let redis = RedisServer::start();
    let first = TestApp::spawn(Some(redis.url())).await;
    let sale = first.create_sale(live_sale(5, 1)).await;
    let kept: Value = first
        .order(&sale, "ned", None, Some("ned-key"))
        .await
        .json()
        .await
        .unwrap();
    let dropped: Value = first.buy(&sale, "ola").await;
    let dropped_id = dropped["id"].as_str().unwrap().to_owned();
    let cancel = first
        .shopper_post("ola", &format!("/api/v1/orders/{dropped_id}/cancel"))
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    // The order service accepts both entries in the background; wait for it so
    // the snapshot cannot change under a later pass of either engine.
    let before = first
        .sale_when(&sale, Duration::from_secs(10), |view| {
            view["stats"]["queued"] == 2
        })
        .await;
    first.stop().await;

    let second = TestApp::spawn(Some(redis.url())).await;
    let after = second.sale(&sale).await;
    assert_eq!(after, before, "sale and stats survive the restart");
    assert_eq!(after["stats"]["reserved"], 1);
    assert_eq!(after["stats"]["cancelled"], 1);
    assert_stats_consistent(&after);

    let listed: Value = second
        .admin(reqwest::Method::GET, "/admin/v1/sales", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sales"][0]["id"], sale.as_str());

    let ned_orders: Value = second
        .shopper_get("ned", "/api/v1/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ned_orders["orders"][0], kept);
    let over = second.order(&sale, "ned", None, None).await;
    assert_eq!(
        error_code(over).await,
        (StatusCode::CONFLICT, "limit_exceeded".into())
    );
    let replay = second.order(&sale, "ned", None, Some("ned-key")).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.json::<Value>().await.unwrap(), kept);

    let ola: Value = second
        .shopper_get("ola", &format!("/api/v1/orders/{dropped_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ola["status"], "cancelled");
    let again = second.order(&sale, "ola", None, None).await;
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "a cancel freed ola's limit"
    );
    second.stop().await;
}
