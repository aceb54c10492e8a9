//! Goal: a shopper pays inside the Mini Program through the engine alone.
//! `POST /api/v1/orders/{id}/wechatpay` creates the WeChat Pay order once
//! (signed, with the order's terms) and answers exactly what
//! `wx.requestPayment` takes, signed with the merchant key; WeChat Pay down,
//! refusing, or answering with a forged or stale signature changes nothing
//! and the next call succeeds by itself; a platform key rotation loses no
//! notification. Method: the engine against the WeChat Pay stand-in
//! (`wechat::WeChatPayServer`), which checks every request's signature and
//! keeps the WeChat Pay orders, on both stores.

use std::time::Duration;

use chrono::DateTime;
use flashsale::config::{Config, PaymentMode};
use flashsale::Application;
use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::on_both_stores;
use crate::payments_wechat::{
    assert_acknowledged, assert_paid, notify, order_of, sale_with_order, wechat_engine, PRICE,
};
use crate::support::{error_code, test_config, Backend, Harness, TestApp};
use crate::wechat::{
    signed_by_merchant, Behaviour, EngineSettings, WeChatPayServer, WxState, APPID, MCHID,
    NOTIFY_URL,
};

fn prepay_path(order: &str) -> String {
    format!("/api/v1/orders/{order}/wechatpay")
}

async fn prepay(app: &TestApp, shopper: &str, order: &str) -> Response {
    app.shopper_post(shopper, &prepay_path(order)).await
}

/// The 200 answer's body.
async fn request_payment(app: &TestApp, shopper: &str, order: &str) -> Value {
    let response = prepay(app, shopper, order).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Asserts a 503 `unavailable` with `Retry-After`.
async fn assert_unavailable(response: Response) {
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(response).await,
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
}

/// The answer is what `wx.requestPayment` takes, and `paySign` verifies
/// with the merchant's public key; the WeChat Pay order carries the
/// order's terms, and every call was signed by the merchant.
async fn prepay_answers_request_payment_signed_by_the_merchant(backend: Backend) {
    let (Harness { app, redis: _redis }, _sim, wx) = wechat_engine(backend).await;
    let (sale, id) = sale_with_order(&app, 10, "oAnn").await;

    let params = request_payment(&app, "oAnn", &id).await;
    let fields: std::collections::BTreeSet<&str> = params
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "appId",
            "timeStamp",
            "nonceStr",
            "package",
            "signType",
            "paySign"
        ]
        .into(),
        "exactly what wx.requestPayment takes"
    );
    assert_eq!(params["appId"], APPID);
    assert_eq!(params["signType"], "RSA");
    let orders = wx.orders();
    let wx_order = &orders[&id];
    assert_eq!(
        params["package"],
        format!("prepay_id={}", wx_order.prepay_id)
    );
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        params["appId"].as_str().unwrap(),
        params["timeStamp"].as_str().unwrap(),
        params["nonceStr"].as_str().unwrap(),
        params["package"].as_str().unwrap(),
    );
    assert!(
        signed_by_merchant(&message, params["paySign"].as_str().unwrap()),
        "paySign verifies with the merchant public key: {params}"
    );

    let order = order_of(&app, "oAnn", &id).await;
    let request = &wx_order.request;
    assert_eq!(request["appid"], APPID);
    assert_eq!(request["mchid"], MCHID);
    assert_eq!(request["description"], "Le Pliage pouch, red");
    assert_eq!(request["out_trade_no"], id);
    assert_eq!(request["notify_url"], NOTIFY_URL);
    assert_eq!(request["amount"]["total"], PRICE);
    assert_eq!(request["amount"]["currency"], "CNY");
    assert_eq!(request["payer"]["openid"], "oAnn");
    let time_expire = request["time_expire"].as_str().unwrap();
    assert!(time_expire.ends_with("+08:00"), "{time_expire}");
    let expires_at = DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        DateTime::parse_from_rfc3339(time_expire)
            .unwrap()
            .timestamp(),
        expires_at.timestamp(),
        "time_expire is the order's expires_at"
    );
    assert_eq!(order["prepay_id"], wx_order.prepay_id);
    assert!(order["transaction_id"].is_null());

    let calls = wx.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls.iter().all(|call| call.authorized), "{calls:?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("POST", "/v3/pay/transactions/jsapi")
    );

    // The shopper pays in WeChat: the notification pays the order, which
    // keeps WeChat Pay's transaction id.
    assert_acknowledged(notify(&app, &wx.pay(&id)).await).await;
    assert_paid(&app, &sale, "oAnn", &id).await;
    let WxState::Paid(transaction_id) = wx.orders()[&id].state.clone() else {
        panic!("paid in the stand-in");
    };
    let order = order_of(&app, "oAnn", &id).await;
    assert_eq!(order["transaction_id"], transaction_id);
    let admin = app
        .admin(
            reqwest::Method::GET,
            &format!("/admin/v1/orders/{id}"),
            None,
        )
        .await;
    assert_eq!(admin.status(), StatusCode::OK);
    let admin: Value = admin.json().await.unwrap();
    assert_eq!(admin, order, "the merchant sees the same order");
    let unknown = app
        .admin(reqwest::Method::GET, "/admin/v1/orders/o_nosuchorder", None)
        .await;
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["paid"], 1, "{view}");
}

