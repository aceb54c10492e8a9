//! Goal: no oversell, no acknowledged order lost, nobody above their limit
//! and no duplicate order when things break in the middle of a sale: Redis
//! killed and restarted from its AOF, the engine killed or stopped and
//! started again, Redis's script cache flushed, Redis out of memory.
//! Method: real `redis-server` (AOF, `appendfsync always`) and, for crashes,
//! the real `flashsale` binary, both started by the test on free ports and
//! killed by their process ids at a moment drawn from a seed (printed;
//! `FLASHSALE_FAULT_SEED` replays it). A race of shoppers records every
//! answer and retries unknown ones with the same `Idempotency-Key`; at the
//! end every acknowledged order must exist and the sale's audit must find
//! no difference.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::Value;

use crate::fault_harness::{
    assert_nothing_lost, seeded_rng, EngineProcess, Progress, Race, Record,
};
use crate::support::{error_code, live_sale, test_config, RedisServer, TestApp};

const STOCK: i64 = 150;
const SHOPPERS: usize = 300;
/// The fault strikes once this many orders (drawn from the seed) were
/// acknowledged.
const STRIKE_AFTER: std::ops::Range<usize> = 10..100;
const WORKERS: usize = 16;
/// The race's workers send nothing new once this many orders are
/// acknowledged, until the test has struck: the race cannot sell out before
/// the strike (a probe during the fault would be answered `sold_out`), and
/// from a strike at `STRIKE_AFTER.end` on there is room for 30 orders more.
/// At most `WORKERS` requests are in flight when the hold begins, each one
/// order.
const HELD_AT: usize = STOCK as usize - WORKERS;
const _: () = assert!(STRIKE_AFTER.end + 30 <= HELD_AT);

fn race(sale: &str) -> Race {
    Race {
        sale: sale.to_owned(),
        shoppers: SHOPPERS,
        workers: WORKERS,
        backoff: Duration::from_millis(50),
        deadline: Duration::from_secs(60),
    }
}

/// Runs the race in the background, held at `HELD_AT` orders until
/// [`Progress::release`]; the test strikes meanwhile.
fn start_race(app: &Arc<TestApp>, sale: &str) -> (Arc<Progress>, tokio::task::JoinHandle<Record>) {
    let progress = Arc::new(Progress::default());
    progress.hold_at(HELD_AT);
    let race = race(sale);
    let (app, racing) = (Arc::clone(app), Arc::clone(&progress));
    let task = tokio::spawn(async move { race.run(app, racing).await });
    (progress, task)
}

/// Waits until the order service has taken every order (stats.queued counts
/// the units of every order it took; no order here is cancelled or paid).
async fn order_service_caught_up(app: &TestApp, sale: &str) {
    app.sale_when(sale, Duration::from_secs(20), |view| {
        view["stats"]["queued"] == view["stats"]["reserved"]
    })
    .await;
}

/// Waits for the race to end and checks what every scenario promises: each
/// unit sold once, the order service caught up, every acknowledged order
/// there and an audit without differences. Returns the record and audit.
async fn race_ends_with_nothing_lost(
    app: &TestApp,
    sale: &str,
    racing: tokio::task::JoinHandle<Record>,
) -> (Record, Value) {
    let record = racing.await.expect("race");
    sold_out_exactly(&record);
    order_service_caught_up(app, sale).await;
    let audit = assert_nothing_lost(app, sale, &record).await;
    (record, audit)
}

