//! The merchants' API under `/admin/v1`: schedule, list, inspect, change and
//! cancel sales, export their orders, look up any order, watch a sale
//! live (Server-Sent Events) and a queued sale's line, refund a paid
//! order (and record a refund paid back by hand), and list and re-drive
//! outbox entries that failed for good.
//! Every route needs the admin token.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Admin;
use super::error::{parse_json, read_body, ApiError, ApiJson, ApiPath};
use super::openapi::error_responses;
use super::paging::{page_of, sale_cursor, Listing, PageQuery, Paging};
use super::views::{
    AdminQueueBody, AdminSaleBody, AdminSaleList, DeadLetterList, OrderBody, OrderList,
    PaymentExceptionBody, PaymentExceptionList, RedriveBody, SaleAuditBody, SaleEventBody,
};
use super::{parse_order_id, parse_sale_id, AppState};
use crate::domain::{NewSale, SalePatch, Timestamp};
use crate::sales::live::{LiveTick, Watcher};

/// Schemas the operations refer to by name rather than by type.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(RefundRequest)))]
struct Schemas;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<Schemas as utoipa::OpenApi>::openapi())
        .routes(routes!(list_sales, create_sale))
        .routes(routes!(get_sale, update_sale, cancel_sale))
        .routes(routes!(audit_sale))
        .routes(routes!(export_orders))
        .routes(routes!(sale_events))
        .routes(routes!(queue_stats))
        .routes(routes!(payment_exceptions))
        .routes(routes!(settle_payment_exception))
        .routes(routes!(get_order))
        .routes(routes!(refund_order))
        .routes(routes!(settle_refund_by_hand))
        .routes(routes!(list_dead_letters))
        .routes(routes!(redrive_dead_letters))
}

