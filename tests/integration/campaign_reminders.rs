//! Goal: `remind_before_secs` before each round of a campaign starts, the
//! merchant's webhook gets one signed `campaign.round_starting` event with
//! the campaign, the round and its items; never before that time, once
//! however many engine nodes run and across a restart, retried after a
//! 5xx and dead-lettered after a 4xx like an order's hand-off, and never
//! for a cancelled campaign or a round stopped before it starts.
//! Method: the webhook receiver of
//! `orders_webhook` (a real HTTP server on 127.0.0.1 that records every
//! call with the time it arrived and checks signatures independently)
//! against engines on the embedded store and on a real `redis-server`,
//! with campaigns whose first rounds start a few seconds from now. The
//! receiver stamps each call with the machine's clock, which is also the
//! clock of the `redis-server` the test started: the store's clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale::clock::ManualClock;
use flashsale::domain::{
    parse_rfc3339_ms, system_now, CampaignId, Millis, NewCampaign, NewItem, NewRound, SaleRules,
    Timestamp,
};
use flashsale::inventory::Inventory;
use flashsale::orders::{OrderService, OrderSettings, Orders};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api_campaigns::create;
use crate::conformance::{subject, Subject};
use crate::orders_webhook::{
    assert_signed, dead_letters, dead_letters_when, engine_for, redrive, Call, Receiver, SECRET,
};
use crate::support::{
    actor_settings, error_code, rfc3339_in, test_config, Backend, Harness, Servers, TestApp,
};
use crate::{on_both_stores, on_every_store};

const ROUND_STARTING: &str = "campaign.round_starting";

/// A campaign of two items whose rounds start at `starts_in` from now
/// (each lasting a second, or an hour for the last), with reminders
/// `remind_secs` before each.
fn reminded_campaign(remind_secs: u64, starts_in: &[Duration]) -> Value {
    let rounds: Vec<Value> = starts_in
        .iter()
        .enumerate()
        .map(|(n, start)| {
            let length = if n + 1 == starts_in.len() {
                Duration::from_secs(3600)
            } else {
                Duration::from_secs(1)
            };
            json!({"starts_at": rfc3339_in(*start, false),
                   "ends_at": rfc3339_in(*start + length, false)})
        })
        .collect();
    json!({
        "title": "6.18 seckill",
        "rounds": rounds,
        "items": [
            {"sku": "A", "title": "Item A", "price_cents": 990, "original_price_cents": 1990,
             "stock_per_round": 5},
            {"sku": "B", "title": "Item B", "price_cents": 1990, "original_price_cents": 2990,
             "stock_per_round": 3},
        ],
        "per_user_limit_per_round": 1,
        "payment_timeout_secs": 600,
        "remind_before_secs": remind_secs,
    })
}

fn id_of(campaign: &Value) -> String {
    campaign["id"].as_str().unwrap().to_owned()
}

