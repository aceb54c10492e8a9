//! Goal: the front door holds every shopper and address to their share,
//! caps the order rate overall, and sheds what it cannot take with a clear
//! 429 or 503 instead of queueing.
//! Method: bursts over HTTP against engines with one limit on at a time;
//! a Redis paused with `CLIENT PAUSE` plays a store that stopped answering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale::config::Config;
use futures::future::join_all;
use reqwest::StatusCode;

use crate::support::{error_code, live_sale, test_config, RedisServer, TestApp};

const BURST: u32 = 5;
const ATTEMPTS: usize = 40;

/// Sends `ATTEMPTS` orders at once (`shopper(i)` names the shopper of the
/// i-th) and checks that exactly the limiter's share got through: the burst,
/// plus what the rate (1/s) refilled while they ran. The rest are 429
/// `rate_limited` with a `Retry-After` of at least a second.
async fn burst_is_held_to_its_share(
    configure: impl FnOnce(&mut Config),
    shopper: fn(usize) -> String,
) {
    let mut config = test_config();
    configure(&mut config);
    let app = Arc::new(TestApp::spawn_with(config).await);
    let sale = app.create_sale(live_sale(1_000, 1_000)).await;
    let started = Instant::now();
    let answers = join_all((0..ATTEMPTS).map(|i| {
        let (app, sale) = (Arc::clone(&app), sale.clone());
        async move { app.order(&sale, &shopper(i), None, None).await }
    }))
    .await;
    let refilled = started.elapsed().as_secs() as usize;
    let mut accepted = 0;
    for answer in answers {
        if answer.status() == StatusCode::CREATED {
            accepted += 1;
            continue;
        }
        let retry_after: u64 = answer.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1, "Retry-After {retry_after}");
        assert_eq!(
            error_code(answer).await,
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned())
        );
    }
    let share = BURST as usize;
    assert!(
        (share..=share + refilled + 1).contains(&accepted),
        "{accepted} of {ATTEMPTS} accepted; the share was {share} (+{refilled} refilled)"
    );
    let stats = &app.sale(&sale).await["stats"];
    assert_eq!(
        stats["reserved"], accepted,
        "every accepted order, no more: {stats}"
    );
}

fn limited(per_sec: &mut u32, burst: &mut u32) {
    *per_sec = 1;
    *burst = BURST;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shopper_is_held_to_their_share() {
    burst_is_held_to_its_share(
        |config| limited(&mut config.rate_user_per_sec, &mut config.rate_user_burst),
        |_| "greedy".to_owned(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_held_to_its_share() {
    burst_is_held_to_its_share(
        |config| limited(&mut config.rate_ip_per_sec, &mut config.rate_ip_burst),
        |i| format!("shopper-{i}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_rate_is_capped_overall() {
    burst_is_held_to_its_share(
        |config| {
            limited(
                &mut config.rate_global_per_sec,
                &mut config.rate_global_burst,
            )
        },
        |i| format!("shopper-{i}"),
    )
    .await;
}

/// Cancels spend the order route's per-shopper budget: once one shopper's
/// burst is spent on orders, their cancel is 429 `rate_limited`, while
/// another shopper's cancel goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_share_the_shoppers_order_budget() {
    let mut config = test_config();
    limited(&mut config.rate_user_per_sec, &mut config.rate_user_burst);
    let app = TestApp::spawn_with(config).await;
    let sale = app.create_sale(live_sale(1_000, 1_000)).await;
    let mine = app.buy(&sale, "cycler").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = app.buy(&sale, "patient").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 1..BURST {
        assert_eq!(
            app.order(&sale, "cycler", None, None).await.status(),
            StatusCode::CREATED
        );
    }
    let cancel = app
        .shopper_post("cycler", &format!("/api/v1/orders/{mine}/cancel"))
        .await;
    assert!(cancel.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(cancel).await,
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned())
    );
    let cancel = app
        .shopper_post("patient", &format!("/api/v1/orders/{theirs}/cancel"))
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
}

/// A trusted X-Forwarded-For gives each forwarded client its own share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_forwarded_for_names_the_client() {
    let mut config = test_config();
    limited(&mut config.rate_ip_per_sec, &mut config.rate_ip_burst);
    config.rate_trust_forwarded_for = true;
    let app = TestApp::spawn_with(config).await;
    let sale = app.create_sale(live_sale(1_000, 1_000)).await;
    for client in 1..=3 {
        for _ in 0..BURST {
            let response = app
                .client
                .post(app.url(&format!("/api/v1/sales/{sale}/orders")))
                .bearer_auth(crate::support::token(&format!("via-proxy-{client}")))
                .header(
                    "x-forwarded-for",
                    format!("203.0.113.{client}, 10.0.0.{client}"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED, "client {client}");
        }
    }
}

/// With the store stuck, requests beyond the in-flight bound are refused
/// at once with 503 `overloaded`; those inside it give up at the request
/// timeout with 503 `unavailable` instead of waiting for the store; health
/// still answers; and a reservation that happened meanwhile is found again
/// by its Idempotency-Key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_store_sheds_beyond_the_bound_and_times_out_within_it() {
    const IN_FLIGHT: usize = 4;
    const TIMEOUT: Duration = Duration::from_millis(500);
    const PAUSE_MS: u64 = 4_000;
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.max_in_flight = IN_FLIGHT as u64;
    config.request_timeout_ms = TIMEOUT.as_millis() as u64;
    config.store_timeout_ms = 10_000;
    config.reserve_timeout_ms = 10_000;
    let app = Arc::new(TestApp::spawn_with(config).await);
    let sale = app.create_sale(live_sale(100, 1)).await;
    app.buy(&sale, "warm-up").await;

    redis.pause(PAUSE_MS);
    let stuck: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (app, sale) = (Arc::clone(&app), sale.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let key = format!("stuck-{i}");
                let response = app
                    .order(&sale, &format!("stuck-{i}"), None, Some(&key))
                    .await;
                (started.elapsed(), error_code(response).await)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..10 {
        let started = Instant::now();
        let shed = app.order(&sale, &format!("shed-{i}"), None, None).await;
        let elapsed = started.elapsed();
        assert_eq!(shed.headers()["retry-after"], "1");
        assert_eq!(
            error_code(shed).await,
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded".into())
        );
        println!("overloaded answered in {elapsed:?}");
    }
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "ops routes are not shed");
    for waited in join_all(stuck).await {
        let (elapsed, answer) = waited.unwrap();
        assert_eq!(
            answer,
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into()),
            "gave up at the request timeout, not at the store"
        );
        assert!(
            elapsed < Duration::from_millis(PAUSE_MS),
            "waited {elapsed:?}: past the timeout, up to the store"
        );
        println!("timed out after {elapsed:?}");
    }

    // Once the store answers again, each stuck shopper retries with the
    // same key: one order each, whether or not the first attempt had landed.
    tokio::time::sleep(Duration::from_millis(PAUSE_MS)).await;
    for i in 0..IN_FLIGHT {
        let key = format!("stuck-{i}");
        let retried = app
            .order(&sale, &format!("stuck-{i}"), None, Some(&key))
            .await;
        assert_eq!(retried.status(), StatusCode::CREATED);
    }
    let stats = &app.sale(&sale).await["stats"];
    assert_eq!(
        stats["reserved"],
        1 + IN_FLIGHT,
        "one order per shopper, however often they retried: {stats}"
    );
}

/// A client that never finishes its headers (slow-loris) is disconnected
/// after the header read timeout, and one that sends nothing after the idle
/// timeout; everyone else is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = test_config();
    config.header_read_timeout_ms = 300;
    config.idle_timeout_ms = 600;
    let app = TestApp::spawn_with(config).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: flashsale\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "others are served");
    let mut buffer = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buffer))
        .await
        .expect("the server closed the connection");
    // Closed: end of stream, maybe after a 408 answer, or a reset.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            let answer = String::from_utf8_lossy(&buffer[..n]);
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
    }
    println!("slow client cut off after {:?}", started.elapsed());
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer))
        .await
        .expect("a client that sends nothing is cut off too");
    assert!(matches!(read, Ok(0) | Err(_)) || buffer.starts_with(b"HTTP/1.1 408"));
}

