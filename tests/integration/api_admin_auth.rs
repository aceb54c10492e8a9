//! Goal: only the admin token opens the admin API, a refused request changes
//! nothing at all, and the admin token cannot act as a shopper. Method: send
//! every admin route (the mutating ones with real changes) with each wrong
//! credential and compare the whole admin state (the list of sales and each
//! sale's full admin view, stats included) before and after each request;
//! then send the same changes with the admin token to show they were real.
//! The expected statuses are those of `src/http/auth.rs` and the README: a
//! valid shopper token on an admin route is 403 `forbidden`; anything that
//! is not `Bearer <admin token>` or a valid shopper token is 401
//! `unauthorized`; the admin token on a shopper route is 403 `forbidden`.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::support::{
    error_code, live_sale, rfc3339_in, token, Backend, Harness, TestApp, ADMIN_TOKEN,
};
use flashsale::http::mint_shopper_token;

/// Waits until the order service has taken every order of the sales off
/// their streams (`stats.queued`, where the engine reports it, counts those
/// units; these sales have no cancelled or expired orders), so that from
/// then on the admin state changes only when a request changes it.
async fn settle(app: &TestApp, sales: &[&str]) {
    for sale in sales {
        app.sale_when(sale, Duration::from_secs(10), |view| {
            let stats = &view["stats"];
            stats.get("queued").is_none_or(|queued| {
                queued.as_i64()
                    == Some(stats["reserved"].as_i64().unwrap() + stats["paid"].as_i64().unwrap())
            })
        })
        .await;
    }
}

/// Everything the admin API shows: the list and each sale's admin view.
async fn admin_state(app: &TestApp, sales: &[&str]) -> Value {
    let list = app.admin(Method::GET, "/admin/v1/sales", None).await;
    assert_eq!(list.status(), StatusCode::OK);
    let list: Value = list.json().await.unwrap();
    let mut views = Vec::new();
    for sale in sales {
        views.push(app.sale(sale).await);
    }
    json!({"list": list, "views": views})
}

/// Sends `method path` with the raw `Authorization` value (none if None).
async fn send(
    app: &TestApp,
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method.clone(), app.url(path));
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

fn upcoming_sale() -> Value {
    let mut body = live_sale(8, 1);
    body["title"] = json!("Upcoming pouch");
    body["starts_at"] = json!(rfc3339_in(Duration::from_secs(3600), false));
    body["ends_at"] = json!(rfc3339_in(Duration::from_secs(7200), false));
    body
}