/// Asked again (one after another, and several at once), the engine
/// answers the same prepay id: one WeChat Pay order for one of ours, the
/// first call the only one that created it.
async fn prepay_is_idempotent(backend: Backend) {
    let (Harness { app, redis: _redis }, _sim, wx) = wechat_engine(backend).await;
    let (_sale, id) = sale_with_order(&app, 10, "oBob").await;

    let first = request_payment(&app, "oBob", &id).await;
    let again = request_payment(&app, "oBob", &id).await;
    assert_eq!(first["package"], again["package"]);
    assert_ne!(first["nonceStr"], again["nonceStr"], "signed afresh");
    let jsapi_calls = |wx: &WeChatPayServer| {
        wx.calls()
            .iter()
            .filter(|call| call.path == "/v3/pay/transactions/jsapi")
            .count()
    };
    assert_eq!(jsapi_calls(&wx), 1, "the second call reused the prepay id");

    let (_sale, other) = sale_with_order(&app, 10, "oCat").await;
    let answers =
        futures::future::join_all((0..4).map(|_| request_payment(&app, "oCat", &other))).await;
    for answer in &answers {
        assert_eq!(answer["package"], answers[0]["package"]);
    }
    let orders = wx.orders();
    assert_eq!(orders.len(), 2, "one WeChat Pay order each: {orders:?}");
    let order = order_of(&app, "oCat", &other).await;
    assert_eq!(
        format!("prepay_id={}", order["prepay_id"].as_str().unwrap()),
        answers[0]["package"].as_str().unwrap()
    );
}

