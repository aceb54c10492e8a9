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

/// The countdown every waiting shopper polls is read from the store at
/// most once per interval on a node, however many ask, and says how long
/// it may be held; its clock and status stay exact, and a merchant's change
/// made on the node shows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_countdown_poll_reads_the_store_once_per_interval() {
    use futures::future::join_all;

    const POLLS: usize = 500;
    let Harness { app, redis } = Harness::start_with(Backend::Redis, |config| {
        config.sale_poll_cache_ms = 60_000;
    })
    .await;
    let mut body = live_sale(5, 1);
    body["starts_at"] = json!(rfc3339_in(Duration::from_secs(3600), false));
    body["ends_at"] = json!(rfc3339_in(Duration::from_secs(7200), false));
    let sale = app.create_sale(body).await;
    let path = format!("/api/v1/sales/{sale}");
    let scripts_run = || redis.standalone().unwrap().script_calls();
    let first = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(first.headers()["cache-control"], "public, max-age=60");
    let first: serde_json::Value = first.json().await.unwrap();
    let scripts_before = scripts_run();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let polls = join_all((0..POLLS).map(|_| app.public_json(&path))).await;
    let scripts = scripts_run() - scripts_before;
    assert!(
        scripts < 10,
        "{POLLS} polls ran {scripts} scripts: the store is read once per interval"
    );
    let latest = polls
        .iter()
        .map(|poll| poll["server_time"].as_str().unwrap())
        .max()
        .unwrap();
    assert!(
        latest > first["server_time"].as_str().unwrap(),
        "server_time moves on between polls served from memory"
    );
    assert!(polls.iter().all(|poll| poll["status"] == "upcoming"));

    let patched = app
        .admin(
            reqwest::Method::PATCH,
            &path.replace("/api/", "/admin/"),
            Some(json!({"stock_total": 9})),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(
        app.public_json(&path).await["stock_total"],
        9,
        "the merchant's change shows at once on the node that made it"
    );
}
