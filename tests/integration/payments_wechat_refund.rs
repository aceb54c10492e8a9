//! Goal: refunds go through the sale's outbox and reach WeChat Pay exactly
//! once per order: a late payment (`refund_required`) is refunded by
//! itself, a merchant refunds a paid order (`POST /admin/v1/orders/{id}/refund`,
//! with or without putting its units back on sale), and the refund is sent
//! again until WeChat Pay takes it (5xx, a lost answer, an engine stopped
//! mid-call) without a second refund, since every attempt carries the same
//! `out_refund_no` and every attempt after the first queries the refund
//! before asking for it. Refund notifications, or the queries of a refund
//! still `PROCESSING`, settle the order `refunded`, or (`ABNORMAL`,
//! `CLOSED`) flag it as a payment exception. The audit stays
//! clean throughout. Method: the engine against the WeChat Pay stand-in
//! (which answers a repeated `out_refund_no` with the refund made first and
//! counts the calls), on both stores; simulated payments record a refund at
//! once.

use std::time::Duration;

use flashsale::config::{Config, RedisDurability};
use flashsale::domain::{OrderId, SaleId};
use flashsale::store::{FollowUps, RedisStore, RedisTarget, Store};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::orders_webhook::{
    assert_signed, dead_letters, dead_letters_when, engine_for, redrive, Receiver,
};
use crate::payments_wechat::{assert_acknowledged, notify, order_of, PRICE};
use crate::support::{
    error_code, live_sale, rfc3339_in, test_config, Backend, Harness, Servers, TestApp,
};
use crate::wechat::{Behaviour, EngineSettings, WeChatPayServer, WxRefund, WxState};

const REFUNDS: &str = "/v3/refund/domestic/refunds";

/// The engine's settings in WeChat Pay mode against `wx` on `redis`, with
/// short refund backoffs.
fn wechat_config(redis: &Servers, wx: &WeChatPayServer) -> Config {
    let mut config = test_config();
    redis.configure(&mut config);
    wx.configure(&mut config);
    config.payment_timeout_min_secs = 1;
    config.wechatpay_close_backoff_ms = 50;
    config.wechatpay_close_backoff_max_ms = 200;
    config
}

async fn engine(backend: Backend) -> (TestApp, Servers, WeChatPayServer, Config) {
    let wx = WeChatPayServer::start().await;
    let redis = Servers::start(backend);
    let config = wechat_config(&redis, &wx);
    (TestApp::spawn_with(config.clone()).await, redis, wx, config)
}

/// A paid order of `shopper` in `sale`: prepaid, paid in WeChat, notified.
pub(crate) async fn paid_order(
    app: &TestApp,
    wx: &WeChatPayServer,
    sale: &str,
    shopper: &str,
) -> String {
    let order = app.buy(sale, shopper).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let prepay = app
        .shopper_post(shopper, &format!("/api/v1/orders/{id}/wechatpay"))
        .await;
    assert_eq!(prepay.status(), StatusCode::OK);
    assert_acknowledged(notify(app, &wx.pay(&id)).await).await;
    assert_eq!(order_of(app, shopper, &id).await["status"], "paid");
    id
}

async fn refund(app: &TestApp, id: &str, body: Option<Value>) -> reqwest::Response {
    app.admin(Method::POST, &format!("/admin/v1/orders/{id}/refund"), body)
        .await
}

