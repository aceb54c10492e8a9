//! The waiting room's routes, `POST` and `GET /api/v1/sales/{id}/queue`:
//! parse, call [`WaitingRooms`](crate::admission::WaitingRooms), map the
//! answer, and sign the purchase token of an admitted shopper.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Shopper;
use super::error::{ApiError, ApiPath};
use super::limits::WithinAddressLimit;
use super::openapi::error_responses;
use super::{parse_sale_id, AppState};
use crate::admission::{QueueAnswer, QueueError};
use crate::domain::{system_now, QueueStatus, SaleId, ShopperId, Timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(join_queue, poll_queue))
}

error_responses!(
    JoinQueueErrors = [
        Unauthorized, Forbidden, NotFound, NotStarted, Ended, SoldOut, Conflict, RateLimited, Overloaded,
        Unavailable,
    ];
    PollQueueErrors = [
        Unauthorized, Forbidden, NotFound, Conflict, RateLimited, Overloaded, Unavailable,
    ];
);

/// A shopper's place in a queued sale's waiting room.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueBody {
    pub status: QueueStatus,
    /// 1-based place in the line, fixed from the opening; `null` before
    /// it (the shuffle places the pre-queue at the opening).
    #[schema(example = 1532)]
    pub position: Option<u64>,
    /// Shoppers still waiting ahead; `null` before the opening.
    #[schema(example = 1031)]
    pub ahead: Option<u64>,
    /// Estimated seconds until admission (until the opening, before it).
    #[schema(example = 3)]
    pub eta_secs: u64,
    /// Poll again after this many milliseconds: a poll before it gets the
    /// same answer from the engine node's memory.
    #[schema(example = 1000)]
    pub poll_after_ms: u64,
    #[schema(value_type = String, format = DateTime)]
    pub server_time: Timestamp,
    /// When admitted: the purchase token for `X-Purchase-Token` on
    /// `POST /api/v1/sales/{id}/orders`, one order, until `expires_at`.
    pub purchase_token: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Store(err) => err.into(),
            QueueError::NotInLine => Self::NotFound(err.to_string()),
            QueueError::Busy => Self::RateLimited {
                message: "too many shoppers are polling this engine node; poll again shortly",
                retry_after_secs: 1,
            },
            QueueError::Unreachable { retry_after_secs } => Self::UnavailableFor {
                message: "the store could not be reached at this shopper's last poll; poll again \
                          after Retry-After",
                retry_after_secs,
            },
        }
    }
}

fn body(
    state: &AppState,
    sale: &SaleId,
    shopper: &ShopperId,
    answer: QueueAnswer,
) -> Result<QueueBody, ApiError> {
    let place = answer.place;
    let token = match &place.admitted {
        Some(admitted) => Some(state.auth.admission_token(
            shopper,
            sale,
            &admitted.token_id,
            admitted.expires_at,
        )?),
        None => None,
    };
    Ok(QueueBody {
        status: place.status,
        position: place.position,
        ahead: place.ahead,
        eta_secs: answer.advice.eta_secs,
        poll_after_ms: answer.advice.poll_after_ms,
        server_time: Timestamp(system_now()),
        purchase_token: token,
        expires_at: place
            .admitted
            .map(|admitted| Timestamp(admitted.expires_at)),
    })
}

/// Joins a queued sale's waiting room.
///
/// From the pre-queue's opening (`admission.prequeue_opens_at`) until the
/// sale ends. Before the opening every joiner gets a uniformly random
/// place at it (the seed committed in `admission.seed_sha256`); from the
/// opening on, first come, first served behind them. Joining again keeps
/// the same place. Answers the place, as `GET` does.
#[utoipa::path(
    post,
    path = "/api/v1/sales/{id}/queue",
    tag = "sales",
    security(("shopper" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (status = 201, description = "In the line.", body = QueueBody),
        JoinQueueErrors,
    )
)]
async fn join_queue(
    _: WithinAddressLimit,
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<QueueBody>), ApiError> {
    state.limits.check_shopper(&shopper_id)?;
    let sale_id = parse_sale_id(&id)?;
    let answer = state
        .waiting_rooms
        .join(&state.sales, &sale_id, &shopper_id)
        .await?;
    let body = body(&state, &sale_id, &shopper_id, answer)?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// The shopper's place in a queued sale's waiting room.
///
/// Poll after `poll_after_ms`: a poll before it gets the last answer from
/// the engine node's memory, so each shopper reaches the store at most
/// once per `FLASHSALE_QUEUE_POLL_MS_MIN` on each node. `admitted` comes
/// with the purchase token; `sold_out` once nothing is left and nothing
/// can come back. 404 for a shopper not in the line (never joined, or an
/// admission that expired unused: join again, at the back).
#[utoipa::path(
    get,
    path = "/api/v1/sales/{id}/queue",
    tag = "sales",
    security(("shopper" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (status = 200, description = "The shopper's place.", body = QueueBody),
        PollQueueErrors,
    )
)]
async fn poll_queue(
    _: WithinAddressLimit,
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<QueueBody>, ApiError> {
    let sale_id = parse_sale_id(&id)?;
    let answer = state.waiting_rooms.poll(&sale_id, &shopper_id).await?;
    Ok(Json(body(&state, &sale_id, &shopper_id, answer)?))
}