error_responses!(
    CreateSaleErrors = [
        MalformedBody, Invalid, Unauthorized, Forbidden, PayloadTooLarge, Overloaded, Unavailable,
    ];
    ListSalesErrors = [Invalid, Unauthorized, Forbidden, Overloaded, Unavailable];
    ExportOrdersErrors = [Invalid, Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    GetSaleErrors = [Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    AuditSaleErrors = [Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    SaleEventsErrors = [Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    QueueStatsErrors = [Unauthorized, Forbidden, NotFound, Conflict, Overloaded, Unavailable];
    DeadLettersErrors = [Invalid, Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    RedriveErrors = [Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    UpdateSaleErrors = [
        MalformedBody, Invalid, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
        Overloaded, Unavailable,
    ];
    CancelSaleErrors = [Unauthorized, Forbidden, NotFound, Conflict, Overloaded, Unavailable];
    PaymentExceptionsErrors = [Invalid, Unauthorized, Forbidden, Overloaded, Unavailable];
    SettlePaymentExceptionErrors = [
        Unauthorized, Forbidden, NotFound, Conflict, Overloaded, Unavailable,
    ];
    GetOrderErrors = [Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    RefundOrderErrors = [
        MalformedBody, Invalid, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
        Overloaded, Unavailable,
    ];
    SettleRefundByHandErrors = [
        Unauthorized, Forbidden, NotFound, Conflict, Overloaded, Unavailable,
    ];
);

/// The body of `POST /admin/v1/orders/{id}/refund` (optional: an empty
/// body refunds without restocking). Unknown fields are refused.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Put the order's units back on sale (only while the sale is live:
    /// 409 `conflict` otherwise). Default false: the units stay off sale.
    #[serde(default)]
    pub restock: bool,
}

/// Refunds a paid order.
///
/// The order's units leave `paid` for `refunded` (with `restock`, back on
/// sale and off the shopper's count). With WeChat Pay the order becomes
/// `refunding` and the refund is sent from the sale's outbox
/// (`out_refund_no` = the order id + `-refund`, so it is refunded once
/// however often it is sent); WeChat Pay's refund notification makes it
/// `refunded`. With simulated payments it is `refunded` at once. An order
/// not paid (a second refund included): 409 `conflict`.
#[utoipa::path(
    post,
    path = "/admin/v1/orders/{id}/refund",
    operation_id = "admin_refund_order",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The order's id.")),
    // By reference, not `Option<RefundRequest>`: the body is optional.
    request_body(
        content = ref("#/components/schemas/RefundRequest"),
        content_type = "application/json",
        description = "Optional; `{}` or no body refunds without restocking.",
    ),
    responses(
        (status = 200, description = "The order, `refunding` or `refunded`.", body = OrderBody),
        RefundOrderErrors,
    )
)]
async fn refund_order(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    request: axum::extract::Request,
) -> Result<Json<OrderBody>, ApiError> {
    let body = read_body(request, &state).await?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        RefundRequest::default()
    } else {
        parse_json::<RefundRequest>(&body)?
    };
    let id = parse_order_id(&id)?;
    let order = state
        .orders
        .refund(&state.payments, &id, request.restock)
        .await?;
    admin.audit(
        "refund",
        &order.sale_id,
        &format!("order {id} restock {}", request.restock),
    );
    Ok(Json((&order).into()))
}

/// Records that the merchant paid an order's refund back by hand.
///
/// For a refund WeChat Pay could not pay (`ABNORMAL`: the shopper's
/// account could not take it; `CLOSED`) or a refund call it refused for
/// good (among the sale's dead letters), once the merchant paid the shopper
/// back another way: the `refunding` (or `refund_required`) order becomes
/// `refunded` with `refund_settled_by_hand_at`, `order.refunded` goes to the
/// webhook, the refund's dead letter is dropped (nothing left to re-drive)
/// and its payment exception settled. A repeat answers the order as it is.
/// An order paid through WeChat Pay is asked about at WeChat Pay first: a
/// refund it paid is settled as its own (no by-hand stamp); while it holds
/// the refund (`PROCESSING`), or the refund call is in the sale's outbox,
/// 409 `conflict`, as for an order whose refund was never asked for and on
/// a node without WeChat Pay; 503 `unavailable` while WeChat Pay cannot be
/// asked.
#[utoipa::path(
    post,
    path = "/admin/v1/orders/{id}/refund/settled-by-hand",
    operation_id = "admin_settle_refund_by_hand",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order, `refunded`.", body = OrderBody),
        SettleRefundByHandErrors,
    )
)]
async fn settle_refund_by_hand(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let id = parse_order_id(&id)?;
    let order = state.payments.settle_refund_by_hand(&id).await?;
    admin.audit(
        "settle_refund_by_hand",
        &order.sale_id,
        &format!("order {id}"),
    );
    Ok(Json((&order).into()))
}

/// Any shopper's order, with WeChat Pay's `prepay_id` and
/// `transaction_id` once known (to reconcile and refund).
#[utoipa::path(
    get,
    path = "/admin/v1/orders/{id}",
    operation_id = "admin_get_order",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The order's id.")),
    responses((status = 200, description = "The order.", body = OrderBody), GetOrderErrors)
)]
async fn get_order(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let order = state.orders.order(&parse_order_id(&id)?).await?;
    Ok(Json((&order).into()))
}

/// Schedules a sale.
///
/// Unknown fields are refused.
#[utoipa::path(
    post,
    path = "/admin/v1/sales",
    operation_id = "admin_create_sale",
    tag = "admin",
    security(("admin" = [])),
    request_body = NewSale,
    responses(
        (status = 201, description = "The scheduled sale.", body = AdminSaleBody),
        CreateSaleErrors,
    )
)]
async fn create_sale(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewSale>,
) -> Result<(StatusCode, Json<AdminSaleBody>), ApiError> {
    let view = state.sales.schedule(body).await?;
    let sale = &view.sale;
    admin.audit(
        "schedule",
        &sale.id,
        &format!(
            "sku {} stock {} from {} to {}",
            sale.sku,
            sale.stock_total,
            Timestamp(sale.starts_at),
            Timestamp(sale.ends_at)
        ),
    );
    Ok((StatusCode::CREATED, Json((&view).into())))
}

