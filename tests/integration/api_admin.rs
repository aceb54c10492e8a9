//! Goal: merchants schedule, change and cancel sales within the contract's
//! rules, and nobody else can. Method: drive the admin API through each
//! phase of a sale and check what is allowed and what is refused.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::support::{
    assert_stats_consistent, error_code, live_sale, rfc3339_in, token, Backend, Harness,
};

async fn admin_routes_need_the_admin_token(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    let routes = [
        (Method::GET, "/admin/v1/sales".to_owned()),
        (Method::POST, "/admin/v1/sales".to_owned()),
        (Method::GET, format!("/admin/v1/sales/{sale}")),
        (Method::PATCH, format!("/admin/v1/sales/{sale}")),
        (Method::DELETE, format!("/admin/v1/sales/{sale}")),
    ];
    for (method, path) in routes {
        for (bearer, expected) in [
            (None, (StatusCode::UNAUTHORIZED, "unauthorized")),
            (
                Some("wrong".to_owned()),
                (StatusCode::UNAUTHORIZED, "unauthorized"),
            ),
            (Some(token("qin")), (StatusCode::FORBIDDEN, "forbidden")),
        ] {
            let mut request = app
                .client
                .request(method.clone(), app.url(&path))
                .json(&json!({"stock_total": 1}));
            if let Some(bearer) = &bearer {
                request = request.bearer_auth(bearer);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                error_code(response).await,
                (expected.0, expected.1.to_owned()),
                "{method} {path}"
            );
        }
    }
    assert_eq!(app.sale(&sale).await["stock_total"], 5, "nothing changed");
}

async fn upcoming_sales_change_freely_and_cancel(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let mut body = live_sale(5, 1);
    body["starts_at"] = json!(rfc3339_in(Duration::from_secs(600), false));
    let sale = app.create_sale(body).await;
    let path = format!("/admin/v1/sales/{sale}");

    let changed = app
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"title": "New title", "stock_total": 50, "per_user_limit": 2})),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["title"], "New title");
    assert_eq!(changed["stats"]["remaining"], 50);
    assert_eq!(changed["per_user_limit"], 2);
    assert_eq!(changed["status"], "upcoming");
    assert_eq!(changed["campaign"], Value::Null, "a sale of its own");

    let invalid = app
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"ends_at": changed["starts_at"]})),
        )
        .await;
    assert_eq!(
        error_code(invalid).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request".into())
    );

    let cancelled = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
    let public = app.public_json(&format!("/api/v1/sales/{sale}")).await;
    assert_eq!(public["status"], "cancelled");
    let listed = app.public_json("/api/v1/sales").await;
    assert!(listed["sales"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["id"] != sale.as_str()));
    let order = app.order(&sale, "rex", None, None).await;
    assert_eq!(
        error_code(order).await,
        (StatusCode::CONFLICT, "ended".into())
    );
    let again = app
        .admin(Method::PATCH, &path, Some(json!({"stock_total": 6})))
        .await;
    assert_eq!(
        error_code(again).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
}

async fn live_sales_take_stock_and_end_changes_only(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let sale = app.create_sale(live_sale(2, 1)).await;
    let path = format!("/admin/v1/sales/{sale}");
    for shopper in ["sam", "tia"] {
        app.buy(&sale, shopper).await;
    }
    let sold_out = app.order(&sale, "uma", None, None).await;
    assert_eq!(
        error_code(sold_out).await,
        (StatusCode::CONFLICT, "sold_out".into())
    );

    let restricted = app
        .admin(Method::PATCH, &path, Some(json!({"title": "x"})))
        .await;
    assert_eq!(
        error_code(restricted).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    let below_held = app
        .admin(Method::PATCH, &path, Some(json!({"stock_total": 1})))
        .await;
    assert_eq!(
        error_code(below_held).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    let cancel = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(
        error_code(cancel).await,
        (StatusCode::CONFLICT, "conflict".into())
    );

    let restock = app
        .admin(
            Method::PATCH,
            &path,
            Some(
                json!({"stock_total": 3, "ends_at": rfc3339_in(Duration::from_secs(7200), false)}),
            ),
        )
        .await;
    assert_eq!(restock.status(), StatusCode::OK);
    let restock: Value = restock.json().await.unwrap();
    assert_eq!(restock["stats"]["remaining"], 1);
    assert_eq!(restock["status"], "live");
    assert_stats_consistent(&restock);
    let bought = app.order(&sale, "uma", None, None).await;
    assert_eq!(
        bought.status(),
        StatusCode::CREATED,
        "added stock is on sale at once"
    );

    let all: Value = app
        .admin(Method::GET, "/admin/v1/sales", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["sales"][0]["id"], sale.as_str());
    assert_stats_consistent(&all["sales"][0]);
}

on_both_stores!(
    admin_routes_need_the_admin_token,
    upcoming_sales_change_freely_and_cancel,
    live_sales_take_stock_and_end_changes_only,
);
