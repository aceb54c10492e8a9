//! Goal: `GET /admin/v1/sales/{id}/audit` recomputes a sale's counts from its
//! raw records and finds every disagreement, so fault tests can require zero.
//! Method: a sale with pending, paid and cancelled orders audits clean on
//! every store; then raw Redis records are broken one at a time and each
//! break is reported under its own check.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::on_every_store;
use crate::support::{error_code, live_sale, Backend, Harness, RedisServer, TestApp};

/// Three shoppers: one pays, one cancels, one leaves the order unpaid.
async fn sale_with_every_kind_of_order(app: &TestApp) -> String {
    let sale = app.create_sale(live_sale(10, 2)).await;
    let paid: Value = app.buy(&sale, "pia").await;
    app.order_step("pia", &paid, "pay").await;
    let dropped: Value = app.buy(&sale, "cy").await;
    app.order_step("cy", &dropped, "cancel").await;
    let pending = app
        .order(&sale, "una", Some(serde_json::json!({"quantity": 2})), None)
        .await;
    assert_eq!(pending.status(), StatusCode::CREATED);
    sale
}

async fn consistent_sale_audits_clean(backend: Backend) {
    let harness = Harness::start(backend).await;
    let app = &harness.app;
    let sale = sale_with_every_kind_of_order(app).await;
    app.sale_when(&sale, Duration::from_secs(10), |view| {
        view["stats"]["queued"] == 4
    })
    .await;
    let audit = app.assert_audit_clean(&sale).await;
    assert_eq!(audit["sale_id"], sale.as_str());
    assert_eq!(
        audit["recounted"],
        serde_json::json!({
            "orders": 3, "reserved": 2, "paid": 1, "released": 1,
            "refund_required": 0, "refunded": 0, "restocked": 0, "queued": 4,
            "awaiting_order_service": 0,
        }),
        "{audit}"
    );
    assert_eq!(audit["stats"]["remaining"], 7, "{audit}");

    let unknown = app
        .admin(
            reqwest::Method::GET,
            "/admin/v1/sales/s_nosuchsale01/audit",
            None,
        )
        .await;
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let shopper = app
        .shopper_get("pia", &format!("/admin/v1/sales/{sale}/audit"))
        .await;
    assert!(
        matches!(
            shopper.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ),
        "{}",
        shopper.status()
    );
}

on_every_store!(consistent_sale_audits_clean);

/// Each broken record shows up under its own check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_redis_records_are_reported() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(Some(redis.url())).await;
    let sale = sale_with_every_kind_of_order(&app).await;
    app.sale_when(&sale, Duration::from_secs(10), |view| {
        view["stats"]["queued"] == 4
    })
    .await;
    app.assert_audit_clean(&sale).await;
    let key = |name: &str| format!("fs:{{{sale}}}:{name}");
    let mut conn = redis.connection();
    let mut run = |args: &[&str]| {
        let _: redis::Value = redis::cmd(args[0])
            .arg(&args[1..])
            .query(&mut conn)
            .expect("change a raw record");
    };

    run(&["HINCRBY", &key("stats"), "reserved", "1"]);
    assert_eq!(
        checks(&app, &sale).await,
        ["stock_balance", "reserved_units"]
    );
    run(&["HINCRBY", &key("stats"), "reserved", "-1"]);

    // A shopper's entry is `units order_id ...`: one unit more.
    let entry: String = redis::cmd("HGET")
        .arg(key("shoppers"))
        .arg("una")
        .query(&mut redis.connection())
        .expect("una's entry");
    let (units, ids) = entry.split_once(' ').expect("units, then orders");
    let more = format!("{} {ids}", units.parse::<i64>().expect("units") + 1);
    run(&["HSET", &key("shoppers"), "una", &more]);
    assert_eq!(checks(&app, &sale).await, ["shopper_units"]);
    run(&["HSET", &key("shoppers"), "una", &entry]);

    run(&["HINCRBY", &key("stats"), "buyers", "1"]);
    assert_eq!(checks(&app, &sale).await, ["buyers_count"]);
    run(&["HINCRBY", &key("stats"), "buyers", "-1"]);

    run(&["SET", &key("stock"), "-1"]);
    assert_eq!(
        checks(&app, &sale).await,
        ["stock_balance", "remaining_range"]
    );
    run(&["SET", &key("stock"), "7"]);

    // The order service has taken every order and the stream is trimmed:
    // an order is known taken only through its batch in the accepted set.
    let batches: Vec<String> = redis::cmd("SMEMBERS")
        .arg(key("accepted"))
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(batches.len(), 3, "one batch per order here: {batches:?}");
    run(&["SREM", &key("accepted"), &batches[0]]);
    assert_eq!(
        checks(&app, &sale).await,
        ["queued_units", "reservation_lost"]
    );
    run(&["SADD", &key("accepted"), &batches[0]]);
    app.assert_audit_clean(&sale).await;

    run(&["DEL", &key("deadlines")]);
    assert_eq!(checks(&app, &sale).await, ["deadline_missing"]);
}

async fn checks(app: &TestApp, sale: &str) -> Vec<String> {
    let audit = app.audit(sale).await;
    assert_eq!(audit["ok"], false, "{audit}");
    audit["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| d["check"].as_str().expect("check").to_owned())
        .collect()
}
