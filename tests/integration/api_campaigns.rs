//! Goal: merchants schedule campaigns whose rounds × items are real sales,
//! shoppers read the seckill page and order through the item's sale, and
//! the campaign's limit across items answers 409 `limit_exceeded` naming
//! the limit. Method: drive the admin, public and order routes of one
//! campaign end to end, then every refusal.

use std::time::Duration;

use flashsale::config::RedisDurability;
use flashsale::domain::{system_now, Campaign, CampaignId, CampaignLimits, Item, Round};
use flashsale::store::keys::SaleKeys;
use flashsale::store::{RedisStore, RedisTarget, Store};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::support::{
    error_code, live_sale, rfc3339_in, token, Backend, Harness, TestApp, ADMIN_TOKEN,
};

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
    // Each round × item is a real sale, which names its place in the
    // campaign (round and item numbers are 0-based).
    let item = app.sale(&sale(1, 1)).await;
    assert_eq!(item["stock_total"], 4);
    assert_eq!(
        item["campaign"],
        json!({"campaign_id": id, "round": 1, "item": 1})
    );

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

    app.order_step("ann", &order, "cancel").await;
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
/// admin's exact view shows the new one; a merchant's change on the node
/// shows at once.
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

    // A merchant's change on this node is on its page at once.
    changed(
        &app,
        id,
        json!({"items": [{"number": 0, "stock_per_round": 9}]}),
    )
    .await;
    let page = app.public_json(&path).await;
    let item = &page["rounds"][0]["items"][0];
    assert_eq!(
        (item["stock_total"].as_i64(), item["remaining"].as_i64()),
        (Some(9), Some(8))
    );
}

