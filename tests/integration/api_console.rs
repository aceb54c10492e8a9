//! Goal: the console's page is served safely (CSP without inline scripts,
//! no framing, no admin data), and a sale's live feed
//! (`GET /admin/v1/sales/{id}/events`) is admin-only, bounded, shared by
//! every console watching the sale, shows the race (and the engine's 503
//! answers, and a queued sale's line) as it happens, and ends when the
//! engine stops. Method: the engine over HTTP on both stores; the
//! feed read as raw Server-Sent Events.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::on_both_stores;
use crate::support::{
    error_code, live_sale, rfc3339_in, token, Backend, Harness, TestApp, ADMIN_TOKEN,
};

/// A sale's live feed as the console reads it: events split from the raw
/// stream.
struct Feed {
    response: Response,
    buffer: String,
}

impl Feed {
    async fn open(app: &TestApp, sale: &str) -> Self {
        let response = app
            .client
            .get(app.url(&format!("/admin/v1/sales/{sale}/events")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a Server-Sent Events stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's name and data, or `None` once the stream ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = self.response.chunk().await.unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `stats` event's data.
    async fn stats(&mut self) -> Value {
        let (name, data) = self.next().await.expect("the feed goes on");
        assert_eq!(name, "stats", "{data}");
        data
    }
}

async fn start(backend: Backend, watchers_max: u64) -> Harness {
    Harness::start_with(backend, |config| {
        config.console_events_ms = 100;
        config.console_watchers_max = watchers_max;
    })
    .await
}

async fn the_page_is_served_with_its_security_headers_and_no_admin_data(backend: Backend) {
    let Harness { app, redis: _redis } = start(backend, 4).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    let response = app.client.get(app.url("/console/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let page = response.text().await.unwrap();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(headers["x-frame-options"], "DENY");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(page.contains(r#"<script type="module" src="/console/console.js">"#));
    for secret in [ADMIN_TOKEN, sale.as_str(), "Le Pliage"] {
        assert!(!page.contains(secret), "the page shows no admin data");
    }

    let script = app
        .client
        .get(app.url("/console/console.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(script.headers()["x-frame-options"], "DENY");
    let missing = app
        .client
        .get(app.url("/console/secrets.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(missing).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
}

async fn the_feed_is_admin_only_and_names_a_real_sale(backend: Backend) {
    let Harness { app, redis: _redis } = start(backend, 4).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    let path = format!("/admin/v1/sales/{sale}/events");
    for (bearer, expected) in [
        (None, (StatusCode::UNAUTHORIZED, "unauthorized")),
        (
            Some("wrong".to_owned()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
        ),
        (Some(token("qin")), (StatusCode::FORBIDDEN, "forbidden")),
    ] {
        let mut request = app.client.get(app.url(&path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            error_code(response).await,
            (expected.0, expected.1.to_owned())
        );
    }
    let unknown = app
        .admin(
            reqwest::Method::GET,
            "/admin/v1/sales/s_nosuchsale00/events",
            None,
        )
        .await;
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
}

/// Two consoles on one sale get the very same ticks (one publisher, one
/// read per tick: the unit tests of `sales::live` count the reads), which
/// show the units sold as orders arrive.
async fn consoles_share_one_feed_that_shows_the_race(backend: Backend) {
    let Harness { app, redis: _redis } = start(backend, 4).await;
    let sale = app.create_sale(live_sale(50, 1)).await;
    let mut first = Feed::open(&app, &sale).await;
    let mut second = Feed::open(&app, &sale).await;
    let (a, b) = (first.stats().await, second.stats().await);
    // The second console joined a feed already running: it starts at the
    // first tick after it arrived, and from then on both see the same.
    let mut a = a;
    while a["seq"] != b["seq"] {
        a = first.stats().await;
    }
    assert_eq!(a, b, "one tick, broadcast to both");
    assert_eq!(a["sale"]["id"], sale.as_str());
    assert!(a["queue"].is_null(), "an open sale has no line: {a}");
    assert_eq!(a["sale"]["stats"]["remaining"], 50);

    for shopper in 0..20 {
        app.buy(&sale, &format!("racer-{shopper}")).await;
    }
    let mut sold_seen: f64 = 0.0;
    loop {
        let (a, b) = (first.stats().await, second.stats().await);
        assert_eq!(a, b, "the same tick on both consoles");
        sold_seen = sold_seen.max(a["sold_per_sec"].as_f64().unwrap());
        if a["sale"]["stats"]["remaining"] == 30 {
            assert_eq!(a["sale"]["stats"]["reserved"], 20);
            break;
        }
    }
    assert!(sold_seen > 0.0, "a tick showed units sold per second");
}

async fn watchers_are_bounded_and_freed_when_a_console_leaves(backend: Backend) {
    let Harness { app, redis: _redis } = start(backend, 2).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    let other = app.create_sale(live_sale(5, 1)).await;
    let mut first = Feed::open(&app, &sale).await;
    let second = Feed::open(&app, &other).await;
    first.stats().await;
    let path = format!("/admin/v1/sales/{sale}/events");
    let refused = app.admin(reqwest::Method::GET, &path, None).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(refused).await,
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded".to_owned())
    );
    // That 503 shows in the next tick's sheds.
    while first.stats().await["shed_503_per_sec"].as_f64().unwrap() == 0.0 {}
    drop(second);
    // The slot is free once the engine notices the closed connection (at
    // its next write, the next tick).
    loop {
        let response = app.admin(reqwest::Method::GET, &path, None).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        first.stats().await;
    }
}

async fn an_open_feed_ends_when_the_engine_stops(backend: Backend) {
    let Harness { app, redis: _redis } = start(backend, 4).await;
    let sale = app.create_sale(live_sale(5, 1)).await;
    let mut feed = Feed::open(&app, &sale).await;
    feed.stats().await;
    let stopping = tokio::spawn(app.stop());
    while let Some((name, _)) = feed.next().await {
        assert_eq!(name, "stats");
    }
    stopping.await.unwrap();
}

/// A queued sale's feed carries its line in counts, as shoppers join.
async fn a_queued_sales_feed_carries_its_line(backend: Backend) {
    let Harness { app, redis: _redis } = start(backend, 4).await;
    let mut body = live_sale(5, 1);
    body["starts_at"] = rfc3339_in(Duration::from_secs(600), false).into();
    body["admission"] = json!({"mode": "queue", "prequeue_opens_secs": 900});
    let sale = app.create_sale(body).await;
    let mut feed = Feed::open(&app, &sale).await;
    assert_eq!(feed.stats().await["queue"]["joined"], 0);
    for shopper in ["ada", "bo"] {
        let joined = app
            .shopper_post(shopper, &format!("/api/v1/sales/{sale}/queue"))
            .await;
        assert_eq!(joined.status(), StatusCode::CREATED);
    }
    // A tick every 100 ms: the joins show within a few.
    for _ in 0..100 {
        let tick = feed.stats().await;
        if tick["queue"]["joined"] == 2 {
            assert_eq!(tick["queue"]["waiting"], 2, "{tick}");
            assert_eq!(tick["queue"]["admitted"], 0, "{tick}");
            return;
        }
    }
    panic!("100 ticks never showed the two joins");
}

on_both_stores!(
    the_page_is_served_with_its_security_headers_and_no_admin_data,
    the_feed_is_admin_only_and_names_a_real_sale,
    consoles_share_one_feed_that_shows_the_race,
    watchers_are_bounded_and_freed_when_a_console_leaves,
    an_open_feed_ends_when_the_engine_stops,
    a_queued_sales_feed_carries_its_line,
);
