//! Goal: the WeChat Pay stand-in pays the way a shopper's phone and WeChat
//! Pay do, so the load suite can drive the engine's whole payment loop:
//! `POST /standin/pay` with the engine's `wx.requestPayment` parameters
//! pays only when `paySign` verifies with the merchant's key, then
//! delivers the signed, encrypted notification to the engine's notify URL
//! again until it is acknowledged, and the order is paid once; an order
//! the engine closed before expiring it cannot be paid. Method: the
//! engine on a known port, its notify URL pointing at a relay that refuses
//! the first deliveries (503) and passes the rest to the engine; on both
//! stores.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::on_both_stores;
use crate::payments_wechat::{order_of, NOTIFY};
use crate::payments_wechat_refund::order_becomes;
use crate::support::{error_code, live_sale, Backend, Harness, TestApp};
use crate::wechat::{EngineSettings, LedgerView, Paid, WeChatPayServer, WxState};

/// Deliveries the relay refuses before it passes them on.
const REFUSED_DELIVERIES: u32 = 2;

/// The engine's notify route behind a relay that answers 503 to the first
/// [`REFUSED_DELIVERIES`] notifications.
#[derive(Clone)]
struct Relay {
    /// The engine's notify URL, known once the engine has bound its port.
    engine_notify: Arc<OnceLock<String>>,
    received: Arc<AtomicU32>,
    client: reqwest::Client,
}

async fn relay(State(relay): State<Relay>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if relay.received.fetch_add(1, Ordering::SeqCst) < REFUSED_DELIVERIES {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let engine_notify = relay.engine_notify.get().expect("the engine started");
    let mut request = relay.client.post(engine_notify).body(body);
    for (name, value) in &headers {
        if name.as_str().starts_with("wechatpay-") || name == "content-type" {
            request = request.header(name, value);
        }
    }
    let status = request.send().await.expect("the engine answers").status();
    StatusCode::from_u16(status.as_u16()).expect("a status")
}

/// The engine in WeChat Pay mode against a stand-in, its notify URL the
/// relay's; orders may expire after a second.
async fn engine(backend: Backend) -> (Harness, WeChatPayServer, Arc<AtomicU32>) {
    let wx = WeChatPayServer::start().await;
    let received = Arc::new(AtomicU32::new(0));
    let engine_notify = Arc::new(OnceLock::new());
    let state = Relay {
        engine_notify: Arc::clone(&engine_notify),
        received: Arc::clone(&received),
        client: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://{}/notify", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(relay).with_state(state);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let harness = Harness::start_with(backend, |config| {
        wx.configure(config);
        config.wechatpay_notify_url = Some(relay_url);
        config.payment_timeout_min_secs = 1;
    })
    .await;
    let _ = engine_notify.set(format!("{}{NOTIFY}", harness.app.address));
    (harness, wx, received)
}

/// The `wx.requestPayment` parameters of `shopper`'s order `id`.
async fn request_payment(app: &TestApp, shopper: &str, id: &str) -> Value {
    let response = app
        .shopper_post(shopper, &format!("/api/v1/orders/{id}/wechatpay"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The shopper's phone pays with `params`.
async fn pay(wx: &WeChatPayServer, params: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/standin/pay", wx.base_url))
        .json(params)
        .send()
        .await
        .unwrap()
}

async fn ledger(wx: &WeChatPayServer) -> LedgerView {
    let url = format!("{}/standin/ledger", wx.base_url);
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// A forged `paySign` pays nothing; the genuine one pays the WeChat Pay
/// order, whose notification reaches the engine on the third delivery and
/// pays the order once; a second payment is refused.
async fn the_shopper_pays_and_the_notification_is_delivered_until_acknowledged(backend: Backend) {
    let (Harness { app, redis: _redis }, wx, received) = engine(backend).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    let order = app.buy(&sale, "oAnn").await;
    let id = order["id"].as_str().unwrap();
    let params = request_payment(&app, "oAnn", id).await;

    let mut forged = params.clone();
    forged["timeStamp"] = "1".into();
    assert_eq!(
        error_code(pay(&wx, &forged).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    let mut foreign = params.clone();
    foreign["package"] = "prepay_id=wx0".into();
    assert_eq!(
        error_code(pay(&wx, &foreign).await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(wx.orders()[id].state, WxState::NotPay);

    let response = pay(&wx, &params).await;
    assert_eq!(response.status(), StatusCode::OK);
    let paid: Paid = response.json().await.unwrap();
    assert_eq!(paid.out_trade_no, id);
    let order = order_becomes(&app, id, "paid").await;
    assert!(order["paid_at"].is_string(), "{order}");
    assert_eq!(order["transaction_id"], paid.transaction_id.as_str());
    assert_eq!(
        error_code(pay(&wx, &params).await).await,
        (StatusCode::CONFLICT, "ORDERPAID".into())
    );

    let view = app.sale(&sale).await;
    assert_eq!(
        (
            view["stats"]["paid"].as_i64(),
            view["stats"]["reserved"].as_i64()
        ),
        (Some(1), Some(0))
    );
    let ledger = ledger(&wx).await;
    let wx_order = &ledger.orders[0];
    assert_eq!(ledger.orders.len(), 1);
    assert_eq!(
        (
            wx_order.trade_state.as_str(),
            wx_order.payments,
            wx_order.prepay_calls
        ),
        ("SUCCESS", 1, 1)
    );
    assert!(wx_order.notified);
    assert_eq!(wx_order.notify_attempts, REFUSED_DELIVERIES + 1);
    assert_eq!(received.load(Ordering::SeqCst), REFUSED_DELIVERIES + 1);
    app.assert_audit_clean(&sale).await;
}
on_both_stores!(the_shopper_pays_and_the_notification_is_delivered_until_acknowledged);

/// An abandoned order expires through the close; the shopper's phone then
/// cannot pay it (409 `ORDER_CLOSED`), and nothing is notified.
async fn an_order_closed_before_its_expiry_cannot_be_paid(backend: Backend) {
    let (Harness { app, redis: _redis }, wx, received) = engine(backend).await;
    let mut sale = live_sale(5, 1);
    sale["payment_timeout_secs"] = 1.into();
    let sale = app.create_sale(sale).await;
    let order = app.buy(&sale, "oBob").await;
    let id = order["id"].as_str().unwrap();
    let params = request_payment(&app, "oBob", id).await;

    order_becomes(&app, id, "expired").await;
    assert_eq!(
        error_code(pay(&wx, &params).await).await,
        (StatusCode::CONFLICT, "ORDER_CLOSED".into())
    );
    let ledger = ledger(&wx).await;
    assert_eq!(
        (
            ledger.orders[0].trade_state.as_str(),
            ledger.orders[0].close_calls,
            ledger.orders[0].payments
        ),
        ("CLOSED", 1, 0)
    );
    assert_eq!(received.load(Ordering::SeqCst), 0);
    assert_eq!(order_of(&app, "oBob", id).await["status"], "expired");
    app.assert_audit_clean(&sale).await;
}
on_both_stores!(an_order_closed_before_its_expiry_cannot_be_paid);
