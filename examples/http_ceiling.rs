//! The ceiling of the HTTP stack on this machine, for `benches/http.sh` to
//! compare the engine's routes against, on the same runtime defaults as the
//! engine:
//! - `GET /` answers a short JSON body: the trivial endpoint, the ceiling
//!   the targets are ratios to;
//! - `POST /api/v1/sales/{id}/orders` answers the engine's sold-out answer
//!   (409 and the same body) after reading the request's body (hyper
//!   closes a connection whose request body was left unread): the order
//!   route's floor on this stack, with its path parameter, its request's
//!   headers and body, and wrk's request script, so that what the engine
//!   adds to a sold-out answer is the difference between the two.
//!
//! Not part of the product's router.
//!
//! Run: `cargo run --release --example http_ceiling -- 127.0.0.1:8090`.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};

/// The engine's body for a sold-out order request.
const SOLD_OUT: &str = r#"{"error":{"code":"sold_out","message":"not enough stock left"}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let router = Router::new()
        .route("/", get(|| async { Json(serde_json::json!({"ok": true})) }))
        .route(
            "/api/v1/sales/{id}/orders",
            post(|_body: Bytes| async {
                (
                    StatusCode::CONFLICT,
                    [(header::CONTENT_TYPE, "application/json")],
                    SOLD_OUT,
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
