//! Goal: merchants schedule campaigns whose rounds × items are real sales,
//! shoppers read the seckill page and order through the item's sale, and
//! the campaign's limit across items answers 409 `limit_exceeded` naming
//! the limit. Method: drive the admin, public and order routes of one
//! campaign end to end, then every refusal.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::support::{error_code, rfc3339_in, token, Backend, Harness, TestApp};

/// A campaign of a live round and an upcoming one, three items.
fn campaign_body() -> Value {
    json!({
        "title": "11.11 seckill",
        "rounds": [
            {"starts_at": rfc3339_in(Duration::from_secs(1), true),
             "ends_at": rfc3339_in(Duration::from_secs(3600), false)},
            {"starts_at": rfc3339_in(Duration::from_secs(7200), false),
             "ends_at": rfc3339_in(Duration::from_secs(10800), false)},
        ],
        "items": [
            {"sku": "A", "title": "Item A", "price_cents": 990, "original_price_cents": 1990,
             "stock_per_round": 5},
            {"sku": "B", "title": "Item B", "price_cents": 1990, "original_price_cents": 2990,
             "stock_per_round": 5, "stock_by_round": [3, 4]},
            {"sku": "C", "title": "Item C", "price_cents": 100, "original_price_cents": 100,
             "stock_per_round": 2},
        ],
        "per_user_limit_per_round": 1,
        "per_user_limit_total": 2,
        "payment_timeout_secs": 600,
    })
}

pub async fn create(app: &TestApp, body: Value) -> Value {
    let response = app
        .admin(Method::POST, "/admin/v1/campaigns", Some(body))
        .await;
    let status = response.status();
    let campaign: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{campaign}");
    campaign
}

