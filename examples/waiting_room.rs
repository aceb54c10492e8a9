//! A load run of the waiting room against a running engine, with its
//! verdict: shoppers join a queued sale at staggered times before the
//! opening (and some after it), poll as told, buy and pay when admitted.
//! Then it checks what the issue asks of a fair, bounded waiting room and
//! prints the figures:
//!
//! - among pre-queue joiners, admission order (position) against join
//!   order: |Spearman rho| < 0.1;
//! - the order recomputed from the revealed seed equals the positions, and
//!   the seed matches the commitment shown before the opening;
//! - no order without admission (the sale's paid units are the admitted
//!   buyers', and orders without a token are refused);
//! - every shopper got a final answer (admitted, or `sold_out`) within a
//!   few seconds of the sell-out;
//! - polls per shopper per second under the stated bound (1);
//! - the cost of a poll against an order on the sold-out sale, as a ratio
//!   of their mean latencies in the same run.
//!
//! Run against an engine on 127.0.0.1 (the shoppers' secret and the admin
//! token as the engine's):
//! `cargo run --release --example waiting_room -- http://127.0.0.1:8091 <admin token> <shopper secret> 1000`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use chrono::{SecondsFormat, Utc};
use flashsale::domain::shuffled;
use flashsale::http::mint_shopper_token;
use parking_lot::Mutex;
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const STOCK: i64 = 200;
const OPENS_IN_SECS: u64 = 12;
const LATE_SHARE: usize = 10;
const FINAL_WITHIN_SECS: f64 = 5.0;
const POLL_BOUND_PER_SEC: f64 = 1.0;
const RETRIES_MAX: usize = 30;

#[derive(Default, Clone)]
struct Shopper {
    prequeue: bool,
    join_seq: u64,
    position: Option<u64>,
    polls: u64,
    joined_at: Option<Instant>,
    final_at: Option<Instant>,
    final_status: String,
    bought: bool,
}

struct Run {
    base: String,
    sale: String,
    secret: String,
    client: reqwest::Client,
    join_seq: AtomicU64,
    /// 429 and 503 answers retried.
    retries: AtomicU64,
    shoppers: Mutex<HashMap<String, Shopper>>,
    last_paid: Mutex<Option<Instant>>,
}

