//! The goose scenarios and what a shopper does in each: `spike`, `browse`,
//! `buy-and-pay` (paying through the simulated route or the WeChat Pay
//! stand-in), `mixed`, `queue` and `campaign`. Owns the shoppers' requests during the attack
//! (through goose, so they are in its metrics) and records what each answer
//! meant in the [`Tally`]. Knows nothing of set-up or the verdict.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use goose::goose::GooseResponse;
use goose::prelude::*;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::json;

use crate::engine::{Campaign, PublicSale, PublicSaleList};
use crate::shoppers::Shoppers;
use crate::tally::{Kind, Tally};

/// goose's request names: one line per route in its reports, whatever the id.
const ROUTE_SALES: &str = "/api/v1/sales";
const ROUTE_SALE: &str = "/api/v1/sales/{id}";
const ROUTE_ORDER: &str = "/api/v1/sales/{id}/orders";
const ROUTE_PAY: &str = "/api/v1/orders/{id}/pay";
const ROUTE_WECHATPAY: &str = "/api/v1/orders/{id}/wechatpay";
/// The WeChat Pay stand-in's route for the shopper's phone paying.
const ROUTE_STANDIN_PAY: &str = "/standin/pay";
const ROUTE_QUEUE: &str = "/api/v1/sales/{id}/queue";
const ROUTE_CAMPAIGN: &str = "/api/v1/campaigns/{id}";
const ROUTE_CANCEL: &str = "/api/v1/orders/{id}/cancel";

/// A kept-alive connection idle this long is not reused. The engine closes
/// connections idle for `FLASHSALE_IDLE_TIMEOUT_MS` (default 75 s); a
/// shopper waiting for the opening must not send its order on a connection
/// the engine is closing at that moment.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Longest wait for any answer (goose's own default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause of a shopper who has finished, until goose ends the run: no requests.
const IDLE: Duration = Duration::from_secs(1);
/// Pause between two looks at a sold-out sale, waiting for returned stock.
const SOLD_OUT_POLL: Duration = Duration::from_millis(500);
/// Pause after `not_started` (the engine's clock decides, a few ms apart from ours).
const NOT_STARTED_PAUSE: Duration = Duration::from_millis(20);
/// Shortest wait after a 429 or 503, whatever `Retry-After` says.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);
/// Longest wait after a 429 or 503, whatever `Retry-After` says.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// Countdown polls of one browse visit, and the pause between them.
const COUNTDOWN_POLLS: u32 = 3;
const COUNTDOWN_PAUSE: Duration = Duration::from_secs(1);
/// `queue`: a pre-queue shopper joins at least this long before the
/// opening (by the engine's clock), so its join is answered before it.
const PREQUEUE_MARGIN: Duration = Duration::from_secs(1);
/// `queue`: the wait before the next poll when an answer gave none.
const POLL_PAUSE_DEFAULT: Duration = Duration::from_secs(1);
/// `campaign`: items of a round each goose user tries, at random.
const CAMPAIGN_PICKS: usize = 3;
/// `campaign`: chance, in percent, that a shopper cancels an order it won
/// at once and races on, its units back in its allowance.
const CAMPAIGN_CANCEL_PERCENT: u32 = 20;
/// `campaign`: chance, in percent, that a shopper pays an order it won at
/// once (the rest, neither cancelled nor paid, expire unpaid).
const CAMPAIGN_PAY_PERCENT: u32 = 50;
/// `mixed`: how many shoppers in each role, out of the sum.
const MIX: [(Role, u32); 4] = [
    (Role::Browse, 5),
    (Role::BuyAndPay, 3),
    (Role::Spike, 1),
    (Role::Campaign, 1),
];

