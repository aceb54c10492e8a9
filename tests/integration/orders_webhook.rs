//! Goal: every order reaches the merchant's webhook, signed, at least once:
//! its `order.reserved`, and its `order.paid` once paid, even when the
//! merchant fails calls, and even when the engine stops with hand-offs
//! still pending (Redis keeps the outbox). Method: a small axum receiver on
//! 127.0.0.1 records every call (headers and raw body) and answers 500 to
//! the first N; the test checks each call's signature with its own
//! HMAC-SHA256 and compares the delivered (order id, event) pairs with the
//! orders it placed and paid.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use futures::future::join_all;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::task::JoinHandle;

use crate::on_both_stores;
use crate::support::{live_sale, test_config, Backend, Harness, Servers, TestApp};

const SECRET: &str = "whsec-test";
const RESERVED: &str = "order.reserved";
const PAID: &str = "order.paid";

/// One call the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Call {
    headers: HeaderMap,
    body: Bytes,
    status: StatusCode,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn json(&self) -> Value {
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
    fail_first: usize,
}

/// The merchant's webhook: records every call, answers 500 to the first
/// `fail_first` and 200 after. Stops when dropped.
struct Receiver {
    address: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    server: JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/hook", post(record))
            .with_state(Recorder {
                calls: Arc::clone(&calls),
                fail_first,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            address,
            calls,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    fn calls(&self) -> Vec<Call> {
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
    let mut calls = recorder.calls.lock().unwrap();
    let status = if calls.len() < recorder.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    calls.push(Call {
        headers,
        body,
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
/// current `t`, the event header names the body's type, and the
/// idempotency key is `<order id>:<event>`. Returns the body.
fn assert_genuine(call: &Call) -> Value {
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
    let url = receiver.url();
    let Harness { app, redis: _redis } = Harness::start_with(backend, |config| {
        config.order_webhook_url = Some(url);
        config.order_webhook_secret = Some(SECRET.into());
        config.order_webhook_timeout_ms = 1000;
        config.order_webhook_backoff_ms = 20;
        config.order_webhook_backoff_max_ms = 200;
        config.order_sweep_ms = 20;
    })
    .await;
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