impl Run {
    fn token(&self, shopper: &str) -> anyhow::Result<String> {
        Ok(mint_shopper_token(self.secret.as_bytes(), shopper, 3_600)?)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// A shopper's call; 429 and 503 are retried after `Retry-After` (an
    /// order with its `Idempotency-Key`, so a retry never orders twice).
    async fn shopper_call(
        &self,
        method: reqwest::Method,
        shopper: &str,
        path: &str,
        purchase: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        for _ in 0..RETRIES_MAX {
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(self.token(shopper)?);
            if let Some(purchase) = purchase {
                request = request.header("X-Purchase-Token", purchase);
            }
            if path.ends_with("/orders") {
                request = request.header("Idempotency-Key", format!("wr-{shopper}"));
            }
            let (status, body) = self.send(request).await?;
            if status != 429 && status != 503 {
                return Ok((status, body));
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        anyhow::bail!("{shopper}: {path} still refused after {RETRIES_MAX} tries")
    }

    /// One shopper: join at `join_in`, poll as told, buy and pay once admitted.
    async fn shop(self: Arc<Self>, id: String, join_in: Duration) -> anyhow::Result<()> {
        tokio::time::sleep(join_in).await;
        let queue = format!("/api/v1/sales/{}/queue", self.sale);
        let (status, mut body) = self
            .shopper_call(reqwest::Method::POST, &id, &queue, None)
            .await?;
        let joined_at = Instant::now();
        let seq = self.join_seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut shoppers = self.shoppers.lock();
            let entry = shoppers.entry(id.clone()).or_default();
            entry.join_seq = seq;
            entry.joined_at = Some(joined_at);
        }
        if status != 201 {
            let mut shoppers = self.shoppers.lock();
            let entry = shoppers.entry(id.clone()).or_default();
            entry.final_at = Some(Instant::now());
            entry.final_status = body["error"]["code"].as_str().unwrap_or("?").to_owned();
            return Ok(());
        }
        loop {
            if let Some(position) = body["position"].as_u64() {
                self.shoppers.lock().entry(id.clone()).or_default().position = Some(position);
            }
            match body["status"].as_str().unwrap_or("") {
                "admitted" => {
                    let token = body["purchase_token"].as_str().context("a token")?;
                    let orders = format!("/api/v1/sales/{}/orders", self.sale);
                    let (status, order) = self
                        .shopper_call(reqwest::Method::POST, &id, &orders, Some(token))
                        .await?;
                    let mut bought = false;
                    if status == 201 {
                        let pay =
                            format!("/api/v1/orders/{}/pay", order["id"].as_str().unwrap_or(""));
                        let (paid, _) = self
                            .shopper_call(reqwest::Method::POST, &id, &pay, None)
                            .await?;
                        bought = paid == 200;
                        if bought {
                            *self.last_paid.lock() = Some(Instant::now());
                        }
                    }
                    let mut shoppers = self.shoppers.lock();
                    let entry = shoppers.entry(id.clone()).or_default();
                    entry.final_at = Some(Instant::now());
                    entry.final_status = "admitted".into();
                    entry.bought = bought;
                    return Ok(());
                }
                "waiting" => {}
                other => {
                    let mut shoppers = self.shoppers.lock();
                    let entry = shoppers.entry(id.clone()).or_default();
                    entry.final_at = Some(Instant::now());
                    entry.final_status = other.to_owned();
                    return Ok(());
                }
            }
            let wait = body["poll_after_ms"].as_u64().unwrap_or(1_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let (status, answer) = self
                .shopper_call(reqwest::Method::GET, &id, &queue, None)
                .await?;
            self.shoppers.lock().entry(id.clone()).or_default().polls += 1;
            ensure!(status == 200, "{id} polls: {status} {answer}");
            body = answer;
        }
    }
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    for (rank, index) in order.into_iter().enumerate() {
        ranks[index] = rank as f64;
    }
    ranks
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        va += (x - mean).powi(2);
        vb += (y - mean).powi(2);
    }
    cov / (va * vb).sqrt()
}

/// Wall time per call, in ms, of `count` calls made `concurrency` at a
/// time (each batch's time over its calls).
async fn mean_latency<F, Fut>(count: usize, concurrency: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(u16, Value)>>,
{
    let mut total = Duration::ZERO;
    for chunk in (0..count).collect::<Vec<_>>().chunks(concurrency) {
        let started = Instant::now();
        let answers = futures::future::join_all(chunk.iter().map(|&i| call(i))).await;
        for answer in answers {
            answer?;
        }
        total += started.elapsed() * u32::try_from(chunk.len())?;
    }
    Ok(total.as_secs_f64() * 1_000.0 / count as f64 / concurrency as f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8091".into());
    let admin = args.get(2).context("the admin token")?.clone();
    let secret = args.get(3).context("the shopper secret")?.clone();
    let count: usize = args.get(4).map_or(Ok(1_000), |n| n.parse())?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let at = |secs: u64| {
        (Utc::now() + chrono::Duration::seconds(secs as i64))
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    let response = client
        .post(format!("{base}/admin/v1/sales"))
        .bearer_auth(&admin)
        .json(&json!({
            "sku": "WR", "title": "waiting room run", "price_cents": 100,
            "stock_total": STOCK, "per_user_limit": 1,
            "starts_at": at(OPENS_IN_SECS), "ends_at": at(600),
            "admission": {"mode": "queue", "prequeue_opens_secs": 600,
                          "admit_per_sec": 100, "token_ttl_secs": 30},
        }))
        .send()
        .await?;
    let sale: Value = response.json().await?;
    let sale = sale["id"].as_str().context("a sale id")?.to_owned();
    let public_view = || async {
        let view: Value = client
            .get(format!("{base}/api/v1/sales/{sale}"))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(view)
    };
    let view = public_view().await?;
    let commitment = view["admission"]["seed_sha256"]
        .as_str()
        .context("a commitment")?
        .to_owned();
    let run = Arc::new(Run {
        base: base.clone(),
        sale: sale.clone(),
        secret,
        client: client.clone(),
        join_seq: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        shoppers: Mutex::new(HashMap::new()),
        last_paid: Mutex::new(None),
    });
    let mut tasks = Vec::new();
    let mut rng = rand::rng();
    for i in 0..count {
        let id = format!("wr-{i:05}");
        let late = i % LATE_SHARE == 0;
        let join_in = if late {
            Duration::from_millis(OPENS_IN_SECS * 1_000 + 500 + rng.random_range(0..3_000))
        } else {
            Duration::from_millis(rng.random_range(0..(OPENS_IN_SECS - 2) * 1_000))
        };
        run.shoppers.lock().entry(id.clone()).or_default().prequeue = !late;
        tasks.push(tokio::spawn(Arc::clone(&run).shop(id, join_in)));
    }
    // An order without admission, just after the opening.
    tokio::time::sleep(Duration::from_millis(OPENS_IN_SECS * 1_000 + 500)).await;
    let refused = run
        .shopper_call(
            reqwest::Method::POST,
            "wr-intruder",
            &format!("/api/v1/sales/{sale}/orders"),
            None,
        )
        .await
        .map_or(0, |(status, _)| status);
    let mut failed = 0;
    for task in tasks {
        if let Err(err) = task.await? {
            eprintln!("{err:#}");
            failed += 1;
        }
    }
    let shoppers = run.shoppers.lock().clone();

    // Fairness: positions of the pre-queue against their join order.
    let mut prequeue: Vec<(&String, &Shopper)> = shoppers
        .iter()
        .filter(|(_, s)| s.prequeue && s.position.is_some())
        .collect();
    prequeue.sort_by_key(|(_, s)| s.position);
    let joins: Vec<f64> = prequeue.iter().map(|(_, s)| s.join_seq as f64).collect();
    let places: Vec<f64> = prequeue
        .iter()
        .map(|(_, s)| s.position.unwrap_or(0) as f64)
        .collect();
    let rho = spearman(&joins, &places);
    let view = public_view().await?;
    let seed = view["admission"]["seed"]
        .as_str()
        .context("the revealed seed")?;
    let committed = hex::encode(Sha256::digest(hex::decode(seed)?)) == commitment;
    let all_prequeue: Vec<&str> = shoppers
        .iter()
        .filter(|(_, s)| s.prequeue)
        .map(|(id, _)| id.as_str())
        .collect();
    let recomputed = shuffled(seed, all_prequeue.iter().copied());
    let by_position: Vec<&str> = prequeue.iter().map(|(id, _)| id.as_str()).collect();
    let replayed = recomputed
        .iter()
        .filter(|id| by_position.contains(id))
        .copied()
        .collect::<Vec<_>>()
        == by_position;

    // No order without admission.
    let stats: Value = client
        .get(format!("{base}/admin/v1/sales/{sale}"))
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    let bought = shoppers.values().filter(|s| s.bought).count() as i64;
    let paid = stats["stats"]["paid"].as_i64().unwrap_or(-1);

    // Final answers after the sell-out, and the polling rate.
    let sold_out_at = run.last_paid.lock().context("someone bought")?;
    let mut late_final = 0.0_f64;
    let mut finals = 0;
    let mut rate_max = 0.0_f64;
    let (mut polls, mut seconds) = (0u64, 0.0);
    for shopper in shoppers.values() {
        if let Some(final_at) = shopper.final_at {
            finals += 1;
            if shopper.final_status == "sold_out" {
                late_final = late_final.max(
                    final_at
                        .saturating_duration_since(sold_out_at)
                        .as_secs_f64(),
                );
            }
            if let Some(joined) = shopper.joined_at {
                let span = final_at.duration_since(joined).as_secs_f64().max(1.0);
                rate_max = rate_max.max(shopper.polls as f64 / span);
                polls += shopper.polls;
                seconds += span;
            }
        }
    }

    // A poll against an order on the sold-out sale, same engine, same run.
    let ids: Vec<String> = shoppers.keys().cloned().collect();
    let queue = format!("/api/v1/sales/{sale}/queue");
    let orders = format!("/api/v1/sales/{sale}/orders");
    let calls = 2_000;
    let poll_ms = mean_latency(calls, 50, |i| {
        run.shopper_call(reqwest::Method::GET, &ids[i % ids.len()], &queue, None)
    })
    .await?;
    let order_ms = mean_latency(calls, 50, |i| {
        run.shopper_call(reqwest::Method::POST, &ids[i % ids.len()], &orders, None)
    })
    .await?;

    let verdicts = [
        (
            "|Spearman rho| < 0.1 (pre-queue position vs join order)",
            rho.abs() < 0.1,
        ),
        ("the revealed seed matches the commitment", committed),
        (
            "the order recomputed from the seed is the positions'",
            replayed,
        ),
        (
            "paid units == admitted buyers, and no order without a token",
            paid == bought && refused == 403,
        ),
        (
            "every shopper got a final answer",
            finals == shoppers.len() && failed == 0,
        ),
        (
            "final answers within 5 s of the sell-out",
            late_final <= FINAL_WITHIN_SECS,
        ),
        (
            "polls per shopper per second under the bound",
            rate_max <= POLL_BOUND_PER_SEC,
        ),
    ];
    println!(
        "sale {sale}: {} shoppers ({} pre-queue), stock {STOCK}",
        shoppers.len(),
        all_prequeue.len()
    );
    println!(
        "spearman rho {rho:.4} over {} pre-queue joiners",
        prequeue.len()
    );
    println!("bought {bought}, paid units {paid}, order without a token: {refused}");
    println!(
        "429/503 answers retried: {}",
        run.retries.load(Ordering::Relaxed)
    );
    println!("last final answer {late_final:.2} s after the sell-out");
    println!(
        "polls per shopper per second: max {rate_max:.3}, mean {:.3} ({polls} polls)",
        polls as f64 / seconds
    );
    println!(
        "wall time per call, 50 in flight: poll {poll_ms:.3} ms, sold-out order {order_ms:.3} ms, ratio {:.2}",
        poll_ms / order_ms
    );
    let mut pass = true;
    for (check, ok) in verdicts {
        println!("{} {check}", if ok { "PASS" } else { "FAIL" });
        pass &= ok;
    }
    ensure!(pass, "the waiting room's verdict is FAIL");
    Ok(())
}
