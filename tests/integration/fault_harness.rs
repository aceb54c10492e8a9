//! The fault tests' harness: the real `flashsale` binary as a child process
//! that a test can SIGKILL or SIGTERM and start again on the same address,
//! and a race of shoppers that records every request's outcome (acknowledged,
//! definitely refused, or unknown: timed out or connection dropped) and
//! retries with the same `Idempotency-Key` until each shopper has a definite
//! answer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{free_port, TestApp, ADMIN_TOKEN, SHOPPER_SECRET};

/// A `flashsale` process on a fixed local port, against a given Redis.
pub struct EngineProcess {
    port: u16,
    redis_url: String,
    /// Further `FLASHSALE_*` settings of every start.
    settings: Vec<(String, String)>,
    child: Option<Child>,
    /// Every log line the current process printed (JSON).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl EngineProcess {
    /// Starts the binary on a free port and waits until it listens.
    pub fn start(redis_url: &str) -> Self {
        Self::start_with(redis_url, &[])
    }

    /// [`start`](Self::start) with further settings (environment variables).
    pub fn start_with(redis_url: &str, settings: &[(&str, &str)]) -> Self {
        let mut engine = Self {
            port: free_port(),
            redis_url: redis_url.to_owned(),
            settings: settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
        };
        engine.spawn();
        engine
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client of this engine whose requests give up after `timeout`.
    pub fn client(&self, timeout: Duration) -> TestApp {
        TestApp::attach(self.address(), timeout)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flashsale"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--log-format", "json"])
            .env("FLASHSALE_REDIS_URL", &self.redis_url)
            .env("FLASHSALE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("FLASHSALE_USER_TOKEN_SECRET", SHOPPER_SECRET)
            .env("FLASHSALE_PAYMENTS", "simulated")
            .env("FLASHSALE_RATE_GLOBAL_PER_SEC", "0")
            .env("FLASHSALE_RATE_USER_PER_SEC", "0")
            .env("FLASHSALE_RATE_IP_PER_SEC", "0")
            .env("RUST_LOG", "info")
            .envs(self.settings.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start flashsale");
        let stdout = child.stdout.take().expect("stdout");
        self.child = Some(child);
        let logs = Arc::new(Mutex::new(Vec::new()));
        self.logs = Arc::clone(&logs);
        let (listening, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if parsed["fields"]["message"] == "flashsale listening" {
                    let _ = listening.send(());
                }
                logs.lock().expect("logs").push(line);
            }
        });
        started
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("flashsale did not start: {:?}", self.logs()));
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 20 s) for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("a running engine");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("flashsale did not stop on SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the binary again on the same address and Redis.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The seed of a fault test's random choices: `FLASHSALE_FAULT_SEED` to
/// replay a failure, else a fresh one (printed, so a failure can be replayed).
pub fn seeded_rng(test: &str) -> StdRng {
    let seed = std::env::var("FLASHSALE_FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{test}: FLASHSALE_FAULT_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// What one request of the race got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201: the order's id.
    Acknowledged(String),
    /// Any other answer with a JSON error code (status, code).
    Refused(StatusCode, String),
    /// No answer: timed out or the connection dropped.
    Unknown,
}

/// Every request of a race, per shopper, in order.
#[derive(Debug, Default)]
pub struct Record {
    pub attempts: BTreeMap<String, Vec<Outcome>>,
}

impl Record {
    /// The order each shopper was acknowledged (the last 201 they got).
    pub fn acknowledged(&self) -> BTreeMap<&str, &str> {
        self.attempts
            .iter()
            .filter_map(|(shopper, outcomes)| {
                outcomes.iter().rev().find_map(|outcome| match outcome {
                    Outcome::Acknowledged(id) => Some((shopper.as_str(), id.as_str())),
                    _ => None,
                })
            })
            .collect()
    }

    /// How many requests got each kind of answer (`201`, `503 unavailable`,
    /// `unknown`, ...).
    pub fn tally(&self) -> BTreeMap<String, usize> {
        let mut tally = BTreeMap::new();
        for outcome in self.attempts.values().flatten() {
            let kind = match outcome {
                Outcome::Acknowledged(_) => "201".to_owned(),
                Outcome::Refused(status, code) => format!("{} {code}", status.as_u16()),
                Outcome::Unknown => "unknown".to_owned(),
            };
            *tally.entry(kind).or_default() += 1;
        }
        tally
    }

    /// Asserts what every fault scenario promises about the answers: a
    /// shopper acknowledged twice got the same order both times (a retry
    /// never makes a second order), and nothing answered 500.
    pub fn assert_sound(&self) {
        for (shopper, outcomes) in &self.attempts {
            let ids: Vec<&String> = outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    Outcome::Acknowledged(id) => Some(id),
                    _ => None,
                })
                .collect();
            assert!(
                ids.windows(2).all(|pair| pair[0] == pair[1]),
                "{shopper} was acknowledged different orders: {ids:?}"
            );
        }
        let tally = self.tally();
        assert!(
            tally
                .keys()
                .all(|kind| !kind.starts_with('5') || kind.starts_with("503 ")),
            "only documented 503s among the server errors: {tally:?}"
        );
    }
}

/// A race: `shoppers` shoppers, each keyed by their own `Idempotency-Key`,
/// sent by `workers` concurrent tasks. A shopper is retried (same key) after
/// a 503, a 429 or no answer, until a definite answer or the deadline.
pub struct Race {
    pub sale: String,
    pub shoppers: usize,
    pub workers: usize,
    /// Pause before a retry.
    pub backoff: Duration,
    pub deadline: Duration,
}