/// Goal: the public list of campaigns reads no sale of a campaign over
/// for long (a season's campaigns are kept until retention). Method: on
/// Redis, a campaign whose round ended two hours ago is written straight
/// to the store (the API takes none in the past), one of its sales made
/// unreadable; the list still answers, with only the live campaign (it
/// answered 503 when it read every campaign's sales).
#[tokio::test]
async fn the_public_list_reads_no_sale_of_a_campaign_long_over() {
    let Harness { app, redis } = Harness::start(Backend::Redis).await;
    let server = redis.standalone().unwrap();
    let store = RedisStore::connect(
        &RedisTarget::Standalone(server.url()),
        Duration::from_secs(2),
        RedisDurability::Always,
    )
    .await
    .unwrap();
    let now = system_now();
    let over = Campaign {
        id: CampaignId::generate(),
        title: "last season".into(),
        currency: "CNY".into(),
        rounds: vec![Round {
            number: 0,
            starts_at: now - 3 * 3_600_000,
            ends_at: now - 2 * 3_600_000,
        }],
        items: (0..2)
            .map(|number| Item {
                number,
                sku: format!("OLD-{number}"),
                title: "old".into(),
                price_cents: 100,
                original_price_cents: 200,
                stock_by_round: vec![1],
                per_user_limit: 1,
            })
            .collect(),
        limits: CampaignLimits {
            per_round: 1,
            total: None,
        },
        payment_timeout_secs: 60,
        require_purchase_token: false,
        remind_before_secs: None,
        created_at: now - 4 * 3_600_000,
        rounds_numbered: 1,
        items_numbered: 2,
    };
    store.create_campaign(&over).await.unwrap();
    let unreadable = SaleKeys::new(&over.sales()[0].id).sale();
    let _: () = redis::cmd("HSET")
        .arg(&unreadable)
        .arg("price_cents")
        .arg("not a number")
        .query(&mut server.connection())
        .unwrap();
    let live = create(&app, campaign_body()).await;
    let listed = app.public_json("/api/v1/campaigns").await;
    let ids: Vec<&Value> = listed["campaigns"]
        .as_array()
        .unwrap_or_else(|| panic!("the list answered {listed}"))
        .iter()
        .map(|campaign| &campaign["id"])
        .collect();
    assert_eq!(ids, [&live["id"]], "{listed}");
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
    assert_eq!(cancelled["version"], 2, "one change of the campaign");
    for round in cancelled["rounds"].as_array().unwrap() {
        assert_eq!(round["status"], "ended", "{round}");
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

async fn patch(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.admin(
        Method::PATCH,
        &format!("/admin/v1/campaigns/{id}"),
        Some(body),
    )
    .await
}

/// PATCHes the campaign and expects 200: the campaign after the change.
async fn changed(app: &TestApp, id: &str, body: Value) -> Value {
    let response = patch(app, id, body).await;
    let status = response.status();
    let campaign: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{campaign}");
    campaign
}

/// PATCHes the campaign and expects an error: its status, code and message.
async fn refused(app: &TestApp, id: &str, body: Value) -> (StatusCode, String, String) {
    let response = patch(app, id, body).await;
    let status = response.status();
    let error: Value = response.json().await.unwrap();
    let text = |key: &str| error["error"][key].as_str().unwrap_or_default().to_owned();
    (status, text("code"), text("message"))
}

fn sale_id(campaign: &Value, round: usize, item: usize) -> String {
    campaign["rounds"][round]["items"][item]["sale_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Goal: before its first round starts, a campaign changes in every way:
/// its terms and limits, items and rounds added (new sales) and removed
/// (their sales cancelled); a change from an old read and a bad change are
/// refused and change nothing. Method: PATCH an upcoming campaign, then
/// read its sales through the sales' routes.
async fn an_upcoming_campaign_changes_in_every_way(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let mut body = campaign_body();
    body["rounds"][0]["starts_at"] = json!(rfc3339_in(Duration::from_secs(600), false));
    let campaign = create(&app, body).await;
    let id = campaign["id"].as_str().unwrap();
    let removed = [sale_id(&campaign, 0, 2), sale_id(&campaign, 1, 0)];
    let after = changed(
        &app,
        id,
        json!({
            "version": 1,
            "title": "11.11 seckill, more",
            "per_user_limit_per_round": 2,
            "remove_items": [2],
            "remove_rounds": [1],
            "items": [{"number": 0, "price_cents": 890}],
            "add_items": [{"sku": "D", "title": "Item D", "price_cents": 500,
                           "original_price_cents": 900, "stock_per_round": 7}],
            "add_rounds": [{"starts_at": rfc3339_in(Duration::from_secs(14_400), false),
                            "ends_at": rfc3339_in(Duration::from_secs(18_000), false),
                            "stock_by_item": [1, 2]}],
        }),
    )
    .await;
    assert_eq!(after["version"], 2);
    assert_eq!(after["title"], "11.11 seckill, more");
    assert_eq!(after["per_user_limit_per_round"], 2);
    let rounds: Vec<&Value> = after["rounds"].as_array().unwrap().iter().collect();
    assert_eq!(
        rounds
            .iter()
            .map(|r| r["number"].as_u64())
            .collect::<Vec<_>>(),
        vec![Some(0), Some(2)]
    );
    let skus: Vec<&str> = rounds[1]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, vec!["A", "B", "D"]);
    assert_eq!(rounds[0]["items"][2]["stock_total"], 7, "D in round 0");
    assert_eq!(
        rounds[1]["items"][1]["stock_total"], 2,
        "B in the new round"
    );
    assert_eq!(app.sale(&sale_id(&after, 0, 0)).await["price_cents"], 890);
    assert_eq!(app.sale(&sale_id(&after, 1, 2)).await["stock_total"], 7);
    for sale in &removed {
        assert_eq!(app.sale(sale).await["status"], "cancelled", "{sale}");
    }

    let stale = refused(&app, id, json!({"version": 1, "title": "again"})).await;
    assert_eq!(
        (stale.0, stale.1.as_str()),
        (StatusCode::CONFLICT, "conflict")
    );
    assert!(stale.2.contains("version 2"), "{}", stale.2);
    // A change keeps a campaign within 1 to 24 rounds and 1 to 50 items
    // (it holds 2 and 3 now).
    let more_items: Vec<Value> = (0..48)
        .map(|n| {
            json!({"sku": format!("X{n}"), "title": "X", "price_cents": 1,
                   "original_price_cents": 1, "stock_per_round": 1})
        })
        .collect();
    let more_rounds: Vec<Value> = (0..23u64)
        .map(|n| {
            json!({"starts_at": rfc3339_in(Duration::from_secs(20_000 + n * 100), false),
                   "ends_at": rfc3339_in(Duration::from_secs(20_050 + n * 100), false)})
        })
        .collect();
    let overlapping = json!({"rounds": [{"number": 2,
        "starts_at": rfc3339_in(Duration::from_secs(700), false),
        "ends_at": rfc3339_in(Duration::from_secs(20_000), false)}]});
    for (bad, field) in [
        (overlapping, "rounds"),
        (json!({"remove_items": [9]}), "remove_items"),
        (
            json!({"items": [{"number": 0, "stock_by_round": [1]}]}),
            "stock_by_round",
        ),
        (
            json!({"items": [{"number": 0, "original_price_cents": 1}]}),
            "original_price_cents",
        ),
        (json!({"colour": "red"}), "colour"),
        (json!({"title": " "}), "title"),
        (json!({"title": "x".repeat(201)}), "title"),
        (json!({"rounds": [{"number": "x"}]}), "number"),
        (json!({"remove_items": [0, 1, 3]}), "1 to 50 items"),
        (json!({"remove_rounds": [0, 2]}), "1 to 24 rounds"),
        (json!({"add_items": more_items}), "1 to 50 items"),
        (json!({"add_rounds": more_rounds}), "1 to 24 rounds"),
    ] {
        let (status, code, message) = refused(&app, id, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
        assert_eq!(code, "invalid_request");
        assert!(message.contains(field), "{message}");
    }
    let malformed = app
        .client
        .patch(app.url(&format!("/admin/v1/campaigns/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(malformed).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
    for missing in ["c_missing1", "nope"] {
        let response = patch(&app, missing, json!({"title": "x"})).await;
        assert_eq!(
            error_code(response).await,
            (StatusCode::NOT_FOUND, "not_found".to_owned())
        );
    }
    let unchanged = app
        .admin(Method::GET, &format!("/admin/v1/campaigns/{id}"), None)
        .await;
    let unchanged: Value = unchanged.json().await.unwrap();
    assert_eq!(unchanged["version"], 2, "no refused change was applied");
}

/// Goal: once a campaign has started, an item is topped up (it sells
/// more, never below what is sold), a round not started moves, a live
/// round ends now (its sales refuse orders with `ended`) and
/// `remind_before_secs` changes; anything else is 409 `conflict` naming
/// why, and a campaign's sale changes only through its campaign. Method:
/// drive a live campaign through the admin and order routes.
async fn a_live_campaign_tops_up_moves_and_ends_rounds(backend: Backend) {
    // Reminders need a webhook to go to (nothing listens there: none is
    // due in this test).
    let Harness { app, redis: _redis } = Harness::start_with(backend, |config| {
        config.order_webhook_url = Some("http://127.0.0.1:9/hook".into());
        config.order_webhook_secret = Some("whsec-test".into());
    })
    .await;
    let campaign = create(&app, campaign_body()).await;
    let id = campaign["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for (bad, why) in [
        (json!({"title": "renamed"}), "title"),
        (
            json!({"per_user_limit_total": null}),
            "per_user_limit_total",
        ),
        (
            json!({"items": [{"number": 0, "price_cents": 1}]}),
            "items' terms",
        ),
        (json!({"remove_rounds": [1]}), "rounds removed"),
        (
            json!({"add_items": [{"sku": "D", "title": "D", "price_cents": 1,
                                  "original_price_cents": 1, "stock_per_round": 1}]}),
            "items added",
        ),
    ] {
        let (status, code, message) = refused(&app, id, bad).await;
        assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
        assert!(message.contains(why), "{message}");
        assert!(message.contains("has started"), "{message}");
    }
    // The refused additions wrote nothing a listing trips over (on Redis
    // their sales' ids were indexed first, and name no sale).
    let listed = app
        .admin(Method::GET, "/admin/v1/sales?limit=500", None)
        .await;
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(
        listed["sales"].as_array().map(Vec::len),
        Some(6),
        "{listed}"
    );
    let open = app.public_json("/api/v1/sales").await;
    assert!(open["sales"]
        .as_array()
        .unwrap()
        .iter()
        .all(|sale| sale["sku"] != "D"));
    let moved_live = json!({"rounds": [{"number": 0,
        "starts_at": rfc3339_in(Duration::from_secs(60), false)}]});
    let (status, _, message) = refused(&app, id, moved_live).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message.contains("round 0, item 0"), "{message}");

    let item_c = sale_id(&campaign, 0, 2);
    app.buy(&item_c, "ann").await;
    app.buy(&item_c, "bob").await;
    let sold_out = app.order(&item_c, "cat", None, None).await;
    let body: Value = sold_out.json().await.unwrap();
    assert_eq!(body["error"]["code"], "sold_out", "{body}");

    let below = refused(
        &app,
        id,
        json!({"items": [{"number": 2, "stock_by_round": [1, 2]}]}),
    )
    .await;
    assert_eq!(below.0, StatusCode::CONFLICT);
    assert!(below.2.contains("below the 2 units"), "{}", below.2);
    let topped = changed(
        &app,
        id,
        json!({"items": [{"number": 2, "stock_per_round": 4}]}),
    )
    .await;
    let item = &topped["rounds"][0]["items"][2];
    assert_eq!(
        (item["stock_total"].as_i64(), item["remaining"].as_i64()),
        (Some(4), Some(2))
    );
    assert_eq!(topped["rounds"][1]["items"][2]["stock_total"], 4);
    app.buy(&item_c, "cat").await;

    let (starts, ends) = (
        rfc3339_in(Duration::from_secs(9_000), false),
        rfc3339_in(Duration::from_secs(12_600), false),
    );
    let moved = changed(
        &app,
        id,
        json!({"rounds": [{"number": 1, "starts_at": starts, "ends_at": ends}]}),
    )
    .await;
    let moved_sale = app.sale(&sale_id(&moved, 1, 0)).await;
    assert_eq!(moved_sale["starts_at"], moved["rounds"][1]["starts_at"]);
    assert_eq!(moved["rounds"][1]["status"], "upcoming");
    let overlap = json!({"rounds": [{"number": 1,
        "starts_at": rfc3339_in(Duration::from_secs(1_800), false)}]});
    assert_eq!(
        refused(&app, id, overlap).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let ended = changed(
        &app,
        id,
        json!({"rounds": [{"number": 0, "status": "ended"}]}),
    )
    .await;
    assert_eq!(ended["rounds"][0]["status"], "ended");
    assert_eq!(ended["rounds"][1]["status"], "upcoming");
    let late = app
        .order(&sale_id(&campaign, 0, 0), "dan", None, None)
        .await;
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ended", "{body}");
    let reminded = changed(&app, id, json!({"remind_before_secs": 300})).await;
    assert_eq!(reminded["remind_before_secs"], 300);
    assert_eq!(reminded["version"], 5);

    let direct = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/sales/{}", sale_id(&campaign, 1, 0)),
            Some(json!({"stock_total": 50})),
        )
        .await;
    let (status, code) = error_code(direct).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "conflict"));
    let direct = app
        .admin(
            Method::DELETE,
            &format!("/admin/v1/sales/{}", sale_id(&campaign, 1, 0)),
            None,
        )
        .await;
    assert_eq!(error_code(direct).await.0, StatusCode::CONFLICT);
}

/// Goal: the admin list of campaigns pages like the other admin lists:
/// each campaign once, newest first, a full last page naming no next one,
/// bounded limits and checked cursors. Method: schedule 5 campaigns, walk
/// pages of 2, ask for a page of 5, then send bad paging.
async fn the_admin_list_pages_each_campaign_once(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(
            create(&app, campaign_body()).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut path = "/admin/v1/campaigns?limit=2".to_owned();
    loop {
        let page = app.admin(Method::GET, &path, None).await;
        assert_eq!(page.status(), StatusCode::OK);
        let page: Value = page.json().await.unwrap();
        let campaigns = page["campaigns"].as_array().unwrap();
        assert!(campaigns.len() <= 2, "{page}");
        seen.extend(
            campaigns
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/admin/v1/campaigns?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let whole = app.admin(Method::GET, "/admin/v1/campaigns", None).await;
    let whole: Value = whole.json().await.unwrap();
    let listed: Vec<String> = whole["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, listed, "pages in the order of one whole page");
    assert_eq!(whole["next_cursor"], Value::Null);
    let exact = app
        .admin(Method::GET, "/admin/v1/campaigns?limit=5", None)
        .await;
    assert_full_last_page(exact, "campaigns", 5).await;
    seen.sort();
    made.sort();
    assert_eq!(seen, made, "each campaign once");
    for bad in [
        "limit=0",
        "limit=501",
        "cursor=nodot",
        "cursor=12.s_notacampaign",
    ] {
        let response = app
            .admin(Method::GET, &format!("/admin/v1/campaigns?{bad}"), None)
            .await;
        assert_eq!(
            error_code(response).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request".to_owned()
            ),
            "{bad}"
        );
    }
}

/// Goal: a campaign's sales and orders page like any other: their ids hold
/// a `-` (the campaign, round and item), and a cursor naming one is taken
/// back. Method: an ordinary sale and a campaign of six sales; the admin
/// list of sales walked a sale a page; a shopper who bought in both walks
/// her orders an order a page (the campaign's, the newest, first); a page
/// holding all the sales, or all her orders, names no next page.
async fn a_campaigns_sales_and_orders_page_like_any_other(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let plain = app.create_sale(live_sale(5, 1)).await;
    let older = app.buy(&plain, "ann").await;
    let campaign = create(&app, campaign_body()).await;
    let newer = app.buy(&sale_id(&campaign, 0, 0), "ann").await;
    let bobs = app.buy(&sale_id(&campaign, 0, 0), "bob").await;

    let id = |item: Value| item["id"].as_str().unwrap().to_owned();
    let mut sales: Vec<String> = walk("/admin/v1/sales?limit=1", "sales", async |path| {
        app.admin(Method::GET, path, None).await
    })
    .await
    .into_iter()
    .map(id)
    .collect();
    let mut made: Vec<String> = (0..2)
        .flat_map(|round| (0..3).map(move |item| (round, item)))
        .map(|(round, item)| sale_id(&campaign, round, item))
        .chain([plain])
        .collect();
    assert!(made.iter().any(|id| id.contains('-')), "{made:?}");
    sales.sort();
    made.sort();
    assert_eq!(sales, made, "each sale once");
    let whole = format!("/admin/v1/sales?limit={}", made.len());
    let page = app.admin(Method::GET, &whole, None).await;
    assert_full_last_page(page, "sales", made.len()).await;

    let orders: Vec<String> = walk("/api/v1/orders?limit=1", "orders", async |path| {
        app.shopper_get("ann", path).await
    })
    .await
    .into_iter()
    .map(id)
    .collect();
    assert_eq!(orders, [id(newer.clone()), id(older)]);
    let page = app.shopper_get("ann", "/api/v1/orders?limit=2").await;
    assert_full_last_page(page, "orders", 2).await;

    let export = format!(
        "/admin/v1/sales/{}/orders?limit=1",
        sale_id(&campaign, 0, 0)
    );
    let mut exported: Vec<String> = walk(&export, "orders", async |path| {
        app.admin(Method::GET, path, None).await
    })
    .await
    .into_iter()
    .map(id)
    .collect();
    exported.sort();
    let mut bought = vec![id(newer), id(bobs)];
    bought.sort();
    assert_eq!(exported, bought, "the export: each order once");
}

/// A page holding a listing's last `count` items (`items`: the listing's
/// field) names no next page: the console's *More* would fetch an empty
/// one.
async fn assert_full_last_page(page: reqwest::Response, items: &str, count: usize) {
    let page: Value = page.json().await.unwrap();
    assert_eq!(page[items].as_array().unwrap().len(), count, "{page}");
    assert_eq!(page["next_cursor"], Value::Null, "a full last page: {page}");
}

/// Every item (`items`: the listing's field) of a listing, walked a page
/// at a time from `first` (its path with `?limit=`), each page fetched by
/// `fetch`.
async fn walk(
    first: &str,
    items: &str,
    fetch: impl AsyncFn(&str) -> reqwest::Response,
) -> Vec<Value> {
    let mut listed = Vec::new();
    let mut path = first.to_owned();
    loop {
        let page = fetch(&path).await;
        let status = page.status();
        let page: Value = page.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        listed.extend(page[items].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            // As a client sends it: percent-encoded.
            Some(cursor) => {
                let cursor = utf8_percent_encode(cursor, NON_ALPHANUMERIC);
                path = format!("{first}&cursor={cursor}");
            }
            None => return listed,
        }
    }
}

on_both_stores!(
    a_campaigns_sales_and_orders_page_like_any_other,
    a_campaign_is_sales_a_page_and_one_limit,
    bad_campaigns_are_refused,
    the_page_is_served_from_memory,
    only_an_upcoming_campaign_is_cancelled,
    an_upcoming_campaign_changes_in_every_way,
    a_live_campaign_tops_up_moves_and_ends_rounds,
    the_admin_list_pages_each_campaign_once,
);
