//! Goal: the waiting room of a queued sale admits fairly and safely: the
//! pre-queue is shuffled by the seed committed before the opening, later
//! joiners queue behind it in order, admission never outruns the stock,
//! only admitted shoppers buy (with a token bound to them and the sale,
//! once, for a while), and the line is the store's: it survives an engine
//! restart and several nodes share it; its merchant reads it in counts.
//! Method: over HTTP on every store, with sales that open a few seconds
//! after they are scheduled, and the engine's poll interval at its
//! shortest (100 ms) so a test's polls reach the store.

use std::collections::HashMap;
use std::time::Duration;

use flashsale::config::Config;
use flashsale::domain::{admission_token_id, shuffled, system_now, SaleId, ShopperId};
use flashsale::http::{AuthKeys, ShopperTokenRules};
use flashsale::store::QUEUE_FREED_PER_POLL_MAX;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::conformance::{sale, subject, Subject};
use crate::support::{
    error_code, live_sale, rfc3339_in, Backend, Harness, Servers, TestApp, ADMIN_TOKEN,
    SHOPPER_SECRET,
};
use crate::{on_both_stores, on_every_store};

const POLL_MS: u64 = 100;

fn configure(config: &mut Config) {
    config.queue_poll_ms_min = POLL_MS;
    config.queue_poll_ms_max = POLL_MS;
}

async fn engine(backend: Backend) -> Harness {
    Harness::start_with(backend, configure).await
}

/// An engine node's settings on `servers`, shared with other nodes.
fn node_config(servers: &Servers) -> Config {
    let mut config = crate::support::test_config();
    servers.configure(&mut config);
    configure(&mut config);
    config
}

/// A queued sale of `stock` units (one per shopper) opening `starts_in`
/// from now, its pre-queue open already.
async fn queued_sale(
    app: &TestApp,
    stock: i64,
    starts_in: Duration,
    admit_per_sec: i64,
    token_ttl_secs: i64,
) -> String {
    queued_sale_limit(app, stock, 1, starts_in, admit_per_sec, token_ttl_secs).await
}

async fn queued_sale_limit(
    app: &TestApp,
    stock: i64,
    per_user_limit: i64,
    starts_in: Duration,
    admit_per_sec: i64,
    token_ttl_secs: i64,
) -> String {
    let mut sale = live_sale(stock, per_user_limit);
    sale["starts_at"] = rfc3339_in(starts_in, false).into();
    sale["admission"] = json!({
        "mode": "queue",
        "prequeue_opens_secs": 600,
        "admit_per_sec": admit_per_sec,
        "token_ttl_secs": token_ttl_secs,
    });
    app.create_sale(sale).await
}

fn queue_path(sale: &str) -> String {
    format!("/api/v1/sales/{sale}/queue")
}

async fn join(app: &TestApp, sale: &str, shopper: &str) -> Value {
    let response = app.shopper_post(shopper, &queue_path(sale)).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{shopper} joins: {body}");
    body
}

async fn poll(app: &TestApp, sale: &str, shopper: &str) -> Value {
    let response = app.shopper_get(shopper, &queue_path(sale)).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{shopper} polls: {body}");
    body
}

/// Polls every shopper once, past the engine's memory of their last answer.
async fn poll_all(app: &TestApp, sale: &str, shoppers: &[String]) -> HashMap<String, Value> {
    tokio::time::sleep(Duration::from_millis(POLL_MS + 20)).await;
    let mut answers = HashMap::new();
    for shopper in shoppers {
        answers.insert(shopper.clone(), poll(app, sale, shopper).await);
    }
    answers
}

/// Waits until the sale's public view shows the revealed seed.
async fn revealed(app: &TestApp, sale: &str) -> Value {
    for _ in 0..100 {
        let view = app.public_json(&format!("/api/v1/sales/{sale}")).await;
        if view["admission"]["seed"].is_string() {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the seed was never revealed");
}

/// Asserts that the pre-queue joiners `line` stand in the order `seed`
/// gives them, as `app` answers their polls; returns that order.
async fn assert_in_seed_order<'a>(
    app: &TestApp,
    sale: &str,
    seed: &str,
    line: &'a [String],
) -> Vec<&'a str> {
    let order = shuffled(seed, line.iter().map(String::as_str));
    let answers = poll_all(app, sale, line).await;
    for (place, shopper) in order.iter().enumerate() {
        assert_eq!(
            answers[*shopper]["position"],
            place + 1,
            "{shopper}: {}",
            answers[*shopper]
        );
    }
    order
}

