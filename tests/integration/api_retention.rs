//! Goal: a season of sales does not make reads slower or Redis fuller.
//! Method: with many closed sales in the store, the public list and a
//! shopper's orders read only the open sales (Redis command counts), the
//! admin list pages through every sale once; a settled sale is exported
//! page by page, then deleted after `FLASHSALE_RETENTION_SECS`: its keys
//! gone, Redis's memory back, listings without it, a live sale untouched.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use flashsale::config::RedisDurability;
use flashsale::domain::{system_now, Sale, SaleId};
use flashsale::store::keys::{SaleKeys, OPEN_SALE_INDEX, SALE_INDEX};
use flashsale::store::{RedisStore, RedisTarget, Store};

use crate::api_campaigns::create;
use crate::conformance::sale;
use crate::support::{live_sale, test_config, Backend, Harness, RedisServer, Servers, TestApp};

/// Sales whose payment windows closed long ago, written straight to the
/// store and settled as the order service settles them: history.
async fn closed_sales(redis: &RedisServer, count: usize) {
    let store = RedisStore::connect(
        &RedisTarget::Standalone(redis.url()),
        Duration::from_secs(2),
        RedisDurability::Warn,
    )
    .await
    .unwrap();
    for _ in 0..count {
        let old = Sale {
            starts_at: system_now() - 7_200_000,
            ends_at: system_now() - 3_600_000,
            payment_timeout_secs: 600,
            ..sale(10, 1, 0)
        };
        store.create_sale(&old).await.unwrap();
        store.settle_sale(&old.id).await.unwrap();
    }
}

/// Commands a list read runs in Redis (scripts' own commands included).
fn reads(redis: &RedisServer) -> u64 {
    redis.command_calls(&["evalsha", "eval", "hget", "zrange", "hgetall"])
}

