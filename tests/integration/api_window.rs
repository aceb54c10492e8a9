//! Goal: nobody buys outside the sale's window, whatever they send.
//! Method: order before the start, after the end, and after the merchant
//! stopped the sale; check the codes and that no stock moved.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::on_both_stores;
use crate::support::{error_code, live_sale, rfc3339_in, Backend, Harness};

async fn before_the_start_is_not_started(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let mut body = live_sale(5, 1);
    body["starts_at"] = json!(rfc3339_in(Duration::from_millis(3000), false));
    let sale = app.create_sale(body).await;

    let early = app.order(&sale, "ivy", None, None).await;
    assert_eq!(
        error_code(early).await,
        (StatusCode::CONFLICT, "not_started".into())
    );
    let keyed = app.order(&sale, "ivy", None, Some("early-key")).await;
    assert_eq!(
        error_code(keyed).await,
        (StatusCode::CONFLICT, "not_started".into())
    );
    let public = app.public_json(&format!("/api/v1/sales/{sale}")).await;
    assert_eq!(public["status"], "upcoming");
    assert!(public["server_time"].is_string());
    assert_eq!(app.sale(&sale).await["stats"]["remaining"], 5);

    tokio::time::sleep(Duration::from_millis(3300)).await;
    let on_time = app.order(&sale, "ivy", None, Some("early-key")).await;
    assert_eq!(on_time.status(), StatusCode::CREATED, "open once started");
}

async fn after_the_end_is_ended(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let mut body = live_sale(5, 1);
    body["ends_at"] = json!(rfc3339_in(Duration::from_millis(2000), false));
    let sale = app.create_sale(body).await;
    let in_time = app.order(&sale, "jon", None, None).await;
    assert_eq!(in_time.status(), StatusCode::CREATED);

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let late = app.order(&sale, "kim", None, None).await;
    assert_eq!(
        error_code(late).await,
        (StatusCode::CONFLICT, "ended".into())
    );
    let view = app.sale(&sale).await;
    assert_eq!(view["status"], "ended");
    assert_eq!(view["stats"]["remaining"], 4);
}

async fn merchant_stop_is_ended(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    app.buy(&sale, "lea").await;

    let stop = app
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/v1/sales/{sale}"),
            Some(json!({"status": "ended"})),
        )
        .await;
    assert_eq!(stop.status(), StatusCode::OK);
    for key in [None, Some("after-stop")] {
        let late = app.order(&sale, "max", None, key).await;
        assert_eq!(
            error_code(late).await,
            (StatusCode::CONFLICT, "ended".into())
        );
    }
    let view = app.sale(&sale).await;
    assert_eq!(view["status"], "ended");
    assert_eq!(view["stats"]["reserved"], 1);
}

on_both_stores!(
    before_the_start_is_not_started,
    after_the_end_is_ended,
    merchant_stop_is_ended,
);
