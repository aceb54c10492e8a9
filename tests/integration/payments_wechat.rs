//! Goal: in WeChat Pay mode the engine pays an order only on a notification
//! that is signed by the platform key, encrypted with the APIv3 key, fresh,
//! and for the order's exact amount; it pays it once however often WeChat Pay
//! retries, a payment that arrives after a cancel asks for a refund without
//! touching stock, and a verified payment that cannot be applied is kept as
//! a payment exception. On both stores.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::support::{assert_stats_consistent, error_code, live_sale, Backend, Harness, TestApp};
use crate::wechat::{EngineSettings, Notification, WeChatPayServer, WeChatPaySim};

pub(crate) const NOTIFY: &str = "/api/v1/payments/wechatpay/notify";
pub(crate) const PRICE: i64 = 19900;

/// The engine in WeChat Pay mode against a stand-in; `sim` is the
/// stand-in's keys. Keep the stand-in alive.
pub(crate) async fn wechat_engine(
    backend: Backend,
) -> (Harness, Arc<WeChatPaySim>, WeChatPayServer) {
    let server = WeChatPayServer::start().await;
    let harness = Harness::start_with(backend, |config| server.configure(config)).await;
    (harness, Arc::clone(&server.sim), server)
}

/// Posts `notification` to the notify route as WeChat Pay would.
pub(crate) async fn notify(app: &TestApp, notification: &Notification) -> Response {
    let mut request = app
        .client
        .post(app.url(NOTIFY))
        .header("Content-Type", "application/json")
        .body(notification.body.clone());
    for (name, value) in notification.headers() {
        request = request.header(name, value);
    }
    request.send().await.expect("notify request")
}

/// Asserts WeChat Pay's "received" answer.
pub(crate) async fn assert_acknowledged(response: Response) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"code": "SUCCESS", "message": "OK"}));
}

/// A live sale of `stock` units and one pending order of `shopper` in it.
pub(crate) async fn sale_with_order(app: &TestApp, stock: i64, shopper: &str) -> (String, String) {
    let sale = app.create_sale(live_sale(stock, 1)).await;
    let order = app.buy(&sale, shopper).await;
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["amount_cents"], PRICE);
    assert_eq!(order["currency"], "CNY");
    (sale, order["id"].as_str().unwrap().to_owned())
}

