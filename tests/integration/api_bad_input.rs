//! Goal: bad input always gets its documented 4xx code, never a 500.
//! Method: a table of malformed orders, tokens, ids and admin bodies, each
//! with the (status, code) the contract promises; then stock is untouched.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::on_both_stores;
use crate::support::{error_code, live_sale, token, Backend, Harness, ADMIN_TOKEN};
use flashsale::http::mint_shopper_token;

const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

async fn bad_orders_get_documented_codes(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let sale = app.create_sale(live_sale(10, 2)).await;
    let url = app.url(&format!("/api/v1/sales/{sale}/orders"));
    let good = token("pia");
    let expired = mint_shopper_token(b"test-shopper-secret", "pia", -3600).unwrap();
    let forged = mint_shopper_token(b"another-secret", "pia", 3600).unwrap();
    let long_sub = mint_shopper_token(b"test-shopper-secret", &"x".repeat(129), 3600).unwrap();

    // (what, token, raw body, content type, expected status, expected code)
    let cases: Vec<(&str, Option<&str>, &str, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            Some(&good),
            "{",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "not an object",
            Some(&good),
            "[1]",
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "unknown field",
            Some(&good),
            r#"{"quantity":1,"price":0}"#,
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "wrong type",
            Some(&good),
            r#"{"quantity":"1"}"#,
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "fractional",
            Some(&good),
            r#"{"quantity":1.5}"#,
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "zero",
            Some(&good),
            r#"{"quantity":0}"#,
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "negative",
            Some(&good),
            r#"{"quantity":-1}"#,
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "huge",
            Some(&good),
            r#"{"quantity":99999999999999999999999}"#,
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "over the max",
            Some(&good),
            r#"{"quantity":10001}"#,
            UNPROCESSABLE,
            "invalid_request",
        ),
        (
            "over the limit",
            Some(&good),
            r#"{"quantity":3}"#,
            StatusCode::CONFLICT,
            "limit_exceeded",
        ),
        (
            "no token",
            None,
            "",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "garbage token",
            Some("not.a.jwt"),
            "",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "expired token",
            Some(&expired),
            "",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "forged token",
            Some(&forged),
            "",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "sub too long",
            Some(&long_sub),
            "",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "admin token",
            Some(ADMIN_TOKEN),
            "",
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (what, bearer, body, status, code) in cases {
        let mut request = app.client.post(&url).body(body.to_owned());
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            (status, code.to_owned()),
            "{what}"
        );
    }

    let too_large = app
        .client
        .post(&url)
        .bearer_auth(&good)
        .body(format!(
            r#"{{"quantity":1,"pad":"{}"}}"#,
            "x".repeat(64 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(too_large).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );

    let bad_key = app
        .client
        .post(&url)
        .bearer_auth(&good)
        .header("Idempotency-Key", "k".repeat(129))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(bad_key).await,
        (UNPROCESSABLE, "invalid_request".into())
    );

    for path in [
        "/api/v1/sales/s_zzzzzzzzzzzz/orders".to_owned(),
        "/api/v1/sales/not-an-id/orders".to_owned(),
        "/api/v1/sales/%00%ff/orders".to_owned(),
    ] {
        let response = app
            .client
            .post(app.url(&path))
            .bearer_auth(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{path}"
        );
    }
    for path in [
        "/api/v1/orders/o_zzzzzzzzzzzz_zzzzzzzzzzzzzzzz",
        "/api/v1/orders/nope",
    ] {
        let response = app.shopper_get("pia", path).await;
        assert_eq!(
            error_code(response).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{path}"
        );
    }
    let no_route = app
        .client
        .get(app.url("/api/v2/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(no_route).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let wrong_method = app
        .client
        .delete(app.url("/api/v1/sales"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(wrong_method).await,
        (StatusCode::METHOD_NOT_ALLOWED, "invalid_request".into())
    );

    let view = app.sale(&sale).await;
    assert_eq!(view["stats"]["remaining"], 10, "no bad request took stock");
}

async fn bad_sales_name_the_field(backend: Backend) {
    let Harness { app, redis: _redis } = Harness::start(backend).await;
    let base = live_sale(10, 1);
    let cases = [
        ("stock_total", json!(0)),
        ("stock_total", json!("ten")),
        ("per_user_limit", json!(0)),
        ("payment_timeout_secs", json!(30)),
        ("price_cents", json!(-5)),
        ("sku", json!("")),
        ("starts_at", json!("yesterday")),
        ("ends_at", json!("2020-01-01T00:00:00Z")),
        ("currency", json!("rmb")),
        ("colour", json!("red")),
    ];
    for (field, value) in cases {
        let mut body = base.clone();
        body[field] = value.clone();
        let response = app.admin(Method::POST, "/admin/v1/sales", Some(body)).await;
        let status = response.status();
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, UNPROCESSABLE, "{field} = {value}: {error}");
        assert_eq!(error["error"]["code"], "invalid_request");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{field}: message {message:?} names the field"
        );
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("sku");
    let response = app
        .admin(Method::POST, "/admin/v1/sales", Some(missing))
        .await;
    assert_eq!(
        error_code(response).await,
        (UNPROCESSABLE, "invalid_request".into())
    );
}

on_both_stores!(bad_orders_get_documented_codes, bad_sales_name_the_field);
