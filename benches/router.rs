//! The front door's own cost, without a socket or wrk: the whole router
//! driven in process with tower's `oneshot`, for the order route of a sold
//! out sale (answered before any actor or store work: what is left is the
//! layers, the token check, the JSON and the metrics), against a bare
//! axum handler answering a body of the same size (the floor). Also
//! counts the heap allocations each request makes, with a counting
//! allocator around the system one.
//!
//! Run: `cargo bench --bench router`. With `ROUTER_REQUESTS=N ROUTER_ROUTE=sold_out` (or
//! `bare`) it sends only N requests to that route and exits, for an
//! instruction count that does not depend on the machine's load: the
//! difference between two counts (`valgrind --tool=callgrind`) over the
//! difference in N is the instructions per request.

use std::alloc::System;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use criterion::{criterion_group, Criterion, Throughput};
use flashsale::config::{Config, LogFormat, PaymentMode};
use flashsale::http::mint_shopper_token;
use flashsale::{telemetry, Application};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ADMIN: &str = "bench-admin-token-of-at-least-32-bytes";
const SECRET: &str = "bench-shopper-secret";
/// Distinct shoppers' tokens the sold-out requests take in turn.
const SHOPPERS: usize = 1_000;
/// Tokens minted for `ROUTER_REQUESTS`, its largest count.
const TOKENS_ONLY: usize = 4_000;
/// Requests whose allocations are counted, per route.
const COUNTED: usize = 1_000;

