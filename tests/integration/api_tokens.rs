//! Goal: the engine's tokens hold against real clients: the admin token is
//! long, and guessing it from one address is cut short; shopper tokens from
//! real login services (`aud`, `nbf`, long lifetimes) are judged by the
//! settings. Method: engines started with each setting, probed over HTTP.

use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{error_code, test_config, TestApp, ADMIN_TOKEN, SHOPPER_SECRET};

#[tokio::test]
async fn an_admin_token_under_32_bytes_refuses_to_start() {
    let mut config = test_config();
    config.admin_token = Some("a".repeat(31));
    let Err(err) = flashsale::Application::build(config).await else {
        panic!("a 31-byte admin token starts");
    };
    let message = format!("{err:#}");
    assert!(
        message.contains("FLASHSALE_ADMIN_TOKEN is 31 bytes long; it must be at least 32"),
        "{message}"
    );
    let mut config = test_config();
    config.admin_token = Some("a".repeat(32));
    TestApp::spawn_with(config).await.stop().await;
}

#[tokio::test]
async fn failed_admin_authentications_are_limited_per_address() {
    let mut config = test_config();
    config.admin_auth_failures_per_min = 3;
    config.rate_trust_forwarded_for = true;
    let app = TestApp::spawn_with(config).await;
    let list = |address: &'static str, token: &str| {
        app.client
            .get(app.url("/admin/v1/sales"))
            .header("x-forwarded-for", address)
            .bearer_auth(token)
            .send()
    };
    for _ in 0..3 {
        let (status, code) = error_code(list("192.0.2.1", "guess").await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    let limited = list("192.0.2.1", "guess").await.unwrap();
    let retry_after: u64 = limited.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    let (status, code) = error_code(limited).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    // While it waits, the address cannot tell the right token from a guess.
    let (status, _) = error_code(list("192.0.2.1", ADMIN_TOKEN).await.unwrap()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Another address is unaffected, and the right token never counts.
    for _ in 0..5 {
        assert_eq!(
            list("192.0.2.2", ADMIN_TOKEN).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let (status, _) = error_code(list("192.0.2.2", "guess").await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"flashsale_rate_limited_total{limiter="admin"}"#));
    app.stop().await;
}

#[tokio::test]
async fn shopper_token_settings_apply_at_the_front_door() {
    let mut config = test_config();
    config.user_token_audience = Some("flashsale-engine".into());
    config.user_token_lifetime_max_secs = Some(3600);
    let app = TestApp::spawn_with(config).await;
    let now = chrono::Utc::now().timestamp();
    let orders = |claims: serde_json::Value| {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SHOPPER_SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        app.client
            .get(app.url("/api/v1/orders"))
            .bearer_auth(token)
            .send()
    };
    let good = json!({"sub": "s-1", "aud": "flashsale-engine", "iat": now, "exp": now + 600});
    assert_eq!(orders(good).await.unwrap().status(), StatusCode::OK);
    for claims in [
        json!({"sub": "s-1", "aud": "another-app", "iat": now, "exp": now + 600}),
        json!({"sub": "s-1", "iat": now, "exp": now + 600}),
        json!({"sub": "s-1", "aud": "flashsale-engine", "nbf": now + 300, "exp": now + 600}),
        json!({"sub": "s-1", "aud": "flashsale-engine", "iat": now, "exp": now + 7200}),
    ] {
        let (status, code) = error_code(orders(claims.clone()).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{claims}"
        );
    }
    app.stop().await;
}
