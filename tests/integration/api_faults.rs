//! Faults and lifecycle: Redis outages, an unsafe Redis, idle actors.
//!
//! Goal: when Redis goes away the engine answers 503 `unavailable` with
//! `Retry-After` (never a 500 or a hang), reports not ready, and recovers
//! by itself when Redis is back, with every acknowledged order still there.
//! Method: kill the test's redis-server mid-sale, probe, restart it, probe.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use std::sync::Arc;

use flashsale::clock::ManualClock;
use flashsale::config::Config;
use flashsale::config::RedisDurability;
use flashsale::domain::OrderAsk;
use flashsale::domain::{
    system_now, Quantity, Rejection, Sale, SaleId, SaleState, ShopperId, StockReturn,
};
use flashsale::inventory::{ActorSettings, Inventory, InventoryError};
use flashsale::store::{EmbeddedStore, RedisStore, RedisTarget, Store, StoreError};
use flashsale::Application;

use crate::support::{
    actor_settings, error_code, live_sale, test_config, RedisCluster, RedisServer, TestApp,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_503_and_recovers() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(Some(redis.url())).await;
    let sale = app.create_sale(live_sale(10, 1)).await;
    let before: Value = app.buy(&sale, "vic").await;

    redis.kill();
    let during = app.order(&sale, "wes", None, None).await;
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(during.headers()["retry-after"], "1");
    assert_eq!(error_code(during).await.1, "unavailable");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(
        error_code(ready).await,
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "the process itself is fine"
    );

    redis.restart();
    let mut recovered = None;
    for _ in 0..50 {
        let response = app.order(&sale, "wes", None, None).await;
        if response.status() == StatusCode::CREATED {
            recovered = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered.is_some(),
        "the engine recovers once Redis is back"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    let kept: Value = app
        .shopper_get(
            "vic",
            &format!("/api/v1/orders/{}", before["id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        kept, before,
        "the order acknowledged before the outage survives"
    );
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["reserved"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_on_a_redis_that_may_evict() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut conn)
        .unwrap();
    let refused = refusal(redis.url(), false).await;
    assert!(refused.contains("noeviction"), "{refused}");
}

/// Why the engine refuses to start on the Redis at `redis_url` (with
/// `cluster`, a Cluster's comma-separated node URLs).
async fn refusal(redis_url: String, cluster: bool) -> String {
    let mut config = test_config();
    config.redis_url = Some(redis_url);
    config.redis_cluster = cluster;
    let refused = Application::build(config)
        .await
        .err()
        .expect("start refused");
    format!("{refused:#}")
}

/// By default (`FLASHSALE_REDIS_DURABILITY=always`) the engine refuses a
/// Redis that could lose an acknowledged write in a crash: AOF off, or
/// fsynced only once a second; the message says how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_on_a_redis_that_may_lose_acknowledged_writes() {
    let redis = RedisServer::start();
    for (setting, value) in [("appendfsync", "everysec"), ("appendonly", "no")] {
        redis.config_set(setting, value);
        let refused = refusal(redis.url(), false).await;
        // What was found, and both ways out.
        let named = format!("{setting} {value}");
        for words in [
            &named,
            "appendfsync always",
            "FLASHSALE_REDIS_DURABILITY=warn",
        ] {
            assert!(refused.contains(words), "{refused}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_cluster_with_one_primary_fsyncing_every_second() {
    let refused = cluster_refusal("appendfsync", "everysec").await;
    assert!(refused.contains("appendfsync everysec"), "{refused}");
}

/// On Redis, payments default to WeChat Pay: without its keys the engine
/// refuses to start (and says how to fix it) rather than take no payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_wechatpay_without_its_keys() {
    let redis = RedisServer::start();
    let mut config = Config::for_tests();
    config.redis_url = Some(redis.url());
    let refused = Application::build(config)
        .await
        .err()
        .expect("start refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("FLASHSALE_WECHATPAY_PLATFORM_KEY")
            && message.contains("FLASHSALE_PAYMENTS=simulated"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_cluster_with_one_primary_that_may_evict() {
    let refused = cluster_refusal("maxmemory-policy", "volatile-lru").await;
    assert!(refused.contains("volatile-lru"), "{refused}");
}

/// Why the engine refuses to start on a Cluster whose last primary has
/// `setting` set to `value`.
async fn cluster_refusal(setting: &str, value: &str) -> String {
    let cluster = RedisCluster::start();
    let last = cluster.nodes().last().expect("nodes");
    last.config_set(setting, value);
    refusal(cluster.urls().join(","), true).await
}

/// Goal: a node hears other nodes' stock returns while the first Redis
/// Cluster node it was given is down: its subscription moves on to the
/// next node. Method: two stores on a 3-node Cluster; the listener is given
/// first a node that does not serve the channel's slot (announcements are
/// published there), which is then killed; the other store announces a
/// return until the listener's handler hears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_returns_are_heard_past_a_cluster_node_that_is_down() {
    let mut cluster = RedisCluster::start();
    let (_, bystander) = channel_nodes(&cluster);
    let announcer = cluster_store(cluster.urls()).await;
    let listener = cluster_store(first_of(&cluster, bystander)).await;
    cluster.kill_node(bystander);
    let (mut returns, watching) = listen(listener);
    announce_until_heard(&announcer, &mut returns, "past the node that is down").await;
    watching.abort();
}

/// Goal: a node that hangs with the subscription's connection open (no
/// disconnection ever comes) is passed by too. Method: as above, but the
/// listener's first node is frozen (SIGSTOP) once a return was heard
/// through it; the subscription's PING goes unanswered and it moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_returns_are_heard_past_a_cluster_node_that_hangs() {
    let cluster = RedisCluster::start();
    let (_, bystander) = channel_nodes(&cluster);
    let announcer = cluster_store(cluster.urls()).await;
    let listener = cluster_store(first_of(&cluster, bystander)).await;
    let (mut returns, watching) = listen(listener);
    announce_until_heard(&announcer, &mut returns, "through the first node").await;
    cluster.nodes()[bystander].freeze();
    announce_until_heard(&announcer, &mut returns, "past the node that hangs").await;
    watching.abort();
}

/// Goal: returns are announced while the node serving the channel's slot
/// (where a Cluster routes `PUBLISH`) is down or hangs: any other node
/// forwards them. Method: that node is killed, or frozen (SIGSTOP), after
/// both stores connected; the listener listens on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_returns_are_announced_past_the_channels_node_that_is_down() {
    announced_past_the_channels_node(|cluster, serving| cluster.kill_node(serving)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_returns_are_announced_past_the_channels_node_that_hangs() {
    announced_past_the_channels_node(|cluster, serving| cluster.nodes()[serving].freeze()).await;
}

async fn announced_past_the_channels_node(fault: impl FnOnce(&mut RedisCluster, usize)) {
    let mut cluster = RedisCluster::start();
    let (serving, bystander) = channel_nodes(&cluster);
    let announcer = cluster_store(cluster.urls()).await;
    let listener = cluster_store(first_of(&cluster, bystander)).await;
    let (mut returns, watching) = listen(listener);
    announce_until_heard(&announcer, &mut returns, "before the fault").await;
    fault(&mut cluster, serving);
    announce_until_heard(&announcer, &mut returns, "past the channel's node").await;
    watching.abort();
}

/// The node serving the stock-return channel's slot (the one that answers
/// a read of its name; the others answer MOVED), and another one.
fn channel_nodes(cluster: &RedisCluster) -> (usize, usize) {
    let serves_channel = |at: usize| {
        redis::cmd("GET")
            .arg("fs:stock_returns")
            .query::<Option<String>>(&mut cluster.nodes()[at].connection())
            .is_ok()
    };
    let serving = (0..3).find(|at| serves_channel(*at)).unwrap();
    (serving, (serving + 1) % 3)
}

/// The cluster's node URLs, node `at` first.
fn first_of(cluster: &RedisCluster, at: usize) -> Vec<String> {
    let mut urls = cluster.urls();
    urls.rotate_left(at);
    urls
}

async fn cluster_store(urls: Vec<String>) -> RedisStore {
    RedisStore::connect(
        &RedisTarget::Cluster(urls),
        Duration::from_millis(300),
        RedisDurability::Always,
    )
    .await
    .unwrap()
}

/// Watches `listener`'s stock returns: what it hears, and the watch.
fn listen(
    listener: RedisStore,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<StockReturn>,
    tokio::task::JoinHandle<()>,
) {
    let (heard, returns) = tokio::sync::mpsc::unbounded_channel();
    let watching = tokio::spawn(async move {
        listener
            .watch_stock_returns(Box::new(move |returned| drop(heard.send(returned))))
            .await
    });
    (returns, watching)
}

/// Announces one return through `announcer` until it is heard (20 s at
/// most).
async fn announce_until_heard(
    announcer: &RedisStore,
    returns: &mut tokio::sync::mpsc::UnboundedReceiver<StockReturn>,
    when: &str,
) {
    let returned = StockReturn {
        sale_id: SaleId::generate(),
        shopper_id: ShopperId::parse("ann").unwrap(),
        quantity: 1,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _ = announcer
            .announce_stock_returns(std::slice::from_ref(&returned))
            .await;
        if let Ok(Some(got)) =
            tokio::time::timeout(Duration::from_millis(200), returns.recv()).await
        {
            if got == returned {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no return heard {when}"
        );
    }
}

/// Goal: an actor retires once idle for `idle_stop` (not before), leaves the
/// registry, and a new one serves the next request. Method: drive the
/// inventory directly on a manual clock with a one-second idle bound,
/// advance the clock and count the running actors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actor_retires_and_restarts_on_demand() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let now = system_now();
    let sale = Sale {
        id: SaleId::generate(),
        sku: "IDLE".into(),
        title: "idle".into(),
        price_cents: 1,
        currency: "CNY".into(),
        stock_total: 10,
        per_user_limit: 1,
        starts_at: now - 1_000,
        ends_at: now + 3_600_000,
        payment_timeout_secs: 900,
        require_purchase_token: false,
        admission: Default::default(),
        state: SaleState::Scheduled,
        created_at: now,
    };
    store.create_sale(&sale).await.unwrap();
    let clock = Arc::new(ManualClock::at(now));
    let settings = ActorSettings {
        refresh: Duration::from_millis(50),
        idle_stop: Duration::from_secs(1),
        clock: Arc::clone(&clock) as _,
        ..actor_settings()
    };
    let inventory = Inventory::start(store, 1, settings, Duration::from_secs(2)).unwrap();
    let ask = |shopper: &str| OrderAsk {
        sale_id: sale.id.clone(),
        shopper_id: ShopperId::parse(shopper).unwrap(),
        quantity: Quantity::parse(1).unwrap(),
        idempotency_key: None,
        purchase_token: None,
    };
    inventory.reserve(ask("xia")).await.unwrap();
    assert_eq!(inventory.actor_count(), 1);
    clock.advance(Duration::from_millis(950)).await;
    assert_eq!(inventory.actor_count(), 1, "not idle for a second yet");
    clock.advance(Duration::from_millis(50)).await;
    assert_eq!(inventory.actor_count(), 0, "the idle actor retired");
    inventory.reserve(ask("yao")).await.unwrap();
    assert_eq!(inventory.actor_count(), 1);
    let again = inventory.reserve(ask("xia")).await;
    assert!(
        matches!(
            again,
            Err(InventoryError::Store(StoreError::Rejected(
                Rejection::LimitExceeded
            )))
        ),
        "{again:?}"
    );
    inventory.stop();
}

/// Goal: a sale whose store calls are stuck sheds further requests with 503
/// `overloaded` at once instead of queueing them. Method: allow one store
/// call in flight, freeze Redis with CLIENT PAUSE, send more orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_store_sheds_load_with_overloaded() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.actor_in_flight_max = 1;
    // Long enough that the paused call is slow, not failed.
    config.store_timeout_ms = 10_000;
    config.reserve_timeout_ms = 10_000;
    let app = Arc::new(TestApp::spawn_with(config).await);
    let sale = app.create_sale(live_sale(10, 1)).await;
    app.buy(&sale, "zed").await;

    redis.pause(2_000);
    let stuck = {
        let app = Arc::clone(&app);
        let sale = sale.clone();
        tokio::spawn(async move { app.order(&sale, "ada", None, None).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    for shopper in ["bo", "cy", "di"] {
        let started = std::time::Instant::now();
        let shed = app.order(&sale, shopper, None, None).await;
        let elapsed = started.elapsed();
        assert_eq!(shed.headers()["retry-after"], "1");
        assert_eq!(
            error_code(shed).await,
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded".into())
        );
        println!("overloaded answered in {elapsed:?}");
    }
    assert_eq!(
        stuck.await.unwrap(),
        StatusCode::CREATED,
        "the stuck call completes"
    );
    assert_eq!(
        app.sale(&sale).await["stats"]["reserved"],
        2,
        "shed requests took nothing"
    );
}