async fn a_campaign_is_sales_a_page_and_one_limit(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let campaign = create(&app, campaign_body()).await;
    let id = campaign["id"].as_str().unwrap().to_owned();
    assert_eq!(campaign["rounds"][0]["status"], "live");
    assert_eq!(campaign["rounds"][1]["status"], "upcoming");
    assert_eq!(campaign["rounds"][1]["items"][1]["stock_total"], 4);
    assert_eq!(campaign["totals"]["stock_total"], 5 + 3 + 2 + 5 + 4 + 2);
    let sale = |round: usize, item: usize| {
        campaign["rounds"][round]["items"][item]["sale_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Each round × item is a real sale.
    assert_eq!(app.sale(&sale(0, 1)).await["stock_total"], 3);

    let order = app.buy(&sale(0, 0), "ann").await;
    let refused = app.order(&sale(0, 1), "ann", None, None).await;
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "limit_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("per_user_limit_per_round"), "{message}");

    let page = app
        .client
        .get(app.url(&format!("/api/v1/campaigns/{id}")))
        .bearer_auth(token("ann"))
        .send()
        .await
        .unwrap();
    let cache = page.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.starts_with("private, max-age="), "{cache}");
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["allowance"]["round_left"], 0, "{page}");
    assert_eq!(page["allowance"]["campaign_left"], 1, "{page}");
    assert!(page["rounds"][0]["items"][0].get("stats").is_none());
    assert!(page["server_time"].is_string());

    let cancelled = app
        .shopper_post(
            "ann",
            &format!("/api/v1/orders/{}/cancel", order["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    app.buy(&sale(0, 1), "ann").await;

    let exact = app
        .admin(Method::GET, &format!("/admin/v1/campaigns/{id}"), None)
        .await;
    let exact: Value = exact.json().await.unwrap();
    let item = &exact["rounds"][0]["items"][1]["stats"];
    assert_eq!(
        (item["reserved"].as_i64(), item["remaining"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(exact["rounds"][0]["totals"]["reserved"], 1);
    assert_eq!(exact["rounds"][0]["totals"]["cancelled"], 1);

    let public = app
        .client
        .get(app.url("/api/v1/campaigns"))
        .send()
        .await
        .unwrap();
    let cache = public.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    let public: Value = public.json().await.unwrap();
    assert_eq!(public["campaigns"][0]["id"], id.as_str());
    let listed = app.admin(Method::GET, "/admin/v1/campaigns", None).await;
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["campaigns"].as_array().map(Vec::len), Some(1));
}

async fn bad_campaigns_are_refused(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let mut overlapping = campaign_body();
    overlapping["rounds"][1]["starts_at"] = json!(rfc3339_in(Duration::from_secs(60), false));
    let mut unknown = campaign_body();
    unknown["colour"] = json!("red");
    let mut cheap_list = campaign_body();
    cheap_list["items"][0]["original_price_cents"] = json!(1);
    let mut no_items = campaign_body();
    no_items["items"] = json!([]);
    for body in [overlapping, unknown, cheap_list, no_items] {
        let response = app
            .admin(Method::POST, "/admin/v1/campaigns", Some(body))
            .await;
        let (status, code) = error_code(response).await;
        assert!(status.is_client_error(), "{status}");
        assert_eq!(code, "invalid_request");
    }
    for path in ["/api/v1/campaigns/c_missing1", "/api/v1/campaigns/nope"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            (StatusCode::NOT_FOUND, "not_found".to_owned())
        );
    }
    let response = app
        .client
        .get(app.url("/admin/v1/campaigns"))
        .bearer_auth(token("qin"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await.0, StatusCode::FORBIDDEN);
    let listed = app.admin(Method::GET, "/admin/v1/campaigns", None).await;
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["campaigns"], json!([]), "nothing was stored");
}

/// Goal: the seckill page is served from each node's memory for its
/// interval however many shoppers poll it (one read per interval: the
/// cache's own unit tests count the reads). Method: with a long interval,
/// prime the page, take a unit through the order route, then 200
/// concurrent polls all show the count of the first read while the
/// admin's exact view shows the new one.
async fn the_page_is_served_from_memory(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start_with(backend, |config| {
        config.campaign_page_cache_ms = 60_000;
    })
    .await;
    let campaign = create(&app, campaign_body()).await;
    let id = campaign["id"].as_str().unwrap();
    let path = format!("/api/v1/campaigns/{id}");
    let first = app.public_json(&path).await;
    assert_eq!(first["rounds"][0]["items"][0]["remaining"], 5);
    let sale = first["rounds"][0]["items"][0]["sale_id"].as_str().unwrap();
    app.buy(sale, "eve").await;
    let polls = (0..200).map(|_| app.public_json(&path));
    let pages = futures::future::join_all(polls).await;
    for page in &pages {
        assert_eq!(page["rounds"][0]["items"][0]["remaining"], 5, "{page}");
    }
    let exact = app
        .admin(Method::GET, &format!("/admin/v1/campaigns/{id}"), None)
        .await;
    let exact: Value = exact.json().await.unwrap();
    assert_eq!(exact["rounds"][0]["items"][0]["remaining"], 4);
}

/// Goal: a campaign that has not started can be called off whole, one
/// that has cannot. Method: cancel an upcoming campaign (every sale
/// cancelled, gone from the page's list), then try a live one.
async fn only_an_upcoming_campaign_is_cancelled(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let mut later = campaign_body();
    later["rounds"][0]["starts_at"] = json!(rfc3339_in(Duration::from_secs(600), false));
    let upcoming = create(&app, later).await;
    let path = format!("/admin/v1/campaigns/{}", upcoming["id"].as_str().unwrap());
    let cancelled = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    for round in cancelled["rounds"].as_array().unwrap() {
        for item in round["items"].as_array().unwrap() {
            assert_eq!(item["status"], "cancelled", "{item}");
        }
    }
    let listed = app.public_json("/api/v1/campaigns").await;
    assert_eq!(listed["campaigns"], json!([]));

    let live = create(&app, campaign_body()).await;
    let path = format!("/admin/v1/campaigns/{}", live["id"].as_str().unwrap());
    let refused = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(
        error_code(refused).await,
        (StatusCode::CONFLICT, "conflict".to_owned())
    );
}

on_both_stores!(
    a_campaign_is_sales_a_page_and_one_limit,
    bad_campaigns_are_refused,
    the_page_is_served_from_memory,
    only_an_upcoming_campaign_is_cancelled,
);