/// The order as its shopper sees it.
pub(crate) async fn order_of(app: &TestApp, shopper: &str, id: &str) -> Value {
    let response = app
        .shopper_get(shopper, &format!("/api/v1/orders/{id}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Asserts the order is still unpaid and the sale still holds its unit.
async fn assert_untouched(app: &TestApp, sale: &str, shopper: &str, id: &str) {
    let order = order_of(app, shopper, id).await;
    assert_eq!(order["status"], "pending_payment", "{order}");
    assert!(order["paid_at"].is_null(), "{order}");
    let view = app.sale(sale).await;
    assert_eq!(view["stats"]["reserved"], 1, "{view}");
    assert_eq!(view["stats"]["paid"], 0, "{view}");
    assert_stats_consistent(&view);
}

/// Asserts the order is paid, once.
pub(crate) async fn assert_paid(app: &TestApp, sale: &str, shopper: &str, id: &str) {
    let order = order_of(app, shopper, id).await;
    assert_eq!(order["status"], "paid", "{order}");
    assert!(order["paid_at"].is_string(), "paid_at is set: {order}");
    let view = app.sale(sale).await;
    assert_eq!(view["stats"]["paid"], 1, "{view}");
    assert_eq!(view["stats"]["reserved"], 0, "{view}");
    assert_stats_consistent(&view);
}

/// Unix seconds now, first waiting out the last 200 ms of a second so a
/// request sent at once still lands within the same second.
async fn unix_now_early_in_a_second() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    if now.subsec_millis() > 800 {
        tokio::time::sleep(Duration::from_millis(
            u64::from(1000 - now.subsec_millis()) + 5,
        ))
        .await;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A genuine notification pays the order and moves its unit to paid.
async fn valid_notification_pays_the_order(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "ann").await;

    assert_acknowledged(notify(&app, &sim.payment(&id, PRICE)).await).await;
    assert_paid(&app, &sale, "ann", &id).await;
}

/// One character changed in the signed body fails the signature check.
async fn tampered_body_is_refused(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "bob").await;

    let genuine = sim.payment(&id, PRICE);
    let mut tampered = genuine.clone();
    tampered.body = genuine.body.replacen("\"EV-", "\"EW-", 1);
    assert_ne!(tampered.body, genuine.body, "one character changed");
    assert_eq!(tampered.body.len(), genuine.body.len());
    assert_eq!(
        error_code(notify(&app, &tampered).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    assert_untouched(&app, &sale, "bob", &id).await;
}

/// A foreign signing key, or a resource under a foreign APIv3 key, is refused.
async fn foreign_keys_are_refused(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let stranger = WeChatPaySim::new();
    let (sale, id) = sale_with_order(&app, 10, "cat").await;

    // All of the stranger's making.
    let theirs = stranger.payment(&id, PRICE);
    assert_eq!(
        error_code(notify(&app, &theirs).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    // Our resource and serial, the stranger's signature.
    let forged = sim.payment(&id, PRICE).resigned(&stranger);
    assert_eq!(
        error_code(notify(&app, &forged).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    // Our signature over a resource encrypted with the stranger's APIv3 key.
    let foreign_resource = stranger.payment(&id, PRICE).resigned(&sim);
    assert_eq!(
        error_code(notify(&app, &foreign_resource).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    assert_untouched(&app, &sale, "cat", &id).await;
}

/// A timestamp 301 s in the past or future is refused even when signed.
async fn stale_timestamps_are_refused(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "dan").await;

    let now = unix_now_early_in_a_second().await;
    let mut old = sim.payment(&id, PRICE);
    old.timestamp = (now - 301).to_string();
    let old = old.resigned(&sim);
    assert_eq!(
        error_code(notify(&app, &old).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into()),
        "301 s in the past"
    );

    let now = unix_now_early_in_a_second().await;
    let mut early = sim.payment(&id, PRICE);
    early.timestamp = (now + 301).to_string();
    let early = early.resigned(&sim);
    assert_eq!(
        error_code(notify(&app, &early).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into()),
        "301 s in the future"
    );
    assert_untouched(&app, &sale, "dan", &id).await;

    // The order was only refused, not spoilt: a fresh notification pays it.
    assert_acknowledged(notify(&app, &sim.payment(&id, PRICE)).await).await;
    assert_paid(&app, &sale, "dan", &id).await;
}

/// One notification delivered 5 times at once pays the order once.
async fn concurrent_replays_pay_once(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "eve").await;

    let notification = sim.payment(&id, PRICE);
    let responses = futures::future::join_all((0..5).map(|_| notify(&app, &notification))).await;
    for response in responses {
        assert_acknowledged(response).await;
    }
    assert_paid(&app, &sale, "eve", &id).await;
}

/// The payment exceptions the engine recorded, newest first; read whole
/// and one a page, which must agree.
pub(crate) async fn payment_exceptions(app: &TestApp) -> Vec<Value> {
    let page = async |query: &str| {
        let path = format!("/admin/v1/payment-exceptions{query}");
        let response = app.admin(reqwest::Method::GET, &path, None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()
    };
    let whole = page("?limit=500").await["exceptions"]
        .as_array()
        .unwrap()
        .clone();
    let mut paged = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let body = page(&query).await;
        paged.extend(body["exceptions"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, whole, "one a page lists each once, in order");
    whole
}

/// A payment of the wrong amount changes nothing: it is recorded as a
/// payment exception, once however often WeChat Pay repeats it, and
/// acknowledged (WeChat Pay would otherwise retry it for a day, then drop
/// it with the money recorded nowhere).
async fn wrong_amount_is_recorded_and_acknowledged(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "fay").await;

    let wrong = sim.payment(&id, PRICE - 1);
    assert_acknowledged(notify(&app, &wrong).await).await;
    assert_acknowledged(notify(&app, &wrong).await).await;
    assert_untouched(&app, &sale, "fay", &id).await;
    let exceptions = payment_exceptions(&app).await;
    assert_eq!(exceptions.len(), 1, "once per transaction: {exceptions:?}");
    assert_eq!(exceptions[0]["kind"], "amount_mismatch");
    assert_eq!(exceptions[0]["out_trade_no"], id);
    assert_eq!(exceptions[0]["amount_cents"], PRICE - 1);
    assert_eq!(exceptions[0]["currency"], "CNY");
    let transaction = exceptions[0]["transaction_id"].as_str().unwrap().to_owned();

    // Settled by hand, it leaves the list; only the admin token does it,
    // once; a transaction never recorded is 404; WeChat Pay notifying it
    // again is acknowledged and not recorded again (the merchant would
    // settle it twice).
    let path = format!("/admin/v1/payment-exceptions/{transaction}");
    let settle = || app.admin(reqwest::Method::DELETE, &path, None);
    assert_eq!(
        error_code(app.shopper(reqwest::Method::DELETE, "fay", &path).await).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert_eq!(
        payment_exceptions(&app).await.len(),
        1,
        "a refusal settles nothing"
    );
    let settled = settle().await;
    assert_eq!(settled.status(), StatusCode::OK);
    let settled: Value = settled.json().await.unwrap();
    assert_eq!(settled, exceptions[0], "answers what it took off");
    assert_eq!(payment_exceptions(&app).await, Vec::<Value>::new());
    assert_eq!(
        error_code(settle().await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let unknown = format!("/admin/v1/payment-exceptions/{}", "4".repeat(129));
    assert_eq!(
        error_code(app.admin(reqwest::Method::DELETE, &unknown, None).await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_acknowledged(notify(&app, &wrong).await).await;
    assert_eq!(payment_exceptions(&app).await, Vec::<Value>::new());

    assert_acknowledged(notify(&app, &sim.payment(&id, PRICE)).await).await;
    assert_paid(&app, &sale, "fay", &id).await;
}

/// A payment for an order that does not exist, or for no order id, changes
/// nothing: each is recorded as a payment exception and acknowledged.
async fn unknown_orders_are_recorded_and_acknowledged(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "gus").await;

    // Same sale, same shape, last four characters changed.
    let tail = if id.ends_with("0000") { "1111" } else { "0000" };
    let missing = format!("{}{tail}", &id[..id.len() - 4]);
    assert_ne!(missing, id);
    assert_eq!(missing.len(), id.len());
    assert_acknowledged(notify(&app, &sim.payment(&missing, PRICE)).await).await;
    assert_acknowledged(notify(&app, &sim.payment("not-an-order", PRICE)).await).await;
    assert_untouched(&app, &sale, "gus", &id).await;
    let exceptions = payment_exceptions(&app).await;
    let mut named: Vec<&str> = exceptions
        .iter()
        .map(|exception| {
            assert_eq!(exception["kind"], "unknown_order");
            exception["out_trade_no"].as_str().unwrap()
        })
        .collect();
    named.sort_unstable();
    let mut expected = vec![missing.as_str(), "not-an-order"];
    expected.sort_unstable();
    assert_eq!(named, expected);
}

/// A payment after a cancel marks the order for refund; stock stays put.
async fn payment_after_cancel_requires_a_refund(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    const STOCK: i64 = 5;
    let (sale, id) = sale_with_order(&app, STOCK, "hal").await;

    let cancelled = app
        .shopper_post("hal", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["remaining"], STOCK, "{view}");
    assert_eq!(view["stats"]["cancelled"], 1, "{view}");

    assert_acknowledged(notify(&app, &sim.payment(&id, PRICE)).await).await;
    let order = order_of(&app, "hal", &id).await;
    assert_eq!(order["status"], "refund_required", "{order}");

    let view = app.sale(&sale).await;
    let stats = &view["stats"];
    assert_eq!(stats["refund_required"], 1, "{view}");
    assert_eq!(stats["cancelled"], 1, "{view}");
    assert_eq!(
        stats["remaining"], STOCK,
        "stock returned exactly once: {view}"
    );
    assert_eq!(stats["reserved"], 0, "{view}");
    assert_eq!(stats["paid"], 0, "{view}");
    assert_stats_consistent(&view);
}

/// No signature header is 401, and the simulated pay route is gone.
async fn missing_signature_and_simulated_pay_are_refused(backend: Backend) {
    let (Harness { app, redis: _redis }, sim, _key) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "ivy").await;

    let notification = sim.payment(&id, PRICE);
    let mut request = app
        .client
        .post(app.url(NOTIFY))
        .body(notification.body.clone());
    for (name, value) in notification.headers() {
        if name != "Wechatpay-Signature" {
            request = request.header(name, value);
        }
    }
    assert_eq!(
        error_code(request.send().await.unwrap()).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );

    let simulated = app
        .shopper_post("ivy", &format!("/api/v1/orders/{id}/pay"))
        .await;
    assert_eq!(
        error_code(simulated).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_untouched(&app, &sale, "ivy", &id).await;
}

on_both_stores!(
    valid_notification_pays_the_order,
    tampered_body_is_refused,
    foreign_keys_are_refused,
    stale_timestamps_are_refused,
    concurrent_replays_pay_once,
    wrong_amount_is_recorded_and_acknowledged,
    unknown_orders_are_recorded_and_acknowledged,
    payment_after_cancel_requires_a_refund,
    missing_signature_and_simulated_pay_are_refused,
);