/// The sale whose outbox keeps round `round`'s reminder: its first item's.
fn first_sale(campaign: &Value, round: usize) -> String {
    campaign["rounds"][round]["items"][0]["sale_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The reminders among `calls`, by (campaign id, round number).
fn reminders(calls: &[Call]) -> BTreeMap<(String, u64), Vec<Call>> {
    let mut found: BTreeMap<(String, u64), Vec<Call>> = BTreeMap::new();
    for call in calls {
        let body = call.json();
        if body["type"] == ROUND_STARTING {
            let key = (
                body["campaign"]["id"].as_str().unwrap().to_owned(),
                body["round"]["number"].as_u64().unwrap(),
            );
            found.entry(key).or_default().push(call.clone());
        }
    }
    found
}

/// Polls until the receiver answered 2xx to a reminder of every round in
/// `expected` (campaign id, round number); fails after 30 s.
async fn wait_for_reminders(receiver: &Receiver, expected: &[(String, u64)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = reminders(&receiver.calls());
        let missing: Vec<_> = expected
            .iter()
            .filter(|key| {
                !delivered
                    .get(*key)
                    .is_some_and(|calls| calls.iter().any(|call| call.status.is_success()))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "reminders missing: {missing:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When round `round`'s reminder is due: `remind_secs` before it starts.
fn due(campaign: &Value, round: usize, remind_secs: i64) -> Millis {
    let starts_at = campaign["rounds"][round]["starts_at"].as_str().unwrap();
    parse_rfc3339_ms("starts_at", starts_at).unwrap() - remind_secs * 1000
}

/// Checks a reminder as the merchant reads it: signed, its idempotency
/// key, and the campaign, round and items as the campaign was created.
fn assert_reminder(call: &Call, campaign: &Value, round: usize) {
    let body = assert_signed(call);
    let id = id_of(campaign);
    assert_eq!(body["type"], ROUND_STARTING, "{body}");
    let created = &campaign["rounds"][round];
    let starts_at = parse_rfc3339_ms("starts_at", created["starts_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        call.header("idempotency-key"),
        Some(format!("{id}:{round}:{starts_at}:{ROUND_STARTING}").as_str())
    );
    assert_eq!(body["campaign"], json!({"id": id, "title": "6.18 seckill"}));
    assert_eq!(body["round"]["number"], round, "{body}");
    for field in ["starts_at", "ends_at"] {
        let sent = parse_rfc3339_ms("sent", body["round"][field].as_str().unwrap());
        let made = parse_rfc3339_ms("made", created[field].as_str().unwrap());
        assert_eq!(sent, made, "{field}: {body}");
    }
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    for (item, (sku, title, price, original)) in items
        .iter()
        .zip([("A", "Item A", 990, 1990), ("B", "Item B", 1990, 2990)])
    {
        let position = if sku == "A" { 0 } else { 1 };
        assert_eq!(
            item,
            &json!({"sku": sku, "title": title, "price_cents": price,
                    "original_price_cents": original, "currency": "CNY",
                    "sale_id": created["items"][position]["sale_id"]}),
            "{body}"
        );
    }
}

async fn each_round_is_reminded_once_not_before_its_time(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    // Reminders due in about 1 s and 4 s; the third round's in two hours.
    let campaign = create(
        &app,
        reminded_campaign(
            2,
            &[
                Duration::from_secs(3),
                Duration::from_secs(6),
                Duration::from_secs(7200),
            ],
        ),
    )
    .await;
    let id = id_of(&campaign);
    wait_for_reminders(&receiver, &[(id.clone(), 0), (id.clone(), 1)]).await;
    // Time for a stray second call (the outbox drained: there is none).
    tokio::time::sleep(Duration::from_millis(600)).await;

    let calls = receiver.calls();
    assert_eq!(calls.len(), 2, "one call per round due: {calls:?}");
    let sent = reminders(&calls);
    for round in 0..2 {
        let calls = &sent[&(id.clone(), round as u64)];
        assert_eq!(calls.len(), 1, "round {round} reminded once: {calls:?}");
        assert_reminder(&calls[0], &campaign, round);
        let due = due(&campaign, round, 2);
        assert!(
            calls[0].at >= due,
            "round {round} reminded at {} before it was due at {due}",
            calls[0].at
        );
    }
    assert!(
        !sent.contains_key(&(id.clone(), 2)),
        "the third round is not due for two hours"
    );
    app.stop().await;
}

async fn a_failing_merchant_gets_the_reminder_again(backend: Backend) {
    // Answers 500 to the first two calls.
    let receiver = Receiver::start(2).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    // The round starts sooner than its reminder lead: reminded at once.
    let campaign = create(&app, reminded_campaign(60, &[Duration::from_secs(30)])).await;
    let id = id_of(&campaign);
    wait_for_reminders(&receiver, &[(id.clone(), 0)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let calls = receiver.calls();
    let statuses: Vec<u16> = calls.iter().map(|call| call.status.as_u16()).collect();
    assert_eq!(statuses, [500, 500, 200], "retried until answered 2xx");
    for call in &calls {
        assert_reminder(call, &campaign, 0);
    }
    assert!(dead_letters(&app, &first_sale(&campaign, 0))
        .await
        .is_empty());
    app.stop().await;
}

async fn a_refused_reminder_is_dead_lettered_then_redriven(backend: Backend) {
    let receiver =
        Receiver::start_with(usize::MAX, StatusCode::UNPROCESSABLE_ENTITY, Duration::ZERO).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    let campaign = create(&app, reminded_campaign(60, &[Duration::from_secs(30)])).await;
    let sale = first_sale(&campaign, 0);

    let letters = dead_letters_when(&app, &sale, 1).await;
    let letter = &letters[0];
    assert_eq!(letter["event"], ROUND_STARTING, "{letter}");
    assert_eq!(letter["order_id"], Value::Null, "{letter}");
    assert_eq!(letter["attempts"], 1, "a permanent refusal: {letter}");
    assert_eq!(letter["last_status"], 422, "{letter}");
    assert_eq!(receiver.calls().len(), 1, "sent no more once refused");

    receiver.recover();
    assert_eq!(redrive(&app, &sale).await, 1);
    wait_for_reminders(&receiver, &[(id_of(&campaign), 0)]).await;
    assert!(dead_letters(&app, &sale).await.is_empty());
    app.stop().await;
}

async fn a_cancelled_campaign_or_stopped_round_sends_no_reminder(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    // Every reminder due in about 1 s; the first campaign is called off,
    // the second's only round stopped before it starts.
    let cancelled = create(&app, reminded_campaign(2, &[Duration::from_secs(3)])).await;
    let response = app
        .admin(
            Method::DELETE,
            &format!("/admin/v1/campaigns/{}", id_of(&cancelled)),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let stopped = create(&app, reminded_campaign(2, &[Duration::from_secs(3)])).await;
    let response = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/campaigns/{}", id_of(&stopped)),
            Some(json!({"version": 1, "rounds": [{"number": 0, "status": "ended"}]})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let control = create(&app, reminded_campaign(2, &[Duration::from_secs(3)])).await;

    wait_for_reminders(&receiver, &[(id_of(&control), 0)]).await;
    // The control's reminder came after its due time, and so after the
    // others' (created first); another pass or two for a stray call.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent = reminders(&receiver.calls());
    for called_off in [&cancelled, &stopped] {
        assert!(
            !sent
                .keys()
                .any(|(campaign, _)| *campaign == id_of(called_off)),
            "a called-off round was reminded: {sent:?}"
        );
        assert!(dead_letters(&app, &first_sale(called_off, 0))
            .await
            .is_empty());
    }
    app.stop().await;
}

on_both_stores!(
    each_round_is_reminded_once_not_before_its_time,
    a_failing_merchant_gets_the_reminder_again,
    a_refused_reminder_is_dead_lettered_then_redriven,
    a_cancelled_campaign_or_stopped_round_sends_no_reminder,
);

/// Goal: engine nodes sharing one Redis send a round's reminder once, and
/// one queued by an engine that stopped before it was due is sent by the
/// others. Method: engine A creates the campaign and stops at once; B and
/// C, started on the same Redis with the same webhook, both watch the
/// sale; the receiver answers 200 to everything and counts the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engine_nodes_after_a_restart_send_a_reminder_once() {
    let receiver = Receiver::start(0).await;
    let redis = Servers::start(Backend::Redis);
    let config = || {
        let mut config = test_config();
        redis.configure(&mut config);
        config.order_webhook_url = Some(receiver.url());
        config.order_webhook_secret = Some(SECRET.into());
        config.order_sweep_ms = 20;
        config
    };
    let first = TestApp::spawn_with(config()).await;
    let campaign = create(&first, reminded_campaign(2, &[Duration::from_secs(4)])).await;
    first.stop().await;
    assert!(receiver.calls().is_empty(), "not due yet");

    let (second, third) = (
        TestApp::spawn_with(config()).await,
        TestApp::spawn_with(config()).await,
    );
    let id = id_of(&campaign);
    wait_for_reminders(&receiver, &[(id.clone(), 0)]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "sent once by one of two nodes: {calls:?}");
    assert_reminder(&calls[0], &campaign, 0);
    assert!(calls[0].at >= due(&campaign, 0, 2));
    second.stop().await;
    third.stop().await;
}

/// Goal: a reminder needs somewhere to go: without a webhook configured,
/// `remind_before_secs` is refused (422 `invalid_request` naming it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_need_a_webhook() {
    let Harness { app, redis: _redis } = Harness::start(Backend::Embedded).await;
    let response = app
        .admin(
            Method::POST,
            "/admin/v1/campaigns",
            Some(reminded_campaign(60, &[Duration::from_secs(3600)])),
        )
        .await;
    let (status, code) = error_code(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    app.stop().await;
}

/// Goal: two order services on one store (two engine nodes: on the
/// embedded store, two in one process) send a round's reminder once.
/// Method: a campaign whose first round's reminder is due at once; both
/// services pass side by side, again and again, until the receiver got
/// it and a while after; one call in all.
async fn two_order_services_send_a_reminder_once(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let now = system_now();
    let campaign = NewCampaign {
        title: "6.18 seckill".into(),
        rounds: vec![NewRound {
            starts_at: Timestamp(now + 1_800_000).to_string(),
            ends_at: Timestamp(now + 3_600_000).to_string(),
        }],
        items: vec![NewItem {
            sku: "A".into(),
            title: "Item A".into(),
            price_cents: 990,
            original_price_cents: 1990,
            stock_per_round: 5,
            stock_by_round: None,
            per_user_limit: None,
        }],
        per_user_limit_per_round: 1,
        per_user_limit_total: None,
        currency: None,
        payment_timeout_secs: None,
        require_purchase_token: None,
        remind_before_secs: Some(3600),
    }
    .into_campaign(CampaignId::generate(), now, &SaleRules::default())
    .unwrap();
    store.create_campaign(&campaign).await.unwrap();

    let service = |name: &str| {
        let inventory = Inventory::start(
            Arc::clone(&store),
            1,
            actor_settings(),
            Duration::from_secs(2),
        )
        .expect("actor system");
        let orders = Arc::new(Orders::new(Arc::clone(&store), Arc::new(inventory)));
        let webhook = receiver.webhook();
        OrderService::new(
            Arc::clone(&store),
            orders,
            Some(webhook),
            OrderSettings {
                sweep: Duration::from_millis(10),
                batch: 16,
                claim_idle: Duration::from_secs(30),
                consumer: name.into(),
                clock: Arc::new(ManualClock::at(now)),
                retention: Duration::from_secs(3600),
            },
        )
    };
    let (mut first, mut second) = (service("node-a"), service("node-b"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut passes_after = 0;
    while passes_after < 20 {
        let (a, b) = tokio::join!(first.try_process_batch(), second.try_process_batch());
        assert_eq!(a.store_errors + b.store_errors, 0, "{a:?} {b:?}");
        if receiver.calls().is_empty() {
            assert!(Instant::now() < deadline, "never reminded");
        } else {
            passes_after += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "reminded once by two services: {calls:?}");
    let body = assert_signed(&calls[0]);
    assert_eq!(body["campaign"]["id"], campaign.id.as_str(), "{body}");
    assert_eq!(body["round"]["number"], 0, "{body}");
}

on_every_store!(two_order_services_send_a_reminder_once);

/// Goal: a round moved by a merchant's change is reminded for its new
/// time, once. Method: a round two hours away (reminder in an hour and
/// 59 minutes) is moved to start in 30 s: its reminder, a minute ahead,
/// is due at once and carries the new start.
async fn a_moved_round_is_reminded_for_its_new_time(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    let campaign = create(&app, reminded_campaign(60, &[Duration::from_secs(7200)])).await;
    let id = id_of(&campaign);
    let response = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/campaigns/{id}"),
            Some(json!({"rounds": [{"number": 0,
                "starts_at": rfc3339_in(Duration::from_secs(30), false),
                "ends_at": rfc3339_in(Duration::from_secs(3600), false)}]})),
        )
        .await;
    let status = response.status();
    let moved: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{moved}");

    wait_for_reminders(&receiver, &[(id.clone(), 0)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_reminder(&calls[0], &moved, 0);
    app.stop().await;
}

/// Goal: a round moved after its reminder was sent is reminded again,
/// under a new idempotency key (a merchant who deduplicates on it would
/// drop the new time otherwise). Method: a round 30 s away, reminded at
/// once, is moved 40 s further; its second reminder comes at once.
async fn a_round_moved_after_its_reminder_is_reminded_again(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let Harness { app, redis: _redis } = engine_for(backend, &receiver, |_| {}).await;
    let campaign = create(&app, reminded_campaign(3600, &[Duration::from_secs(30)])).await;
    let id = id_of(&campaign);
    wait_for_reminders(&receiver, &[(id.clone(), 0)]).await;
    let response = app
        .admin(
            Method::PATCH,
            &format!("/admin/v1/campaigns/{id}"),
            Some(json!({"rounds": [{"number": 0,
                "starts_at": rfc3339_in(Duration::from_secs(70), false),
                "ends_at": rfc3339_in(Duration::from_secs(3600), false)}]})),
        )
        .await;
    let status = response.status();
    let moved: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{moved}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.calls().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reminded again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = receiver.calls();
    assert_reminder(&calls[0], &campaign, 0);
    assert_reminder(&calls[1], &moved, 0);
    assert_ne!(
        calls[0].header("idempotency-key"),
        calls[1].header("idempotency-key")
    );
    app.stop().await;
}

on_both_stores!(
    a_moved_round_is_reminded_for_its_new_time,
    a_round_moved_after_its_reminder_is_reminded_again
);