/// What the scenarios share: the suite's sales and settings, its shoppers,
/// and the tally. Set once before the attack: goose transactions are plain
/// functions of the user, so this is process-wide.
pub struct Suite {
    pub spike_sale: String,
    pub buy_sale: String,
    /// The queued sale `queue` shoppers wait for (created when `queue` runs).
    pub queue_sale: Option<String>,
    /// The campaign `campaign` shoppers race for (created when `campaign`
    /// or `mixed` runs).
    pub campaign: Option<String>,
    pub shoppers: Shoppers,
    pub tally: Arc<Tally>,
    pub think_ms_max: u64,
    pub abandon_percent: u32,
    /// The WeChat Pay stand-in's address when buy-and-pay shoppers pay
    /// through WeChat Pay (`--payments wechatpay`); `None`: the engine's
    /// simulated pay route.
    pub wechatpay_standin: Option<String>,
    /// How long one visit keeps trying (retries, sold-out polls) before leaving.
    pub patience: Duration,
}

static SUITE: OnceLock<Suite> = OnceLock::new();

pub fn install(suite: Suite) -> anyhow::Result<()> {
    SUITE
        .set(suite)
        .map_err(|_| anyhow::anyhow!("the suite is set up once per process"))
}

fn suite() -> Result<&'static Suite, Box<TransactionError>> {
    SUITE.get().ok_or_else(|| custom("the suite is not set up"))
}

fn custom(message: &str) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(message.to_owned()))
}

