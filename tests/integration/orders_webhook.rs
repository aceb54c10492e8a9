//! Goal: every order reaches the merchant's webhook, signed, at least once:
//! its `order.reserved`, and its `order.paid` once paid, even when the
//! merchant fails calls, and even when the engine stops with hand-offs
//! still pending (Redis keeps the outbox). Method: a small axum receiver on
//! 127.0.0.1 records every call (headers and raw body) and answers 500 to
//! the first N; the test checks each call's signature with its own
//! HMAC-SHA256 and compares the delivered (order id, event) pairs with the
//! orders it placed and paid.
//!
//! Flow control, with the same receiver answering slowly or refusing: the
//! calls in flight never pass `FLASHSALE_ORDER_WEBHOOK_CONCURRENCY` (the
//! receiver counts the requests it is handling at once); a permanent 4xx
//! moves a hand-off to the dead letters after one attempt, a 500 every time
//! after `FLASHSALE_ORDER_WEBHOOK_ATTEMPTS_MAX`; the admin API lists and
//! re-drives them; and a sale left with only dead letters settles.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use flashsale::clock::ManualClock;
use flashsale::domain::{system_now, Millis, Payment, SaleChange};
use flashsale::inventory::Inventory;
use flashsale::orders::webhook::{Backoff, Webhook, WebhookSettings};
use flashsale::orders::{OrderService, OrderSettings, Orders};
use flashsale::store::{FollowUps, Store};
use futures::future::join_all;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::Value;
use sha2::Sha256;
use tokio::task::JoinHandle;

use crate::conformance::with_live_order;
use crate::on_both_stores;
use crate::support::{actor_settings, live_sale, test_config, Backend, Harness, Servers, TestApp};
use crate::wechat::EngineSettings;

pub const SECRET: &str = "whsec-test";
const RESERVED: &str = "order.reserved";
const PAID: &str = "order.paid";
const REFUNDED: &str = "order.refunded";

/// One call the receiver got, when (the machine's clock, which is also
/// the clock of the `redis-server` the tests start), and what it answered.
#[derive(Debug, Clone)]
pub struct Call {
    headers: HeaderMap,
    body: Bytes,
    pub at: Millis,
    pub status: StatusCode,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("webhook body is not JSON ({err}): {:?}", self.body))
    }

    /// (order id, event) from the body.
    fn hand_off(&self) -> (String, String) {
        let body = self.json();
        (
            body["order"]["id"].as_str().unwrap().to_owned(),
            body["type"].as_str().unwrap().to_owned(),
        )
    }
}

#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Calls answered `failure` before the receiver answers 200.
    fail_first: Arc<AtomicUsize>,
    failure: StatusCode,
    /// How long each call takes to answer.
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
}