/// Every sale, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/admin/v1/sales",
    operation_id = "admin_list_sales",
    tag = "admin",
    security(("admin" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of sales.", body = AdminSaleList),
        ListSalesErrors,
    )
)]
async fn list_sales(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<AdminSaleList>, ApiError> {
    let (views, next) = state
        .sales
        .page(paging.after_sale()?.as_ref(), paging.limit)
        .await?;
    Ok(Json(AdminSaleList {
        sales: views.iter().map(AdminSaleBody::from).collect(),
        next_cursor: next.as_ref().map(sale_cursor),
    }))
}

/// Exports a sale's orders, a page at a time, in the store's order (not
/// by time). Meant for a settled sale, before retention deletes it
/// (`FLASHSALE_RETENTION_SECS` after its payment window closed): an order
/// changed or added while the pages are read may be listed twice or
/// missed. 404 once the sale is gone.
#[utoipa::path(
    get,
    path = "/admin/v1/sales/{id}/orders",
    operation_id = "admin_export_orders",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id."), PageQuery),
    responses(
        (status = 200, description = "A page of the sale's orders.", body = OrderList),
        ExportOrdersErrors,
    )
)]
async fn export_orders(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    paging: Paging,
) -> Result<Json<OrderList>, ApiError> {
    let (orders, next_cursor) = state
        .orders
        .sale_orders(&parse_sale_id(&id)?, paging.store_cursor(), paging.limit)
        .await?;
    Ok(Json(OrderList {
        orders: orders.iter().map(OrderBody::from).collect(),
        next_cursor,
    }))
}

/// The sale with its exact stats.
#[utoipa::path(
    get,
    path = "/admin/v1/sales/{id}",
    operation_id = "admin_get_sale",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses((status = 200, description = "The sale.", body = AdminSaleBody), GetSaleErrors)
)]
async fn get_sale(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AdminSaleBody>, ApiError> {
    let view = state.sales.view(&parse_sale_id(&id)?).await?;
    Ok(Json((&view).into()))
}

/// Reconciles a sale: recomputes stock, units by order state, each
/// shopper's units, the payment deadline index and the order service's
/// queue from the raw records, in one atomic read, and lists every
/// difference from the counts the engine keeps (`ok` is true when there is
/// none). Reads every order of the sale in one step: for operators and
/// tests, not for polling during a race.
#[utoipa::path(
    get,
    path = "/admin/v1/sales/{id}/audit",
    operation_id = "admin_audit_sale",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (status = 200, description = "The reconciliation.", body = SaleAuditBody),
        AuditSaleErrors,
    )
)]
async fn audit_sale(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SaleAuditBody>, ApiError> {
    let records = state.sales.records(&parse_sale_id(&id)?).await?;
    Ok(Json((&records).into()))
}

/// The sale, live: a stream of Server-Sent Events.
///
/// Each tick (every `FLASHSALE_CONSOLE_EVENTS_MS`) is an event `stats`
/// whose data is a `SaleEventBody`: the sale with its exact stats, units
/// taken per second, and this node's 429 and 503 answers per second. A
/// tick whose store read failed is an event `unavailable` whose data is an
/// `ErrorBody`; the stream goes on. One engine node reads a watched sale
/// once per tick however many consoles watch it; at most
/// `FLASHSALE_CONSOLE_WATCHERS_MAX` streams are open per node (past it 503
/// `overloaded`). The stream ends when the engine stops.
#[utoipa::path(
    get,
    path = "/admin/v1/sales/{id}/events",
    operation_id = "admin_sale_events",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (
            status = 200,
            description = "`text/event-stream`: events `stats` (data: a `SaleEventBody`) and \
                           `unavailable` (data: an `ErrorBody`), `id` the tick's `seq`.",
            content_type = "text/event-stream",
            body = SaleEventBody,
        ),
        SaleEventsErrors,
    )
)]
async fn sale_events(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_sale_id(&id)?;
    state.sales.view(&id).await?;
    let watcher = state.live.watch(&id)?;
    let mut response = Sse::new(events(watcher))
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies that buffer answers (nginx) would hold the ticks back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A watcher's ticks as Server-Sent Events, until its feed closes.
fn events(watcher: Watcher) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(watcher, |mut watcher| async move {
        let tick = watcher.next().await?;
        let event = match &*tick {
            LiveTick::Sale(sale) => Event::default()
                .event("stats")
                .json_data(SaleEventBody::from(sale.as_ref())),
            LiveTick::Unavailable { message, .. } => Event::default()
                .event("unavailable")
                .json_data(ApiError::Unavailable(message.clone()).body()),
        };
        let event = event
            .unwrap_or_else(|_| Event::default().event("unavailable"))
            .id(tick.seq().to_string());
        Some((Ok(event), watcher))
    })
}