/// Every scenario, under the names `--scenarios` takes (goose's machine
/// names: `buy-and-pay` is `buyandpay`).
pub fn register(attack: GooseAttack) -> GooseAttack {
    attack
        .register_scenario(
            scenario!("spike")
                .register_transaction(transaction!(join_spike).set_name("join").set_on_start())
                .register_transaction(transaction!(visit).set_name("race")),
        )
        .register_scenario(
            scenario!("browse")
                .register_transaction(transaction!(join_browse).set_name("join").set_on_start())
                .register_transaction(transaction!(visit).set_name("browse")),
        )
        .register_scenario(
            scenario!("buy-and-pay")
                .register_transaction(
                    transaction!(join_buy_and_pay)
                        .set_name("join")
                        .set_on_start(),
                )
                .register_transaction(transaction!(visit).set_name("buy and pay")),
        )
        .register_scenario(
            scenario!("mixed")
                .register_transaction(transaction!(join_mixed).set_name("join").set_on_start())
                .register_transaction(transaction!(visit).set_name("mixed")),
        )
        .register_scenario(
            scenario!("queue")
                .register_transaction(transaction!(join_queue).set_name("join").set_on_start())
                .register_transaction(transaction!(visit).set_name("queue")),
        )
        .register_scenario(
            scenario!("campaign")
                .register_transaction(transaction!(join_campaign).set_name("join").set_on_start())
                .register_transaction(transaction!(visit).set_name("campaign")),
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Spike,
    Browse,
    BuyAndPay,
    Queue,
    Campaign,
}

/// A goose user's shopper and progress.
#[derive(Debug, Clone)]
struct Session {
    shopper: String,
    token: String,
    role: Role,
    /// The spike sale has opened (by the engine's clock).
    opened: bool,
    /// This user's visit is over: it idles until the run ends.
    done: bool,
    /// Purchase attempts so far: each gets its own `Idempotency-Key`.
    attempts: u64,
}

fn session(user: &GooseUser) -> Result<&Session, Box<TransactionError>> {
    user.get_session_data::<Session>()
        .ok_or_else(|| custom("the user has no shopper"))
}

fn session_mut(user: &mut GooseUser) -> Result<&mut Session, Box<TransactionError>> {
    user.get_session_data_mut::<Session>()
        .ok_or_else(|| custom("the user has no shopper"))
}

async fn join_spike(user: &mut GooseUser) -> TransactionResult {
    join(user, Role::Spike).await
}

async fn join_browse(user: &mut GooseUser) -> TransactionResult {
    join(user, Role::Browse).await
}

async fn join_buy_and_pay(user: &mut GooseUser) -> TransactionResult {
    join(user, Role::BuyAndPay).await
}

async fn join_queue(user: &mut GooseUser) -> TransactionResult {
    join(user, Role::Queue).await
}

async fn join_campaign(user: &mut GooseUser) -> TransactionResult {
    join(user, Role::Campaign).await
}

async fn join_mixed(user: &mut GooseUser) -> TransactionResult {
    let total: u32 = MIX.iter().map(|(_, weight)| weight).sum();
    let mut roll = rand::rng().random_range(0..total);
    let mut role = Role::Browse;
    for (candidate, weight) in MIX {
        if roll < weight {
            role = candidate;
            break;
        }
        roll -= weight;
    }
    join(user, role).await
}

/// The HTTP client every shopper of this process shares: one connection
/// pool, built once. A client per shopper costs a TLS configuration and a
/// pool each; built for 10,000 shoppers inside the attack, that work
/// starved the generator's own tasks, which then left connections they had
/// opened unused past the engine's header-read timeout.
fn shared_client() -> Result<reqwest::Client, Box<TransactionError>> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("flashsale-loadtest/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(POOL_IDLE)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|err| custom(&format!("cannot build the HTTP client: {err}")))?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// Gives the user its shopper, token, and the shared HTTP client.
async fn join(user: &mut GooseUser, role: Role) -> TransactionResult {
    let suite = suite()?;
    user.client = shared_client()?;
    let shopper = suite.shoppers.shopper_of(user.weighted_users_index);
    let token = suite
        .shoppers
        .token(&shopper)
        .map_err(|err| custom(&format!("{err:#}")))?;
    suite.tally.shopper(&shopper, &token);
    user.set_session_data(Session {
        shopper,
        token,
        role,
        opened: false,
        done: false,
        attempts: 0,
    });
    Ok(())
}

/// One visit of the user's role; a finished shopper idles.
async fn visit(user: &mut GooseUser) -> TransactionResult {
    let session = session(user)?;
    if session.done {
        tokio::time::sleep(IDLE).await;
        return Ok(());
    }
    match session.role {
        Role::Spike => spike(user).await,
        Role::Browse => browse(user).await,
        Role::BuyAndPay => buy_and_pay(user).await,
        Role::Queue => queue(user).await,
        Role::Campaign => campaign(user).await,
    }
}

/// Wait for the spike sale to open by the engine's clock, then race once.
async fn spike(user: &mut GooseUser) -> TransactionResult {
    let suite = suite()?;
    if !session(user)?.opened {
        if let Some(sale) = get_sale(user, &suite.spike_sale).await? {
            match (sale.starts_at - sale.server_time).to_std() {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(_) => suite.tally.spike_late(),
            }
        }
        session_mut(user)?.opened = true;
    }
    race(user, &suite.spike_sale, false).await?;
    session_mut(user)?.done = true;
    Ok(())
}

/// The read load around a sale: the list, one sale, its countdown polled.
async fn browse(user: &mut GooseUser) -> TransactionResult {
    let suite = suite()?;
    let answer = send(
        user,
        GooseMethod::Get,
        ROUTE_SALES,
        "/api/v1/sales",
        |request| request,
    )
    .await?;
    let listed: Vec<String> = serde_json::from_value::<PublicSaleList>(answer.body)
        .map(|list| list.sales.into_iter().map(|sale| sale.id).collect())
        .unwrap_or_default();
    let sale_id = listed
        .choose(&mut rand::rng())
        .cloned()
        .unwrap_or_else(|| suite.spike_sale.clone());
    for _ in 0..COUNTDOWN_POLLS {
        get_sale(user, &sale_id).await?;
        tokio::time::sleep(COUNTDOWN_PAUSE).await;
    }
    Ok(())
}

/// Each round in turn: open the campaign's page, wait for the round by
/// the engine's clock (the page's `server_time`), and race for up to
/// [`CAMPAIGN_PICKS`] random items of it, one after another, until the
/// shopper's limit (or the round's end) answers; now and then cancel an
/// order won, giving its units back to the shopper's allowance, and more
/// often pay it (the run's way: simulated, or through WeChat Pay). Concurrency per shopper
/// comes from several goose users playing one shopper
/// (`--users-per-shopper`): they wait for the same opening and race at
/// once, each for its own random items.
async fn campaign(user: &mut GooseUser) -> TransactionResult {
    let suite = suite()?;
    session_mut(user)?.done = true;
    let id = suite
        .campaign
        .clone()
        .ok_or_else(|| custom("the campaign scenario has no campaign"))?;
    let mut next = 0;
    while let Some(page) = get_campaign(user, &id).await? {
        let Some(round) = page.rounds.get(next) else {
            break;
        };
        next += 1;
        if round.status != "ended" {
            if let Ok(wait) = (round.starts_at - page.server_time).to_std() {
                tokio::time::sleep(wait).await;
            }
            let picks: Vec<String> = round
                .items
                .choose_multiple(&mut rand::rng(), CAMPAIGN_PICKS)
                .map(|item| item.sale_id.clone())
                .collect();
            race_round(user, &picks).await?;
        } else {
            suite.tally.campaign_round_missed();
        }
        if next == page.rounds.len() {
            break;
        }
    }
    Ok(())
}

/// Races for each of `picks` (a round's sales) in turn, one unit each,
/// retrying 429/503 after `Retry-After`, until the shopper's limit, the
/// round's end or the suite's patience stops it. An order won is cancelled
/// at once [`CAMPAIGN_CANCEL_PERCENT`] of the time, paid at once
/// [`CAMPAIGN_PAY_PERCENT`] of the time, else left to its payment timeout.
async fn race_round(user: &mut GooseUser, picks: &[String]) -> TransactionResult {
    let give_up = Instant::now() + suite()?.patience;
    for sale_id in picks {
        let key = next_key(user)?;
        loop {
            match order(user, sale_id, &key, None).await? {
                Attempt::Ordered(order_id) => {
                    let choice = rand::rng().random_range(0..100);
                    if choice < CAMPAIGN_CANCEL_PERCENT {
                        let token = session(user)?.token.clone();
                        let path = format!("/api/v1/orders/{order_id}/cancel");
                        send(user, GooseMethod::Post, ROUTE_CANCEL, &path, |request| {
                            request.bearer_auth(&token)
                        })
                        .await?;
                    } else if choice < CAMPAIGN_CANCEL_PERCENT + CAMPAIGN_PAY_PERCENT {
                        if let Some(paying) = start_paying(user, &order_id).await? {
                            pay(user, &order_id, paying).await?;
                        }
                    }
                    break;
                }
                Attempt::SoldOut => break,
                Attempt::Retry(pause) if Instant::now() < give_up => {
                    tokio::time::sleep(pause).await;
                }
                Attempt::NotStarted if Instant::now() < give_up => {
                    tokio::time::sleep(NOT_STARTED_PAUSE).await;
                }
                _ => return Ok(()),
            }
        }
    }
    Ok(())
}

/// Race for a unit; with WeChat Pay, start paying it (`/wechatpay`); then,
/// after a think time, pay or abandon it.
async fn buy_and_pay(user: &mut GooseUser) -> TransactionResult {
    let suite = suite()?;
    let ordered = race(user, &suite.buy_sale, true).await?;
    session_mut(user)?.done = true;
    let Some(order_id) = ordered else {
        return Ok(());
    };
    let Some(paying) = start_paying(user, &order_id).await? else {
        return Ok(());
    };
    let (think, abandon) = {
        let mut rng = rand::rng();
        (
            Duration::from_millis(rng.random_range(0..=suite.think_ms_max)),
            rng.random_range(0..100) < suite.abandon_percent,
        )
    };
    tokio::time::sleep(think).await;
    if abandon {
        suite.tally.abandoned(&order_id);
        return Ok(());
    }
    pay(user, &order_id, paying).await
}

/// How an order is paid in this run.
enum Paying {
    /// Through the WeChat Pay stand-in, with the `wx.requestPayment`
    /// parameters the engine gave.
    WeChatPay {
        standin: String,
        params: serde_json::Value,
    },
    /// By the engine's simulated payment route.
    Simulated,
}

/// Starts paying `order_id` the run's way: with WeChat Pay, the engine's
/// `wx.requestPayment` parameters (`None` when it gave none).
async fn start_paying(
    user: &mut GooseUser,
    order_id: &str,
) -> Result<Option<Paying>, Box<TransactionError>> {
    Ok(match &suite()?.wechatpay_standin {
        Some(standin) => prepay(user, order_id)
            .await?
            .map(|params| Paying::WeChatPay {
                standin: standin.clone(),
                params,
            }),
        None => Some(Paying::Simulated),
    })
}

/// Pays `order_id`: the shopper's phone pays WeChat Pay's sheet with the
/// engine's parameters (WeChat Pay, the stand-in, then notifies the
/// engine), or the simulated route.
async fn pay(user: &mut GooseUser, order_id: &str, paying: Paying) -> TransactionResult {
    match paying {
        Paying::WeChatPay { standin, params } => {
            let url = format!("{}/standin/pay", standin.trim_end_matches('/'));
            send(
                user,
                GooseMethod::Post,
                ROUTE_STANDIN_PAY,
                &url,
                |request| request.json(&params),
            )
            .await?;
        }
        Paying::Simulated => {
            let token = session(user)?.token.clone();
            let path = format!("/api/v1/orders/{order_id}/pay");
            send(user, GooseMethod::Post, ROUTE_PAY, &path, |request| {
                request.bearer_auth(&token)
            })
            .await?;
        }
    }
    Ok(())
}

/// `POST /api/v1/orders/{id}/wechatpay`, retried after 429 and 503 for the
/// suite's patience: the `wx.requestPayment` parameters, if the engine
/// gave them.
async fn prepay(
    user: &mut GooseUser,
    order_id: &str,
) -> Result<Option<serde_json::Value>, Box<TransactionError>> {
    let suite = suite()?;
    let give_up = Instant::now() + suite.patience;
    let token = session(user)?.token.clone();
    let path = format!("/api/v1/orders/{order_id}/wechatpay");
    loop {
        let answer = send(user, GooseMethod::Post, ROUTE_WECHATPAY, &path, |request| {
            request.bearer_auth(&token)
        })
        .await?;
        match answer.kind {
            Kind::Success => {
                let package = answer.body["package"].as_str().unwrap_or_default();
                suite.tally.prepay(order_id, package);
                return Ok(Some(answer.body));
            }
            Kind::RateLimited | Kind::Shed if Instant::now() < give_up => {
                tokio::time::sleep(answer.retry_after).await;
            }
            _ => return Ok(None),
        }
    }
}

/// Join the queued sale at a random moment before its opening (by the
/// engine's clock; a shopper started too late for that joins at once and
/// is not of the pre-queue), poll no sooner than each answer's
/// `poll_after_ms`, and order with the admission's purchase token. Joins
/// and polls answered 429 or 503 are retried after `Retry-After`; the visit
/// gives up the suite's patience after the opening.
async fn queue(user: &mut GooseUser) -> TransactionResult {
    let suite = suite()?;
    session_mut(user)?.done = true;
    let sale_id = suite
        .queue_sale
        .clone()
        .ok_or_else(|| custom("the queue scenario has no queued sale"))?;
    let Some(sale) = get_sale(user, &sale_id).await? else {
        return Ok(());
    };
    let until_opening = (sale.starts_at - sale.server_time)
        .to_std()
        .unwrap_or_default();
    let prequeue = until_opening > PREQUEUE_MARGIN;
    if prequeue {
        let join_in = rand::rng().random_range(Duration::ZERO..until_opening - PREQUEUE_MARGIN);
        tokio::time::sleep(join_in).await;
    }
    let give_up = Instant::now() + until_opening + suite.patience;
    let (shopper, token) = {
        let session = session(user)?;
        (session.shopper.clone(), session.token.clone())
    };
    let path = format!("/api/v1/sales/{sale_id}/queue");
    let mut answer = loop {
        let answer = send(user, GooseMethod::Post, ROUTE_QUEUE, &path, |request| {
            request.bearer_auth(&token)
        })
        .await?;
        match answer.kind {
            Kind::Success => break answer,
            Kind::RateLimited | Kind::Shed if Instant::now() < give_up => {
                tokio::time::sleep(answer.retry_after).await;
            }
            _ => return Ok(()),
        }
    };
    suite.tally.queue_joined(&shopper, prequeue);
    let mut poll = false;
    loop {
        let status = answer.body["status"].as_str().unwrap_or_default();
        let status = if answer.kind == Kind::Success {
            status
        } else {
            ""
        };
        let position = answer.body["position"].as_u64();
        suite.tally.queue_answer(&shopper, poll, position, status);
        let pause = match (answer.kind, status) {
            (Kind::Success, "waiting") => answer.body["poll_after_ms"]
                .as_u64()
                .map_or(POLL_PAUSE_DEFAULT, Duration::from_millis),
            (Kind::Success, "admitted") => {
                let purchase = answer.body["purchase_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                return buy_admitted(user, &sale_id, &purchase, give_up).await;
            }
            (Kind::RateLimited | Kind::Shed, _) => answer.retry_after,
            _ => return Ok(()),
        };
        tokio::time::sleep(pause).await;
        if Instant::now() >= give_up {
            return Ok(());
        }
        answer = send(user, GooseMethod::Get, ROUTE_QUEUE, &path, |request| {
            request.bearer_auth(&token)
        })
        .await?;
        poll = true;
    }
}

/// An admitted `queue` shopper's order, with its purchase token and one
/// `Idempotency-Key`, retried after 429 and 503 until `give_up`; then its
/// payment, so the unit stays sold and the sale sells out.
async fn buy_admitted(
    user: &mut GooseUser,
    sale_id: &str,
    purchase: &str,
    give_up: Instant,
) -> TransactionResult {
    let key = format!("lt-{}-queue", user.weighted_users_index);
    while Instant::now() < give_up {
        match order(user, sale_id, &key, Some(purchase)).await? {
            Attempt::Ordered(order_id) => {
                pay(user, &order_id, Paying::Simulated).await?;
                suite()?.tally.queue_order();
                return Ok(());
            }
            Attempt::Retry(pause) => tokio::time::sleep(pause).await,
            Attempt::NotStarted => tokio::time::sleep(NOT_STARTED_PAUSE).await,
            Attempt::SoldOut | Attempt::Over => return Ok(()),
        }
    }
    Ok(())
}

/// The `Idempotency-Key` of the user's next purchase attempt.
fn next_key(user: &mut GooseUser) -> Result<String, Box<TransactionError>> {
    let index = user.weighted_users_index;
    let session = session_mut(user)?;
    session.attempts += 1;
    Ok(format!("lt-{index}-{}", session.attempts))
}

/// How one order attempt ended.
enum Attempt {
    Ordered(String),
    SoldOut,
    NotStarted,
    Retry(Duration),
    /// `ended`, `limit_exceeded`, or an unexpected answer: stop racing.
    Over,
}

/// Races for one unit of `sale_id` with one `Idempotency-Key`: fetch the
/// sale, then post the order, retrying 429/503 after `Retry-After`. Stops
/// on `sold_out` (or, with `wait_for_returns`, polls until stock comes back),
/// on `ended` and on the shopper's limit, and after the suite's patience.
/// The order's id if it got one.
async fn race(
    user: &mut GooseUser,
    sale_id: &str,
    wait_for_returns: bool,
) -> Result<Option<String>, Box<TransactionError>> {
    let suite = suite()?;
    let give_up = Instant::now() + suite.patience;
    let key = next_key(user)?;
    let mut open = false;
    while Instant::now() < give_up {
        if !open {
            let Some(sale) = get_sale(user, sale_id).await? else {
                return Ok(None);
            };
            match sale.status.as_str() {
                "sold_out" if wait_for_returns => {
                    tokio::time::sleep(SOLD_OUT_POLL).await;
                    continue;
                }
                "sold_out" | "ended" | "cancelled" => return Ok(None),
                _ => open = true,
            }
        }
        match order(user, sale_id, &key, None).await? {
            Attempt::Ordered(order_id) => return Ok(Some(order_id)),
            Attempt::Retry(pause) => tokio::time::sleep(pause).await,
            Attempt::NotStarted => tokio::time::sleep(NOT_STARTED_PAUSE).await,
            Attempt::SoldOut if wait_for_returns => {
                open = false;
                tokio::time::sleep(SOLD_OUT_POLL).await;
            }
            Attempt::SoldOut | Attempt::Over => return Ok(None),
        }
    }
    Ok(None)
}

/// One order attempt; `purchase` is an admission's purchase token, sent as
/// `X-Purchase-Token`.
async fn order(
    user: &mut GooseUser,
    sale_id: &str,
    key: &str,
    purchase: Option<&str>,
) -> Result<Attempt, Box<TransactionError>> {
    let session = session(user)?;
    let (shopper, token) = (session.shopper.clone(), session.token.clone());
    let path = format!("/api/v1/sales/{sale_id}/orders");
    let answer = send(user, GooseMethod::Post, ROUTE_ORDER, &path, |request| {
        let request = request
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&json!({ "quantity": 1 }));
        match purchase {
            Some(purchase) => request.header("X-Purchase-Token", purchase),
            None => request,
        }
    })
    .await?;
    Ok(match (answer.kind, answer.code.as_str()) {
        (Kind::Success, _) => {
            let order_id = answer.body["id"].as_str().unwrap_or_default();
            suite()?.tally.order(&shopper, sale_id, order_id);
            Attempt::Ordered(order_id.to_owned())
        }
        (Kind::RateLimited | Kind::Shed, _) => Attempt::Retry(answer.retry_after),
        (_, "sold_out") => Attempt::SoldOut,
        (_, "not_started") => Attempt::NotStarted,
        _ => Attempt::Over,
    })
}

/// The sale, if the engine answered 200.
async fn get_sale(
    user: &mut GooseUser,
    sale_id: &str,
) -> Result<Option<PublicSale>, Box<TransactionError>> {
    let path = format!("/api/v1/sales/{sale_id}");
    let answer = send(user, GooseMethod::Get, ROUTE_SALE, &path, |request| request).await?;
    if answer.kind != Kind::Success {
        return Ok(None);
    }
    Ok(serde_json::from_value(answer.body).ok())
}

/// The campaign's page, if the engine answered 200.
async fn get_campaign(
    user: &mut GooseUser,
    campaign_id: &str,
) -> Result<Option<Campaign>, Box<TransactionError>> {
    let path = format!("/api/v1/campaigns/{campaign_id}");
    let answer = send(user, GooseMethod::Get, ROUTE_CAMPAIGN, &path, |request| {
        request
    })
    .await?;
    if answer.kind != Kind::Success {
        return Ok(None);
    }
    Ok(serde_json::from_value(answer.body).ok())
}

/// An answer as the suite reads it.
struct Answer {
    kind: Kind,
    code: String,
    retry_after: Duration,
    body: serde_json::Value,
}

/// Sends `method path` (a path on the engine, or a whole URL) through
/// goose under the request name `route`
/// (`finish` adds headers and body), tallies what the answer meant, and
/// tells goose which answers are failures: the documented refusals, 429 and
/// 503 are not (they have their own lines in the verdict), anything
/// unexpected is.
async fn send(
    user: &mut GooseUser,
    method: GooseMethod,
    route: &str,
    path: &str,
    finish: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<Answer, Box<TransactionError>> {
    let tally = &suite()?.tally;
    let label = format!("{method} {route}");
    let request = GooseRequest::builder()
        .name(route)
        .set_request_builder(finish(user.get_request_builder(&method, path)?))
        .build();
    let GooseResponse {
        request: mut metric,
        response,
    } = user.request(request).await?;
    let read = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map_or(RETRY_PAUSE_MIN, Duration::from_secs)
                .clamp(RETRY_PAUSE_MIN, RETRY_PAUSE_MAX);
            response
                .text()
                .await
                .map(|text| (status, retry_after, text))
        }
        Err(err) => Err(err),
    };
    let (status, retry_after, text) = match read {
        Ok(read) => read,
        Err(err) => {
            tally.no_answer(&label);
            return Err(Box::new(TransactionError::Reqwest(err)));
        }
    };
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let kind = Kind::of(status, &code);
    tally.answer(&label, status, &code);
    // goose already counts every non-2xx answer as a failure: the expected
    // ones are turned into successes.
    if matches!(kind, Kind::Refused | Kind::RateLimited | Kind::Shed) {
        // goose records a request's error again when it is updated: clear
        // it, so each expected answer is listed once in goose's error
        // summary (when it arrived, before it was known to be expected).
        metric.error.clear();
        user.set_success(&mut metric)?;
    }
    Ok(Answer {
        kind,
        code,
        retry_after,
        body,
    })
}