/// WeChat Pay notifications sent with slow bodies hold only the notify
/// route's own places (`FLASHSALE_NOTIFY_MAX_IN_FLIGHT`): with both taken,
/// a third notification is shed 503 `overloaded`, and shoppers are served
/// (with every place of `FLASHSALE_MAX_IN_FLIGHT` taken by them, as before,
/// shoppers were shed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_notify_bodies_never_take_the_shoppers_places() {
    use tokio::io::AsyncWriteExt;

    let mut config = test_config();
    config.max_in_flight = 2;
    config.notify_max_in_flight = 2;
    config.request_timeout_ms = 20_000;
    let app = TestApp::spawn_with(config).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let notify = "/api/v1/payments/wechatpay/notify";
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST {notify} HTTP/1.1\r\nHost: flashsale\r\nContent-Type: application/json\r\n\
             Content-Length: 1000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let notified = || app.client.post(app.url(notify)).body("{}").send();
    // The two slow requests take their places as their headers arrive.
    let mut shed = None;
    for _ in 0..100 {
        let answer = notified().await.unwrap();
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(error_code(answer).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        shed,
        Some((StatusCode::SERVICE_UNAVAILABLE, "overloaded".to_owned())),
        "a third notification is shed while two are read slowly"
    );
    assert!(
        app.metrics()
            .await
            .contains(r#"flashsale_shed_total{reason="notify_in_flight"}"#),
        "counted as the notify route's"
    );
    let listed = app
        .client
        .get(app.url("/api/v1/sales"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK, "shoppers are served");
    drop(slow);
    let mut served = false;
    for _ in 0..100 {
        if notified().await.unwrap().status() != StatusCode::SERVICE_UNAVAILABLE {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the places come back once the slow clients leave");
}

/// Stopping does not wait for a connection that never sent a byte (an HTTP
/// client may keep such a connection unused in its pool): the engine stops at
/// once instead of hanging until the idle timeout or the drain limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_does_not_wait_for_unused_connections() {
    let mut config = test_config();
    config.idle_timeout_ms = 60_000;
    let app = TestApp::spawn_with(config).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let _unused = tokio::net::TcpStream::connect(&address).await.unwrap();
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("stopped without waiting for the unused connection");
}