/// A queued sale's waiting room in counts: places taken, still waiting,
/// admitted, admissions that bought, lapsed and freed, and outstanding.
/// Admissions are granted, and lapsed ones freed, only as shoppers' polls
/// reach the store, so those counts move with the polls. 409 `conflict`
/// on an open sale.
#[utoipa::path(
    get,
    path = "/admin/v1/sales/{id}/queue",
    operation_id = "admin_queue_stats",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (status = 200, description = "The line in counts.", body = AdminQueueBody),
        QueueStatsErrors,
    )
)]
async fn queue_stats(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AdminQueueBody>, ApiError> {
    let id = parse_sale_id(&id)?;
    let stats = state.waiting_rooms.stats(&id).await?;
    Ok(Json(AdminQueueBody {
        sale_id: id.to_string(),
        stats,
    }))
}

/// The sale's webhook hand-offs that failed for good, oldest first: each
/// refused by the merchant (a 4xx other than 408 and 429) or out of
/// attempts (`FLASHSALE_ORDER_WEBHOOK_ATTEMPTS_MAX`). They are sent no more
/// until re-driven.
#[utoipa::path(
    get,
    path = "/admin/v1/sales/{id}/dead-letters",
    operation_id = "admin_list_dead_letters",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id."), PageQuery),
    responses(
        (status = 200, description = "The dead letters.", body = DeadLetterList),
        DeadLettersErrors,
    )
)]
async fn list_dead_letters(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    paging: Paging,
) -> Result<Json<DeadLetterList>, ApiError> {
    let id = parse_sale_id(&id)?;
    let letters = state.orders.dead_letters(&id).await?;
    let (page, next) = page_of(letters, &paging, Listing::OldestFirst, |letter| {
        (letter.at, letter.errand.listing_key())
    })?;
    Ok(Json(DeadLetterList::new(&id, &page, next)))
}

/// Sends the sale's dead letters again: each goes back into the outbox,
/// due now, its attempts counted from zero; answers how many.
#[utoipa::path(
    post,
    path = "/admin/v1/sales/{id}/dead-letters/redrive",
    operation_id = "admin_redrive_dead_letters",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (status = 200, description = "How many went back into the outbox.", body = RedriveBody),
        RedriveErrors,
    )
)]
async fn redrive_dead_letters(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RedriveBody>, ApiError> {
    let id = parse_sale_id(&id)?;
    let redriven = state.orders.redrive_dead_letters(&id).await?;
    admin.audit("redrive", &id, &format!("{redriven} dead letters"));
    Ok(Json(RedriveBody {
        sale_id: id.to_string(),
        redriven,
    }))
}

/// Changes a sale.
///
/// Before the start, any field; while live, add stock (`stock_total` may
/// grow, never below what is held or paid), move `ends_at`, or
/// `{"status": "ended"}` to stop it now. Anything else: 409 `conflict`.
#[utoipa::path(
    patch,
    path = "/admin/v1/sales/{id}",
    operation_id = "admin_update_sale",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    request_body = SalePatch,
    responses(
        (status = 200, description = "The changed sale.", body = AdminSaleBody),
        UpdateSaleErrors,
    )
)]
async fn update_sale(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<SalePatch>,
) -> Result<Json<AdminSaleBody>, ApiError> {
    let id = parse_sale_id(&id)?;
    let (change, view) = state.sales.change(&id, patch).await?;
    admin.audit(
        if change.end_now { "end" } else { "change" },
        &id,
        &format!(
            "stock {} ends {}",
            change.sale.stock_total,
            Timestamp(change.sale.ends_at)
        ),
    );
    Ok(Json((&view).into()))
}

