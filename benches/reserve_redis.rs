//! The reservation hot path on a real Redis (a `redis-server` the bench
//! starts on a free port, without persistence), each pair measured in the
//! same run so the ratio holds on a noisy machine:
//!
//! - `actor_redis`: `CALLERS` concurrent reservations of one hot sale
//!   through its inventory actor, `batched` (the engine's default: what
//!   queues while a call is in flight goes in one call of up to 64),
//!   `batched_two_calls` (the same with `FLASHSALE_ACTOR_STORE_CALLS=2`: the
//!   next batch is on its way while Redis runs one, so the client's work
//!   overlaps Redis's) against `one_call_per_request` (every reservation its
//!   own script call, up to 512 in flight, pipelined on the same
//!   multiplexed connection);
//! - `reserve_script`: the store alone, 64 reservations as 64 concurrent
//!   script calls (`per_request`) against one call carrying all 64
//!   (`batch_of_64`).
//!
//! - `campaign_redis`: 12 items' worth of batches of 64, one batch per
//!   item at once, on the 12 sales of one campaign (one hash tag, and the
//!   campaign's limits counted in every call) against 12 independent
//!   sales: the cost of keeping a campaign in one slot and one script.
//!
//! Throughput is reported per reservation. After each, the bench prints the
//! time Redis itself spent running scripts per reservation (from `INFO
//! commandstats`): the cost that bounds one hot sale, whatever the client
//! does, and a figure that holds still on a noisy machine. Run:
//! `cargo bench --bench reserve_redis` (about a minute).
//! `FLASHSALE_BENCH_REDIS_ARGS` adds `redis-server` arguments (they win
//! over the defaults), e.g. `--appendonly yes --appendfsync always` to
//! price a durable Redis; its files go to a temporary directory.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ask, assert_no_oversell, request, sale, settings};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashsale::config::RedisDurability;
use flashsale::domain::Sale;
use flashsale::inventory::Inventory;
use flashsale::store::{RedisStore, RedisTarget, Store};
use futures::future::join_all;

/// Concurrent callers of one hot sale.
const CALLERS: usize = 256;

/// Reservations per script call in `reserve_script`.
const BATCH: usize = 64;

/// A `redis-server` on a free local port, without persistence unless
/// `FLASHSALE_BENCH_REDIS_ARGS` asks for it, killed on drop.
pub struct BenchRedis {
    pub url: String,
    child: Child,
    /// Where the server keeps its files (an AOF, when asked for).
    _dir: tempfile::TempDir,
}

impl BenchRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("free port");
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = std::env::var("FLASHSALE_BENCH_REDIS_ARGS").unwrap_or_default();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .args(extra.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        // Owned from here: dropped (killed) if it never answers.
        let server = Self {
            url: format!("redis://127.0.0.1:{port}/"),
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = redis::Client::open(server.url.as_str())
                .and_then(|client| client.get_connection())
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
            if ready.is_ok() {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .expect("connect")
    }

    /// Drops every key (between benches, so memory stays bounded).
    pub fn flush(&self) {
        let _: () = redis::cmd("FLUSHALL")
            .query(&mut self.connection())
            .expect("FLUSHALL");
    }

    /// Starts counting Redis's own time afresh (`CONFIG RESETSTAT`).
    pub fn reset_stats(&self) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut self.connection())
            .expect("CONFIG RESETSTAT");
    }

    /// Microseconds Redis spent running scripts (EVALSHA and EVAL, the
    /// commands they call included) since the last reset: Redis's own
    /// measure, much steadier on a noisy machine than wall-clock rates.
    pub fn script_usec(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .expect("INFO commandstats");
        info.lines()
            .filter(|line| {
                line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
            })
            .filter_map(|line| {
                line.split(',')
                    .find_map(|field| field.split_once("usec="))
                    .and_then(|(_, usec)| usec.parse::<u64>().ok())
            })
            .sum()
    }

    /// Runs `bench`, prints Redis's script time per reservation it made
    /// (`counter` counts the reservations) and returns how many it made.
    pub fn report_script_time(&self, name: &str, counter: &AtomicU64, bench: impl FnOnce()) -> u64 {
        self.reset_stats();
        let before = counter.load(Ordering::Relaxed);
        bench();
        let reservations = counter.load(Ordering::Relaxed) - before;
        let usec = self.script_usec() as f64 / reservations.max(1) as f64;
        println!("{name}: Redis ran scripts for {usec:.2} µs per reservation");
        reservations
    }
}

impl Drop for BenchRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh Redis store with one open sale of ample stock.
fn hot_sale(runtime: &tokio::runtime::Runtime, redis: &BenchRedis) -> (Arc<dyn Store>, Sale) {
    redis.flush();
    runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(
            RedisStore::connect(
                &RedisTarget::Standalone(redis.url.clone()),
                Duration::from_secs(5),
                // The bench measures whatever persistence it was given.
                RedisDurability::Warn,
            )
            .await
            .expect("connect"),
        );
        let open = sale(1_000_000_000);
        store.create_sale(&open).await.expect("create");
        (store, open)
    })
}