/// The merchant's webhook: records every call, answers `failure` to the
/// first `fail_first` and 200 after, each after `delay`, and counts the
/// calls it handles at once. Stops when dropped.
pub struct Receiver {
    address: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    fail_first: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Receiver {
    /// Answers 500 to the first `fail_first` calls, at once.
    pub async fn start(fail_first: usize) -> Self {
        Self::start_with(
            fail_first,
            StatusCode::INTERNAL_SERVER_ERROR,
            Duration::ZERO,
        )
        .await
    }

    pub async fn start_with(fail_first: usize, failure: StatusCode, delay: Duration) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fail_first = Arc::new(AtomicUsize::new(fail_first));
        let most_in_flight = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .route("/hook", post(record))
            .with_state(Recorder {
                calls: Arc::clone(&calls),
                fail_first: Arc::clone(&fail_first),
                failure,
                delay,
                in_flight: Arc::new(AtomicUsize::new(0)),
                most_in_flight: Arc::clone(&most_in_flight),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            address,
            calls,
            fail_first,
            most_in_flight,
            server,
        }
    }

    /// From now on every call is answered 200.
    pub fn recover(&self) {
        self.fail_first.store(0, Ordering::SeqCst);
    }

    /// The most calls it was handling at once.
    fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    /// The engine's client for this receiver, with short backoffs.
    pub fn webhook(&self) -> Webhook {
        Webhook::new(WebhookSettings {
            url: self.url().parse().unwrap(),
            secret: SECRET.into(),
            timeout: Duration::from_secs(2),
            backoff: Backoff {
                first: Duration::from_millis(10),
                longest: Duration::from_millis(40),
            },
            attempts_max: 20,
            concurrency: 8,
        })
        .unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The (order id, event) pairs answered 2xx so far.
    fn delivered(&self) -> BTreeSet<(String, String)> {
        self.calls()
            .iter()
            .filter(|call| call.status.is_success())
            .map(Call::hand_off)
            .collect()
    }

    /// Polls until every `expected` hand-off was answered 2xx; fails after
    /// `within`.
    async fn wait_for(&self, expected: &BTreeSet<(String, String)>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let delivered = self.delivered();
            if delivered.is_superset(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every hand-off delivered within {within:?}; missing: {:?}",
                expected.difference(&delivered).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(State(recorder): State<Recorder>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let handling = recorder.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    recorder
        .most_in_flight
        .fetch_max(handling, Ordering::SeqCst);
    tokio::time::sleep(recorder.delay).await;
    // Counted out before answering: the engine frees its slot only once
    // the answer arrives, so a next call never overlaps this one's count.
    recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut calls = recorder.calls.lock().unwrap();
    let status = if calls.len() < recorder.fail_first.load(Ordering::SeqCst) {
        recorder.failure
    } else {
        StatusCode::OK
    };
    calls.push(Call {
        headers,
        body,
        at: system_now(),
        status,
    });
    status
}

/// A port nothing listens on (bound once by us, then let go).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Checks one call as a merchant would, independently of the engine's
/// code: the signature is HMAC-SHA256(secret, "<t>.<raw body>") with a
/// current `t`, and the event header names the body's type. Returns the
/// body.
pub fn assert_signed(call: &Call) -> Value {
    let signature = call
        .header("x-flashsale-signature")
        .unwrap_or_else(|| panic!("no X-Flashsale-Signature: {call:?}"));
    let (t, v1) = signature
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header shape: {signature}"));
    let timestamp: i64 = t.parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - timestamp).abs() <= 300,
        "signature timestamp {timestamp} is not current (now {now})"
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&call.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(v1, expected, "signature does not verify: {call:?}");

    let body = call.json();
    let event = body["type"].as_str().unwrap();
    assert_eq!(call.header("x-flashsale-event"), Some(event), "{call:?}");
    body
}

/// Checks one order hand-off as a merchant would (see [`assert_signed`]),
/// and that its idempotency key is `<order id>:<event>`. Returns the body.
fn assert_genuine(call: &Call) -> Value {
    let body = assert_signed(call);
    let event = body["type"].as_str().unwrap();
    let key = format!("{}:{event}", body["order"]["id"].as_str().unwrap());
    assert_eq!(
        call.header("idempotency-key"),
        Some(key.as_str()),
        "{call:?}"
    );
    match event {
        RESERVED => assert!(
            matches!(
                body["order"]["status"].as_str(),
                Some("pending_payment" | "paid")
            ),
            "{body}"
        ),
        PAID => {
            assert_eq!(body["order"]["status"], "paid", "{body}");
            assert!(body["order"]["paid_at"].is_string(), "{body}");
            // The payment's transaction id (simulated payments: `sim_...`).
            assert!(
                body["order"]["transaction_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("sim_")),
                "{body}"
            );
        }
        REFUNDED => {
            assert_eq!(body["order"]["status"], "refunded", "{body}");
            assert!(body["order"]["transaction_id"].is_string(), "{body}");
        }
        other => panic!("unexpected event {other}: {body}"),
    }
    body
}

/// Checks every call, and that each body shows the order as it was placed.
fn assert_all_genuine(calls: &[Call], orders: &HashMap<String, Value>, sale: &str) {
    for call in calls {
        let body = assert_genuine(call);
        let order = &body["order"];
        let id = order["id"].as_str().unwrap();
        let placed = orders
            .get(id)
            .unwrap_or_else(|| panic!("hand-off of an order nobody placed: {body}"));
        assert_eq!(order["sale_id"], sale, "{body}");
        for field in [
            "user_id",
            "quantity",
            "amount_cents",
            "currency",
            "created_at",
        ] {
            assert_eq!(order[field], placed[field], "{field}: {body} vs {placed}");
        }
    }
}

async fn webhook_failing_first_calls_still_gets_every_order(backend: Backend) {
    let receiver = Receiver::start(5).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    let sale = app.create_sale(live_sale(50, 1)).await;

    let users: Vec<String> = (0..20).map(|n| format!("hook-shopper-{n:02}")).collect();
    let placed = join_all(users.iter().map(|shopper| app.buy(&sale, shopper))).await;
    let orders: HashMap<String, Value> = placed
        .into_iter()
        .map(|order| (order["id"].as_str().unwrap().to_owned(), order))
        .collect();
    assert_eq!(orders.len(), 20);

    let mut expected: BTreeSet<(String, String)> = orders
        .keys()
        .map(|id| (id.clone(), RESERVED.to_owned()))
        .collect();
    for (id, order) in orders.iter().take(5) {
        let shopper = order["user_id"].as_str().unwrap();
        let response = app
            .shopper_post(shopper, &format!("/api/v1/orders/{id}/pay"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let paid: Value = response.json().await.unwrap();
        assert_eq!(paid["status"], "paid", "{paid}");
        expected.insert((id.clone(), PAID.to_owned()));
    }
    assert_eq!(expected.len(), 25);

    receiver.wait_for(&expected, Duration::from_secs(20)).await;
    // Give any stray call (a duplicate, an unknown order) time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let calls = receiver.calls();
    assert_all_genuine(&calls, &orders, &sale);
    assert_eq!(
        receiver.delivered(),
        expected,
        "delivered hand-offs are exactly the orders placed and paid"
    );
    let failed: Vec<&Call> = calls
        .iter()
        .filter(|call| !call.status.is_success())
        .collect();
    assert_eq!(failed.len(), 5, "the receiver failed its first 5 calls");
    for call in &failed {
        assert!(
            expected.contains(&call.hand_off()),
            "a failed call was for a known hand-off: {call:?}"
        );
    }
    assert!(
        calls.len() >= expected.len() + failed.len(),
        "each failed call was retried: {} calls for {} hand-offs and {} failures",
        calls.len(),
        expected.len(),
        failed.len()
    );

    // Every hand-off acknowledged: the outbox is drained, the calls stop.
    let settled = receiver.calls().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.calls().len(),
        settled,
        "calls go on after every hand-off was acknowledged"
    );
    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["queued"], 20, "{view}");
    assert_eq!(view["stats"]["paid"], 5, "{view}");
    app.stop().await;
}

on_both_stores!(webhook_failing_first_calls_still_gets_every_order);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_hand_offs_survive_an_engine_restart() {
    let redis = Servers::start(Backend::Redis);

    // Engine A: the merchant is down; every call fails.
    let mut config = test_config();
    redis.configure(&mut config);
    config.order_webhook_url = Some(format!("http://127.0.0.1:{}/hook", dead_port()));
    config.order_webhook_secret = Some(SECRET.into());
    config.order_webhook_timeout_ms = 200;
    config.order_webhook_backoff_ms = 200;
    config.order_webhook_backoff_max_ms = 500;
    config.order_sweep_ms = 20;
    let first = TestApp::spawn_with(config).await;
    let sale = first.create_sale(live_sale(50, 1)).await;
    let users: Vec<String> = (0..10).map(|n| format!("restart-shopper-{n:02}")).collect();
    let placed = join_all(users.iter().map(|shopper| first.buy(&sale, shopper))).await;
    let orders: HashMap<String, Value> = placed
        .into_iter()
        .map(|order| (order["id"].as_str().unwrap().to_owned(), order))
        .collect();
    assert_eq!(orders.len(), 10);
    first
        .sale_when(&sale, Duration::from_secs(10), |view| {
            view["stats"]["queued"] == 10
        })
        .await;
    // Every hand-off is in the outbox and was tried (and failed) at least
    // once by engine A.
    let outbox = format!("fs:{{{sale}}}:outbox");
    let attempts = format!("fs:{{{sale}}}:attempts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = redis.standalone().unwrap().connection();
    loop {
        let pending: Vec<String> = redis::cmd("ZRANGE")
            .arg(&outbox)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        let tried: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(&attempts)
            .query(&mut conn)
            .unwrap();
        let members: BTreeSet<String> = pending.into_iter().collect();
        let wanted: BTreeSet<String> = orders.keys().map(|id| format!("{RESERVED} {id}")).collect();
        assert_eq!(members, wanted, "engine A's outbox holds every hand-off");
        if members
            .iter()
            .all(|member| tried.get(member).is_some_and(|n| *n >= 1))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "engine A never tried every hand-off: {tried:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await;

    // The merchant is back; engine B on the same Redis delivers.
    let receiver = Receiver::start(0).await;
    let mut config = test_config();
    redis.configure(&mut config);
    config.order_webhook_url = Some(receiver.url());
    config.order_webhook_secret = Some(SECRET.into());
    config.order_webhook_timeout_ms = 1000;
    config.order_webhook_backoff_ms = 20;
    config.order_webhook_backoff_max_ms = 200;
    config.order_sweep_ms = 20;
    let second = TestApp::spawn_with(config).await;

    let expected: BTreeSet<(String, String)> = orders
        .keys()
        .map(|id| (id.clone(), RESERVED.to_owned()))
        .collect();
    receiver.wait_for(&expected, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = receiver.calls();
    assert_all_genuine(&calls, &orders, &sale);
    assert_eq!(
        receiver.delivered(),
        expected,
        "engine B delivered exactly the hand-offs engine A left pending"
    );
    let pending: u64 = redis::cmd("ZCARD").arg(&outbox).query(&mut conn).unwrap();
    assert_eq!(pending, 0, "the outbox is drained once delivered");
    let view = second.sale(&sale).await;
    assert_eq!(view["stats"]["queued"], 10, "{view}");
    second.stop().await;
}

/// An engine handing orders to `receiver`, retrying quickly.
pub async fn engine_for(
    backend: Backend,
    receiver: &Receiver,
    configure: impl FnOnce(&mut flashsale::config::Config),
) -> Harness {
    let url = receiver.url();
    Harness::start_with(backend, |config| {
        config.order_webhook_url = Some(url);
        config.order_webhook_secret = Some(SECRET.into());
        config.order_webhook_timeout_ms = 2000;
        config.order_webhook_backoff_ms = 10;
        config.order_webhook_backoff_max_ms = 40;
        config.order_sweep_ms = 20;
        configure(config);
    })
    .await
}

/// Places one order per shopper; returns the order ids.
async fn place_orders(app: &TestApp, sale: &str, prefix: &str, count: usize) -> BTreeSet<String> {
    let users: Vec<String> = (0..count).map(|n| format!("{prefix}-{n:02}")).collect();
    join_all(users.iter().map(|shopper| app.buy(sale, shopper)))
        .await
        .iter()
        .map(|order| order["id"].as_str().unwrap().to_owned())
        .collect()
}

fn reserved(orders: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    orders
        .iter()
        .map(|id| (id.clone(), RESERVED.to_owned()))
        .collect()
}

/// An admin call on the sale's dead letters (`""` lists them,
/// `"/redrive"` re-drives them); its 200 answer.
async fn on_dead_letters(app: &TestApp, method: Method, sale: &str, action: &str) -> Value {
    let path = format!("/admin/v1/sales/{sale}/dead-letters{action}");
    let response = app.admin(method, &path, None).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sale_id"], sale, "{body}");
    body
}

/// The sale's dead letters, oldest first; read whole and a letter a page,
/// which must agree.
pub async fn dead_letters(app: &TestApp, sale: &str) -> Vec<Value> {
    let body = on_dead_letters(app, Method::GET, sale, "?limit=500").await;
    let whole = body["dead_letters"].as_array().unwrap().clone();
    let mut paged = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let page = on_dead_letters(app, Method::GET, sale, &query).await;
        paged.extend(page["dead_letters"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, whole, "a letter a page lists each once, in order");
    whole
}

/// Polls the admin API until the sale has `count` dead letters, then reads
/// them whole and a page at a time (once they are all written, so both
/// reads see the same letters).
pub async fn dead_letters_when(app: &TestApp, sale: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = on_dead_letters(app, Method::GET, sale, "?limit=500").await;
        let letters = body["dead_letters"].as_array().unwrap();
        if letters.len() >= count {
            assert_eq!(letters.len(), count, "{letters:?}");
            return dead_letters(app, sale).await;
        }
        assert!(
            Instant::now() < deadline,
            "only {} dead letters: {letters:?}",
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn redrive(app: &TestApp, sale: &str) -> u64 {
    let body = on_dead_letters(app, Method::POST, sale, "/redrive").await;
    body["redriven"].as_u64().unwrap()
}

/// The merchant answers 200 from now on; a re-drive of the sale's dead
/// letters (one per order of `orders`) delivers every one and empties them,
/// and a second re-drive finds none.
async fn redrive_to_a_recovered_merchant(
    app: &TestApp,
    receiver: &Receiver,
    sale: &str,
    orders: &BTreeSet<String>,
) {
    receiver.recover();
    assert_eq!(redrive(app, sale).await, orders.len() as u64);
    receiver
        .wait_for(&reserved(orders), Duration::from_secs(10))
        .await;
    assert!(dead_letters(app, sale).await.is_empty());
    assert_eq!(redrive(app, sale).await, 0);
}

/// Checks each dead letter names one of `orders`' reservations, after
/// `attempts` attempts, answered `status`.
fn assert_dead_letters(letters: &[Value], orders: &BTreeSet<String>, attempts: u64, status: u16) {
    let named: BTreeSet<String> = letters
        .iter()
        .map(|letter| letter["order_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&named, orders, "{letters:?}");
    for letter in letters {
        assert_eq!(letter["event"], RESERVED, "{letter}");
        assert_eq!(letter["attempts"], attempts, "{letter}");
        assert_eq!(letter["last_status"], status, "{letter}");
        assert!(
            letter["last_error"]
                .as_str()
                .unwrap()
                .contains(&status.to_string()),
            "{letter}"
        );
        assert!(letter["dead_lettered_at"].is_string(), "{letter}");
    }
}

/// A slow merchant (100 ms a call) and 30 orders at once: the engine never
/// has more than its cap of 4 calls in flight, and still delivers them all.
async fn webhook_calls_in_flight_never_exceed_the_cap(backend: Backend) {
    let receiver = Receiver::start_with(0, StatusCode::OK, Duration::from_millis(100)).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |config| {
        config.order_webhook_concurrency = 4;
    })
    .await;
    let sale = app.create_sale(live_sale(50, 1)).await;
    let orders = place_orders(&app, &sale, "capped", 30).await;
    receiver
        .wait_for(&reserved(&orders), Duration::from_secs(20))
        .await;
    let most = receiver.most_in_flight();
    assert!(most <= 4, "{most} calls in flight at once; the cap is 4");
    assert!(
        most >= 2,
        "calls are still made side by side: at most {most}"
    );
    app.stop().await;
}

/// A 400 is the merchant refusing for good: each hand-off is tried once,
/// moved to the dead letters and not sent again; once the merchant answers
/// 200, a re-drive delivers every one.
async fn a_refused_hand_off_is_dead_lettered_after_one_attempt(backend: Backend) {
    let receiver = Receiver::start_with(usize::MAX, StatusCode::BAD_REQUEST, Duration::ZERO).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    let sale = app.create_sale(live_sale(10, 1)).await;
    let orders = place_orders(&app, &sale, "refused", 3).await;

    let letters = dead_letters_when(&app, &sale, 3).await;
    assert_dead_letters(&letters, &orders, 1, 400);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.calls().len(), 3, "one attempt each, then no more");

    redrive_to_a_recovered_merchant(&app, &receiver, &sale, &orders).await;
    app.stop().await;
}

/// A merchant answering 500 every time: each hand-off is tried
/// `FLASHSALE_ORDER_WEBHOOK_ATTEMPTS_MAX` (3) times, then moved to the dead
/// letters (counted in `flashsale_webhook_dead_letters_total`); a re-drive
/// once the merchant is back delivers them.
async fn a_failing_hand_off_is_dead_lettered_after_the_last_attempt(backend: Backend) {
    let receiver = Receiver::start(usize::MAX).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |config| {
        config.order_webhook_attempts_max = 3;
    })
    .await;
    let sale = app.create_sale(live_sale(10, 1)).await;
    let orders = place_orders(&app, &sale, "failing", 2).await;

    let letters = dead_letters_when(&app, &sale, 2).await;
    assert_dead_letters(&letters, &orders, 3, 500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.calls().len(),
        6,
        "three attempts each, then no more"
    );
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"flashsale_webhook_dead_letters_total{reason="exhausted"}"#),
        "{metrics}"
    );

    redrive_to_a_recovered_merchant(&app, &receiver, &sale, &orders).await;
    app.stop().await;
}

on_both_stores!(
    webhook_calls_in_flight_never_exceed_the_cap,
    a_refused_hand_off_is_dead_lettered_after_one_attempt,
    a_failing_hand_off_is_dead_lettered_after_the_last_attempt,
);

/// An order service on `store` handing off to `webhook`, passed by hand,
/// on a manual clock.
fn service_by_hand(
    store: &Arc<dyn Store>,
    webhook: Option<Webhook>,
) -> (Arc<Orders>, OrderService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at(system_now()));
    let inventory = Inventory::start(
        Arc::clone(store),
        1,
        actor_settings(),
        Duration::from_secs(2),
    )
    .expect("actor system");
    let orders = Arc::new(Orders::new(Arc::clone(store), Arc::new(inventory)));
    let service = OrderService::new(
        Arc::clone(store),
        Arc::clone(&orders),
        webhook,
        OrderSettings {
            sweep: Duration::from_millis(10),
            batch: 16,
            claim_idle: Duration::from_secs(30),
            consumer: "by-hand".into(),
            clock: clock.clone(),
            retention: Duration::from_secs(3600),
        },
    );
    (orders, service, clock)
}

/// A sale past its payment window whose only hand-off is a dead letter has
/// no work left: the order service stops watching it. A re-drive has it
/// watched (and the hand-off sent) again.
async fn a_sale_with_only_dead_letters_settles(backend: Backend) {
    let receiver = Receiver::start_with(usize::MAX, StatusCode::GONE, Duration::ZERO).await;
    let (subject, live, order) = with_live_order(backend, "settler").await;
    let store = &subject.store;
    let (orders, mut service, clock) = service_by_hand(store, Some(receiver.webhook()));
    let outcome = service.try_process_batch().await;
    assert_eq!(
        (outcome.accepted, outcome.handed_off),
        (1, 1),
        "{outcome:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dead_letters(&live.id).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Paid without a hand-off: no unpaid order is left either.
    let payment = Payment {
        amount: None,
        transaction_id: "tx-settle".into(),
    };
    store
        .pay_order(&order.id, &payment, FollowUps::default())
        .await
        .unwrap();

    // The merchant ends it (the store's clock then refuses reservations),
    // and the service's clock is past the end plus the payment timeout.
    let version = store.view_sale(&live.id).await.unwrap().unwrap().version;
    let end = SaleChange {
        sale: live.clone(),
        restricted: false,
        end_now: true,
    };
    store.update_sale(&live.id, &end, version).await.unwrap();
    clock.advance(Duration::from_secs(3 * 3600)).await;
    service.try_process_batch().await;
    assert!(
        !service.watches(&live.id),
        "a sale with only dead letters is settled"
    );

    assert_eq!(orders.redrive_dead_letters(&live.id).await.unwrap(), 1);
    let outcome = service.try_process_batch().await;
    assert!(service.watches(&live.id), "a re-drive wakes the sale up");
    assert_eq!(outcome.handed_off, 1, "{outcome:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.calls().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the re-driven hand-off was not sent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

on_both_stores!(a_sale_with_only_dead_letters_settles);

/// An engine started with no sender at all (neither a webhook nor WeChat
/// Pay) still settles a sale whose outbox holds entries queued under
/// settings that had one: once the sale is past its payment window they
/// are moved to the dead letters, each saying what is missing, to be
/// re-driven once a sender is configured again.
async fn entries_nothing_can_send_are_dead_lettered_so_the_sale_settles(backend: Backend) {
    let (subject, live, handed_off) = with_live_order(backend, "unsent").await;
    let store = &subject.store;
    let hand_off = FollowUps {
        hand_off: true,
        refund: false,
    };
    let payment = |n: u32| Payment {
        amount: None,
        transaction_id: format!("42000000000000000000000000{n:02}"),
    };
    store
        .pay_order(&handed_off.id, &payment(1), hand_off)
        .await
        .unwrap();
    let refunded = store
        .reserve(&crate::conformance::request(&live, "unsent-2", 1, None))
        .await
        .unwrap()
        .order;
    store
        .pay_order(&refunded.id, &payment(2), FollowUps::default())
        .await
        .unwrap();
    let refund = FollowUps {
        hand_off: false,
        refund: true,
    };
    store
        .refund_order(&refunded.id, false, refund)
        .await
        .unwrap();

    let (_orders, mut service, clock) = service_by_hand(store, None);
    let outcome = service.try_process_batch().await;
    assert_eq!(outcome.accepted, 2, "{outcome:?}");
    let version = store.view_sale(&live.id).await.unwrap().unwrap().version;
    let end = SaleChange {
        sale: live.clone(),
        restricted: false,
        end_now: true,
    };
    store.update_sale(&live.id, &end, version).await.unwrap();
    clock.advance(Duration::from_secs(3 * 3600)).await;
    for _ in 0..3 {
        service.try_process_batch().await;
    }
    assert!(
        !service.watches(&live.id),
        "settled once what it held was dead-lettered"
    );
    let mut letters: Vec<(String, String)> = store
        .dead_letters(&live.id)
        .await
        .unwrap()
        .into_iter()
        .map(|letter| (letter.errand.to_string(), letter.failure.error))
        .collect();
    letters.sort();
    assert_eq!(
        letters,
        [
            (
                format!("{PAID} {}", handed_off.id),
                "no webhook is configured".to_owned()
            ),
            (
                format!("wechatpay.refund {}", refunded.id),
                "WeChat Pay is not configured".to_owned()
            ),
        ]
    );
}

on_both_stores!(entries_nothing_can_send_are_dead_lettered_so_the_sale_settles);

/// A refunded order is handed to the webhook as `order.refunded`, its body
/// the order with WeChat Pay's `transaction_id` and `prepay_id`, after the
/// refund call went to WeChat Pay through the same outbox.
async fn a_refund_is_handed_off_as_order_refunded(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let wx = crate::wechat::WeChatPayServer::start().await;
    let Harness { app, redis: _redis } =
        engine_for(backend, &receiver, |config| wx.configure(config)).await;
    let sale = app.create_sale(live_sale(2, 1)).await;
    let id = crate::payments_wechat_refund::paid_order(&app, &wx, &sale, "oKim").await;
    let refunded = app
        .admin(Method::POST, &format!("/admin/v1/orders/{id}/refund"), None)
        .await;
    assert_eq!(refunded.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    while wx.refunds().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the refund never reached WeChat Pay"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let settled = wx.settle_refund(&format!("{id}-refund"), "SUCCESS");
    crate::payments_wechat::assert_acknowledged(
        crate::payments_wechat::notify(&app, &settled).await,
    )
    .await;
    let event = (id.clone(), REFUNDED.to_owned());
    while !receiver.delivered().contains(&event) {
        assert!(Instant::now() < deadline, "order.refunded never handed off");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let call = receiver
        .calls()
        .into_iter()
        .find(|call| call.hand_off() == event)
        .unwrap();
    let body = assert_genuine(&call);
    let order = &body["order"];
    assert_eq!(order["status"], "refunded", "{body}");
    assert!(order["transaction_id"].is_string(), "{body}");
    assert!(order["prepay_id"].is_string(), "{body}");
    assert_eq!(wx.refunds().len(), 1);
}

on_both_stores!(a_refund_is_handed_off_as_order_refunded);