fn sold_out_exactly(record: &Record) {
    record.assert_sound();
    assert_eq!(
        record.acknowledged().len(),
        STOCK as usize,
        "with twice as many shoppers as units, every unit sells once: {:?}",
        record.tally()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_race_loses_no_acknowledged_order() {
    let mut rng = seeded_rng("redis_killed_mid_race");
    let mut redis = RedisServer::start();
    let engine = EngineProcess::start(&redis.url());
    let app = Arc::new(engine.client(Duration::from_secs(10)));
    let sale = app.create_sale(live_sale(STOCK, 1)).await;
    let strike = rng.random_range(STRIKE_AFTER);
    let (progress, racing) = start_race(&app, &sale);

    progress.reached(strike).await;
    redis.kill();
    let killed_at = progress.acknowledged.load(Ordering::SeqCst);
    let in_flight = progress.in_flight.load(Ordering::SeqCst);
    progress.release();
    let probed = Instant::now();
    let during = app.order(&sale, "prober", None, None).await;
    let answered_in = probed.elapsed();
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(during.headers().contains_key("retry-after"));
    assert_eq!(error_code(during).await.1, "unavailable");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_500))).await;

    redis.restart();
    let restarted = Instant::now();
    loop {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the engine did not recover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_in = restarted.elapsed();
    let (record, _) = race_ends_with_nothing_lost(&app, &sale, racing).await;
    println!(
        "redis killed after {killed_at} acknowledged, {in_flight} in flight; 503 in {answered_in:?} during the \
         outage; ready again {recovered_in:?} after the restart; answers {:?}",
        record.tally()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_race_loses_no_acknowledged_order() {
    let mut rng = seeded_rng("engine_killed_mid_race");
    let redis = RedisServer::start();
    let mut engine = EngineProcess::start(&redis.url());
    let app = Arc::new(engine.client(Duration::from_secs(10)));
    let sale = app.create_sale(live_sale(STOCK, 1)).await;
    let strike = rng.random_range(STRIKE_AFTER);
    let (progress, racing) = start_race(&app, &sale);

    progress.reached(strike).await;
    engine.kill();
    let killed_at = progress.acknowledged.load(Ordering::SeqCst);
    let in_flight = progress.in_flight.load(Ordering::SeqCst);
    progress.release();
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..1_000))).await;
    let restarted = Instant::now();
    engine.restart();
    let started_in = restarted.elapsed();

    // Entries the killed engine had read but not acknowledged are pending on
    // its consumer, whose name (host and listen address) the restarted
    // engine takes again: it reads them again at its first pass, well inside
    // the 20 s wait, where another node's claim would wait for
    // `FLASHSALE_ORDER_CLAIM_IDLE_MS` (30 s).
    let (record, audit) = race_ends_with_nothing_lost(&app, &sale, racing).await;
    assert_eq!(audit["recounted"]["awaiting_order_service"], 0, "{audit}");
    println!(
        "engine killed after {killed_at} acknowledged, {in_flight} in flight; serving again {started_in:?} after \
         the restart; answers {:?}",
        record.tally()
    );
}

/// SIGTERM mid-race: the engine stops taking connections, answers what it
/// has in flight, exits 0; a new process takes over and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_stopped_mid_race_exits_cleanly_and_loses_nothing() {
    let mut rng = seeded_rng("engine_stopped_mid_race");
    let redis = RedisServer::start();
    let mut engine = EngineProcess::start(&redis.url());
    let app = Arc::new(engine.client(Duration::from_secs(10)));
    let sale = app.create_sale(live_sale(STOCK, 1)).await;
    let strike = rng.random_range(STRIKE_AFTER);
    let (progress, racing) = start_race(&app, &sale);

    progress.reached(strike).await;
    let in_flight = progress.in_flight.load(Ordering::SeqCst);
    let stopping = Instant::now();
    let status = engine.terminate().await;
    let stopped_in = stopping.elapsed();
    progress.release();
    assert!(status.success(), "exit status {status}");
    engine.restart();

    let (record, _) = race_ends_with_nothing_lost(&app, &sale, racing).await;
    println!(
        "SIGTERM mid-race, {in_flight} in flight: exited 0 in {stopped_in:?}; answers {:?}",
        record.tally()
    );
}