fn actor_redis(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let redis = BenchRedis::start();
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("actor_redis");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(CALLERS as u64));
    for (name, batch_max, store_calls) in [
        ("batched", 64, 1),
        ("batched_two_calls", 64, 2),
        ("one_call_per_request", 1, 512),
    ] {
        let (store, open) = hot_sale(&runtime, &redis);
        let inventory = Inventory::start(
            Arc::clone(&store),
            1,
            settings(batch_max, store_calls),
            Duration::from_secs(5),
        )
        .expect("actor system");
        let made = redis.report_script_time(&format!("actor_redis/{name}"), &counter, || {
            group.bench_function(name, |b| {
                b.to_async(&runtime).iter(|| async {
                    let answers =
                        join_all((0..CALLERS).map(|_| inventory.reserve(ask(&open.id, &counter))))
                            .await;
                    assert!(answers.iter().all(Result::is_ok), "every call reserves");
                });
            });
        });
        inventory.stop();
        runtime.block_on(assert_no_oversell(store.as_ref(), &open, Some(made)));
    }
    group.finish();
}

fn reserve_script(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let redis = BenchRedis::start();
    let counter = AtomicU64::new(0);
    let (store, open) = hot_sale(&runtime, &redis);
    let mut group = c.benchmark_group("reserve_script");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(BATCH as u64));
    let one_by_one = redis.report_script_time("reserve_script/per_request", &counter, || {
        group.bench_function("per_request", |b| {
            b.to_async(&runtime).iter(|| {
                join_all((0..BATCH).map(|_| {
                    let store = Arc::clone(&store);
                    let request = request(&open.id, &counter);
                    async move { store.reserve(&request).await.expect("reserved") }
                }))
            });
        });
    });
    let batched = redis.report_script_time("reserve_script/batch_of_64", &counter, || {
        group.bench_function("batch_of_64", |b| {
            b.to_async(&runtime).iter(|| {
                let requests: Vec<_> = (0..BATCH).map(|_| request(&open.id, &counter)).collect();
                let store = Arc::clone(&store);
                async move {
                    let outcomes = store.reserve_batch(&requests).await.expect("one call");
                    assert!(outcomes.iter().all(Result::is_ok), "every request reserves");
                }
            });
        });
    });
    group.finish();
    runtime.block_on(assert_no_oversell(
        store.as_ref(),
        &open,
        Some(one_by_one + batched),
    ));
}

/// Items in the campaign of `campaign_redis`.
const ITEMS: usize = 12;

/// A campaign of one open round of `ITEMS` items of ample stock and limits
/// that never bind (the bench prices the counting, not refusals).
fn campaign_sales(runtime: &tokio::runtime::Runtime, store: &Arc<dyn Store>) -> Vec<Sale> {
    let now = flashsale::domain::system_now();
    let campaign = flashsale::domain::NewCampaign {
        title: "bench".into(),
        rounds: vec![flashsale::domain::NewRound {
            starts_at: flashsale::domain::Timestamp(now - 1_000).to_string(),
            ends_at: flashsale::domain::Timestamp(now + 3_600_000).to_string(),
        }],
        items: (0..ITEMS)
            .map(|i| flashsale::domain::NewItem {
                sku: format!("SKU-{i}"),
                title: "bench".into(),
                price_cents: 100,
                original_price_cents: 200,
                stock_per_round: 1_000_000_000,
                stock_by_round: None,
                per_user_limit: Some(flashsale::domain::QUANTITY_MAX),
            })
            .collect(),
        per_user_limit_per_round: flashsale::domain::QUANTITY_MAX,
        per_user_limit_total: Some(flashsale::domain::QUANTITY_MAX * 100),
        currency: None,
        payment_timeout_secs: None,
        require_purchase_token: None,
        remind_before_secs: None,
    }
    .into_campaign(
        flashsale::domain::CampaignId::generate(),
        now,
        &flashsale::domain::SaleRules::default(),
    )
    .expect("a valid campaign");
    runtime
        .block_on(store.create_campaign(&campaign))
        .expect("create");
    campaign.sales()
}

fn campaign_redis(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let redis = BenchRedis::start();
    let counter = AtomicU64::new(0);
    let (store, _) = hot_sale(&runtime, &redis);
    let independent: Vec<Sale> = (0..ITEMS).map(|_| sale(1_000_000_000)).collect();
    for open in &independent {
        runtime.block_on(store.create_sale(open)).expect("create");
    }
    let campaign = campaign_sales(&runtime, &store);
    let mut group = c.benchmark_group("campaign_redis");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements((ITEMS * BATCH) as u64));
    for (name, sales) in [
        ("independent_sales", &independent),
        ("one_campaign", &campaign),
    ] {
        redis.report_script_time(&format!("campaign_redis/{name}"), &counter, || {
            group.bench_function(name, |b| {
                b.to_async(&runtime).iter(|| {
                    join_all(sales.iter().map(|open| {
                        let requests: Vec<_> =
                            (0..BATCH).map(|_| request(&open.id, &counter)).collect();
                        let store = Arc::clone(&store);
                        async move {
                            let outcomes = store.reserve_batch(&requests).await.expect("call");
                            assert!(outcomes.iter().all(Result::is_ok), "every one reserves");
                        }
                    }))
                });
            });
        });
    }
    group.finish();
    for open in independent.iter().chain(&campaign) {
        runtime.block_on(assert_no_oversell(store.as_ref(), open, None));
    }
}

criterion_group!(benches, actor_redis, reserve_script, campaign_redis);
criterion_main!(benches);