/// Another shopper's order is 404, an order not pending is 409, and
/// neither reaches WeChat Pay.
async fn prepay_is_for_the_shoppers_own_pending_order(backend: Backend) {
    let (Harness { app, redis: _redis }, _sim, wx) = wechat_engine(backend).await;
    let (_sale, id) = sale_with_order(&app, 10, "oDan").await;

    assert_eq!(
        error_code(prepay(&app, "oEve", &id).await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        error_code(prepay(&app, "oDan", "o_nosuchorder").await).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let cancelled = app
        .shopper_post("oDan", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(
        error_code(prepay(&app, "oDan", &id).await).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    assert!(wx.calls().is_empty(), "{:?}", wx.calls());
}

/// WeChat Pay answering 5xx, or not at all, is 503 with Retry-After; its
/// refusal is 502 `wechatpay_refused` naming its code; an answer with a
/// forged or stale signature is not believed (503). None keeps a prepay
/// id, and once WeChat Pay is back the same call succeeds.
async fn wechatpay_trouble_changes_nothing_and_passes(backend: Backend) {
    let (Harness { app, redis: _redis }, _sim, wx) = wechat_engine(backend).await;
    let (_sale, id) = sale_with_order(&app, 10, "oFay").await;

    for trouble in [
        Behaviour::ServerError,
        Behaviour::Stall,
        Behaviour::ForgedAnswers,
        Behaviour::StaleAnswers,
    ] {
        wx.behave(trouble);
        assert_unavailable(prepay(&app, "oFay", &id).await).await;
        let order = order_of(&app, "oFay", &id).await;
        assert!(order["prepay_id"].is_null(), "{trouble:?}: {order}");
    }

    wx.behave(Behaviour::Refuse("APPID_MCHID_NOT_MATCH"));
    let refused = prepay(&app, "oFay", &id).await;
    assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "wechatpay_refused");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("APPID_MCHID_NOT_MATCH"), "{message}");

    wx.behave(Behaviour::Normal);
    let params = request_payment(&app, "oFay", &id).await;
    let prepay_id = wx.orders()[&id].prepay_id.clone();
    assert_eq!(params["package"], format!("prepay_id={prepay_id}"));
    assert!(wx.calls().iter().all(|call| call.authorized));
}

/// With the platform keys in a directory, a notification signed with a
/// key added there after the start (a rotation) is verified by its serial,
/// and one signed with the old key still is: no notification is lost.
async fn a_key_rotation_loses_no_notification(backend: Backend) {
    let wx = WeChatPayServer::start_with_key_directory(true).await;
    let Harness { app, redis: _redis } =
        Harness::start_with(backend, |config| wx.configure(config)).await;
    let (old_sale, old_order) = sale_with_order(&app, 10, "oGus").await;
    let (new_sale, new_order) = sale_with_order(&app, 10, "oHal").await;
    let rotated = wx.sim.rotated();

    // Before the new key is in place, its notification is refused (and
    // WeChat Pay sends it again later).
    let early = rotated.payment(&new_order, PRICE);
    assert_eq!(
        error_code(notify(&app, &early).await).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );

    wx.add_platform_key(&rotated);
    assert_acknowledged(notify(&app, &rotated.payment(&new_order, PRICE)).await).await;
    assert_paid(&app, &new_sale, "oHal", &new_order).await;
    assert_acknowledged(notify(&app, &wx.sim.payment(&old_order, PRICE)).await).await;
    assert_paid(&app, &old_sale, "oGus", &old_order).await;
}

on_both_stores!(
    prepay_answers_request_payment_signed_by_the_merchant,
    prepay_is_idempotent,
    prepay_is_for_the_shoppers_own_pending_order,
    wechatpay_trouble_changes_nothing_and_passes,
    a_key_rotation_loses_no_notification,
);

/// Takes one setting away.
type Unset = fn(&mut Config);

/// In WeChat Pay mode the engine refuses to start without any one of its
/// settings, naming it.
#[tokio::test]
async fn wechatpay_mode_names_each_missing_setting() {
    let wx = WeChatPayServer::start().await;
    let clears: [(&str, Unset); 5] = [
        ("FLASHSALE_WECHATPAY_MCHID", |c| c.wechatpay_mchid = None),
        ("FLASHSALE_WECHATPAY_APPID", |c| c.wechatpay_appid = None),
        ("FLASHSALE_WECHATPAY_MERCHANT_KEY", |c| {
            c.wechatpay_merchant_key = None
        }),
        ("FLASHSALE_WECHATPAY_MERCHANT_SERIAL", |c| {
            c.wechatpay_merchant_serial = None
        }),
        ("FLASHSALE_WECHATPAY_NOTIFY_URL", |c| {
            c.wechatpay_notify_url = Some(String::new())
        }),
    ];
    for (name, clear) in clears {
        let mut config = test_config();
        wx.configure(&mut config);
        assert_eq!(config.payments, Some(PaymentMode::Wechatpay));
        clear(&mut config);
        let refused = Application::build(config)
            .await
            .err()
            .unwrap_or_else(|| panic!("started without {name}"));
        let message = format!("{refused:#}");
        assert!(message.contains(name), "{name}: {message}");
    }
    let mut config = test_config();
    wx.configure(&mut config);
    let app = tokio::time::timeout(Duration::from_secs(30), TestApp::spawn_with(config)).await;
    app.expect("starts with every setting").stop().await;
}
