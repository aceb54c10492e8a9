//! The HTTP front door (axum): the router, shared state, request metrics,
//! and the helpers the route modules share. A handler parses the request,
//! calls one service function (`sales`, `orders`, `payments`) and maps its
//! outcome; `http` reaches the store only through the services (and the
//! `Store` trait's readiness check for `/readyz`), never Redis.
//!
//! - `public`: shoppers, `/api/v1`.
//! - `admin`: merchants, `/admin/v1`.
//! - `console`: the merchant console's page and assets, `/console/`.
//! - `payments`: WeChat Pay notifications and the simulated pay route.
//! - `ops`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.
//! - `auth`: shopper JWTs and the admin token.
//! - `limits`: rate limits and load shedding.
//! - `error`: every error response, and the one table of error codes.
//! - `views`: the JSON shapes the API answers with; `schemas`: the
//!   OpenAPI schemas of the domain types the API reads or shows as they are.
//! - `openapi`: the OpenAPI document, generated from the handlers'
//!   `#[utoipa::path]` annotations as the routers are built.
//! - `front_door`: the one layer every request passes (shedding, the
//!   request timeout, panics, request metrics).
//! - `server`: the listener and the HTTP/1.1 connection loop.

mod admin;
mod auth;
mod campaigns;
mod console;
mod error;
mod front_door;
mod limits;
mod openapi;
mod ops;
mod paging;
mod payments;
mod public;
mod queue;
mod schemas;
pub mod server;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use self::auth::{mint_shopper_token, AuthKeys, ShopperTokenRules, ADMIN_TOKEN_MIN_BYTES};
pub use self::error::{ApiError, ErrorCode};
use self::front_door::{FrontDoor, FrontDoorLayer};
pub use self::limits::{Rate, RateLimitSettings, RateLimits, Shedding, Sheddings};
use crate::admission::WaitingRooms;
use crate::campaigns::Campaigns;
use crate::domain::{OrderId, SaleId};
use crate::orders::Orders;
use crate::payments::Payments;
use crate::sales::live::LiveFeeds;
use crate::sales::Sales;
use crate::store::Store;
use crate::telemetry::{HttpRequestCounters, Sheds};

/// What every handler can reach: one shared [`AppContext`], so the copy
/// axum hands each request (every extractor takes the state by value) is
/// one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        Self(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// The services the handlers call (one per workflow family), and what the
/// front door itself needs: keys, limits, metrics.
pub struct AppContext {
    pub sales: Sales,
    pub campaigns: Campaigns,
    pub orders: Arc<Orders>,
    pub payments: Arc<Payments>,
    /// Only for `/readyz`: is the store reachable.
    pub store: Arc<dyn Store>,
    pub auth: Arc<AuthKeys>,
    pub metrics: PrometheusHandle,
    pub store_timeout: Duration,
    /// Largest request body read, in bytes (see `error::read_body`).
    pub body_limit_bytes: usize,
    pub limits: Arc<RateLimits>,
    /// How long a purchase token stays valid, in seconds.
    pub purchase_token_ttl_secs: i64,
    /// The sales' live feeds for merchants' consoles.
    pub live: Arc<LiveFeeds>,
    /// This node's 429 and 503 answers, which the live feeds chart.
    pub sheds: Arc<Sheds>,
    /// The waiting rooms of queued sales.
    pub waiting_rooms: Arc<WaitingRooms>,
}

/// The whole application router. Every route but the ops routes is under
/// the load-shedding bounds, so health and metrics answer under overload;
/// WeChat Pay's notify route under its own in-flight bound, so requests
/// there (whose bodies are read before anything can check them: a client
/// sending them slowly holds its places until the request timeout) never
/// take the shoppers' places.
///
/// Every route is registered through utoipa-axum's `OpenApiRouter`, which
/// collects each handler's `#[utoipa::path]` operation as it adds the
/// route; the collected document is served at `GET /openapi.json`.
pub fn router(state: AppState, sheddings: Sheddings) -> Router {
    let (engine, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(public::router())
        .merge(queue::router())
        .merge(payments::router(state.payments.method()))
        .merge(admin::router())
        .merge(campaigns::router())
        .merge(console::router())
        .split_for_parts();
    let (ops, ops_document) = ops::router().split_for_parts();
    document.merge(ops_document);
    let (notify, notify_document) = payments::notify_router().split_for_parts();
    document.merge(notify_document);
    // Every request passes one layer, `FrontDoorLayer`: the engine
    // routes' and the notify route's each with their own shedding bounds
    // and the live feeds' shed count, the ops routes' with only the
    // request metrics.
    let requests = Arc::new(HttpRequestCounters::default());
    let engine_door = FrontDoor {
        shedding: Some(sheddings.engine),
        sheds: Some(Arc::clone(&state.sheds)),
        requests: Arc::clone(&requests),
    };
    let notify_door = FrontDoor {
        shedding: Some(sheddings.notify),
        sheds: Some(Arc::clone(&state.sheds)),
        requests: Arc::clone(&requests),
    };
    let ops_door = FrontDoor {
        shedding: None,
        sheds: None,
        requests,
    };
    let engine = engine
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(FrontDoorLayer(Arc::new(engine_door)));
    let notify = notify
        .method_not_allowed_fallback(method_not_allowed)
        .layer(FrontDoorLayer(Arc::new(notify_door)));
    let ops = ops
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(openapi::OpenApiJson::new(&document)))
        .layer(FrontDoorLayer(Arc::new(ops_door)));
    let router = Router::new().merge(engine).merge(notify).merge(ops);
    // tower-http's trace layer logs only at debug level (sheds, 429 and
    // 503, logged one by one at error level flooded the log at a sale's
    // opening; they are counted in the metrics, and a panic and an
    // unreachable store are logged where they happen). Its span, wrapped
    // body and clock reads cost every request even when nothing is logged,
    // so it is there only when debug logs of `tower_http::trace` are wanted.
    let router = if tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG) {
        router.layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
    } else {
        router
    };
    router.with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// An order id from a path: a malformed one names no order.
fn parse_order_id(id: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(id).map_err(|_| ApiError::NotFound("order not found".into()))
}

/// A sale id from a path: a malformed one names no sale.
fn parse_sale_id(id: &str) -> Result<SaleId, ApiError> {
    SaleId::parse(id).map_err(|_| ApiError::NotFound("sale not found".into()))
}
