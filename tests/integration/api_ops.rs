//! Goal: operators can see the engine: liveness, readiness and the metrics
//! the README promises; and the real binary serves and stops cleanly on
//! SIGTERM. Method: probe the ops routes after some traffic; run the built
//! `flashsale` binary, wait for its listening line, send SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::fault_harness::EngineProcess;
use crate::on_both_stores;
use crate::support::{live_sale, Backend, Harness, TestApp};

async fn ops_routes_report_health_readiness_and_metrics(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    assert_eq!(app.public_json("/healthz").await, json!({"status": "ok"}));
    let store = if backend == Backend::Embedded {
        "embedded"
    } else {
        "redis"
    };
    assert_eq!(
        app.public_json("/readyz").await,
        json!({"status": "ready", "store": store})
    );

    let sale = app.create_sale(live_sale(1, 1)).await;
    app.buy(&sale, "ops-a").await;
    assert_eq!(
        app.order(&sale, "ops-b", None, None).await.status(),
        StatusCode::CONFLICT
    );

    let metrics = app.metrics().await;
    for expected in [
        r#"flashsale_http_requests_total{route="/api/v1/sales/{id}/orders",method="POST",status="201"}"#,
        r#"flashsale_reservations_total{outcome="reserved"}"#,
        r#"flashsale_reservations_total{outcome="sold_out"}"#,
        r#"flashsale_actor_local_answers_total{outcome="sold_out"}"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in /metrics");
    }
    if backend == Backend::Redis {
        assert!(metrics.contains(r#"flashsale_store_call_seconds_bucket{op="reserve""#));
    }
}

on_both_stores!(ops_routes_report_health_readiness_and_metrics);

#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("FLASHSALE_REDIS_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flashsale");
    let stdout = child.stdout.take().expect("stdout");
    let address = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(&line).ok()?;
            (line["fields"]["message"] == "flashsale listening")
                .then(|| line["fields"]["address"].as_str().map(str::to_owned))?
        })
        .expect("the listening log line");

    let health = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flashsale did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}

/// Goal: no client can add a metric series. Method: requests with made-up
/// methods, to a route and to no route, then read `/metrics`.
#[tokio::test]
async fn metric_labels_stay_in_fixed_sets_whatever_the_method() {
    let Harness { app, redis: _redis } = Harness::start(Backend::Embedded).await;
    for (method, path) in [
        ("XMETHOD1", "/healthz"),
        ("XMETHOD2", "/no/such/route/xmethod"),
        ("GET", "/no/such/route/xmethod"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
    }
    let metrics = app.metrics().await;
    for absent in ["XMETHOD", "/no/such/route"] {
        assert!(!metrics.contains(absent), "{absent} in /metrics");
    }
    for expected in [
        r#"flashsale_http_requests_total{route="/healthz",method="other",status="405"}"#,
        r#"flashsale_http_requests_total{route="unmatched",method="other",status="404"}"#,
        r#"flashsale_http_requests_total{route="unmatched",method="GET",status="404"}"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in /metrics");
    }
}

/// Goal: a Redis password in FLASHSALE_REDIS_URL reaches no log line and no
/// error. Method: a test Redis with `requirepass`; the built binary's start
/// logs until it listens; then an engine built with a wrong password.
#[tokio::test]
async fn the_redis_password_stays_out_of_logs_and_errors() {
    let redis = crate::support::RedisServer::start();
    redis.config_set("requirepass", "pw-right-secret");
    let with_password = |password: &str| redis.url().replace("://", &format!("://:{password}@"));

    let mut engine = EngineProcess::start(&with_password("pw-right-secret"));
    engine.kill();
    let lines = engine.logs();
    assert!(lines
        .iter()
        .any(|line| line.contains("flashsale listening")));
    let store_line = lines
        .iter()
        .find(|line| line.contains("store: Redis"))
        .expect("the store's start line");
    assert!(
        store_line.contains("redis://***@127.0.0.1:"),
        "{store_line}"
    );
    for line in &lines {
        assert!(!line.contains("pw-right-secret"), "{line}");
    }

    let mut config = crate::support::test_config();
    config.redis_url = Some(with_password("pw-wrong-secret"));
    config.payments = Some(flashsale::config::PaymentMode::Simulated);
    let Err(err) = flashsale::Application::build(config).await else {
        panic!("a wrong password connects");
    };
    let told = format!("{err:#} {err:?}");
    assert!(!told.contains("pw-wrong-secret"), "{told}");
    assert!(told.contains("redis://***@127.0.0.1:"), "{told}");
}

async fn assert_ready(app: &TestApp) {
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// Goal: `/readyz` is cheap, as anyone may call it. Method: count SCRIPT
/// LOAD and SCRIPT EXISTS on the test's own Redis over repeated checks;
/// then flush the script cache: one check loads the scripts again.
#[tokio::test]
async fn readiness_checks_do_not_load_the_scripts_each_time() {
    let Harness { app, redis } = Harness::start(Backend::Redis).await;
    let server = redis.standalone().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut server.connection())
        .unwrap();
    for _ in 0..20 {
        assert_ready(&app).await;
    }
    assert_eq!(server.command_calls(&["script|load"]), 0);
    assert_eq!(server.command_calls(&["script|exists"]), 20);

    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.connection())
        .unwrap();
    assert_ready(&app).await;
    let loads = server.command_calls(&["script|load"]);
    assert!(loads > 0, "a flushed cache is loaded again");
    assert_ready(&app).await;
    assert_eq!(server.command_calls(&["script|load"]), loads);
}
