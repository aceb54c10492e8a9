//! Operations routes: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::store::StoreError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is up.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store answers and its scripts are loaded.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    tokio::time::timeout(state.store_timeout, state.store.ready())
        .await
        .map_err(|_| StoreError::Unavailable("readiness check timed out".into()))??;
    Ok(Json(
        json!({"status": "ready", "store": state.store.kind()}),
    ))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
