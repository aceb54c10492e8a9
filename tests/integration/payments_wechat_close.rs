//! Goal: an order the shopper started paying with WeChat Pay lets its unit
//! go (expiry, the shopper's cancel) only after its WeChat Pay order is
//! closed, so nobody pays for a unit that went back on sale. A payment that
//! wins the race with the close pays the order (WeChat Pay refuses the
//! close as paid; the engine queries and applies it). While WeChat Pay is
//! unreachable the order stays held (stock not returned on a guess), the
//! close is retried with backoff, the audit stays clean, and it all
//! recovers by itself. Method: the engine against the WeChat Pay stand-in,
//! with one-second payment timeouts, on both stores.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::on_both_stores;
use crate::payments_wechat::{assert_acknowledged, notify, order_of, payment_exceptions, PRICE};
use crate::support::{error_code, live_sale, Backend, Harness, TestApp};
use crate::wechat::{Behaviour, EngineSettings, WeChatPayServer, WxState};

/// The engine in WeChat Pay mode against a stand-in, with short payment
/// timeouts and close backoffs.
async fn engine(backend: Backend) -> (Harness, WeChatPayServer) {
    let wx = WeChatPayServer::start().await;
    let harness = Harness::start_with(backend, |config| {
        wx.configure(config);
        config.payment_timeout_min_secs = 1;
        config.wechatpay_close_backoff_ms = 50;
        config.wechatpay_close_backoff_max_ms = 200;
    })
    .await;
    (harness, wx)
}

/// The engine with one WeChat Pay close of a held order in flight at a
/// time, each call to WeChat Pay timing out after `timeout_ms` (its hold
/// four times that).
async fn one_close_at_a_time(backend: Backend, timeout_ms: u64) -> (Harness, WeChatPayServer) {
    let wx = WeChatPayServer::start().await;
    let harness = Harness::start_with(backend, |config| {
        wx.configure(config);
        config.payment_timeout_min_secs = 1;
        config.wechatpay_timeout_ms = timeout_ms;
        config.wechatpay_close_concurrency = 1;
    })
    .await;
    (harness, wx)
}

/// A live sale of `stock` whose orders must be paid within a second.
async fn quick_sale(app: &TestApp, stock: i64) -> String {
    let mut sale = live_sale(stock, 1);
    sale["payment_timeout_secs"] = 1.into();
    app.create_sale(sale).await
}