/// Any order, as the admin sees it.
pub(crate) async fn admin_order(app: &TestApp, id: &str) -> Value {
    let response = app
        .admin(Method::GET, &format!("/admin/v1/orders/{id}"), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The refunds WeChat Pay made for order `id` (one at most, whatever was
/// sent).
fn refunds_of(wx: &WeChatPayServer, id: &str) -> Vec<(String, WxRefund)> {
    wx.refunds()
        .into_iter()
        .filter(|(_, refund)| refund.out_trade_no == id)
        .collect()
}

/// Refund calls and refund queries that reached WeChat Pay.
fn refund_calls(wx: &WeChatPayServer) -> usize {
    wx.calls()
        .iter()
        .filter(|call| call.path.starts_with(REFUNDS))
        .count()
}

/// Queries of the refund of order `id` that reached WeChat Pay.
fn refund_queries(wx: &WeChatPayServer, id: &str) -> usize {
    let path = format!("{REFUNDS}/{id}-refund");
    wx.calls()
        .iter()
        .filter(|call| call.method == "GET" && call.path == path)
        .count()
}

/// The payment exceptions kept, as (`out_trade_no`, `kind`), sorted.
async fn payment_exceptions(app: &TestApp) -> Vec<(String, String)> {
    let exceptions: Value = app
        .admin(Method::GET, "/admin/v1/payment-exceptions", None)
        .await
        .json()
        .await
        .unwrap();
    let mut kept: Vec<(String, String)> = exceptions["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["out_trade_no"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kept.sort();
    kept
}

/// Polls until `done` holds; fails after a minute.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the admin's view of the order until its status is `status`.
pub(crate) async fn order_becomes(app: &TestApp, id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let order = admin_order(app, id).await;
        if order["status"] == status {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {status}: {order}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A payment WeChat Pay completed after our cancel (the race no close can
/// prevent) is refunded by itself, once; its notification makes the order
/// `refunded`, and a repeat changes nothing.
async fn a_late_payment_is_refunded_by_itself(backend: Backend) {
    let (app, _redis, wx, _) = engine(backend).await;
    let sale = app.create_sale(live_sale(3, 1)).await;
    let order = app.buy(&sale, "oAnn").await;
    let id = order["id"].as_str().unwrap().to_owned();
    let prepay = app
        .shopper_post("oAnn", &format!("/api/v1/orders/{id}/wechatpay"))
        .await;
    assert_eq!(prepay.status(), StatusCode::OK);
    let cancelled = app
        .shopper_post("oAnn", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(wx.orders()[&id].state, WxState::Closed);

    assert_acknowledged(notify(&app, &wx.pay_anyway(&id)).await).await;
    eventually("the late payment's refund reaches WeChat Pay", || {
        !refunds_of(&wx, &id).is_empty()
    })
    .await;
    let refunds = refunds_of(&wx, &id);
    assert_eq!(refunds.len(), 1);
    let (out_refund_no, refund) = &refunds[0];
    assert_eq!(out_refund_no, &format!("{id}-refund"));
    assert_eq!(
        refund.request["amount"],
        json!({"refund": PRICE, "total": PRICE, "currency": "CNY"})
    );
    assert_eq!(refund.request["notify_url"], crate::wechat::NOTIFY_URL);
    assert_eq!(admin_order(&app, &id).await["status"], "refund_required");

    let settled = wx.settle_refund(out_refund_no, "SUCCESS");
    assert_acknowledged(notify(&app, &settled).await).await;
    assert_acknowledged(notify(&app, &settled).await).await;
    let order = admin_order(&app, &id).await;
    assert_eq!(order["status"], "refunded", "{order}");
    assert_eq!(order["refund"], "late", "{order}");
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["refund_required"], 1, "{view}");
    assert_eq!(view["stats"]["refunded"], 0, "{view}");
    assert_eq!(view["stats"]["remaining"], 3, "{view}");
    assert_eq!(refunds_of(&wx, &id)[0].1.calls, 1, "sent once");
    app.assert_audit_clean(&sale).await;
}

/// WeChat Pay down (5xx): the merchant's refund waits in the outbox, is
/// retried with backoff, and completes once WeChat Pay is back, with one
/// refund at WeChat Pay.
async fn a_refund_waits_out_wechatpay_errors_and_is_made_once(backend: Backend) {
    let (app, _redis, wx, _) = engine(backend).await;
    let sale = app.create_sale(live_sale(3, 1)).await;
    let id = paid_order(&app, &wx, &sale, "oBob").await;

    wx.behave(Behaviour::ServerError);
    let asked = refund(&app, &id, None).await;
    assert_eq!(asked.status(), StatusCode::OK);
    let order: Value = asked.json().await.unwrap();
    assert_eq!(order["status"], "refunding", "{order}");
    assert_eq!(order["refund"], "kept", "{order}");
    assert!(order["transaction_id"].is_string(), "{order}");
    assert!(order["prepay_id"].is_string(), "{order}");
    eventually("the refund is retried", || refund_calls(&wx) >= 3).await;
    assert!(refunds_of(&wx, &id).is_empty(), "5xx: nothing refunded yet");
    app.assert_audit_clean(&sale).await;

    wx.behave(Behaviour::Normal);
    eventually("the refund reaches WeChat Pay", || {
        !refunds_of(&wx, &id).is_empty()
    })
    .await;
    let refunds = refunds_of(&wx, &id);
    let (out_refund_no, refund) = &refunds[0];
    assert_eq!(refunds.len(), 1);
    assert_eq!(refund.calls, 1, "taken once");
    assert_acknowledged(notify(&app, &wx.settle_refund(out_refund_no, "SUCCESS")).await).await;
    order_becomes(&app, &id, "refunded").await;
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["paid"], 0, "{view}");
    assert_eq!(view["stats"]["refunded"], 1, "{view}");
    assert_eq!(view["stats"]["remaining"], 2, "kept off sale: {view}");
    app.assert_audit_clean(&sale).await;
}

/// WeChat Pay takes the refund but its answer is lost (and, on Redis, the
/// engine is stopped while waiting for it and a new one started on the
/// same store): the next attempt queries the refund rather than asking
/// for it again, and WeChat Pay holds one refund of the order, taken once.
async fn a_lost_answer_is_queried_without_a_second_refund(backend: Backend) {
    let (app, redis, wx, config) = engine(backend).await;
    let sale = app.create_sale(live_sale(3, 1)).await;
    let id = paid_order(&app, &wx, &sale, "oCat").await;

    wx.behave(Behaviour::TakeRefundThenStall);
    assert_eq!(refund(&app, &id, None).await.status(), StatusCode::OK);
    eventually("WeChat Pay took the refund", || {
        !refunds_of(&wx, &id).is_empty()
    })
    .await;
    let app = if backend == Backend::Embedded {
        // Nothing survives a restart of the embedded store: the lost
        // answer alone is asked about again.
        app
    } else {
        app.stop().await;
        TestApp::spawn_with(config).await
    };
    wx.behave(Behaviour::Normal);
    eventually("the refund is queried", || refund_queries(&wx, &id) >= 1).await;
    let refunds = refunds_of(&wx, &id);
    assert_eq!(refunds.len(), 1, "one refund at WeChat Pay: {refunds:?}");
    assert_eq!(refunds[0].1.calls, 1, "asked for once: {refunds:?}");
    assert_acknowledged(notify(&app, &wx.settle_refund(&refunds[0].0, "SUCCESS")).await).await;
    order_becomes(&app, &id, "refunded").await;
    app.assert_audit_clean(&sale).await;
    drop(redis);
}

/// A refund WeChat Pay holds as `PROCESSING` is queried until it settles,
/// with no notification at all: `SUCCESS` makes the order `refunded`,
/// `ABNORMAL` keeps a payment exception; each refund was asked for once,
/// and a settled refund is asked about no more.
async fn a_processing_refund_is_queried_until_it_settles(backend: Backend) {
    let wx = WeChatPayServer::start().await;
    let redis = Servers::start(backend);
    let mut config = wechat_config(&redis, &wx);
    config.wechatpay_refund_query_ms = 50;
    config.wechatpay_refund_query_max_ms = 200;
    let app = TestApp::spawn_with(config).await;
    let sale = app.create_sale(live_sale(3, 1)).await;
    let succeeds = paid_order(&app, &wx, &sale, "oKim").await;
    let abnormal = paid_order(&app, &wx, &sale, "oLea").await;
    for id in [&succeeds, &abnormal] {
        assert_eq!(refund(&app, id, None).await.status(), StatusCode::OK);
    }
    eventually("both refunds are queried while processing", || {
        refund_queries(&wx, &succeeds) >= 2 && refund_queries(&wx, &abnormal) >= 2
    })
    .await;
    for id in [&succeeds, &abnormal] {
        assert_eq!(admin_order(&app, id).await["status"], "refunding");
    }

    // A refused query is a failure to try again, not a refusal of the
    // refund: nothing goes to the dead letters.
    wx.behave(Behaviour::Refuse("PARAM_ERROR"));
    let asked = refund_queries(&wx, &succeeds);
    eventually("refused queries", || {
        refund_queries(&wx, &succeeds) >= asked + 2
    })
    .await;
    wx.behave(Behaviour::Normal);
    let letters: Value = app
        .admin(
            Method::GET,
            &format!("/admin/v1/sales/{sale}/dead-letters"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(letters["dead_letters"], json!([]), "{letters}");

    // WeChat Pay settles both; their notifications never arrive.
    drop(wx.settle_refund(&format!("{succeeds}-refund"), "SUCCESS"));
    drop(wx.settle_refund(&format!("{abnormal}-refund"), "ABNORMAL"));
    order_becomes(&app, &succeeds, "refunded").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while payment_exceptions(&app).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never flagged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        payment_exceptions(&app).await,
        [(abnormal.clone(), "refund_abnormal".to_owned())]
    );
    assert_eq!(admin_order(&app, &abnormal).await["status"], "refunding");

    // Both entries left the outbox: no query follows.
    let asked = (
        refund_queries(&wx, &succeeds),
        refund_queries(&wx, &abnormal),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        (
            refund_queries(&wx, &succeeds),
            refund_queries(&wx, &abnormal)
        ),
        asked,
        "a settled refund is asked about no more"
    );
    for id in [&succeeds, &abnormal] {
        assert_eq!(refunds_of(&wx, id)[0].1.calls, 1, "asked for once");
    }
    app.assert_audit_clean(&sale).await;
}

/// `ABNORMAL` and `CLOSED` refund results leave the order `refunding` and
/// are kept as payment exceptions for the merchant.
async fn abnormal_and_closed_refunds_are_flagged(backend: Backend) {
    let (app, _redis, wx, _) = engine(backend).await;
    let sale = app.create_sale(live_sale(3, 1)).await;
    let abnormal = paid_order(&app, &wx, &sale, "oDan").await;
    let closed = paid_order(&app, &wx, &sale, "oEve").await;
    for id in [&abnormal, &closed] {
        assert_eq!(
            refund(&app, id, Some(json!({}))).await.status(),
            StatusCode::OK
        );
    }
    eventually("both refunds reach WeChat Pay", || wx.refunds().len() == 2).await;
    for (id, status) in [(&abnormal, "ABNORMAL"), (&closed, "CLOSED")] {
        let settled = wx.settle_refund(&format!("{id}-refund"), status);
        assert_acknowledged(notify(&app, &settled).await).await;
        assert_acknowledged(notify(&app, &settled).await).await;
        assert_eq!(admin_order(&app, id).await["status"], "refunding");
    }
    let flagged = payment_exceptions(&app).await;
    let mut expected = vec![
        (abnormal.clone(), "refund_abnormal".to_owned()),
        (closed.clone(), "refund_closed".to_owned()),
    ];
    expected.sort();
    assert_eq!(flagged, expected);
    app.assert_audit_clean(&sale).await;
}

/// With restock the refunded units are on sale again (the shopper may buy
/// again); without, they stay off sale and counted to the shopper.
async fn admin_refund_with_and_without_restock(backend: Backend) {
    let (app, _redis, wx, _) = engine(backend).await;
    let sale = app.create_sale(live_sale(2, 1)).await;
    let kept = paid_order(&app, &wx, &sale, "oFay").await;
    let restocked = paid_order(&app, &wx, &sale, "oGus").await;
    assert_eq!(app.sale(&sale).await["stats"]["remaining"], 0);

    assert_eq!(refund(&app, &kept, None).await.status(), StatusCode::OK);
    let answer = refund(&app, &restocked, Some(json!({"restock": true}))).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let order: Value = answer.json().await.unwrap();
    assert_eq!(order["refund"], "restocked", "{order}");
    let view = app.sale(&sale).await;
    let stats = &view["stats"];
    assert_eq!(stats["remaining"], 1, "{view}");
    assert_eq!(stats["paid"], 0, "{view}");
    assert_eq!(stats["refunded"], 2, "{view}");
    assert_eq!(stats["restocked"], 1, "{view}");
    app.assert_audit_clean(&sale).await;

    let again = app.order(&sale, "oFay", None, None).await;
    assert_eq!(
        error_code(again).await,
        (StatusCode::CONFLICT, "limit_exceeded".into()),
        "kept units still count to the shopper"
    );
    let again = app.order(&sale, "oGus", None, None).await;
    assert_eq!(again.status(), StatusCode::CREATED, "restocked: free again");

    eventually("both refunds reach WeChat Pay", || wx.refunds().len() == 2).await;
    for id in [&kept, &restocked] {
        let settled = wx.settle_refund(&format!("{id}-refund"), "SUCCESS");
        assert_acknowledged(notify(&app, &settled).await).await;
        order_becomes(&app, id, "refunded").await;
    }
    app.assert_audit_clean(&sale).await;
}

/// Refusals: an order not paid (or refunded already) is 409, an unknown
/// one 404, a bad body 4xx, restock once the sale is over 409; none
/// reaches WeChat Pay.
async fn refusals(backend: Backend) {
    let (app, _redis, wx, _) = engine(backend).await;
    let sale = app.create_sale(live_sale(3, 1)).await;
    let pending = app.buy(&sale, "oHal").await;
    let pending = pending["id"].as_str().unwrap();
    assert_eq!(
        error_code(refund(&app, pending, None).await).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    // Another last symbol: the id's own could be any base-36 digit.
    let (head, last) = pending.split_at(pending.len() - 1);
    let unknown = format!("{head}{}", if last == "x" { "y" } else { "x" });
    assert_eq!(
        error_code(refund(&app, &unknown, None).await).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        error_code(refund(&app, "nonsense", None).await).await.0,
        StatusCode::NOT_FOUND
    );
    let paid = paid_order(&app, &wx, &sale, "oIda").await;
    for body in [
        json!({"restock": "yes"}),
        json!({"restock": true, "why": 1}),
    ] {
        let (status, code) = error_code(refund(&app, &paid, Some(body)).await).await;
        assert!(status.is_client_error(), "{status}");
        assert_eq!(code, "invalid_request");
    }
    let ended = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/sales/{sale}"),
            Some(json!({"status": "ended"})),
        )
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    assert_eq!(
        error_code(refund(&app, &paid, Some(json!({"restock": true}))).await).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    assert_eq!(admin_order(&app, &paid).await["status"], "paid");
    assert_eq!(refund_calls(&wx), 0, "nothing reached WeChat Pay");
    assert_eq!(refund(&app, &paid, None).await.status(), StatusCode::OK);
    assert_eq!(
        error_code(refund(&app, &paid, None).await).await,
        (StatusCode::CONFLICT, "conflict".into()),
        "refunded once"
    );
    app.assert_audit_clean(&sale).await;
}

/// The merchant settles by hand a refund WeChat Pay could not pay: one it
/// answered `ABNORMAL`, one `CLOSED` (its payment exception settled,
/// which settles the order too), one whose call it refused for good (a
/// dead letter). Each order becomes `refunded` with the time it was
/// settled, goes to the webhook once as `order.refunded`, and leaves no
/// exception, dead letter or refund call behind: nothing more reaches
/// WeChat Pay, and WeChat Pay's repeated result changes nothing. While a
/// refund is still with WeChat Pay, or was never asked for, it is refused.
/// The audit stays clean.
async fn a_refund_wechatpay_could_not_pay_is_settled_by_hand(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let wx = WeChatPayServer::start().await;
    let Harness { app, redis: _redis } =
        engine_for(backend, &receiver, |config| wx.configure(config)).await;
    let sale = app.create_sale(live_sale(4, 1)).await;
    let abnormal = paid_order(&app, &wx, &sale, "oAbe").await;
    let closed = paid_order(&app, &wx, &sale, "oCat").await;
    let refused = paid_order(&app, &wx, &sale, "oDot").await;
    let paid = paid_order(&app, &wx, &sale, "oEli").await;
    let by_hand = |id: &str| {
        let path = format!("/admin/v1/orders/{id}/refund/settled-by-hand");
        let app = &app;
        async move { app.admin(Method::POST, &path, None).await }
    };

    // Never asked for, unknown, or not the admin's to ask: refused.
    assert_eq!(
        error_code(by_hand(&paid).await).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    let (head, last) = paid.split_at(paid.len() - 1);
    let unknown = format!("{head}{}", if last == "x" { "y" } else { "x" });
    assert_eq!(
        error_code(by_hand(&unknown).await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let shopper = app
        .shopper_post(
            "oEli",
            &format!("/admin/v1/orders/{paid}/refund/settled-by-hand"),
        )
        .await;
    assert_eq!(
        error_code(shopper).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );

    // Still with WeChat Pay (PROCESSING): refused.
    for id in [&abnormal, &closed] {
        assert_eq!(refund(&app, id, None).await.status(), StatusCode::OK);
    }
    eventually("both refunds reach WeChat Pay", || wx.refunds().len() == 2).await;
    let (status, code) = error_code(by_hand(&abnormal).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert_eq!(admin_order(&app, &abnormal).await["status"], "refunding");

    // WeChat Pay could not pay two of them: settled by hand at once (the
    // refunds' next queries are a minute away).
    let abnormal_result = wx.settle_refund(&format!("{abnormal}-refund"), "ABNORMAL");
    assert_acknowledged(notify(&app, &abnormal_result).await).await;
    let closed_result = wx.settle_refund(&format!("{closed}-refund"), "CLOSED");
    assert_acknowledged(notify(&app, &closed_result).await).await;
    assert_eq!(payment_exceptions(&app).await.len(), 2);
    let answer = by_hand(&abnormal).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let settled: Value = answer.json().await.unwrap();
    assert_eq!(settled["status"], "refunded", "{settled}");
    assert_eq!(settled["refund"], "kept", "{settled}");
    assert!(
        settled["refund_settled_by_hand_at"].is_string(),
        "{settled}"
    );
    assert_eq!(
        payment_exceptions(&app).await,
        [(closed.clone(), "refund_closed".to_owned())],
        "the order's exception is settled with it"
    );
    let exception: Value = app
        .admin(Method::GET, "/admin/v1/payment-exceptions", None)
        .await
        .json()
        .await
        .unwrap();
    let transaction = exception["exceptions"][0]["transaction_id"]
        .as_str()
        .unwrap();
    let dismissed = app
        .admin(
            Method::DELETE,
            &format!("/admin/v1/payment-exceptions/{transaction}"),
            None,
        )
        .await;
    assert_eq!(dismissed.status(), StatusCode::OK);
    assert_eq!(payment_exceptions(&app).await, []);
    let closed_order = admin_order(&app, &closed).await;
    assert_eq!(closed_order["status"], "refunded", "{closed_order}");
    assert!(closed_order["refund_settled_by_hand_at"].is_string());

    // A refund call WeChat Pay refused for good, settled by hand: its dead
    // letter goes, so nothing is left to re-drive.
    wx.behave(Behaviour::Refuse("NOT_ENOUGH"));
    assert_eq!(refund(&app, &refused, None).await.status(), StatusCode::OK);
    let letters = dead_letters_when(&app, &sale, 1).await;
    assert_eq!(letters[0]["event"], "wechatpay.refund", "{letters:?}");
    // WeChat Pay is asked first; an unsigned "no such refund" (from
    // something on the way) is no answer.
    wx.behave(Behaviour::RefuseUnsigned("RESOURCE_NOT_EXISTS"));
    let unsigned = by_hand(&refused).await;
    assert!(unsigned.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(unsigned).await,
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
    assert_eq!(admin_order(&app, &refused).await["status"], "refunding");
    wx.behave(Behaviour::Normal);
    assert_eq!(by_hand(&refused).await.status(), StatusCode::OK);
    assert_eq!(dead_letters(&app, &sale).await, Vec::<Value>::new());
    assert_eq!(redrive(&app, &sale).await, 0);

    // WeChat Pay ended one `ABNORMAL` whose notification never came: the
    // query finds it, keeps and settles its exception, and ends the call.
    assert_eq!(refund(&app, &paid, None).await.status(), StatusCode::OK);
    eventually("the refund reaches WeChat Pay", || {
        !refunds_of(&wx, &paid).is_empty()
    })
    .await;
    drop(wx.settle_refund(&format!("{paid}-refund"), "ABNORMAL"));
    let answer = by_hand(&paid).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let unnotified: Value = answer.json().await.unwrap();
    assert!(
        unnotified["refund_settled_by_hand_at"].is_string(),
        "{unnotified}"
    );

    // Repeats change nothing.
    let again = by_hand(&abnormal).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), settled);
    assert_acknowledged(notify(&app, &abnormal_result).await).await;
    assert_eq!(payment_exceptions(&app).await, []);
    assert_eq!(admin_order(&app, &abnormal).await, settled);

    // The webhook hears of each once, as the API shows it.
    let settled_ids = [&abnormal, &closed, &refused, &paid];
    let told = || {
        receiver
            .calls()
            .into_iter()
            .filter(|call| call.json()["type"] == "order.refunded")
            .collect::<Vec<_>>()
    };
    eventually("order.refunded handed off for each", || told().len() >= 4).await;
    let calls_before = wx.calls().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let told = told();
    assert_eq!(told.len(), 4, "once each");
    for call in &told {
        let body = assert_signed(call);
        let id = body["order"]["id"].as_str().unwrap().to_owned();
        assert!(settled_ids.iter().any(|settled| **settled == id), "{body}");
        assert_eq!(body["order"], admin_order(&app, &id).await, "{body}");
    }
    assert_eq!(wx.calls().len(), calls_before, "nothing more to WeChat Pay");
    for id in [&abnormal, &closed, &paid] {
        assert_eq!(refunds_of(&wx, id)[0].1.calls, 1, "asked for once");
    }
    assert!(
        refunds_of(&wx, &refused).is_empty(),
        "never taken by WeChat Pay"
    );
    app.assert_audit_clean(&sale).await;

    // WeChat Pay pays one settled by hand after all (the merchant fixed the
    // shopper's account in WeChat Pay's own platform): the shopper has it
    // twice, which is kept for the merchant.
    let paid_after_all = wx.settle_refund(&format!("{abnormal}-refund"), "SUCCESS");
    assert_acknowledged(notify(&app, &paid_after_all).await).await;
    assert_eq!(
        payment_exceptions(&app).await,
        [(abnormal.clone(), "refund_paid_twice".to_owned())]
    );
    assert_eq!(admin_order(&app, &abnormal).await, settled);
}

/// A refund call the engine dead-lettered that WeChat Pay took all the same
/// (a proxy's unsigned 4xx on the way back) is asked about before the
/// merchant may settle it by hand: refused while WeChat Pay still holds
/// it, and once WeChat Pay paid it, settled as WeChat Pay's (no by-hand
/// stamp), its dead letter gone.
async fn a_dead_refund_wechatpay_took_is_not_settled_by_hand(backend: Backend) {
    let (app, _redis, wx, _) = engine(backend).await;
    let sale = app.create_sale(live_sale(2, 1)).await;
    let id = paid_order(&app, &wx, &sale, "oFid").await;
    let path = format!("/admin/v1/orders/{id}/refund/settled-by-hand");
    let by_hand = || app.admin(Method::POST, &path, None);
    wx.behave(Behaviour::TakeRefundThenRefuseUnsigned("INVALID_REQUEST"));
    assert_eq!(refund(&app, &id, None).await.status(), StatusCode::OK);
    dead_letters_when(&app, &sale, 1).await;
    wx.behave(Behaviour::Normal);
    assert_eq!(refunds_of(&wx, &id).len(), 1, "WeChat Pay holds it");

    assert_eq!(
        error_code(by_hand().await).await,
        (StatusCode::CONFLICT, "conflict".into()),
        "PROCESSING at WeChat Pay"
    );
    assert_eq!(admin_order(&app, &id).await["status"], "refunding");
    assert_eq!(dead_letters(&app, &sale).await.len(), 1);

    drop(wx.settle_refund(&format!("{id}-refund"), "SUCCESS"));
    let answer = by_hand().await;
    assert_eq!(answer.status(), StatusCode::OK);
    let order: Value = answer.json().await.unwrap();
    assert_eq!(order["status"], "refunded", "{order}");
    assert_eq!(order["refund_settled_by_hand_at"], Value::Null, "{order}");
    assert_eq!(dead_letters(&app, &sale).await, Vec::<Value>::new());
    assert_eq!(refunds_of(&wx, &id)[0].1.calls, 1, "asked for once");
    assert_eq!(payment_exceptions(&app).await, []);
    app.assert_audit_clean(&sale).await;
}

/// An engine node without WeChat Pay (simulated payments) sharing the
/// store cannot ask WeChat Pay where a refund is, so it refuses to settle
/// by hand an order paid through WeChat Pay; the node with WeChat Pay
/// settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_wechatpay_does_not_settle_a_wechatpay_refund() {
    let (app, redis, wx, _) = engine(Backend::Redis).await;
    let mut simulated = test_config();
    redis.configure(&mut simulated);
    let other = TestApp::spawn_with(simulated).await;
    let sale = app.create_sale(live_sale(2, 1)).await;
    let id = paid_order(&app, &wx, &sale, "oGil").await;
    wx.behave(Behaviour::Refuse("USER_ACCOUNT_ABNORMAL"));
    assert_eq!(refund(&app, &id, None).await.status(), StatusCode::OK);
    dead_letters_when(&app, &sale, 1).await;
    wx.behave(Behaviour::Normal);
    let path = format!("/admin/v1/orders/{id}/refund/settled-by-hand");
    assert_eq!(
        error_code(other.admin(Method::POST, &path, None).await).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    assert_eq!(admin_order(&app, &id).await["status"], "refunding");
    let answer = app.admin(Method::POST, &path, None).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let order: Value = answer.json().await.unwrap();
    assert!(order["refund_settled_by_hand_at"].is_string(), "{order}");
}

/// Waits for order `id`'s one refund call to reach WeChat Pay, has WeChat
/// Pay pay it and notify, and waits for the order to be `refunded`.
async fn refunded_once(app: &TestApp, wx: &WeChatPayServer, id: &str) {
    eventually("the refund reaches WeChat Pay", || {
        refunds_of(wx, id).len() == 1
    })
    .await;
    let settled = wx.settle_refund(&format!("{id}-refund"), "SUCCESS");
    assert_acknowledged(notify(app, &settled).await).await;
    order_becomes(app, id, "refunded").await;
}

/// A refund, or a re-drive of a refund's dead letter, whose store step ran
/// but whose answer never reached the engine (a reply lost on its way
/// back: 503 to the merchant) is still sent to WeChat Pay, on a sale
/// already settled, which no order service watches: the merchant's retry
/// (told the order is refunding, 409, or re-driving none) has the order
/// service look at the sale again (a sale holding a refund's dead letter
/// is watched all the same, so the re-drive's part holds without it too).
/// Method: a sale ending in 2 s with two paid orders, left until settled;
/// each step run by another client of the same Redis (the step the engine
/// ran without learning of it), then the merchant's retry. Redis only: the
/// embedded store's steps cannot lose their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_answer_was_lost_is_still_sent() {
    let (app, redis, wx, _) = engine(Backend::Redis).await;
    let mut body = live_sale(2, 1);
    body["ends_at"] = json!(rfc3339_in(Duration::from_secs(2), false));
    body["payment_timeout_secs"] = json!(1);
    let sale = app.create_sale(body).await;
    let lost = paid_order(&app, &wx, &sale, "oLst").await;
    let redriven = paid_order(&app, &wx, &sale, "oRdv").await;
    // Ended, its payment window (1 s) closed: settled and no longer
    // watched a few sweeps later (about 5 s from now).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let other = RedisStore::connect(
        &RedisTarget::Standalone(redis.standalone().unwrap().url()),
        Duration::from_secs(2),
        RedisDurability::Always,
    )
    .await
    .expect("connect");
    let follow_ups = FollowUps {
        hand_off: false,
        refund: true,
    };
    let refunding = other
        .refund_order(&OrderId::parse(&lost).unwrap(), false, follow_ups)
        .await;
    assert_eq!(refunding.expect("refunding").status.as_str(), "refunding");
    assert_eq!(
        error_code(refund(&app, &lost, None).await).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    refunded_once(&app, &wx, &lost).await;

    wx.behave(Behaviour::Refuse("NOT_ENOUGH"));
    assert_eq!(refund(&app, &redriven, None).await.status(), StatusCode::OK);
    dead_letters_when(&app, &sale, 1).await;
    wx.behave(Behaviour::Normal);
    let sale_id = SaleId::parse(&sale).unwrap();
    assert_eq!(other.redrive_dead_letters(&sale_id).await.unwrap(), 1);
    assert_eq!(redrive(&app, &sale).await, 0, "re-driven already");
    refunded_once(&app, &wx, &redriven).await;
    app.assert_audit_clean(&sale).await;
}

on_both_stores!(
    a_refund_wechatpay_could_not_pay_is_settled_by_hand,
    a_dead_refund_wechatpay_took_is_not_settled_by_hand,
    a_late_payment_is_refunded_by_itself,
    a_refund_waits_out_wechatpay_errors_and_is_made_once,
    a_lost_answer_is_queried_without_a_second_refund,
    a_processing_refund_is_queried_until_it_settles,
    abnormal_and_closed_refunds_are_flagged,
    admin_refund_with_and_without_restock,
    refusals,
);

/// With simulated payments a refund is recorded at once: `refunded`,
/// counted, the audit clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_refund_is_recorded_at_once() {
    let Harness { app, redis: _redis } = Harness::start(Backend::Embedded).await;
    let sale = app.create_sale(live_sale(2, 1)).await;
    let order = app.buy(&sale, "oJon").await;
    let id = order["id"].as_str().unwrap();
    let paid = app
        .shopper_post("oJon", &format!("/api/v1/orders/{id}/pay"))
        .await;
    assert_eq!(paid.status(), StatusCode::OK);
    let refunded = refund(&app, id, Some(json!({"restock": true}))).await;
    assert_eq!(refunded.status(), StatusCode::OK);
    let order: Value = refunded.json().await.unwrap();
    assert_eq!(order["status"], "refunded", "{order}");
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["remaining"], 2, "{view}");
    assert_eq!(view["stats"]["restocked"], 1, "{view}");
    app.assert_audit_clean(&sale).await;
}
