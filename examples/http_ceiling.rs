//! The ceiling of the HTTP stack on this machine: a trivial axum endpoint
//! (`GET /` answers a short JSON body) on the same runtime defaults as the
//! engine, for `benches/http.sh` to compare the order route against. Not
//! part of the product's router.
//!
//! Run: `cargo run --release --example http_ceiling -- 127.0.0.1:8090`.

use axum::routing::get;
use axum::{Json, Router};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let router = Router::new().route("/", get(|| async { Json(serde_json::json!({"ok": true})) }));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