/// Cancels a sale that has not started; 409 `conflict` once it has.
#[utoipa::path(
    delete,
    path = "/admin/v1/sales/{id}",
    operation_id = "admin_cancel_sale",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The sale's id.")),
    responses(
        (status = 200, description = "The cancelled sale.", body = AdminSaleBody),
        CancelSaleErrors,
    )
)]
async fn cancel_sale(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AdminSaleBody>, ApiError> {
    let id = parse_sale_id(&id)?;
    let view = state.sales.cancel(&id).await?;
    admin.audit("cancel", &id, "");
    Ok(Json((&view).into()))
}

/// Verified payments the engine could not apply, newest first.
///
/// A WeChat Pay notification that verifies but pays a different amount
/// than the order's, or names no order, changes no order: it is recorded
/// here (once per transaction) and acknowledged, so WeChat Pay stops
/// retrying and the money is on record for the merchant to settle.
#[utoipa::path(
    get,
    path = "/admin/v1/payment-exceptions",
    operation_id = "admin_payment_exceptions",
    tag = "admin",
    security(("admin" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of payment exceptions.", body = PaymentExceptionList),
        PaymentExceptionsErrors,
    )
)]
async fn payment_exceptions(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<PaymentExceptionList>, ApiError> {
    let exceptions = state.payments.exceptions().await?;
    let (page, next_cursor) = page_of(exceptions, &paging, Listing::NewestFirst, |exception| {
        (exception.recorded_at, exception.transaction_id.clone())
    })?;
    Ok(Json(PaymentExceptionList {
        exceptions: page.iter().map(PaymentExceptionBody::from).collect(),
        next_cursor,
    }))
}

/// Marks a payment exception the merchant settled by hand (refunded the
/// shopper, paid the refund another way) settled: it leaves the list, and
/// should WeChat Pay notify that transaction again, it is not recorded
/// again. A refund's exception (`refund_abnormal`, `refund_closed`) also
/// settles its order's refund by hand, as
/// `POST /admin/v1/orders/{id}/refund/settled-by-hand` does (409 `conflict`
/// or 503 `unavailable` when that refuses). Answers it as it was listed.
#[utoipa::path(
    delete,
    path = "/admin/v1/payment-exceptions/{transaction_id}",
    operation_id = "admin_settle_payment_exception",
    tag = "admin",
    security(("admin" = [])),
    params(("transaction_id" = String, Path, description = "The exception's `transaction_id`.")),
    responses(
        (status = 200, description = "The exception, now settled and off the list.", body = PaymentExceptionBody),
        SettlePaymentExceptionErrors,
    )
)]
async fn settle_payment_exception(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(transaction_id): ApiPath<String>,
) -> Result<Json<PaymentExceptionBody>, ApiError> {
    // Longer than any id WeChat Pay sends: it names no exception.
    if transaction_id.len() > TRANSACTION_ID_LEN_MAX {
        return Err(ApiError::NotFound("payment exception not found".into()));
    }
    let exception = state.payments.settle_exception(&transaction_id).await?;
    admin.audit(
        "settle_payment_exception",
        &exception.out_trade_no,
        &format!("transaction {transaction_id}"),
    );
    Ok(Json((&exception).into()))
}

/// Longest transaction id the settle route looks up (WeChat Pay's are 32
/// characters; a refund's exception may be named by its `out_refund_no`).
const TRANSACTION_ID_LEN_MAX: usize = 128;