/// The merchant's counts of the sale's line
/// (`GET /admin/v1/sales/{id}/queue`): joined, waiting, admitted, bought,
/// expired, outstanding.
async fn line_counts(app: &TestApp, sale: &str) -> [u64; 6] {
    let response = app
        .admin(
            reqwest::Method::GET,
            &format!("/admin/v1/sales/{sale}/queue"),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sale_id"], sale);
    [
        "joined",
        "waiting",
        "admitted",
        "bought",
        "expired",
        "outstanding",
    ]
    .map(|count| {
        body["stats"][count]
            .as_u64()
            .unwrap_or_else(|| panic!("{body}"))
    })
}

fn shoppers(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The pre-queue is in the order the revealed seed gives, whose SHA-256
/// was shown before the opening; a later joiner queues behind; joining
/// again keeps the place.
async fn the_prequeue_is_shuffled_by_the_committed_seed(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = queued_sale(&app, 1_000, Duration::from_secs(3), 1_000, 60).await;
    let before = app.public_json(&format!("/api/v1/sales/{sale}")).await;
    let commitment = before["admission"]["seed_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(before["admission"]["mode"], "queue");
    assert!(
        before["admission"]["seed"].is_null(),
        "secret before the opening"
    );
    assert!(before["admission"]["prequeue_opens_at"].is_string());

    let early = shoppers("early-", 40);
    for shopper in &early {
        let body = join(&app, &sale, shopper).await;
        assert_eq!(body["status"], "waiting");
        assert!(
            body["position"].is_null(),
            "no place before the shuffle: {body}"
        );
    }
    join(&app, &sale, &early[0]).await;

    let view = revealed(&app, &sale).await;
    let seed = view["admission"]["seed"].as_str().unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(hex::decode(seed).unwrap())),
        commitment,
        "the revealed seed is the committed one"
    );
    let late = join(&app, &sale, "late").await;
    assert_eq!(late["position"], 41, "{late}");

    let order = assert_in_seed_order(&app, &sale, seed, &early).await;
    let joined: Vec<&str> = early.iter().map(String::as_str).collect();
    assert_ne!(order, joined, "not the join order");
}

/// Admissions outstanding never pass ceil(remaining × 120%); a token that
/// bought frees nothing, stock that comes back admits more, and once
/// nothing is left and nothing can come back every waiting shopper hears
/// `sold_out`.
async fn admission_never_exceeds_the_stock_bound(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = queued_sale(&app, 5, Duration::from_secs(2), 1_000, 60).await;
    let line = shoppers("s", 20);
    for shopper in &line {
        join(&app, &sale, shopper).await;
    }
    revealed(&app, &sale).await;
    let admitted = |answers: &HashMap<String, Value>| -> Vec<(String, String)> {
        let mut admitted: Vec<(String, String)> = answers
            .iter()
            .filter(|(_, body)| body["status"] == "admitted")
            .map(|(shopper, body)| {
                (
                    shopper.clone(),
                    body["purchase_token"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        admitted.sort();
        admitted
    };
    let answers = poll_all(&app, &sale, &line).await;
    let first = admitted(&answers);
    assert_eq!(first.len(), 6, "ceil(5 × 1.2) admitted: {answers:?}");
    assert_eq!(admitted(&poll_all(&app, &sale, &line).await).len(), 6);

    let mut orders = Vec::new();
    for (shopper, purchase) in &first[..5] {
        let response = app.order_with(&sale, shopper, Some(purchase), None).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let order: Value = response.json().await.unwrap();
        orders.push((shopper.clone(), order["id"].as_str().unwrap().to_owned()));
    }
    let (sixth, purchase) = &first[5];
    assert_eq!(
        error_code(app.order_with(&sale, sixth, Some(purchase), None).await).await,
        (StatusCode::CONFLICT, "sold_out".to_owned())
    );
    let answers = poll_all(&app, &sale, &line).await;
    assert_eq!(admitted(&answers).len(), 6, "nothing left: nobody more");
    assert!(
        answers.values().all(|body| body["status"] != "sold_out"),
        "unpaid orders may still come back"
    );

    // One order cancelled: one unit back, ceil(1 × 1.2) = 2 may be
    // outstanding, the sixth's unused admission is one: one more.
    let (canceller, order) = &orders[0];
    let cancelled = app
        .shopper_post(canceller, &format!("/api/v1/orders/{order}/cancel"))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let answers = poll_all(&app, &sale, &line).await;
    let second = admitted(&answers);
    assert_eq!(second.len(), 7, "{answers:?}");
    let newcomer = second
        .iter()
        .find(|entry| !first.contains(entry))
        .expect("one newly admitted");
    let response = app
        .order_with(&sale, &newcomer.0, Some(&newcomer.1), None)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    orders[0] = (newcomer.0.clone(), order["id"].as_str().unwrap().to_owned());

    for (shopper, order) in &orders {
        let paid = app
            .shopper_post(shopper, &format!("/api/v1/orders/{order}/pay"))
            .await;
        assert_eq!(paid.status(), StatusCode::OK);
    }
    let answers = poll_all(&app, &sale, &line).await;
    for (shopper, body) in &answers {
        if body["status"] != "admitted" {
            assert_eq!(body["status"], "sold_out", "{shopper}: {body}");
        }
    }
    app.assert_audit_clean(&sale).await;
}

/// On a queued sale only an admission's token buys: not none, not one
/// from the purchase-token route, not another shopper's, not another
/// sale's, not a used one, not an expired one; and an admission that
/// expired unused gives its place to the next shopper, and once given its
/// token buys no more, even where a node still finds it unexpired.
async fn only_an_admission_buys(backend: Backend) {
    // Headroom 100%: one unit, one admission at a time.
    let Harness { app, redis: _redis } = Harness::start_with(backend, |config| {
        configure(config);
        config.queue_headroom_pct = 100;
    })
    .await;
    let sale = queued_sale(&app, 1, Duration::from_secs(2), 1_000, 10).await;
    // Limit 2: a second order with a used token is refused for the token.
    let other = queued_sale_limit(&app, 10, 2, Duration::from_secs(2), 1_000, 10).await;
    let forbidden = (StatusCode::FORBIDDEN, "forbidden".to_owned());
    for shopper in ["alice", "bob"] {
        join(&app, &sale, shopper).await;
        join(&app, &other, shopper).await;
    }
    assert_eq!(
        line_counts(&app, &sale).await,
        [2, 2, 0, 0, 0, 0],
        "the pre-queue"
    );
    revealed(&app, &sale).await;
    revealed(&app, &other).await;
    let line = vec!["alice".to_owned(), "bob".to_owned()];
    let answers = poll_all(&app, &sale, &line).await;
    let (first, second) = if answers["alice"]["position"] == 1 {
        ("alice", "bob")
    } else {
        ("bob", "alice")
    };
    assert_eq!(answers[first]["status"], "admitted", "{answers:?}");
    assert_eq!(
        answers[second]["status"], "waiting",
        "one at a time: {answers:?}"
    );
    assert_eq!(line_counts(&app, &sale).await, [2, 1, 1, 0, 0, 1]);
    let purchase = answers[first]["purchase_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        error_code(app.order_with(&sale, first, None, None).await).await,
        forbidden
    );
    assert_eq!(
        error_code(
            app.shopper_post(first, &format!("/api/v1/sales/{sale}/purchase-token"))
                .await
        )
        .await,
        forbidden,
        "the purchase-token route does not serve a queued sale"
    );
    assert_eq!(
        error_code(app.order_with(&sale, second, Some(&purchase), None).await).await,
        forbidden,
        "another shopper's admission"
    );
    assert_eq!(
        error_code(app.order_with(&other, first, Some(&purchase), None).await).await,
        forbidden,
        "another sale's admission"
    );
    let other_answers = poll_all(&app, &other, &line).await;
    let others = other_answers[first]["purchase_token"].as_str().unwrap();
    assert_eq!(
        app.order_with(&other, first, Some(others), None)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        error_code(app.order_with(&other, first, Some(others), None).await).await,
        forbidden,
        "a used admission"
    );

    // `first` lets the admission expire unused.
    let expires = answers[first]["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z'));
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        error_code(app.order_with(&sale, first, Some(&purchase), None).await).await,
        forbidden,
        "an expired admission"
    );
    // Once the admission's grace has passed, joining again (without a
    // poll first to free the place) goes to the back of the line.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rejoined = join(&app, &sale, first).await;
    assert_eq!(rejoined["position"], 3, "back of the line: {rejoined}");
    let next = poll(&app, &sale, second).await;
    assert_eq!(next["status"], "admitted", "{next}");
    // The freed admission's token, as a node whose clock is behind the
    // store's (or a request held up on its way) still finds it unexpired:
    // the store refuses it, so its place is not bought after the next
    // shopper was given it.
    let unexpired = admission_token_signed_by_the_engine(first, &sale, 1, 60);
    let refused = app.order_with(&sale, first, Some(&unexpired), None).await;
    let status = refused.status();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "a freed admission: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("join the line again")),
        "{body}"
    );
    let token = next["purchase_token"].as_str().unwrap();
    assert_eq!(
        app.order_with(&sale, second, Some(token), None)
            .await
            .status(),
        StatusCode::CREATED
    );
    // Three places taken (the first shopper's twice), two admissions: one
    // expired unused, one bought; the first shopper waits again.
    assert_eq!(line_counts(&app, &sale).await, [3, 1, 2, 1, 1, 0]);
}

/// A token for the admission at `position` of `shopper` in `sale`, signed
/// as every engine node signs it, expiring `ttl_secs` from now.
fn admission_token_signed_by_the_engine(
    shopper: &str,
    sale: &str,
    position: u64,
    ttl_secs: i64,
) -> String {
    let keys = AuthKeys::new(
        ADMIN_TOKEN,
        SHOPPER_SECRET.as_bytes(),
        &ShopperTokenRules::default(),
    )
    .unwrap();
    let expires_at = system_now() + ttl_secs * 1000;
    keys.admission_token(
        &ShopperId::parse(shopper).unwrap(),
        &SaleId::parse(sale).unwrap(),
        &admission_token_id(position),
        expires_at,
    )
    .unwrap()
}

/// The line is the store's: a second engine node answers the same places,
/// and so does an engine started after the first one stopped.
async fn the_line_survives_a_restart_and_nodes_share_it(backend: Backend) {
    let servers = Servers::start(backend);
    let node = || TestApp::spawn_with(node_config(&servers));
    let first = node().await;
    let second = node().await;
    let sale = queued_sale(&first, 100, Duration::from_secs(2), 1_000, 60).await;
    let line = shoppers("n", 10);
    for (i, shopper) in line.iter().enumerate() {
        let app = if i % 2 == 0 { &first } else { &second };
        join(app, &sale, shopper).await;
    }
    revealed(&first, &sale).await;
    let on_first = poll_all(&first, &sale, &line).await;
    let on_second = poll_all(&second, &sale, &line).await;
    first.stop().await;
    let restarted = node().await;
    let after = poll_all(&restarted, &sale, &line).await;
    for shopper in &line {
        assert_eq!(
            on_first[shopper]["position"],
            on_second[shopper]["position"]
        );
        assert_eq!(on_first[shopper]["position"], after[shopper]["position"]);
        assert_eq!(after[shopper]["status"], "admitted");
        assert_eq!(
            on_first[shopper]["purchase_token"], after[shopper]["purchase_token"],
            "the same admission whichever node signs it"
        );
    }
}

/// The waiting room refuses what it must: an open sale, a full line.
async fn the_line_has_bounds(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start_with(backend, |config| {
        configure(config);
        config.queue_size_max = 3;
    })
    .await;
    let open = app.create_sale(live_sale(5, 1)).await;
    assert_eq!(
        error_code(app.shopper_post("a", &queue_path(&open)).await).await,
        (StatusCode::CONFLICT, "conflict".to_owned())
    );
    let counts = |sale: &str| format!("/admin/v1/sales/{sale}/queue");
    assert_eq!(
        error_code(app.admin(reqwest::Method::GET, &counts(&open), None).await).await,
        (StatusCode::CONFLICT, "conflict".to_owned()),
        "an open sale has no line to count"
    );
    assert_eq!(
        error_code(
            app.admin(reqwest::Method::GET, &counts("s_nosuchsale00"), None)
                .await
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    assert_eq!(
        error_code(app.shopper_get("a", &counts(&open)).await).await,
        (StatusCode::FORBIDDEN, "forbidden".to_owned()),
        "the merchant's counts"
    );
    let sale = queued_sale(&app, 5, Duration::from_secs(60), 1_000, 60).await;
    for shopper in ["a", "b", "c"] {
        join(&app, &sale, shopper).await;
    }
    join(&app, &sale, "a").await;
    assert_eq!(line_counts(&app, &sale).await, [3, 3, 0, 0, 0, 0]);
    let full = app.shopper_post("d", &queue_path(&sale)).await;
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(full).await,
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded".to_owned())
    );
    assert_eq!(
        error_code(app.shopper_get("d", &queue_path(&sale)).await).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    let mut far = live_sale(5, 1);
    far["starts_at"] = rfc3339_in(Duration::from_secs(7_200), false).into();
    far["ends_at"] = rfc3339_in(Duration::from_secs(9_000), false).into();
    far["admission"] = json!({"mode": "queue", "prequeue_opens_secs": 60});
    let far = app.create_sale(far).await;
    assert_eq!(
        error_code(app.shopper_post("a", &queue_path(&far)).await).await,
        (StatusCode::CONFLICT, "not_started".to_owned())
    );
}

/// A sale switched back to open before its start keeps no line: switched
/// to the waiting room again, it starts an empty one (its former joiners
/// are not in it; they join again).
async fn a_sale_switched_back_to_open_forgets_its_line(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = queued_sale(&app, 5, Duration::from_secs(60), 1_000, 60).await;
    for shopper in ["una", "vic"] {
        join(&app, &sale, shopper).await;
    }
    assert_eq!(line_counts(&app, &sale).await, [2, 2, 0, 0, 0, 0]);
    let switch = |admission: Value| {
        let app = &app;
        let sale = &sale;
        async move {
            let answer = app
                .admin(
                    reqwest::Method::PATCH,
                    &format!("/admin/v1/sales/{sale}"),
                    Some(json!({ "admission": admission })),
                )
                .await;
            assert_eq!(answer.status(), StatusCode::OK);
        }
    };
    switch(json!({"mode": "open"})).await;
    switch(json!({"mode": "queue", "prequeue_opens_secs": 600})).await;
    assert_eq!(
        line_counts(&app, &sale).await,
        [0, 0, 0, 0, 0, 0],
        "an empty line"
    );
    tokio::time::sleep(Duration::from_millis(POLL_MS + 20)).await;
    assert_eq!(
        error_code(app.shopper_get("una", &queue_path(&sale)).await).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned()),
        "a former joiner is not in the new line"
    );
    join(&app, &sale, "vic").await;
    assert_eq!(line_counts(&app, &sale).await, [1, 1, 0, 0, 0, 0]);
}

/// A sale is sold out to a joiner only as to a waiting shopper: while a
/// unit is reserved unpaid it may come back, so a later shopper joins and
/// waits, and is admitted when it does (not refused for good while a
/// shopper after them buys the unit).
async fn a_joiner_waits_while_a_unit_may_come_back(backend: Backend) {
    let Harness { app, redis: _redis } = engine(backend).await;
    let sale = queued_sale(&app, 1, Duration::from_secs(2), 1_000, 60).await;
    join(&app, &sale, "ann").await;
    revealed(&app, &sale).await;
    let admitted = poll_all(&app, &sale, &["ann".to_owned()]).await;
    let token = admitted["ann"]["purchase_token"].as_str().unwrap();
    let ordered = app.order_with(&sale, "ann", Some(token), None).await;
    assert_eq!(ordered.status(), StatusCode::CREATED);
    let order: Value = ordered.json().await.unwrap();

    let joined = join(&app, &sale, "ben").await;
    assert_eq!(joined["status"], "waiting", "{joined}");
    app.order_step("ann", &order, "cancel").await;
    let answers = poll_all(&app, &sale, &["ben".to_owned()]).await;
    assert_eq!(answers["ben"]["status"], "admitted", "{answers:?}");
}

/// A poll frees at most `QUEUE_FREED_PER_POLL_MAX` places of admissions
/// that expired unused, on every store alike (one poll's work in the store
/// stays bounded); the next poll frees the rest.
async fn a_poll_frees_a_bounded_number_of_places(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start_with(backend, |config| {
        configure(config);
        config.queue_headroom_pct = 100;
    })
    .await;
    let many = QUEUE_FREED_PER_POLL_MAX as u64 + 1;
    let sale = queued_sale(&app, many as i64, Duration::from_secs(2), 100_000, 10).await;
    let line = shoppers("p", many as usize);
    for shopper in &line {
        join(&app, &sale, shopper).await;
    }
    revealed(&app, &sale).await;
    // One poll admits the whole line: the rate and the stock allow it.
    poll_all(&app, &sale, &line[..1]).await;
    assert_eq!(line_counts(&app, &sale).await, [many, 0, many, 0, 0, many]);
    // Past the admissions' expiry (10 s, rounded down) and the grace (5 s).
    tokio::time::sleep(Duration::from_millis(16_500)).await;
    let expired = |counts: [u64; 6]| counts[4];
    app.shopper_get(&line[0], &queue_path(&sale)).await;
    assert_eq!(
        expired(line_counts(&app, &sale).await),
        QUEUE_FREED_PER_POLL_MAX as u64
    );
    tokio::time::sleep(Duration::from_millis(POLL_MS + 20)).await;
    app.shopper_get(&line[0], &queue_path(&sale)).await;
    assert_eq!(expired(line_counts(&app, &sale).await), many);
}

on_both_stores!(
    a_joiner_waits_while_a_unit_may_come_back,
    a_poll_frees_a_bounded_number_of_places,
);

on_every_store!(
    the_prequeue_is_shuffled_by_the_committed_seed,
    admission_never_exceeds_the_stock_bound,
    only_an_admission_buys,
    a_sale_switched_back_to_open_forgets_its_line,
);

on_both_stores!(the_line_has_bounds);

/// Goal: the store admits at most `admit_per_sec` a second (plus the one
/// second an idle line banks), however often its line is polled and
/// whatever the rate, one admission taking under a millisecond included.
/// Method: at the store, a queued sale live for two seconds (a full second
/// banked) with a line of 3,000, polled in a loop for 400 ms at each of
/// the rates 600 and 1,500; the admissions granted are held to rate ×
/// (elapsed + 1 s) and must reach the banked second.
async fn admission_keeps_to_its_rate(backend: Backend) {
    use flashsale::domain::{AdmissionMode, ShopperId};
    use flashsale::store::QueueRules;
    use std::time::Instant;

    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let rules = QueueRules {
        size_max: 10_000,
        headroom_pct: 120,
        expiry_grace_ms: 5_000,
    };
    for rate in [600, 1_500] {
        let mut queued = sale(1_000_000, 1, -2_000);
        queued.require_purchase_token = true;
        queued.admission.mode = AdmissionMode::Queue;
        queued.admission.admit_per_sec = rate;
        queued.admission.seed = "0".repeat(64);
        store.create_sale(&queued).await.unwrap();
        let shoppers: Vec<ShopperId> = (0..3_000)
            .map(|i| ShopperId::parse(&format!("line-{i}")).unwrap())
            .collect();
        for wave in shoppers.chunks(500) {
            futures::future::try_join_all(
                wave.iter()
                    .map(|shopper| store.queue_join(&queued.id, shopper, "", &rules)),
            )
            .await
            .unwrap();
        }
        let last = shoppers.last().unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(400) {
            store.queue_poll(&queued.id, last, &rules).await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let granted = store.queue_stats(&queued.id).await.unwrap().admitted;
        let bound = (rate as f64 * (elapsed + 1.0)).ceil() as u64 + 1;
        assert!(
            granted <= bound,
            "rate {rate}: {granted} admitted in {elapsed:.3} s, over {bound}"
        );
        assert!(
            granted >= rate as u64,
            "rate {rate}: only {granted} admitted"
        );
    }
}

on_every_store!(admission_keeps_to_its_rate);

/// A shopper not in the line is remembered as such, like one in it: a
/// second poll within `FLASHSALE_QUEUE_POLL_MS_MIN` is answered 404 from
/// the node's memory (while Redis is paused, where reaching the store
/// would answer 503 past its timeout), and joining forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_not_in_line_is_remembered_until_they_join() {
    let Harness { app, redis } = Harness::start_with(Backend::Redis, |config| {
        config.queue_poll_ms_min = 10_000;
        config.queue_poll_ms_max = 10_000;
    })
    .await;
    let Servers::Standalone(server) = &redis else {
        panic!("a standalone Redis");
    };
    let sale = queued_sale(&app, 5, Duration::from_secs(60), 1_000, 60).await;
    let not_in_line = (StatusCode::NOT_FOUND, "not_found".to_owned());
    assert_eq!(
        error_code(app.shopper_get("zed", &queue_path(&sale)).await).await,
        not_in_line
    );
    server.pause(3_000);
    assert_eq!(
        error_code(app.shopper_get("zed", &queue_path(&sale)).await).await,
        not_in_line,
        "answered from memory"
    );
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    join(&app, &sale, "zed").await;
    assert_eq!(poll(&app, &sale, "zed").await["status"], "waiting");
}

/// A poll the store failed is remembered as such: within
/// `FLASHSALE_QUEUE_POLL_MS_MIN` of it the next poll is answered 503
/// `unavailable` from the node's memory, `Retry-After` the time left, even
/// with Redis back (the store would answer the place); once that time has
/// passed the place is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_the_store_failed_is_remembered() {
    let Harness { app, redis } = Harness::start_with(Backend::Redis, |config| {
        config.queue_poll_ms_min = 5_000;
        config.queue_poll_ms_max = 5_000;
        config.store_timeout_ms = 300;
    })
    .await;
    let Servers::Standalone(server) = &redis else {
        panic!("a standalone Redis");
    };
    let sale = queued_sale(&app, 5, Duration::from_secs(60), 1_000, 60).await;
    join(&app, &sale, "ivy").await;
    // Past the join's remembered place.
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "unavailable".to_owned());
    let paused = tokio::time::Instant::now();
    server.pause(1_500);
    let failed = app.shopper_get("ivy", &queue_path(&sale)).await;
    assert_eq!(error_code(failed).await, unavailable, "the store's failure");
    // Redis answers again; the failure is remembered for 5 s.
    tokio::time::sleep_until(paused + Duration::from_millis(1_600)).await;
    let again = app.shopper_get("ivy", &queue_path(&sale)).await;
    let retry_after: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(error_code(again).await, unavailable, "from memory");
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    assert_eq!(poll(&app, &sale, "ivy").await["status"], "waiting");
}

/// A sale switched to its waiting room while another node still holds
/// its open view (`FLASHSALE_SALE_POLL_CACHE_MS`): joins on that node are
/// shuffled by the sale's seed all the same, so the revealed seed gives
/// every place.
async fn a_sale_switched_to_its_waiting_room_shuffles_every_joiner(backend: Backend) {
    let servers = Servers::start(backend);
    let node = || {
        let mut config = node_config(&servers);
        config.sale_poll_cache_ms = 60_000;
        TestApp::spawn_with(config)
    };
    let (first, second) = (node().await, node().await);
    let mut open = live_sale(100, 1);
    open["starts_at"] = rfc3339_in(Duration::from_secs(3), false).into();
    let sale = first.create_sale(open).await;
    let seen = second.public_json(&format!("/api/v1/sales/{sale}")).await;
    assert_eq!(seen["admission"]["mode"], "open", "{seen}");
    let switched = first
        .admin(
            reqwest::Method::PATCH,
            &format!("/admin/v1/sales/{sale}"),
            Some(
                json!({"admission": {"mode": "queue", "prequeue_opens_secs": 600,
                                      "admit_per_sec": 1_000, "token_ttl_secs": 60}}),
            ),
        )
        .await;
    assert_eq!(switched.status(), StatusCode::OK);

    let line = shoppers("w", 12);
    for shopper in &line {
        join(&second, &sale, shopper).await;
    }
    let view = revealed(&first, &sale).await;
    let seed = view["admission"]["seed"].as_str().unwrap();
    assert_in_seed_order(&second, &sale, seed, &line).await;
}

mod shared {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn switched_redis() {
        a_sale_switched_to_its_waiting_room_shuffles_every_joiner(Backend::Redis).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis() {
        the_line_survives_a_restart_and_nodes_share_it(Backend::Redis).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cluster() {
        the_line_survives_a_restart_and_nodes_share_it(Backend::RedisCluster).await;
    }
}
