//! Operations routes: liveness, readiness, Prometheus metrics and the
//! OpenAPI document. No token; outside load shedding.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::{error_responses, OpenApiJson};
use super::AppState;
use crate::store::StoreError;

/// The paths of the ops routes: answered even on a connection past the
/// bound on open ones (see `http::server`).
pub(super) const OPS_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The ops routes. `/openapi.json` needs the finished document as an
/// [`OpenApiJson`] extension (see `http::router`).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `embedded` or `redis`.
    #[schema(example = "redis")]
    pub store: &'static str,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process is up.", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

error_responses!(ReadyzErrors = [Unavailable];);

/// The store answers and its scripts are loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses((status = 200, description = "Ready to serve.", body = Readiness), ReadyzErrors)
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    tokio::time::timeout(state.store_timeout, state.store.ready())
        .await
        .map_err(|_| StoreError::Unavailable("readiness check timed out".into()))??;
    Ok(Json(Readiness {
        status: "ready",
        store: state.store.kind(),
    }))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((
        status = 200,
        description = "Prometheus text exposition format 0.0.4.",
        body = String,
        content_type = "text/plain; version=0.0.4"
    ))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// This document.
///
/// The OpenAPI 3 description of every route, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((
        status = 200,
        description = "The OpenAPI document.",
        body = Object,
        content_type = "application/json"
    ))
)]
async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_paths_are_the_ops_routes() {
        let (_, document) = router().split_for_parts();
        let mut routed: Vec<&str> = document.paths.paths.keys().map(String::as_str).collect();
        let mut listed = OPS_PATHS.to_vec();
        routed.sort_unstable();
        listed.sort_unstable();
        assert_eq!(routed, listed);
    }
}