/// Counts orders acknowledged so far, and requests in flight, so a test can
/// strike mid-race; and can hold the race's workers so it does not end
/// before the strike (a test that holds must release before awaiting it).
pub struct Progress {
    pub acknowledged: AtomicUsize,
    pub in_flight: AtomicUsize,
    /// Once this many orders are acknowledged, workers send nothing new
    /// until [`Progress::release`].
    held_at: AtomicUsize,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            acknowledged: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            held_at: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Progress {
    /// Workers send nothing new once `count` orders are acknowledged (those
    /// in flight still finish), until [`Progress::release`].
    pub fn hold_at(&self, count: usize) {
        self.held_at.store(count, Ordering::SeqCst);
    }

    /// Workers send again.
    pub fn release(&self) {
        self.held_at.store(usize::MAX, Ordering::SeqCst);
    }

    /// Waits until at least `count` orders were acknowledged.
    pub async fn reached(&self, count: usize) {
        self.wait_while(|acknowledged| acknowledged < count).await;
    }

    /// Waits while the race is held.
    async fn unheld(&self) {
        self.wait_while(|acknowledged| acknowledged >= self.held_at.load(Ordering::SeqCst))
            .await;
    }

    /// Waits while `busy` holds for the orders acknowledged so far.
    async fn wait_while(&self, busy: impl Fn(usize) -> bool) {
        while busy(self.acknowledged.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Race {
    pub fn shopper(i: usize) -> String {
        format!("racer-{i}")
    }

    /// Runs the race against `app` to the end and returns its record.
    pub async fn run(&self, app: Arc<TestApp>, progress: Arc<Progress>) -> Record {
        let next = Arc::new(AtomicUsize::new(0));
        let record = Arc::new(Mutex::new(Record::default()));
        let started = Instant::now();
        let tasks: Vec<_> = (0..self.workers)
            .map(|_| {
                let (app, next, record, progress) = (
                    Arc::clone(&app),
                    Arc::clone(&next),
                    Arc::clone(&record),
                    Arc::clone(&progress),
                );
                let (sale, shoppers, backoff, deadline) = (
                    self.sale.clone(),
                    self.shoppers,
                    self.backoff,
                    self.deadline,
                );
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= shoppers {
                            return;
                        }
                        let shopper = Self::shopper(i);
                        let key = format!("race-key-{i}");
                        loop {
                            progress.unheld().await;
                            progress.in_flight.fetch_add(1, Ordering::SeqCst);
                            let outcome = attempt(&app, &sale, &shopper, &key).await;
                            progress.in_flight.fetch_sub(1, Ordering::SeqCst);
                            let retry = match &outcome {
                                Outcome::Acknowledged(_) => {
                                    progress.acknowledged.fetch_add(1, Ordering::SeqCst);
                                    false
                                }
                                Outcome::Refused(status, _) => {
                                    *status == StatusCode::SERVICE_UNAVAILABLE
                                        || *status == StatusCode::TOO_MANY_REQUESTS
                                }
                                Outcome::Unknown => true,
                            };
                            record
                                .lock()
                                .expect("record")
                                .attempts
                                .entry(shopper.clone())
                                .or_default()
                                .push(outcome);
                            if !retry {
                                break;
                            }
                            assert!(
                                started.elapsed() < deadline,
                                "{shopper} got no definite answer within {deadline:?}"
                            );
                            tokio::time::sleep(backoff).await;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("race worker");
        }
        Arc::into_inner(record)
            .expect("workers done")
            .into_inner()
            .expect("record")
    }
}

/// One order request, classified.
pub async fn attempt(app: &TestApp, sale: &str, shopper: &str, key: &str) -> Outcome {
    let response = match app
        .client
        .post(app.url(&format!("/api/v1/sales/{sale}/orders")))
        .bearer_auth(crate::support::token(shopper))
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"quantity": 1}))
        .send()
        .await
    {
        Ok(response) => response,
        Err(_) => return Outcome::Unknown,
    };
    let status = response.status();
    let Ok(body) = response.json::<Value>().await else {
        return Outcome::Unknown;
    };
    if status == StatusCode::CREATED {
        let id = body["id"].as_str().expect("order id").to_owned();
        return Outcome::Acknowledged(id);
    }
    let code = body["error"]["code"].as_str().unwrap_or("<no code>");
    Outcome::Refused(status, code.to_owned())
}

/// Checks, after a scenario, that every acknowledged order exists and
/// belongs to its shopper, that no shopper has a second order, and that
/// the sale's audit finds no difference. Returns the audit.
pub async fn assert_nothing_lost(app: &TestApp, sale: &str, record: &Record) -> Value {
    let acknowledged = record.acknowledged();
    for (shopper, id) in &acknowledged {
        let orders: Value = app
            .shopper_get(shopper, "/api/v1/orders")
            .await
            .json()
            .await
            .expect("orders json");
        let ids: Vec<&str> = orders["orders"]
            .as_array()
            .expect("orders")
            .iter()
            .filter_map(|order| order["id"].as_str())
            .collect();
        assert_eq!(ids, [*id], "{shopper}'s acknowledged order, and only it");
    }
    let audit = app.assert_audit_clean(sale).await;
    assert_eq!(
        audit["recounted"]["orders"].as_u64(),
        Some(acknowledged.len() as u64),
        "orders in the store == orders acknowledged (every unknown answer was retried): {audit}"
    );
    audit
}