/// Every page of an admin listing, `limit` at a time.
/// Every page of an admin listing, `limit` at a time (a hint, for the
/// export: a page holds about that many).
async fn every_admin_page(app: &TestApp, path: &str, field: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("{path}?limit={limit}&cursor={cursor}"),
            None => format!("{path}?limit={limit}"),
        };
        let response = app.admin(Method::GET, &query, None).await;
        let status = response.status();
        let page: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        let listed = page[field].as_array().unwrap();
        if field == "sales" {
            assert!(listed.len() <= limit);
        }
        items.extend(listed.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn listings_read_the_open_sales_not_the_history() {
    // Quiet in the background while Redis's command counts are read: no
    // actor refresh, no order service pass.
    let harness = Harness::start_with(Backend::Redis, |config| {
        config.sale_poll_cache_ms = 60_000;
        config.sale_refresh_ms = 60_000;
        config.order_sweep_ms = 60_000;
    })
    .await;
    let (app, redis) = (&harness.app, harness.redis.standalone().unwrap());
    closed_sales(redis, 60).await;
    let live = app.create_sale(live_sale(10, 2)).await;
    app.buy(&live, "ivy").await;

    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.connection())
        .unwrap();
    let listed = app.public_json("/api/v1/sales").await;
    let ids: Vec<&str> = listed["sales"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sale| sale["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![live.as_str()]);
    assert_eq!(
        redis.script_calls(),
        2,
        "one index read and one view per open sale"
    );
    let first = reads(redis);
    for _ in 0..50 {
        app.public_json("/api/v1/sales").await;
    }
    assert_eq!(reads(redis), first, "served from this node's memory");

    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.connection())
        .unwrap();
    let mine = app.shopper_get("ivy", "/api/v1/orders").await;
    assert_eq!(mine.status(), StatusCode::OK);
    let mine: Value = mine.json().await.unwrap();
    assert_eq!(mine["orders"].as_array().unwrap().len(), 1);
    assert_eq!(mine["next_cursor"], Value::Null);
    let order_reads = reads(redis);
    assert!(
        order_reads <= 12,
        "the shopper's sales and the open ones, not 60 closed ones: {order_reads} commands"
    );

    let every = every_admin_page(app, "/admin/v1/sales", "sales", 7).await;
    let ids: HashSet<&str> = every
        .iter()
        .map(|sale| sale["id"].as_str().unwrap())
        .collect();
    assert_eq!((every.len(), ids.len()), (61, 61), "every sale once");
    assert_eq!(every[0]["id"], live.as_str(), "newest first");
}

#[tokio::test]
async fn a_shoppers_orders_come_in_pages() {
    let Harness { app, redis: _redis } = Harness::start(Backend::Embedded).await;
    let sales = [
        app.create_sale(live_sale(10, 3)).await,
        app.create_sale(live_sale(10, 3)).await,
    ];
    let mut made = Vec::new();
    for sale in &sales {
        for _ in 0..3 {
            made.push(
                app.buy(sale, "pam").await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut listed = Vec::new();
    let mut path = "/api/v1/orders?limit=4".to_owned();
    loop {
        let page: Value = app.shopper_get("pam", &path).await.json().await.unwrap();
        listed.extend(
            page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|order| order["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/orders?limit=4&cursor={cursor}"),
            None => break,
        }
    }
    made.reverse();
    assert_eq!(listed, made, "newest first, each once");
    let bad = app
        .shopper_get("pam", "/api/v1/orders?cursor=12.s_nope")
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// The bytes every key of the keyspace holds, counted exactly (`MEMORY
/// USAGE ... SAMPLES 0`), and how many keys. `used_memory` also counts
/// Redis's own buffers and caches, which grow with a workload's largest
/// commands and stay (a `FLUSHALL` does not give them back either). The
/// engine runs meanwhile: a key `KEYS` listed that is gone by its `MEMORY
/// USAGE` (a lease given back, say) holds nothing and is not counted.
fn keyspace_bytes(redis: &RedisServer) -> (usize, i64) {
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let held: Vec<i64> = keys
        .iter()
        .filter_map(|key| {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query::<Option<i64>>(&mut conn)
                .unwrap()
        })
        .collect();
    (held.len(), held.iter().sum())
}

const ORDERS: usize = 1_000;

/// An engine whose order service forgets a sale a second after its
/// payment window (of a second at least) closed, sweeping every 50 ms.
async fn retaining_for_a_second(backend: Backend) -> Harness {
    Harness::start_with(backend, |config| {
        config.payment_timeout_min_secs = 1;
        config.retention_secs = 1;
        config.order_sweep_ms = 50;
    })
    .await
}

async fn a_settled_sale_is_exported_then_forgotten(backend: Backend) {
    let harness = retaining_for_a_second(backend).await;
    let app = Arc::new(harness.app);
    let redis = harness.redis.standalone();
    let live = app.create_sale(live_sale(100, 5)).await;
    app.buy(&live, "lou").await;
    // Steady: the order service took lou's order (and listed the sale
    // among lou's).
    app.sale_when(&live, Duration::from_secs(10), |view| {
        view["stats"]["queued"] == 1
    })
    .await;
    let baseline = redis.map(keyspace_bytes);

    let mut body = live_sale(i64::try_from(ORDERS).unwrap(), 1);
    body["payment_timeout_secs"] = 1.into();
    let settling = app.create_sale(body).await;
    let orders: Vec<Value> = stream::iter(0..ORDERS)
        .map(|i| {
            let (app, sale) = (Arc::clone(&app), settling.clone());
            async move { app.buy(&sale, &format!("shopper-{i}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for order in &orders[..ORDERS / 2] {
        let shopper = order["user_id"].as_str().unwrap();
        let id = order["id"].as_str().unwrap();
        let paid = app
            .shopper_post(shopper, &format!("/api/v1/orders/{id}/pay"))
            .await;
        assert_eq!(paid.status(), StatusCode::OK);
    }
    let peak = redis.map(keyspace_bytes);

    // Exported while it settles: every order once.
    let exported = every_admin_page(
        &app,
        &format!("/admin/v1/sales/{settling}/orders"),
        "orders",
        100,
    )
    .await;
    let ids: HashSet<&str> = exported
        .iter()
        .map(|order| order["id"].as_str().unwrap())
        .collect();
    assert_eq!((exported.len(), ids.len()), (ORDERS, ORDERS));
    // A cursor the export did not give is refused, on either store (the
    // Redis store's cursors are numbers, the embedded store's order ids).
    for cursor in ["abc", "-1", "99999999999999999999", "o_nope"] {
        let path = format!("/admin/v1/sales/{settling}/orders?cursor={cursor}");
        let refused = app.admin(Method::GET, &path, None).await;
        assert_eq!(
            crate::support::error_code(refused).await,
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request".into()),
            "cursor {cursor}"
        );
    }

    // Ended now: the unpaid half expires within a second, the sale is
    // deleted a second after.
    let ended = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/sales/{settling}"),
            Some(serde_json::json!({"status": "ended"})),
        )
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = app
            .admin(Method::GET, &format!("/admin/v1/sales/{settling}"), None)
            .await;
        // Done once it is off every index too (on Redis the shoppers' go
        // after the records).
        let shoppers_listed = redis.is_some_and(|redis| {
            let left: Vec<String> = redis::cmd("KEYS")
                .arg("fs:shopper_sales:shopper-*")
                .query(&mut redis.connection())
                .unwrap();
            !left.is_empty()
        });
        if response.status() == StatusCode::NOT_FOUND && !shoppers_listed {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let audit = app.audit(&settling).await;
            panic!("never forgotten: {audit}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = app
        .admin(
            Method::GET,
            &format!("/admin/v1/sales/{settling}/orders"),
            None,
        )
        .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let every = every_admin_page(&app, "/admin/v1/sales", "sales", 50).await;
    assert_eq!(every.len(), 1, "only the live sale is listed");
    let theirs: Value = app
        .shopper_get("shopper-0", "/api/v1/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["orders"], serde_json::json!([]));

    // The engines of the tests share one process's metrics: at least this
    // one.
    let metrics = app.metrics().await;
    let forgotten: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("flashsale_sales_forgotten_total "))
        .map_or(0, |count| count.trim().parse().unwrap());
    assert!(forgotten >= 1, "{metrics}");

    let kept = app.sale(&live).await;
    assert_eq!(kept["stats"]["reserved"], 1, "{kept}");
    app.assert_audit_clean(&live).await;
    let lous: Value = app
        .shopper_get("lou", "/api/v1/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lous["orders"].as_array().unwrap().len(), 1);

    if let (Some(redis), Some(baseline), Some(peak)) = (redis, baseline, peak) {
        let id = SaleId::parse(&settling).unwrap();
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{{{id}}}*"))
            .query(&mut redis.connection())
            .unwrap();
        assert_eq!(left, Vec::<String>::new(), "every key of the sale gone");
        let shoppers: Vec<String> = redis::cmd("KEYS")
            .arg("fs:shopper_sales:shopper-*")
            .query(&mut redis.connection())
            .unwrap();
        assert_eq!(shoppers, Vec::<String>::new(), "off every shopper's sales");
        let after = keyspace_bytes(redis);
        assert!(
            peak.1 - baseline.1 > 300_000,
            "the sale took memory: {baseline:?} -> {peak:?}"
        );
        assert_eq!(after, baseline, "the keyspace is back (keys, bytes)");
    }
}

crate::on_both_stores!(a_settled_sale_is_exported_then_forgotten);

/// Goal: a sale whose forgetting stopped halfway (its records deleted by
/// `forget_sale.lua`; its shoppers hash, their indexes and its id left, as
/// a crash before the engine's next steps leaves them) is finished by the
/// next engine to start. Method: a sale settled by one engine with a long
/// retention, its keys but the shoppers hash deleted as the script does,
/// then an engine with a second of retention on the same Redis.
#[tokio::test]
async fn a_sale_half_forgotten_before_a_crash_is_finished_at_the_next_start() {
    let servers = Servers::start(Backend::Redis);
    let redis = servers.standalone().unwrap();
    let node = |retention_secs| {
        let mut config = test_config();
        servers.configure(&mut config);
        config.payment_timeout_min_secs = 1;
        config.retention_secs = retention_secs;
        config.order_sweep_ms = 50;
        TestApp::spawn_with(config)
    };
    let first = node(3600).await;
    let mut body = live_sale(10, 1);
    body["payment_timeout_secs"] = 1.into();
    let sale = first.create_sale(body).await;
    for shopper in ["half-0", "half-1"] {
        first.buy(&sale, shopper).await;
    }
    let ended = first
        .admin(
            Method::PATCH,
            &format!("/admin/v1/sales/{sale}"),
            Some(serde_json::json!({"status": "ended"})),
        )
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    let id = SaleId::parse(&sale).unwrap();
    let keys = SaleKeys::new(&id);
    let score = |index: &str| -> Option<f64> {
        redis::cmd("ZSCORE")
            .arg(index)
            .arg(&sale)
            .query(&mut redis.connection())
            .unwrap()
    };
    let indexed_shoppers = || -> Vec<String> {
        redis::cmd("KEYS")
            .arg("fs:shopper_sales:half-*")
            .query(&mut redis.connection())
            .unwrap()
    };
    // Settled: off the open sales, listed in its shoppers' own indexes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while score(OPEN_SALE_INDEX).is_some() || indexed_shoppers().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop().await;
    for key in keys.all() {
        if key != keys.shoppers() {
            let _: () = redis::cmd("UNLINK")
                .arg(&key)
                .query(&mut redis.connection())
                .unwrap();
        }
    }
    assert!(score(SALE_INDEX).is_some(), "the id is left");

    let second = node(1).await;
    let shoppers_left = || -> bool {
        redis::cmd("EXISTS")
            .arg(keys.shoppers())
            .query(&mut redis.connection())
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while shoppers_left() || score(SALE_INDEX).is_some() || !indexed_shoppers().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never finished: shoppers hash {}, indexed {:?}, listed {:?}",
            shoppers_left(),
            score(SALE_INDEX),
            indexed_shoppers()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await;
}

/// Goal: a season of campaigns does not fill Redis either: once retention
/// has forgotten every sale of a campaign, the order service has the
/// campaign's own records forgotten too (`GET /admin/v1/campaigns/{id}`
/// 404, off the list, on Redis no key with its hash tag left), and the
/// listings keep working while its sales go one by one. Method: a campaign
/// whose one round ends in a second, with a paid order; poll until it is
/// gone.
async fn a_campaign_is_forgotten_after_its_sales(backend: Backend) {
    let Harness { app, redis } = retaining_for_a_second(backend).await;
    let item = |sku: &str| {
        serde_json::json!({"sku": sku, "title": sku, "price_cents": 100,
                           "original_price_cents": 200, "stock_per_round": 5})
    };
    let body = serde_json::json!({
        "title": "flash",
        "rounds": [{"starts_at": crate::support::rfc3339_in(Duration::from_secs(1), true),
                    "ends_at": crate::support::rfc3339_in(Duration::from_secs(1), false)}],
        "items": [item("A"), item("B")],
        "per_user_limit_per_round": 1,
        "payment_timeout_secs": 1,
    });
    let campaign = create(&app, body).await;
    let id = campaign["id"].as_str().unwrap().to_owned();
    let sale = campaign["rounds"][0]["items"][0]["sale_id"]
        .as_str()
        .unwrap();
    let order = app.buy(sale, "cam").await;
    app.order_step("cam", &order, "pay").await;

    let path = format!("/admin/v1/campaigns/{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = app.admin(Method::GET, "/admin/v1/campaigns", None).await;
        assert_eq!(listed.status(), StatusCode::OK, "the list works throughout");
        let listed: Value = listed.json().await.unwrap();
        let still_listed = listed.to_string().contains(&id);
        let keys: Vec<String> = redis.standalone().map_or_else(Vec::new, |redis| {
            redis::cmd("KEYS")
                .arg(format!("*{{{id}}}*"))
                .query(&mut redis.connection())
                .unwrap()
        });
        let status = app.admin(Method::GET, &path, None).await.status();
        if !still_listed && keys.is_empty() && status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the campaign is still there: listed {still_listed}, {status}, keys {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

crate::on_both_stores!(a_campaign_is_forgotten_after_its_sales);

/// Goal: a campaign's sales go together, once retention has passed since
/// its last round's payment window closed: an ended round's sales are not
/// forgotten while a later round is to come, so the campaign stays whole
/// (its page, the merchant's view and changes) however far apart its
/// rounds are. Method: retention of 1 s, a round ending in a second with
/// an order (as `a_campaign_is_forgotten_after_its_sales` makes one) and
/// the next starting 6 s later; past the first round's own retention, the
/// campaign and its first round's sale are still there, and once the
/// second round is live the merchant stops it.
async fn a_campaign_keeps_its_ended_rounds_while_a_later_one_is_to_come(backend: Backend) {
    let Harness { app, redis: _redis } = retaining_for_a_second(backend).await;
    let in_secs = |secs: u64| crate::support::rfc3339_in(Duration::from_secs(secs), false);
    let body = serde_json::json!({
        "title": "two rounds apart",
        "rounds": [
            {"starts_at": crate::support::rfc3339_in(Duration::from_secs(1), true),
             "ends_at": in_secs(1)},
            {"starts_at": in_secs(7), "ends_at": in_secs(3600)},
        ],
        "items": [{"sku": "A", "title": "A", "price_cents": 100,
                   "original_price_cents": 200, "stock_per_round": 5}],
        "per_user_limit_per_round": 1,
        "payment_timeout_secs": 1,
    });
    let campaign = create(&app, body).await;
    let id = campaign["id"].as_str().unwrap().to_owned();
    let first = campaign["rounds"][0]["items"][0]["sale_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.buy(&first, "early").await;

    // The first round's own retention ends 3 s from now (its end, its
    // payment window, the retention); the second round starts at 7 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sale = app
        .admin(Method::GET, &format!("/admin/v1/sales/{first}"), None)
        .await;
    assert_eq!(
        sale.status(),
        StatusCode::OK,
        "the ended round's sale is kept"
    );
    let page = app
        .shopper_get("early", &format!("/api/v1/campaigns/{id}"))
        .await;
    assert_eq!(page.status(), StatusCode::OK, "the seckill page");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let path = format!("/admin/v1/campaigns/{id}");
    let stopped = app
        .admin(
            Method::PATCH,
            &path,
            Some(serde_json::json!({"rounds": [{"number": 1, "status": "ended"}]})),
        )
        .await;
    assert_eq!(
        stopped.status(),
        StatusCode::OK,
        "the live round is stopped"
    );
    let stopped: Value = stopped.json().await.unwrap();
    assert_eq!(stopped["rounds"][1]["status"], "ended", "{stopped}");
    app.stop().await;
}

crate::on_both_stores!(a_campaign_keeps_its_ended_rounds_while_a_later_one_is_to_come);
