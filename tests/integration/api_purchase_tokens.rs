//! Goal: a sale that requires purchase tokens sells only to shoppers who
//! got one after it opened, each token for that shopper and sale, once,
//! and only for a short time.
//! Method: over HTTP on both stores, with a sale that opens two seconds
//! after it is scheduled and one-second tokens.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::on_both_stores;
use crate::support::{error_code, live_sale, rfc3339_in, Backend, Harness, TestApp};

const TTL_SECS: i64 = 1;

async fn engine(backend: Backend) -> Harness {
    Harness::start_with(backend, |config| config.purchase_token_ttl_secs = TTL_SECS).await
}

/// A sale requiring tokens, limit 2, starting `starts_in` from now.
async fn guarded_sale(app: &TestApp, starts_in: Duration) -> String {
    let mut sale = live_sale(10, 2);
    sale["require_purchase_token"] = true.into();
    if !starts_in.is_zero() {
        sale["starts_at"] = rfc3339_in(starts_in, false).into();
    }
    app.create_sale(sale).await
}

async fn ask_token(app: &TestApp, sale: &str, shopper: &str) -> reqwest::Response {
    app.shopper_post(shopper, &format!("/api/v1/sales/{sale}/purchase-token"))
        .await
}

async fn purchase_token(app: &TestApp, sale: &str, shopper: &str) -> String {
    let response = ask_token(app, sale, shopper).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sale_id"], sale);
    body["purchase_token"].as_str().unwrap().to_owned()
}

fn forbidden() -> (StatusCode, String) {
    (StatusCode::FORBIDDEN, "forbidden".to_owned())
}

/// Before the start no token exists and nothing sells; once open, an order
/// needs a token, and one with a fresh token buys.
async fn no_token_before_the_start(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = guarded_sale(&app, Duration::from_secs(2)).await;
    assert_eq!(
        error_code(ask_token(&app, &sale, "early").await).await,
        (StatusCode::CONFLICT, "not_started".to_owned())
    );
    assert_eq!(
        error_code(app.order_with(&sale, "early", None, None).await).await,
        (StatusCode::CONFLICT, "not_started".to_owned())
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        error_code(app.order_with(&sale, "early", None, None).await).await,
        forbidden(),
        "open now, but not without a token"
    );
    let purchase = purchase_token(&app, &sale, "early").await;
    let order = app.order_with(&sale, "early", Some(&purchase), None).await;
    assert_eq!(order.status(), StatusCode::CREATED);
    let view = app.sale(&sale).await;
    assert_eq!(view["require_purchase_token"], true);
    assert_eq!(view["stats"]["reserved"], 1);
}

/// A token is its shopper's and its sale's only, buys once (an idempotent
/// retry of that one order is still answered), and expires.
async fn tokens_are_bound_single_use_and_short_lived(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = guarded_sale(&app, Duration::ZERO).await;
    let other_sale = guarded_sale(&app, Duration::ZERO).await;
    let alices = purchase_token(&app, &sale, "alice").await;

    assert_eq!(
        error_code(app.order_with(&sale, "bob", Some(&alices), None).await).await,
        forbidden(),
        "another shopper's token"
    );
    assert_eq!(
        error_code(
            app.order_with(&other_sale, "alice", Some(&alices), None)
                .await
        )
        .await,
        forbidden(),
        "a token for another sale"
    );
    assert_eq!(
        error_code(
            app.order_with(&sale, "alice", Some("not.a.token"), None)
                .await
        )
        .await,
        forbidden()
    );

    let first = app
        .order_with(&sale, "alice", Some(&alices), Some("k1"))
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let replay = app
        .order_with(&sale, "alice", Some(&alices), Some("k1"))
        .await;
    assert_eq!(
        replay.status(),
        StatusCode::CREATED,
        "the same order, replayed"
    );
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        error_code(app.order_with(&sale, "alice", Some(&alices), None).await).await,
        forbidden(),
        "a used token buys no second order"
    );

    let late = purchase_token(&app, &sale, "alice").await;
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(TTL_SECS).unwrap() * 1000 + 1_100,
    ))
    .await;
    assert_eq!(
        error_code(app.order_with(&sale, "alice", Some(&late), None).await).await,
        forbidden(),
        "an expired token"
    );
    let retried = app
        .order_with(&sale, "alice", Some(&alices), Some("k1"))
        .await;
    assert_eq!(
        retried.status(),
        StatusCode::CREATED,
        "a retry with its key gets its first answer, token expired or not"
    );
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    assert_eq!(
        error_code(
            app.order_with(&sale, "alice", Some(&late), Some("k2"))
                .await
        )
        .await,
        forbidden(),
        "a new key is a new order: it needs a live token"
    );
    let stats = &app.sale(&sale).await["stats"];
    assert_eq!(stats["reserved"], 1, "{stats}");
    assert_eq!(app.sale(&other_sale).await["stats"]["reserved"], 0);
}

on_both_stores!(
    no_token_before_the_start,
    tokens_are_bound_single_use_and_short_lived,
);
