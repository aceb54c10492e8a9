//! The shoppers' API under `/api/v1`: browse sales (no token needed), race
//! for stock, see and cancel their own orders (shopper token).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::Json;
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{PurchaseTokenError, Shopper};
use super::error::{parse_json, read_body, ApiError, ApiPath};
use super::limits::WithinAddressLimit;
use super::openapi::error_responses;
use super::paging::{order_cursor, PageQuery, Paging};
use super::views::{
    JsonAnswer, OrderBody, OrderList, PublicSaleBody, PublicSaleList, PurchaseTokenBody,
};
use super::{parse_order_id, parse_sale_id, AppState};
use crate::domain::{system_now, OrderAsk, Quantity, Timestamp};
use crate::telemetry;

// Header names as `HeaderName`s: a lookup by `&str` parses the name again
// on every request.
const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");
const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
const PURCHASE_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-purchase-token");

/// Schemas the operations refer to by name rather than by type.
#[derive(OpenApi)]
#[openapi(components(schemas(OrderRequest)))]
struct Schemas;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Schemas::openapi())
        .routes(routes!(create_order))
        .routes(routes!(issue_purchase_token))
        .routes(routes!(list_sales))
        .routes(routes!(get_sale))
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
}

error_responses!(
    ListSalesErrors = [Overloaded, Unavailable];
    GetSaleErrors = [NotFound, Overloaded, Unavailable];
    CreateOrderErrors = [
        MalformedBody, Invalid, Unauthorized, Forbidden, NotFound, NotStarted, Ended, SoldOut,
        LimitExceeded, IdempotencyMismatch, PayloadTooLarge, RateLimited, Overloaded,
        Unavailable,
    ];
    PurchaseTokenErrors = [
        Unauthorized, Forbidden, NotFound, NotStarted, Ended, SoldOut, RateLimited, Overloaded,
        Unavailable,
    ];
    ListOrdersErrors = [Invalid, Unauthorized, Forbidden, Overloaded, Unavailable];
    GetOrderErrors = [Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    CancelOrderErrors = [
        Unauthorized, Forbidden, NotFound, Conflict, RateLimited, WechatpayRefused, Overloaded,
        Unavailable,
    ];
);

/// Live, upcoming and sold-out sales.
#[utoipa::path(
    get,
    path = "/api/v1/sales",
    tag = "sales",
    responses(
        (status = 200, description = "Live, upcoming and sold-out sales.", body = PublicSaleList),
        ListSalesErrors,
    )
)]
async fn list_sales(State(state): State<AppState>) -> Result<Json<PublicSaleList>, ApiError> {
    let views = state.sales.list_for_shoppers().await?;
    let sales: Vec<PublicSaleBody> = views.iter().map(PublicSaleBody::from).collect();
    Ok(Json(PublicSaleList {
        sales,
        server_time: Timestamp(system_now()),
    }))
}

/// One sale, with `server_time` for an exact countdown.
///
/// The countdown every waiting shopper polls: each engine node reads the
/// sale from the store at most once per `FLASHSALE_SALE_POLL_CACHE_MS`
/// (default 1 s), however many shoppers ask, and says so in
/// `Cache-Control` so a CDN may hold it as long. `status` and
/// `server_time` are exact when answered (to half the store read that
/// filled the node's memory); `remaining` may be that old.
#[utoipa::path(
    get,
    path = "/api/v1/sales/{id}",
    tag = "sales",
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (
            status = 200,
            description = "The sale.",
            body = PublicSaleBody,
            headers((
                "Cache-Control" = String,
                description = "`public, max-age=N`: N whole seconds the answer may be held."
            ))
        ),
        GetSaleErrors,
    )
)]
async fn get_sale(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<([(header::HeaderName, HeaderValue); 1], Json<PublicSaleBody>), ApiError> {
    let view = state.sales.polled_view(&parse_sale_id(&id)?).await?;
    let max_age = state.sales.poll_fresh_for().as_secs();
    let cache_control = HeaderValue::try_from(format!("public, max-age={max_age}"))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    Ok((
        [(header::CACHE_CONTROL, cache_control)],
        Json((&view).into()),
    ))
}

/// The order body: `{"quantity": n}`, or no body at all for one unit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OrderRequest {
    /// Units to buy: 1 to the sale's `per_user_limit`.
    #[serde(default = "one")]
    #[schema(default = 1, minimum = 1, maximum = 10_000)]
    quantity: i64,
}

fn one() -> i64 {
    1
}

/// Race for stock.
///
/// Takes the units and creates the order in one atomic step. A retry with
/// the same `Idempotency-Key` and body answers as the first request did
/// (`Idempotent-Replayed: true`) and never makes a second order. A sale
/// with `require_purchase_token` needs the `X-Purchase-Token` header.
#[utoipa::path(
    post,
    path = "/api/v1/sales/{id}/orders",
    tag = "sales",
    security(("shopper" = [])),
    params(
        ("id" = String, Path, description = "The sale's id."),
        (
            "Idempotency-Key" = Option<String>, Header, nullable = false,
            min_length = 1, max_length = 128, pattern = "^[!-~]+$",
            description = "1 to 128 printable ASCII characters: a retry with the same key and \
                           body returns the first answer, never a second order."
        ),
        (
            "X-Purchase-Token" = Option<String>, Header, nullable = false,
            description = "A purchase token from `POST /api/v1/sales/{id}/purchase-token`; \
                           required when the sale has `require_purchase_token`."
        ),
    ),
    // By reference, not `Option<OrderRequest>`: the body is optional (no
    // body buys one unit), but a JSON `null` is refused like any non-object.
    request_body(
        content = ref("#/components/schemas/OrderRequest"),
        description = "Optional: no body (or only whitespace) buys one unit.",
        content_type = "application/json"
    ),
    responses(
        (
            status = 201,
            description = "The order: the stock is held until `expires_at`.",
            body = OrderBody,
            headers((
                "Idempotent-Replayed" = bool,
                description = "`true` when this is the stored answer to an earlier request \
                               with the same `Idempotency-Key`."
            ))
        ),
        CreateOrderErrors,
    )
)]
async fn create_order(
    _: WithinAddressLimit,
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    request: Request,
) -> Result<
    (
        StatusCode,
        [(HeaderName, HeaderValue); 1],
        JsonAnswer<OrderBody>,
    ),
    ApiError,