/// A Redis that lost its script cache (a restart, a failover, `SCRIPT
/// FLUSH`) fails no request: the client loads the script again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_during_load_fails_nothing() {
    let redis = RedisServer::start();
    let app = Arc::new(TestApp::spawn(Some(redis.url())).await);
    let sale = app.create_sale(live_sale(STOCK, 1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (stop, mut conn) = (Arc::clone(&stop), redis.connection());
        tokio::task::spawn_blocking(move || {
            let mut flushes = 0_usize;
            while !stop.load(Ordering::SeqCst) {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query(&mut conn)
                    .expect("SCRIPT FLUSH");
                flushes += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            flushes
        })
    };
    let race = Race {
        backoff: Duration::ZERO,
        ..race(&sale)
    };
    let record = race.run(Arc::clone(&app), Arc::default()).await;
    stop.store(true, Ordering::SeqCst);
    let flushed = flusher.await.expect("flusher");
    sold_out_exactly(&record);
    let tally = record.tally();
    assert!(
        tally
            .keys()
            .all(|kind| kind == "201" || kind == "409 sold_out"),
        "zero failed requests: {tally:?}"
    );
    assert!(flushed > 0);
    assert_nothing_lost(&app, &sale, &record).await;
    println!("{flushed} script flushes during the race; answers {tally:?}");
}

/// Redis at `maxmemory` with `noeviction` refuses writes: the engine answers
/// 503 `unavailable`, takes nothing it cannot record, and sells again once
/// memory frees. Reservations the order service read but could not accept
/// while Redis was full (`XREADGROUP` is not refused) are read again at its
/// next pass, with `claim_idle` at its default (30 s, longer than the wait
/// for the race's end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_is_503_and_recovers() {
    let mut rng = seeded_rng("redis_out_of_memory");
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    let app = Arc::new(TestApp::spawn_with(config).await);
    let sale = app.create_sale(live_sale(STOCK, 1)).await;
    let strike = rng.random_range(STRIKE_AFTER);
    let (progress, racing) = start_race(&app, &sale);
    let set_maxmemory = |bytes: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query(&mut redis.connection())
            .expect("CONFIG SET maxmemory");
    };

    progress.reached(strike).await;
    set_maxmemory("1");
    let full_at = progress.acknowledged.load(Ordering::SeqCst);
    let in_flight = progress.in_flight.load(Ordering::SeqCst);
    progress.release();
    let during = app.order(&sale, "prober", None, None).await;
    assert_eq!(
        error_code(during).await,
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_000))).await;
    set_maxmemory("0");

    let (record, _) = race_ends_with_nothing_lost(&app, &sale, racing).await;
    assert!(
        record.tally().contains_key("503 unavailable"),
        "{:?}",
        record.tally()
    );
    println!(
        "redis full after {full_at} acknowledged, {in_flight} in flight; answers {:?}",
        record.tally()
    );
}

/// A Redis without AOF loses reservations in a crash: the engine says so
/// when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warns_when_redis_runs_without_aof() {
    let redis = RedisServer::start();
    start_warned(&redis, "appendonly", "no", &["appendonly no"]);
}

/// Under `FLASHSALE_REDIS_DURABILITY=warn` the engine serves on a Redis
/// that fsyncs once a second, and its warning names the loss window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warns_when_redis_fsyncs_every_second() {
    let redis = RedisServer::start();
    let engine = start_warned(
        &redis,
        "appendfsync",
        "everysec",
        &["appendfsync everysec", "up to the last second"],
    );
    let app = engine.client(Duration::from_secs(5));
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// Sets `setting` to `value` on `redis`, starts an engine on it under
/// `FLASHSALE_REDIS_DURABILITY=warn` and checks that it logged a warning
/// with every one of `words`.
fn start_warned(redis: &RedisServer, setting: &str, value: &str, words: &[&str]) -> EngineProcess {
    redis.config_set(setting, value);
    let engine = EngineProcess::start_with(&redis.url(), &[("FLASHSALE_REDIS_DURABILITY", "warn")]);
    let logs = engine.logs();
    assert!(
        logs.iter()
            .any(|line| line.contains("WARN") && words.iter().all(|word| line.contains(word))),
        "{logs:#?}"
    );
    engine
}

/// After a machine's crash Redis and the engine start together, and Redis
/// answers LOADING until its AOF is read: the engine waits for it instead
/// of exiting, then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_waits_for_redis_still_loading_its_data() {
    let mut redis = RedisServer::start();
    let mut filler = redis::pipe();
    for i in 0..40_000 {
        filler
            .cmd("SET")
            .arg(format!("filler:{i}"))
            .arg("x")
            .ignore();
    }
    let _: () = filler.query(&mut redis.connection()).expect("fill the AOF");
    // A debugging setting of redis-server: a pause per key while loading
    // (100 µs: about 4 s for these keys).
    // Redis answers clients every 1,024 commands while loading.
    redis.restart_with(&["--key-load-delay", "100"]);
    assert!(redis.loading(), "the test needs Redis still loading here");
    let started = Instant::now();
    let app = TestApp::spawn(Some(redis.url())).await;
    println!(
        "the engine started {:?} after Redis, once it had loaded",
        started.elapsed()
    );
    assert!(!redis.loading());
    let sale = app.create_sale(live_sale(1, 1)).await;
    app.buy(&sale, "early-bird").await;
}