async fn admin_routes_refuse_other_credentials_and_change_nothing(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let live = app.create_sale(live_sale(5, 2)).await;
    let upcoming = app.create_sale(upcoming_sale()).await;
    // Stats that are not all zero: one unit reserved, one buyer.
    app.buy(&live, "auth-buyer").await;
    let sales = [live.as_str(), upcoming.as_str()];

    let mut new_sale = live_sale(3, 1);
    new_sale["sku"] = json!("INTRUDER-SKU");
    // Each a real change that the admin token would make (checked below).
    let routes: Vec<(Method, String, Option<Value>, StatusCode)> = vec![
        (Method::GET, "/admin/v1/sales".into(), None, StatusCode::OK),
        (
            Method::GET,
            format!("/admin/v1/sales/{live}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/admin/v1/sales/{upcoming}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/admin/v1/sales".into(),
            Some(new_sale),
            StatusCode::CREATED,
        ),
        (
            Method::PATCH,
            format!("/admin/v1/sales/{upcoming}"),
            Some(json!({"title": "Hijacked title", "stock_total": 99, "per_user_limit": 5})),
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            format!("/admin/v1/sales/{live}"),
            Some(json!({"stock_total": 50})),
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            format!("/admin/v1/sales/{upcoming}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            format!("/admin/v1/sales/{live}"),
            Some(json!({"status": "ended"})),
            StatusCode::OK,
        ),
    ];

    let shopper = format!("Bearer {}", token("auth-buyer"));
    let expired_shopper = format!(
        "Bearer {}",
        mint_shopper_token(b"test-shopper-secret", "auth-buyer", -3600).unwrap()
    );
    let forged_shopper = format!(
        "Bearer {}",
        mint_shopper_token(b"another-secret", "auth-buyer", 3600).unwrap()
    );
    let basic_pair = format!("Basic {}", STANDARD.encode(format!("admin:{ADMIN_TOKEN}")));
    let unauthorized = (StatusCode::UNAUTHORIZED, "unauthorized");
    let credentials: Vec<(&str, Option<String>, (StatusCode, &str))> = vec![
        ("no Authorization", None, unauthorized),
        (
            "Bearer wrong-token",
            Some("Bearer wrong-token".into()),
            unauthorized,
        ),
        (
            "a valid shopper token",
            Some(shopper),
            (StatusCode::FORBIDDEN, "forbidden"),
        ),
        (
            "Basic with the admin token",
            Some(format!("Basic {ADMIN_TOKEN}")),
            unauthorized,
        ),
        (
            "Basic with admin:token in base64",
            Some(basic_pair),
            unauthorized,
        ),
        (
            "the admin token without a scheme",
            Some(ADMIN_TOKEN.into()),
            unauthorized,
        ),
        (
            "the admin token plus a character",
            Some(format!("Bearer {ADMIN_TOKEN}x")),
            unauthorized,
        ),
        (
            "the admin token less a character",
            Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
            unauthorized,
        ),
        (
            "an expired shopper token",
            Some(expired_shopper),
            unauthorized,
        ),
        ("a forged shopper token", Some(forged_shopper), unauthorized),
    ];

    settle(&app, &sales).await;
    let before = admin_state(&app, &sales).await;
    for (method, path, body, _) in &routes {
        for (what, authorization, (status, code)) in &credentials {
            let response = send(&app, method, path, authorization.as_deref(), body.as_ref()).await;
            assert_eq!(
                error_code(response).await,
                (*status, (*code).to_owned()),
                "{method} {path} with {what}"
            );
            assert_eq!(
                admin_state(&app, &sales).await,
                before,
                "{method} {path} with {what} changed nothing"
            );
        }
    }

    // The same requests with the admin token: each mutating one changes the
    // state, so "nothing changed" above was the credentials' doing.
    let mut state = before;
    for (method, path, body, expected) in &routes {
        let authorization = format!("Bearer {ADMIN_TOKEN}");
        let response = send(&app, method, path, Some(&authorization), body.as_ref()).await;
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, *expected, "{method} {path} as admin: {answer}");
        let after = admin_state(&app, &sales).await;
        if *method == Method::GET {
            assert_eq!(after, state, "{method} {path} as admin changes nothing");
        } else {
            assert_ne!(after, state, "{method} {path} as admin changes the state");
        }
        state = after;
    }
    let views = &state["views"];
    assert_eq!(views[0]["stock_total"], 50);
    assert_eq!(views[0]["status"], "ended");
    assert_eq!(views[1]["title"], "Hijacked title");
    assert_eq!(views[1]["status"], "cancelled");
    assert_eq!(state["list"]["sales"].as_array().unwrap().len(), 3);
}

async fn admin_token_is_no_shopper(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let live = app.create_sale(live_sale(5, 2)).await;
    let order = app.buy(&live, "auth-owner").await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let sales = [live.as_str()];

    let shopper_view = |path: String| {
        let app = &app;
        async move {
            let response = app.shopper_get("auth-owner", &path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let snapshot = || async {
        json!({
            "admin": admin_state(&app, &sales).await,
            "order": shopper_view(format!("/api/v1/orders/{order_id}")).await,
            "orders": shopper_view("/api/v1/orders".into()).await,
        })
    };
    settle(&app, &sales).await;
    let before = snapshot().await;
    assert_eq!(before["order"]["status"], "pending_payment");

    let admin = format!("Bearer {ADMIN_TOKEN}");
    let orders_path = format!("/api/v1/sales/{live}/orders");
    let requests: Vec<(Method, String, Option<Value>, Option<&str>)> = vec![
        (Method::POST, orders_path.clone(), None, None),
        (
            Method::POST,
            orders_path.clone(),
            Some(json!({"quantity": 1})),
            Some("admin-as-shopper"),
        ),
        (
            Method::POST,
            orders_path,
            Some(json!({"quantity": 2})),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/sales/{live}/purchase-token"),
            None,
            None,
        ),
        (Method::GET, "/api/v1/orders".into(), None, None),
        (
            Method::GET,
            format!("/api/v1/orders/{order_id}"),
            None,
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/orders/{order_id}/cancel"),
            None,
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/orders/{order_id}/pay"),
            None,
            None,
        ),
    ];
    for (method, path, body, idempotency_key) in &requests {
        let mut request = app
            .client
            .request(method.clone(), app.url(path))
            .header(AUTHORIZATION, &admin);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", *key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            (StatusCode::FORBIDDEN, "forbidden".to_owned()),
            "{method} {path} with the admin token"
        );
        assert_eq!(
            snapshot().await,
            before,
            "{method} {path} with the admin token changed nothing"
        );
    }
    let stats = &before["admin"]["views"][0]["stats"];
    assert_eq!(
        stats["reserved"], 1,
        "only the shopper's own order: {stats}"
    );
    assert_eq!(stats["buyers"], 1, "{stats}");

    // The snapshot does see a new order: a shopper's is counted at once.
    app.buy(&live, "auth-second").await;
    assert_ne!(snapshot().await["admin"], before["admin"]);
}

on_both_stores!(
    admin_routes_refuse_other_credentials_and_change_nothing,
    admin_token_is_no_shopper,
);