> {
    let result = async {
        state.limits.check_shopper(&shopper_id)?;
        let sale_id = parse_sale_id(&id)?;
        // Read in place: a `HeaderMap` extractor would copy every header.
        let headers = request.headers();
        let idempotency_key = idempotency_key(headers)?;
        let purchase_token = match headers.get(PURCHASE_TOKEN_HEADER) {
            None => None,
            Some(token) => {
                let token = token
                    .to_str()
                    .map_err(|_| ApiError::Forbidden("the purchase token is not valid"))?;
                match state.auth.purchase_token(token, &shopper_id, &sale_id) {
                    Ok(id) => Some(id),
                    // A retry with its Idempotency-Key must get its first
                    // answer even after the token expired: passed on as no
                    // token, the store replays the order the key made, or
                    // refuses for want of a token.
                    Err(PurchaseTokenError::Expired) if idempotency_key.is_some() => None,
                    Err(err) => return Err(err.into()),
                }
            }
        };
        let body = read_body(request, &state).await?;
        let quantity = if body.iter().all(u8::is_ascii_whitespace) {
            1
        } else {
            parse_json::<OrderRequest>(&body)?.quantity
        };
        let ask = OrderAsk {
            sale_id,
            shopper_id,
            quantity: Quantity::parse(quantity)?,
            idempotency_key,
            purchase_token,
        };
        Ok::<_, ApiError>(state.orders.reserve(ask).await?)
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
                JsonAnswer((&reservation.order).into()),
            ))
        }
        Err(err) => {
            telemetry::count_reservation(err.code().as_str());
            Err(err)
        }
    }
}

/// Issues a purchase token for a live sale: the hidden buy path.
///
/// None exists before the start (by the store's clock), so nobody buys
/// early, nor on a queued sale (403 `forbidden`): there the waiting room
/// gives the tokens, to admitted shoppers only. Send it back in `X-Purchase-Token` when ordering.
#[utoipa::path(
    post,
    path = "/api/v1/sales/{id}/purchase-token",
    tag = "sales",
    security(("shopper" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (status = 201, description = "A purchase token.", body = PurchaseTokenBody),
        PurchaseTokenErrors,
    )
)]
async fn issue_purchase_token(
    _: WithinAddressLimit,
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<PurchaseTokenBody>), ApiError> {
    state.limits.check_shopper(&shopper_id)?;
    let sale_id = parse_sale_id(&id)?;
    let view = state.sales.open_for_purchase(&sale_id).await?;
    if view.sale.admission.is_queue() {
        return Err(ApiError::Forbidden(
            "this sale admits shoppers through its waiting room (POST /api/v1/sales/{id}/queue)",
        ));
    }
    let (token, expires_at) =
        state
            .auth
            .mint_purchase_token(&shopper_id, &sale_id, state.purchase_token_ttl_secs)?;
    Ok((
        StatusCode::CREATED,
        Json(PurchaseTokenBody {
            purchase_token: token,
            sale_id: sale_id.to_string(),
            expires_at: Timestamp(expires_at),
        }),
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

/// The shopper's own order (another shopper's id: 404).
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    security(("shopper" = [])),
    params(("id" = String, Path, description = "The order's id.")),
    responses((status = 200, description = "The order.", body = OrderBody), GetOrderErrors)
)]
async fn get_order(
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state
        .orders
        .shopper_order(&parse_order_id(&id)?, &shopper_id)
        .await?;
    Ok(Json((&order).into()))
}

/// The shopper's orders, newest first, a page at a time.
///
/// Lists the orders in the sales the shopper bought in and in the open
/// sales; a sale deleted by retention is no longer listed.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    security(("shopper" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of the shopper's orders.", body = OrderList),
        ListOrdersErrors,
    )
)]
async fn list_orders(
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<OrderList>, ApiError> {
    let (orders, last) = state
        .orders
        .shopper_orders(&shopper_id, paging.after_order()?.as_ref(), paging.limit)
        .await?;
    Ok(Json(OrderList {
        orders: orders.iter().map(OrderBody::from).collect(),
        next_cursor: last.as_ref().map(order_cursor),
    }))
}

/// Cancels an unpaid order; its stock goes back on sale.
///
/// An order the shopper started paying with WeChat Pay
/// (`POST /api/v1/orders/{id}/wechatpay`) is closed at WeChat Pay first, so
/// it can no longer be paid: while WeChat Pay cannot be reached the cancel
/// is 503 `unavailable` and the order stays as it was; if it was paid
/// first, 409 `conflict` and the order is paid; WeChat Pay refusing the
/// close is 502 `wechatpay_refused`.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/cancel",
    tag = "orders",
    security(("shopper" = [])),
    params(("id" = String, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The cancelled order.", body = OrderBody),
        CancelOrderErrors,
    )
)]
async fn cancel_order(
    Shopper(shopper_id): Shopper,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    // The order route's per-shopper budget, shared: a round of
    // reserve-and-cancel spends it twice.
    state.limits.check_shopper(&shopper_id)?;
    let order = state
        .orders
        .cancel(&parse_order_id(&id)?, &shopper_id)
        .await?;
    Ok(Json((&order).into()))
}
