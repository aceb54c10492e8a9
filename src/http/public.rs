//! The shoppers' API under `/api/v1`: browse sales (no token needed), race
//! for stock, see and cancel their own orders (shopper token).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Shopper;
use super::error::{parse_json, read_body, ApiError, ApiPath};
use super::limits;
use super::views::PublicSaleBody;
use super::{parse_order_id, parse_sale_id, view_sale, view_sales, AppState};
use crate::domain::{format_ms, system_now, OrderBody, OrderId, Quantity, Rejection, SaleStatus};
use crate::store::ReserveRequest;
use crate::telemetry;

const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";
const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
const PURCHASE_TOKEN_HEADER: &str = "x-purchase-token";

pub fn router(state: &AppState) -> Router<AppState> {
    let order_routes = Router::new()
        .route("/api/v1/sales/{id}/orders", post(create_order))
        .route(
            "/api/v1/sales/{id}/purchase-token",
            post(issue_purchase_token),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limits::limit_by_address,
        ));
    Router::new()
        .merge(order_routes)
        .route("/api/v1/sales", get(list_sales))
        .route("/api/v1/sales/{id}", get(get_sale))
        .route("/api/v1/orders", get(list_orders))
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/api/v1/orders/{id}/cancel", post(cancel_order))
}

async fn list_sales(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let views = view_sales(&state).await?;
    let sales: Vec<PublicSaleBody> = views
        .iter()
        .filter(|view| {
            matches!(
                view.status(),
                SaleStatus::Upcoming | SaleStatus::Live | SaleStatus::SoldOut
            )
        })
        .map(PublicSaleBody::from)
        .collect();
    Ok(Json(
        json!({ "sales": sales, "server_time": format_ms(system_now()) }),
    ))
}

async fn get_sale(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PublicSaleBody>, ApiError> {
    let view = view_sale(&state, &parse_sale_id(&id)?).await?;
    Ok(Json((&view).into()))
}

/// The order body: `{"quantity": n}`, or no body at all for one unit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRequest {
    #[serde(default = "one")]
    quantity: i64,
}

fn one() -> i64 {
    1
}

async fn create_order(
    Shopper(user_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<
    (
        StatusCode,
        [(&'static str, HeaderValue); 1],
        Json<OrderBody>,
    ),
    ApiError,
> {
    let result = async {
        state.limits.check_shopper(&user_id)?;
        let sale_id = parse_sale_id(&id)?;
        let idempotency_key = idempotency_key(&headers)?;
        let purchase_token = headers
            .get(PURCHASE_TOKEN_HEADER)
            .map(|token| {
                let token = token
                    .to_str()
                    .map_err(|_| ApiError::Forbidden("the purchase token is not valid"))?;
                state.auth.purchase_token(token, &user_id, &sale_id)
            })
            .transpose()?;
        let body = read_body(request, &state).await?;
        let quantity = if body.iter().all(u8::is_ascii_whitespace) {
            1
        } else {
            parse_json::<OrderRequest>(&body)?.quantity
        };
        let request = ReserveRequest {
            order_id: OrderId::generate(&sale_id),
            sale_id,
            user_id,
            quantity: Quantity::parse(quantity)?,
            idempotency_key,
            purchase_token,
        };
        Ok::<_, ApiError>(state.inventory.reserve(request).await?)
    }
    .await;
    match result {
        Ok(reservation) => {
            telemetry::count_reservation(if reservation.replayed {
                "replayed"
            } else {
                "reserved"
            });
            // A replay answers exactly as the first request did; the header
            // tells a curious client it was one.
            let replayed = HeaderValue::from_static(if reservation.replayed {
                "true"
            } else {
                "false"
            });
            Ok((
                StatusCode::CREATED,
                [(IDEMPOTENT_REPLAYED_HEADER, replayed)],
                Json((&reservation.order).into()),
            ))
        }
        Err(err) => {
            telemetry::count_reservation(err.code());
            Err(err)
        }
    }
}

/// Issues a purchase token for a live sale: the hidden buy path. None
/// exists before the start (by the store's clock), so nobody buys early.
async fn issue_purchase_token(
    Shopper(user_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.limits.check_shopper(&user_id)?;
    let sale_id = parse_sale_id(&id)?;
    let view = view_sale(&state, &sale_id).await?;
    let closed = match view.status() {
        SaleStatus::Live => None,
        SaleStatus::Upcoming => Some(Rejection::NotStarted),
        SaleStatus::SoldOut => Some(Rejection::SoldOut),
        SaleStatus::Ended | SaleStatus::Cancelled => Some(Rejection::Ended),
    };
    if let Some(rejection) = closed {
        return Err(ApiError::Rejected(rejection));
    }
    let (token, expires_at) =
        state
            .auth
            .mint_purchase_token(&user_id, &sale_id, state.purchase_token_ttl_secs)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "purchase_token": token,
            "sale_id": sale_id.as_str(),
            "expires_at": format_ms(expires_at),
        })),
    ))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|key| {
        (1..=IDEMPOTENCY_KEY_LEN_MAX).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_graphic())
    });
    key.map(|key| Some(key.to_owned())).ok_or_else(|| {
        ApiError::Invalid(format!(
            "Idempotency-Key: must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable ASCII characters"
        ))
    })
}

async fn get_order(
    Shopper(user_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state
        .store
        .order(&parse_order_id(&id)?)
        .await?
        .filter(|order| order.user_id == user_id)
        .ok_or_else(|| ApiError::NotFound("order not found".into()))?;
    Ok(Json((&order).into()))
}

async fn list_orders(
    Shopper(user_id): Shopper,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let orders = state.store.user_orders(&user_id).await?;
    let orders: Vec<OrderBody> = orders.iter().map(OrderBody::from).collect();
    Ok(Json(json!({ "orders": orders })))
}

async fn cancel_order(
    Shopper(user_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state
        .store
        .cancel_order(&parse_order_id(&id)?, &user_id)
        .await?;
    state
        .inventory
        .stock_returned(std::slice::from_ref(&order))
        .await;
    Ok(Json((&order).into()))
}