/// The engine's router on the embedded store, rate limits off (as in
/// `benches/http.sh`), with one sale of one unit already sold.
async fn engine() -> (Router, String) {
    let mut config = Config::for_tests();
    config.admin_token = Some(ADMIN.into());
    config.user_token_secret = Some(SECRET.into());
    config.payments = Some(PaymentMode::Simulated);
    config.rate_global_per_sec = 0;
    config.rate_user_per_sec = 0;
    config.rate_ip_per_sec = 0;
    let app = Application::build(config).await.expect("the engine builds");
    let router = app.router();
    // The application's tasks (order service, upkeep) are not needed to
    // answer; it is kept alive for its actor threads.
    std::mem::forget(app);
    let now = chrono::Utc::now();
    let body = serde_json::json!({
        "sku": "BENCH", "title": "bench", "price_cents": 100, "stock_total": 1,
        "per_user_limit": 1,
        "starts_at": (now - chrono::Duration::seconds(1)).to_rfc3339(),
        "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
    });
    let created = router
        .clone()
        .oneshot(
            Request::post("/admin/v1/sales")
                .header("authorization", format!("Bearer {ADMIN}"))
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("an answer");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = axum::body::to_bytes(created.into_body(), 1 << 16)
        .await
        .expect("body");
    let sale: serde_json::Value = serde_json::from_slice(&created).expect("json");
    let path = format!(
        "/api/v1/sales/{}/orders",
        sale["id"].as_str().expect("an id")
    );
    let last = order(&path, &token("last-unit"));
    let first = router.clone().oneshot(last).await.expect("an answer");
    assert_eq!(first.status(), StatusCode::CREATED);
    // The actor learns it is sold out from its first refusal; from then
    // on the answer comes from the front door.
    let refused = router
        .clone()
        .oneshot(order(&path, &token("second")))
        .await
        .expect("an answer");
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    (router, path)
}

fn token(shopper: &str) -> String {
    mint_shopper_token(SECRET.as_bytes(), shopper, 3600).expect("token")
}

/// An order request as wrk sends it, from a client address.
fn order(path: &str, token: &str) -> Request<Body> {
    let mut request = Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"quantity":1}"#))
        .expect("request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    request
}

/// The floor: one POST route answering 409 with a sold-out sized body.
fn bare() -> Router {
    Router::new().route(
        "/api/v1/sales/{id}/orders",
        post(|| async {
            (
                StatusCode::CONFLICT,
                axum::Json(serde_json::json!({
                    "error": {"code": "sold_out", "message": "the sale is sold out"}
                })),
            )
        }),
    )
}

/// Heap allocations per request, averaged over [`COUNTED`] requests.
async fn allocations(router: &Router, requests: &[Request<Body>]) -> f64 {
    let region = Region::new(ALLOCATOR);
    for request in requests {
        let request = clone_request(request);
        let response = router.clone().oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let _ = axum::body::to_bytes(response.into_body(), 1 << 16).await;
    }
    region.change().allocations as f64 / requests.len() as f64
}

fn clone_request(request: &Request<Body>) -> Request<Body> {
    let mut copy = Request::post(request.uri().clone())
        .body(Body::from(r#"{"quantity":1}"#))
        .expect("request");
    *copy.headers_mut() = request.headers().clone();
    copy.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    copy
}

fn router(c: &mut Criterion) {
    // Logging as the engine runs in `benches/http.sh`: a subscriber at
    // `warn`, so what is only logged at lower levels is priced as skipped.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    telemetry::init_tracing(LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (engine, path) = runtime.block_on(engine());
    let bare = bare();
    let tokens: Vec<String> = (0..SHOPPERS)
        .map(|i| token(&format!("shopper-{i}")))
        .collect();
    let requests: Vec<Request<Body>> = (0..COUNTED)
        .map(|i| order(&path, &tokens[i % tokens.len()]))
        .collect();
    runtime.block_on(async {
        // Warm both (metric series, lazily built state) before counting.
        allocations(&engine, &requests[..10]).await;
        allocations(&bare, &requests[..10]).await;
        // First with tokens the engine has not seen (each verified), then
        // the same requests again (each token from the verified cache).
        let engine_new = allocations(&engine, &requests).await;
        let engine_again = allocations(&engine, &requests).await;
        let bare_allocs = allocations(&bare, &requests).await;
        println!(
            "allocations per request: sold-out order route {engine_new:.1} (new tokens), \
             {engine_again:.1} (the same tokens again); bare handler {bare_allocs:.1}"
        );
    });

    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    group.bench_function("bare_handler", |b| {
        b.to_async(&runtime).iter(|| {
            i = (i + 1) % requests.len();
            let request = clone_request(&requests[i]);
            let bare = bare.clone();
            async move { bare.oneshot(request).await.expect("an answer") }
        })
    });
    group.bench_function("sold_out_order", |b| {
        b.to_async(&runtime).iter(|| {
            i = (i + 1) % requests.len();
            let request = clone_request(&requests[i]);
            let engine = engine.clone();
            async move { engine.oneshot(request).await.expect("an answer") }
        })
    });
    group.finish();
}

criterion_group!(benches, router);

fn main() {
    match std::env::var("ROUTER_REQUESTS") {
        Ok(count) => requests_only(count.parse().expect("ROUTER_REQUESTS: a count")),
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}

/// Sends `count` requests to the route `ROUTER_ROUTE` names and exits.
fn requests_only(count: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (engine, path) = runtime.block_on(engine());
    let router = match std::env::var("ROUTER_ROUTE").as_deref() {
        Ok("bare") => bare(),
        _ => engine,
    };
    // As many tokens minted whatever `count` is, so the difference of
    // two counts holds only requests; each request a distinct shopper's.
    let tokens: Vec<String> = (0..TOKENS_ONLY)
        .map(|i| token(&format!("shopper-{i}")))
        .collect();
    assert!(
        count <= TOKENS_ONLY,
        "ROUTER_REQUESTS: at most {TOKENS_ONLY}"
    );
    runtime.block_on(async {
        for token in &tokens[..count] {
            let response = router
                .clone()
                .oneshot(order(&path, token))
                .await
                .expect("an answer");
            assert_eq!(response.status(), StatusCode::CONFLICT);
        }
    });
}