/// An order of `shopper` in `sale`, with its WeChat Pay order made.
async fn prepaid_order(app: &TestApp, wx: &WeChatPayServer, sale: &str, shopper: &str) -> String {
    let order = app.buy(sale, shopper).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let response = app
        .shopper_post(shopper, &format!("/api/v1/orders/{id}/wechatpay"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(wx.orders()[&id].state, WxState::NotPay);
    id
}

/// The calls the stand-in received for `order` (method and path).
fn calls_for(wx: &WeChatPayServer, order: &str) -> Vec<(String, String)> {
    wx.calls()
        .into_iter()
        .filter(|call| call.path.contains(order))
        .map(|call| (call.method, call.path))
        .collect()
}

fn close_path(order: &str) -> String {
    format!("/v3/pay/transactions/out-trade-no/{order}/close")
}

/// Polls until `done` holds; fails after a minute.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An unpaid order with a WeChat Pay order expires only after the close;
/// one without expires as before, with no call to WeChat Pay.
async fn expiry_closes_the_wechatpay_order_first(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = engine(backend).await;
    let sale = quick_sale(&app, 5).await;
    let prepaid = prepaid_order(&app, &wx, &sale, "oAnn").await;
    let plain = app.buy(&sale, "oBob").await;
    let plain = plain["id"].as_str().unwrap();

    let view = app
        .sale_when(&sale, Duration::from_secs(60), |view| {
            view["stats"]["expired"] == 2
        })
        .await;
    assert_eq!(view["stats"]["remaining"], 5, "{view}");
    assert_eq!(wx.orders()[&prepaid].state, WxState::Closed);
    assert_eq!(
        calls_for(&wx, &prepaid),
        [("POST".to_owned(), close_path(&prepaid))],
        "closed once, before the expiry"
    );
    assert!(calls_for(&wx, plain).is_empty());
    assert_eq!(order_of(&app, "oAnn", &prepaid).await["status"], "expired");
    app.assert_audit_clean(&sale).await;
}

/// A shopper's cancel closes the WeChat Pay order first; once it was paid
/// in WeChat, the cancel is 409 and the order paid.
async fn a_cancel_closes_first_and_loses_to_a_payment(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = engine(backend).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    let id = prepaid_order(&app, &wx, &sale, "oCat").await;

    let cancelled = app
        .shopper_post("oCat", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(wx.orders()[&id].state, WxState::Closed);
    assert_eq!(order_of(&app, "oCat", &id).await["status"], "cancelled");

    let id = prepaid_order(&app, &wx, &sale, "oDan").await;
    let notification = wx.pay(&id);
    let refused = app
        .shopper_post("oDan", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    let order = order_of(&app, "oDan", &id).await;
    assert_eq!(order["status"], "paid", "{order}");
    let WxState::Paid(transaction_id) = wx.orders()[&id].state.clone() else {
        panic!("paid in WeChat Pay");
    };
    assert_eq!(order["transaction_id"], transaction_id);
    // WeChat Pay's own notification, arriving later, changes nothing.
    assert_acknowledged(notify(&app, &notification).await).await;
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["paid"], 1, "{view}");
    assert_eq!(view["stats"]["cancelled"], 1, "{view}");
    app.assert_audit_clean(&sale).await;
}

/// A cancel the shopper may no longer make leaves the WeChat Pay order
/// open: the order stays payable (a closed WeChat Pay order never is).
async fn a_cancel_past_the_shoppers_cancels_leaves_the_order_payable(backend: Backend) {
    let wx = WeChatPayServer::start().await;
    let Harness { app, redis: _redis } = Harness::start_with(backend, |config| {
        wx.configure(config);
        config.cancels_per_shopper_max = 1;
    })
    .await;
    let sale = app.create_sale(live_sale(5, 2)).await;
    let first = prepaid_order(&app, &wx, &sale, "oEve").await;
    let second = prepaid_order(&app, &wx, &sale, "oEve").await;
    let cancel = |id: String| {
        let app = &app;
        async move {
            app.shopper_post("oEve", &format!("/api/v1/orders/{id}/cancel"))
                .await
        }
    };
    assert_eq!(cancel(first.clone()).await.status(), StatusCode::OK);
    let (status, code) = error_code(cancel(second.clone()).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    assert_eq!(wx.orders()[&second].state, WxState::NotPay, "not closed");
    assert!(!calls_for(&wx, &second)
        .iter()
        .any(|(_, path)| *path == close_path(&second)));

    let notification = wx.pay(&second);
    assert_acknowledged(notify(&app, &notification).await).await;
    assert_eq!(order_of(&app, "oEve", &second).await["status"], "paid");
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["paid"], 1, "{view}");
    assert_eq!(view["stats"]["cancelled"], 1, "{view}");
    app.assert_audit_clean(&sale).await;
}

/// The engine in WeChat Pay mode against a stand-in, one cancel allowed
/// per shopper and WeChat Pay given 10 s a call (the tests make it slow).
async fn one_cancel_each(backend: Backend) -> (Harness, WeChatPayServer) {
    let wx = WeChatPayServer::start().await;
    let harness = Harness::start_with(backend, |config| {
        wx.configure(config);
        config.wechatpay_timeout_ms = 10_000;
        config.cancels_per_shopper_max = 1;
    })
    .await;
    (harness, wx)
}

/// Two cancels of one shopper's orders sent at once with one cancel left:
/// one closes its WeChat Pay order and cancels; the other is refused
/// before any close, so its order stays payable. WeChat Pay answers slowly,
/// so both cancels are in flight together.
async fn two_cancels_at_once_with_one_left_close_one_order(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = one_cancel_each(backend).await;
    let sale = app.create_sale(live_sale(5, 2)).await;
    let orders = [
        prepaid_order(&app, &wx, &sale, "oKim").await,
        prepaid_order(&app, &wx, &sale, "oKim").await,
    ];
    wx.behave(Behaviour::Slow(Duration::from_millis(500)));
    let cancels = orders.iter().map(|id| {
        let app = &app;
        async move {
            app.shopper_post("oKim", &format!("/api/v1/orders/{id}/cancel"))
                .await
                .status()
        }
    });
    let mut statuses = futures::future::join_all(cancels).await;
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let closed: Vec<&String> = orders
        .iter()
        .filter(|id| calls_for(&wx, id).contains(&("POST".to_owned(), close_path(id))))
        .collect();
    assert_eq!(closed.len(), 1, "one close in all: {closed:?}");
    let kept = orders.iter().find(|id| !closed.contains(id)).unwrap();
    assert_eq!(wx.orders()[kept].state, WxState::NotPay);

    wx.behave(Behaviour::Normal);
    let notification = wx.pay(kept);
    assert_acknowledged(notify(&app, &notification).await).await;
    assert_eq!(order_of(&app, "oKim", kept).await["status"], "paid");
    app.assert_audit_clean(&sale).await;
}

/// A cancel that did not happen gives the shopper's allowance back, and
/// no sale's actor remembers the `limit_exceeded` (of the cancels, not of
/// the sale's limit) answered while that cancel was taken: the shopper (one cancel allowed, one order held of
/// two) orders while their cancel waits on a slow close and is refused
/// (twice, so the actor has learned it); the order is paid in WeChat Pay
/// first, the cancel is refused, and the shopper's next order is taken.
async fn a_cancel_given_back_frees_the_shopper_to_order_again(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = one_cancel_each(backend).await;
    let sale = app.create_sale(live_sale(5, 2)).await;
    let id = prepaid_order(&app, &wx, &sale, "oLin").await;
    wx.behave(Behaviour::Slow(Duration::from_millis(1_500)));
    let cancel = {
        let app = &app;
        let id = id.clone();
        async move {
            app.shopper_post("oLin", &format!("/api/v1/orders/{id}/cancel"))
                .await
                .status()
        }
    };
    let refused_meanwhile = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !calls_for(&wx, &id).contains(&("POST".to_owned(), close_path(&id))) {
            assert!(tokio::time::Instant::now() < deadline, "no close");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut refusals = Vec::new();
        for _ in 0..2 {
            refusals.push(error_code(app.order(&sale, "oLin", None, None).await).await);
        }
        drop(wx.pay(&id));
        refusals
    };
    let (cancelled, refusals) = tokio::join!(cancel, refused_meanwhile);
    assert_eq!(cancelled, StatusCode::CONFLICT, "paid before the close");
    assert_eq!(
        refusals,
        vec![(StatusCode::CONFLICT, "limit_exceeded".to_owned()); 2],
        "the cancel was taken"
    );
    assert_eq!(order_of(&app, "oLin", &id).await["status"], "paid");
    let again = app.order(&sale, "oLin", None, None).await;
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "the cancel was given back"
    );
    app.assert_audit_clean(&sale).await;
}

/// The shopper pays in WeChat just before the deadline and the
/// notification is slow: the close is refused as paid, the engine queries
/// the transaction, and the order is paid, not expired. No refund needed.
async fn a_payment_that_wins_the_race_with_the_close_is_paid(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = engine(backend).await;
    let sale = quick_sale(&app, 1).await;
    let id = prepaid_order(&app, &wx, &sale, "oEve").await;
    let notification = wx.pay(&id);

    let view = app
        .sale_when(&sale, Duration::from_secs(60), |view| {
            view["stats"]["paid"] == 1
        })
        .await;
    assert_eq!(view["stats"]["expired"], 0, "{view}");
    assert_eq!(view["stats"]["refund_required"], 0, "{view}");
    assert_eq!(view["stats"]["remaining"], 0, "{view}");
    let order = order_of(&app, "oEve", &id).await;
    assert_eq!(order["status"], "paid", "{order}");
    let WxState::Paid(transaction_id) = wx.orders()[&id].state.clone() else {
        panic!("paid in WeChat Pay");
    };
    assert_eq!(order["transaction_id"], transaction_id);
    let calls = calls_for(&wx, &id);
    assert!(
        calls.contains(&("POST".to_owned(), close_path(&id))),
        "{calls:?}"
    );
    assert!(
        calls.contains(&(
            "GET".to_owned(),
            format!(
                "/v3/pay/transactions/out-trade-no/{id}?mchid={}",
                crate::wechat::MCHID
            )
        )),
        "{calls:?}"
    );

    assert_acknowledged(notify(&app, &notification).await).await;
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["paid"], 1, "paid once: {view}");
    app.assert_audit_clean(&sale).await;
}

/// WeChat Pay down: the due order stays held (its unit not back on sale:
/// the next shopper finds the sale sold out), the close is retried, a
/// cancel is 503, and the audit is clean throughout; once WeChat Pay is
/// back, the close goes through and the unit sells again.
async fn wechatpay_down_holds_the_stock_and_recovers(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = engine(backend).await;
    let sale = quick_sale(&app, 1).await;
    let id = prepaid_order(&app, &wx, &sale, "oFay").await;
    wx.behave(Behaviour::ServerError);

    let closes = || {
        calls_for(&wx, &id)
            .iter()
            .filter(|(_, path)| *path == close_path(&id))
            .count()
    };
    eventually("three failed closes", || closes() >= 3).await;
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["reserved"], 1, "still held: {view}");
    assert_eq!(view["stats"]["remaining"], 0, "{view}");
    assert_eq!(view["stats"]["expired"], 0, "{view}");
    app.assert_audit_clean(&sale).await;
    assert_eq!(
        order_of(&app, "oFay", &id).await["status"],
        "pending_payment"
    );
    let response = app.order(&sale, "oGus", None, None).await;
    assert_eq!(
        error_code(response).await,
        (StatusCode::CONFLICT, "sold_out".into())
    );
    let cancel = app
        .shopper_post("oFay", &format!("/api/v1/orders/{id}/cancel"))
        .await;
    assert!(cancel.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(cancel).await,
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
    assert!(app
        .metrics()
        .await
        .contains("flashsale_wechatpay_close_failures_total"));

    wx.behave(Behaviour::Normal);
    let view: Value = app
        .sale_when(&sale, Duration::from_secs(60), |view| {
            view["stats"]["expired"] == 1
        })
        .await;
    assert_eq!(view["stats"]["remaining"], 1, "{view}");
    assert_eq!(wx.orders()[&id].state, WxState::Closed);
    app.assert_audit_clean(&sale).await;
    app.buy(&sale, "oGus").await;
}

/// An unsigned refusal of the close as closed already (`ORDER_CLOSED`, as
/// a proxy or an attacker on the path could answer) is not believed: the
/// order stays held until a verified answer closes it.
async fn an_unsigned_order_closed_does_not_expire_the_order(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = engine(backend).await;
    let sale = quick_sale(&app, 1).await;
    let id = prepaid_order(&app, &wx, &sale, "oIvy").await;
    wx.behave(Behaviour::RefuseUnsigned("ORDER_CLOSED"));
    let closes = || {
        calls_for(&wx, &id)
            .iter()
            .filter(|(_, path)| *path == close_path(&id))
            .count()
    };
    eventually("two refused closes", || closes() >= 2).await;
    let view = app.sale(&sale).await;
    assert_eq!(
        (&view["stats"]["reserved"], &view["stats"]["expired"]),
        (&1.into(), &0.into()),
        "still held: {view}"
    );
    assert_eq!(wx.orders()[&id].state, WxState::NotPay);

    wx.behave(Behaviour::Normal);
    app.sale_when(&sale, Duration::from_secs(60), |view| {
        view["stats"]["expired"] == 1
    })
    .await;
    assert_eq!(wx.orders()[&id].state, WxState::Closed);
    app.assert_audit_clean(&sale).await;
}

/// An expiry step in which one held order cannot be expired after its
/// close (a store error: its record unreadable) still announces the orders
/// it did expire, so the sale's actor, which answers `sold_out` from
/// memory, sells the returned unit at once rather than at its next refresh
/// (ten minutes here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_expiry_after_a_close_still_returns_the_other_units() {
    let wx = WeChatPayServer::start().await;
    let Harness { app, redis } = Harness::start_with(Backend::Redis, |config| {
        wx.configure(config);
        config.payment_timeout_min_secs = 1;
        config.wechatpay_timeout_ms = 10_000;
        config.sale_refresh_ms = 600_000;
        // Both orders are due by the order service's next look.
        config.order_sweep_ms = 3_000;
    })
    .await;
    let sale = quick_sale(&app, 2).await;
    let held = prepaid_order(&app, &wx, &sale, "oPia").await;
    app.buy(&sale, "oAda").await;
    let response = app.order(&sale, "oNed", None, None).await;
    assert_eq!(
        error_code(response).await,
        (StatusCode::CONFLICT, "sold_out".into())
    );

    // The held order's close answers after 2 s; meanwhile its record is
    // made unreadable, so its expiry after the close fails.
    wx.behave(Behaviour::Slow(Duration::from_secs(2)));
    eventually("the held order's close", || {
        calls_for(&wx, &held).contains(&("POST".to_owned(), close_path(&held)))
    })
    .await;
    let mut conn = redis.standalone().unwrap().connection();
    let _: () = redis::cmd("HSET")
        .arg(format!("fs:{{{sale}}}:orders"))
        .arg(&held)
        .arg("status=pending_payment")
        .query(&mut conn)
        .unwrap();
    app.sale_when(&sale, Duration::from_secs(60), |view| {
        view["stats"]["expired"] == 1
    })
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = app.order(&sale, "oNed", None, None).await;
        if response.status() == StatusCode::CREATED {
            break;
        }
        assert_eq!(
            error_code(response).await,
            (StatusCode::CONFLICT, "sold_out".into())
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired unit was never announced to the sale's actor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A held order's close runs beside the order service's passes: while
/// WeChat Pay stalls one sale's closes (past no timeout of this test's
/// length), another sale's unpaid order still expires. With one close
/// allowed in flight, the second held order waits for a place (past this
/// test's length): one close call in all.
async fn a_stalled_close_holds_up_no_other_sale(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = one_close_at_a_time(backend, 50_000).await;
    let stalled = quick_sale(&app, 5).await;
    let held = [
        prepaid_order(&app, &wx, &stalled, "oAmy").await,
        prepaid_order(&app, &wx, &stalled, "oBea").await,
    ];
    wx.behave(Behaviour::Stall);
    let closes = || {
        held.iter()
            .flat_map(|id| calls_for(&wx, id))
            .filter(|(method, path)| method == "POST" && path.ends_with("/close"))
            .count()
    };
    eventually("a close", || closes() > 0).await;

    let other = quick_sale(&app, 1).await;
    app.buy(&other, "oCyd").await;
    let view = app
        .sale_when(&other, Duration::from_secs(20), |view| {
            view["stats"]["expired"] == 1
        })
        .await;
    assert_eq!(view["stats"]["remaining"], 1, "{view}");
    assert_eq!(closes(), 1, "one close in flight at most");
    for (id, shopper) in held.iter().zip(["oAmy", "oBea"]) {
        assert_eq!(
            order_of(&app, shopper, id).await["status"],
            "pending_payment"
        );
    }
    app.assert_audit_clean(&stalled).await;
}

/// Held orders past the bound on closes in flight wait for a place, not
/// for their hold (80 s here): with one close at a time and WeChat Pay
/// answering each in 300 ms, both orders expire, one close each.
async fn held_orders_past_the_bound_wait_for_a_place(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = one_close_at_a_time(backend, 20_000).await;
    let sale = quick_sale(&app, 5).await;
    let held = [
        prepaid_order(&app, &wx, &sale, "oDee").await,
        prepaid_order(&app, &wx, &sale, "oEli").await,
    ];
    wx.behave(Behaviour::Slow(Duration::from_millis(300)));
    let view = app
        .sale_when(&sale, Duration::from_secs(30), |view| {
            view["stats"]["expired"] == 2
        })
        .await;
    assert_eq!(view["stats"]["remaining"], 5, "{view}");
    for id in &held {
        assert_eq!(calls_for(&wx, id), [("POST".to_owned(), close_path(id))]);
    }
    app.assert_audit_clean(&sale).await;
}

/// An order past its deadline gets no WeChat Pay order (409), whether or
/// not the expiry has run yet.
async fn no_prepay_after_the_deadline(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = engine(backend).await;
    let sale = quick_sale(&app, 5).await;
    let order = app.buy(&sale, "oHal").await;
    let id = order["id"].as_str().unwrap();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap()).unwrap();
    // Not a timing assertion: the deadline must be in the past.
    while chrono::Utc::now() <= expires_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = app
        .shopper_post("oHal", &format!("/api/v1/orders/{id}/wechatpay"))
        .await;
    assert_eq!(
        error_code(late).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    assert!(wx.calls().is_empty(), "{:?}", wx.calls());
}

/// WeChat Pay answers the close of a held order as paid, and its query
/// says paid another amount than the order's (its ledger disagrees with
/// ours): the payment is kept as a payment exception, and the order
/// expires, its unit back on sale (that WeChat Pay order can take no other
/// payment), rather than being held and closed again forever.
async fn a_close_that_finds_another_amount_paid_expires_the_order(backend: Backend) {
    let (Harness { app, redis: _redis }, wx) = engine(backend).await;
    let sale = quick_sale(&app, 1).await;
    let id = prepaid_order(&app, &wx, &sale, "oUma").await;
    let _never_delivered = wx.pay_other_amount(&id, PRICE - 1);
    let view = app
        .sale_when(&sale, Duration::from_secs(60), |view| {
            view["stats"]["expired"] == 1
        })
        .await;
    assert_eq!(view["stats"]["paid"], 0, "{view}");
    assert_eq!(view["stats"]["remaining"], 1, "{view}");
    let exceptions = payment_exceptions(&app).await;
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    assert_eq!(exceptions[0]["kind"], "amount_mismatch");
    assert_eq!(exceptions[0]["out_trade_no"], id.as_str());
    assert_eq!(exceptions[0]["amount_cents"], PRICE - 1);
    app.assert_audit_clean(&sale).await;
}

on_both_stores!(
    a_close_that_finds_another_amount_paid_expires_the_order,
    no_prepay_after_the_deadline,
    expiry_closes_the_wechatpay_order_first,
    a_cancel_closes_first_and_loses_to_a_payment,
    a_cancel_past_the_shoppers_cancels_leaves_the_order_payable,
    two_cancels_at_once_with_one_left_close_one_order,
    a_cancel_given_back_frees_the_shopper_to_order_again,
    a_payment_that_wins_the_race_with_the_close_is_paid,
    wechatpay_down_holds_the_stock_and_recovers,
    an_unsigned_order_closed_does_not_expire_the_order,
    a_stalled_close_holds_up_no_other_sale,
    held_orders_past_the_bound_wait_for_a_place,
);
