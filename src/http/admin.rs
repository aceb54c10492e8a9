//! The merchants' API under `/admin/v1`: schedule, list, inspect, change and
//! cancel sales. Every route needs the admin token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::Admin;
use super::error::{ApiError, ApiJson, ApiPath};
use super::views::AdminSaleBody;
use super::{parse_sale_id, view_sale, view_sales, AppState};
use crate::domain::{format_ms, system_now, NewSale, SaleId, SalePatch, SaleView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/sales", get(list_sales).post(create_sale))
        .route(
            "/admin/v1/sales/{id}",
            get(get_sale).patch(update_sale).delete(cancel_sale),
        )
}

async fn create_sale(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewSale>,
) -> Result<(StatusCode, Json<AdminSaleBody>), ApiError> {
    let sale = body.into_sale(SaleId::generate(), system_now(), &state.sale_rules)?;
    state.store.create_sale(&sale).await?;
    admin.audit(
        "schedule",
        &sale.id,
        &format!(
            "sku {} stock {} from {} to {}",
            sale.sku,
            sale.stock_total,
            format_ms(sale.starts_at),
            format_ms(sale.ends_at)
        ),
    );
    let view = view_sale(&state, &sale.id).await?;
    Ok((StatusCode::CREATED, Json((&view).into())))
}

async fn list_sales(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let views = view_sales(&state).await?;
    let sales: Vec<AdminSaleBody> = views.iter().map(AdminSaleBody::from).collect();
    Ok(Json(json!({ "sales": sales })))
}

async fn get_sale(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AdminSaleBody>, ApiError> {
    let view = view_sale(&state, &parse_sale_id(&id)?).await?;
    Ok(Json((&view).into()))
}

async fn update_sale(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<SalePatch>,
) -> Result<Json<AdminSaleBody>, ApiError> {
    let id = parse_sale_id(&id)?;
    let current = view_sale(&state, &id).await?;
    let change = current.sale.patched(patch, &state.sale_rules)?;
    state
        .store
        .update_sale(&id, &change, current.version)
        .await?;
    admin.audit(
        if change.end_now { "end" } else { "change" },
        &id,
        &format!(
            "stock {} ends {}",
            change.sale.stock_total,
            format_ms(change.sale.ends_at)
        ),
    );
    let view = changed(&state, &id).await?;
    Ok(Json((&view).into()))
}

async fn cancel_sale(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AdminSaleBody>, ApiError> {
    let id = parse_sale_id(&id)?;
    state.store.cancel_sale(&id).await?;
    admin.audit("cancel", &id, "");
    let view = changed(&state, &id).await?;
    Ok(Json((&view).into()))
}

/// Reads the changed sale and tells its actor.
async fn changed(state: &AppState, id: &SaleId) -> Result<SaleView, ApiError> {
    let view = view_sale(state, id).await?;
    state.inventory.sale_changed(view.clone());
    Ok(view)
}
