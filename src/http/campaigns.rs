//! Campaigns over HTTP: the merchants' routes under `/admin/v1/campaigns`
//! (schedule, list a page at a time, inspect with exact stats, change,
//! cancel) and the shoppers' seckill
//! page under `/api/v1/campaigns` (served from each node's memory; see
//! [`crate::campaigns`]). Ordering stays `POST
//! /api/v1/sales/{sale_id}/orders` with the item's sale in its round.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Shopper};
use super::error::{ApiError, ApiJson, ApiPath};
use super::openapi::error_responses;
use super::paging::{campaign_cursor, PageQuery, Paging};
use super::AppState;
use crate::campaigns::CampaignView;
use crate::domain::{
    Allowance, CampaignId, CampaignPatch, Item, NewCampaign, SaleStats, SaleView, Timestamp,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign, update_campaign, cancel_campaign))
        .routes(routes!(public_campaigns))
        .routes(routes!(public_campaign))
}

error_responses!(
    CreateCampaignErrors = [
        MalformedBody, Invalid, Unauthorized, Forbidden, PayloadTooLarge, Overloaded, Unavailable,
    ];
    ListCampaignPageErrors = [Invalid, Unauthorized, Forbidden, Overloaded, Unavailable];
    GetCampaignErrors = [Unauthorized, Forbidden, NotFound, Overloaded, Unavailable];
    UpdateCampaignErrors = [
        MalformedBody, Invalid, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
        Overloaded, Unavailable,
    ];
    CancelCampaignErrors = [Unauthorized, Forbidden, NotFound, Conflict, Overloaded, Unavailable];
    PublicCampaignsErrors = [Overloaded, Unavailable];
    PublicCampaignErrors = [Unauthorized, NotFound, Overloaded, Unavailable];
);

/// Where a round stands at the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoundStatus {
    Upcoming,
    Live,
    Ended,
}

/// One item in one round: its sale (order with `POST
/// /api/v1/sales/{sale_id}/orders`), prices and stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignItemBody {
    /// The item's number in the campaign (in its sales' ids): what
    /// `PATCH /admin/v1/campaigns/{id}` names it by.
    pub number: u32,
    #[schema(example = "s_k3v9x2m7-0a1")]
    pub sale_id: String,
    pub sku: String,
    pub title: String,
    /// The seckill price, minor units of the campaign's currency.
    pub price_cents: i64,
    /// The list price shown beside it.
    pub original_price_cents: i64,
    pub stock_total: i64,
    /// Units left; on the public page up to the page's max-age old.
    pub remaining: i64,
    /// Share of the stock off sale (reserved, paid, or refunded without
    /// restock), 0 to 1 (the progress bar).
    pub sold_share: f64,
    pub per_user_limit: i64,
    /// The sale's status (`upcoming`, `live`, `sold_out`, `ended`, `cancelled`).
    pub status: crate::domain::SaleStatus,
    /// Exact counts, on the admin routes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<SaleStats>,
}

/// One round with its items.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignRoundBody {
    /// The round's number in the campaign (in its sales' ids).
    pub number: u32,
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Timestamp,
    pub status: RoundStatus,
    pub items: Vec<CampaignItemBody>,
    /// Sums of the round's items' exact counts, on the admin routes only
    /// (`buyers` sums each item's distinct shoppers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<SaleStats>,
}

/// A campaign: its rounds, each with every item.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignBody {
    #[schema(example = "c_k3v9x2m7")]
    pub id: String,
    pub title: String,
    pub currency: String,
    /// Units one shopper may hold across all items of one round.
    pub per_user_limit_per_round: i64,
    /// Units one shopper may hold across the whole campaign, if limited.
    pub per_user_limit_total: Option<i64>,
    pub payment_timeout_secs: i64,
    pub require_purchase_token: bool,
    pub remind_before_secs: Option<i64>,
    pub rounds: Vec<CampaignRoundBody>,
    /// The engine's clock when the campaign was read (exact countdowns).
    #[schema(value_type = String, format = DateTime)]
    pub server_time: Timestamp,
    /// Bumped by every merchant change.
    pub version: i64,
    /// Sums over every round, on the admin routes only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<SaleStats>,
    /// With a shopper's token on the public page: what the shopper may
    /// still reserve in the current round (live, else next) and in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowance: Option<AllowanceBody>,
}

/// A shopper's allowance left.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllowanceBody {
    /// Units the shopper may still reserve in the current round (both
    /// limits counted).
    pub round_left: i64,
    /// Units left in the whole campaign; null without a total limit.
    pub campaign_left: Option<i64>,
}

impl From<Allowance> for AllowanceBody {
    fn from(allowance: Allowance) -> Self {
        Self {
            round_left: allowance.round_left,
            campaign_left: allowance.campaign_left,
        }
    }
}

/// `GET /api/v1/campaigns`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignBody>,
}

/// `GET /admin/v1/campaigns`: a page of campaigns.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignPage {
    pub campaigns: Vec<CampaignBody>,
    /// Where the next page starts (`?cursor=`); null after the last page.
    pub next_cursor: Option<String>,
}

fn sum(stats: impl Iterator<Item = SaleStats>) -> SaleStats {
    stats.fold(SaleStats::default(), |a, b| SaleStats {
        stock_total: a.stock_total + b.stock_total,
        remaining: a.remaining + b.remaining,
        reserved: a.reserved + b.reserved,
        paid: a.paid + b.paid,
        cancelled: a.cancelled + b.cancelled,
        expired: a.expired + b.expired,
        refund_required: a.refund_required + b.refund_required,
        refunded: a.refunded + b.refunded,
        restocked: a.restocked + b.restocked,
        queued: a.queued + b.queued,
        buyers: a.buyers + b.buyers,
    })
}

/// The campaign as JSON; `exact`: with the counts (admin routes).
fn campaign_body(view: &CampaignView, exact: bool) -> CampaignBody {
    let campaign = &view.stored.campaign;
    let rounds: Vec<CampaignRoundBody> = campaign
        .rounds
        .iter()
        .enumerate()
        .map(|(position, round)| {
            let sales = view.round_sales(position);
            let status = if view.round_closed(position) {
                RoundStatus::Ended
            } else if view.now < round.starts_at {
                RoundStatus::Upcoming
            } else {
                RoundStatus::Live
            };
            CampaignRoundBody {
                number: round.number,
                starts_at: Timestamp(round.starts_at),
                ends_at: Timestamp(round.ends_at),
                status,
                items: campaign
                    .items
                    .iter()
                    .zip(sales)
                    .map(|(item, sale)| item_body(item, sale, exact))
                    .collect(),
                totals: exact.then(|| sum(sales.iter().map(|sale| sale.stats))),
            }
        })
        .collect();
    CampaignBody {
        id: campaign.id.to_string(),
        title: campaign.title.clone(),
        currency: campaign.currency.clone(),
        per_user_limit_per_round: campaign.limits.per_round,
        per_user_limit_total: campaign.limits.total,
        payment_timeout_secs: campaign.payment_timeout_secs,
        require_purchase_token: campaign.require_purchase_token,
        remind_before_secs: campaign.remind_before_secs,
        totals: exact.then(|| sum(rounds.iter().filter_map(|round| round.totals))),
        rounds,
        server_time: Timestamp(view.now),
        version: view.stored.version,
        allowance: None,
    }
}

fn item_body(item: &Item, view: &SaleView, exact: bool) -> CampaignItemBody {
    let sale = &view.sale;
    let sold = view.stats.taken();
    CampaignItemBody {
        number: item.number,
        sale_id: sale.id.to_string(),
        sku: sale.sku.clone(),
        title: sale.title.clone(),
        price_cents: sale.price_cents,
        original_price_cents: item.original_price_cents,
        stock_total: view.stats.stock_total,
        remaining: view.stats.remaining,
        sold_share: if view.stats.stock_total > 0 {
            sold as f64 / view.stats.stock_total as f64
        } else {
            0.0
        },
        per_user_limit: sale.per_user_limit,
        status: view.status(),
        stats: exact.then_some(view.stats),
    }
}

fn parse_campaign_id(id: &str) -> Result<CampaignId, ApiError> {
    CampaignId::parse(id).map_err(|_| ApiError::NotFound("campaign not found".into()))
}

/// `Cache-Control` of the page: public without a shopper's token, private
/// with one (the allowance is the shopper's).
fn cache_control(state: &AppState, private: bool) -> [(header::HeaderName, HeaderValue); 1] {
    let max_age = state.campaigns.fresh_for().as_secs();
    let scope = if private { "private" } else { "public" };
    let value = HeaderValue::try_from(format!("{scope}, max-age={max_age}"))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    [(header::CACHE_CONTROL, value)]
}

/// Schedules a campaign: every round × item becomes a sale.
///
/// Rounds must be in order and must not overlap. Unknown fields are
/// refused.
#[utoipa::path(
    post,
    path = "/admin/v1/campaigns",
    operation_id = "admin_create_campaign",
    tag = "admin",
    security(("admin" = [])),
    request_body = NewCampaign,
    responses(
        (status = 201, description = "The scheduled campaign.", body = CampaignBody),
        CreateCampaignErrors,
    )
)]
async fn create_campaign(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewCampaign>,
) -> Result<(StatusCode, Json<CampaignBody>), ApiError> {
    let view = state.campaigns.schedule(body).await?;
    let campaign = &view.stored.campaign;
    admin.audit(
        "schedule_campaign",
        &campaign.id,
        &format!(
            "{} rounds x {} items",
            campaign.rounds.len(),
            campaign.items.len()
        ),
    );
    Ok((StatusCode::CREATED, Json(campaign_body(&view, true))))
}

/// Campaigns newest first, a page at a time, with exact stats.
#[utoipa::path(
    get,
    path = "/admin/v1/campaigns",
    operation_id = "admin_list_campaigns",
    tag = "admin",
    security(("admin" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of campaigns.", body = CampaignPage),
        ListCampaignPageErrors,
    )
)]
async fn list_campaigns(
    _: Admin,
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<CampaignPage>, ApiError> {
    let after = paging.after_campaign()?;
    let (views, next) = state
        .campaigns
        .list_page(after.as_ref(), paging.limit)
        .await?;
    Ok(Json(CampaignPage {
        campaigns: views.iter().map(|view| campaign_body(view, true)).collect(),
        next_cursor: next.as_ref().map(campaign_cursor),
    }))
}

/// One campaign with the exact stats of each item, each round and in all.
#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}",
    operation_id = "admin_get_campaign",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The campaign's id.")),
    responses((status = 200, description = "The campaign.", body = CampaignBody), GetCampaignErrors)
)]
async fn get_campaign(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CampaignBody>, ApiError> {
    let view = state.campaigns.view(&parse_campaign_id(&id)?).await?;
    Ok(Json(campaign_body(&view, true)))
}

/// Changes a campaign: before its first round starts, anything (add or
/// remove rounds and items, their terms, the limits); after, top up an
/// item, move a round not started, end a round now, or
/// `remind_before_secs`.
///
/// Rounds and items are named by their `number`. The change is computed
/// from the campaign as read and applied with its sales in one atomic
/// step, only if nobody changed it meanwhile (with `version`: only if it
/// is still at that version); else 409 `conflict`.
#[utoipa::path(
    patch,
    path = "/admin/v1/campaigns/{id}",
    operation_id = "admin_update_campaign",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The campaign's id.")),
    request_body = CampaignPatch,
    responses(
        (status = 200, description = "The changed campaign.", body = CampaignBody),
        UpdateCampaignErrors,
    )
)]
async fn update_campaign(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<CampaignPatch>,
) -> Result<Json<CampaignBody>, ApiError> {
    let id = parse_campaign_id(&id)?;
    let (change, view) = state.campaigns.change(&id, patch, &state.sales).await?;
    admin.audit(
        "change_campaign",
        &id,
        &format!(
            "version {}, {} sales touched",
            view.stored.version,
            change.steps.len()
        ),
    );
    Ok(Json(campaign_body(&view, true)))
}

/// Cancels a campaign whose first round has not started: every round ×
/// item's sale is cancelled; 409 `conflict` once it has started.
#[utoipa::path(
    delete,
    path = "/admin/v1/campaigns/{id}",
    operation_id = "admin_cancel_campaign",
    tag = "admin",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The campaign's id.")),
    responses(
        (status = 200, description = "The cancelled campaign.", body = CampaignBody),
        CancelCampaignErrors,
    )
)]
async fn cancel_campaign(
    admin: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CampaignBody>, ApiError> {
    let id = parse_campaign_id(&id)?;
    let view = state.campaigns.cancel(&id, &state.sales).await?;
    admin.audit("cancel_campaign", &id, "");
    Ok(Json(campaign_body(&view, true)))
}

/// Campaigns with a round live or to come.
///
/// Served from each node's memory, read at most once per
/// `FLASHSALE_CAMPAIGN_PAGE_CACHE_MS`.
#[utoipa::path(
    get,
    path = "/api/v1/campaigns",
    tag = "campaigns",
    responses(
        (
            status = 200,
            description = "Live and upcoming campaigns.",
            body = CampaignList,
            headers(("Cache-Control" = String, description = "`public, max-age=N`."))
        ),
        PublicCampaignsErrors,
    )
)]
async fn public_campaigns(
    State(state): State<AppState>,
) -> Result<([(header::HeaderName, HeaderValue); 1], Json<CampaignList>), ApiError> {
    let views = state.campaigns.live_and_upcoming().await?;
    Ok((
        cache_control(&state, false),
        Json(CampaignList {
            campaigns: views
                .iter()
                .map(|view| campaign_body(view, false))
                .collect(),
        }),
    ))
}

/// The seckill page: every round with its status and every item with its
/// prices, stock and sale id, plus `server_time`.
///
/// Served from each node's memory: one store read of the campaign per
/// `FLASHSALE_CAMPAIGN_PAGE_CACHE_MS` however many shoppers ask; statuses
/// and `server_time` are exact, `remaining` may be that old. With a
/// shopper's token, also the shopper's `allowance` (exact).
#[utoipa::path(
    get,
    path = "/api/v1/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, description = "The campaign's id.")),
    responses(
        (
            status = 200,
            description = "The campaign's page.",
            body = CampaignBody,
            headers((
                "Cache-Control" = String,
                description = "`public, max-age=N` (`private` with a shopper's token)."
            ))
        ),
        PublicCampaignErrors,
    )
)]
async fn public_campaign(
    State(state): State<AppState>,
    shopper: Option<Shopper>,
    ApiPath(id): ApiPath<String>,
) -> Result<([(header::HeaderName, HeaderValue); 1], Json<CampaignBody>), ApiError> {
    let view = state.campaigns.page(&parse_campaign_id(&id)?).await?;
    let mut body = campaign_body(&view, false);
    if let Some(Shopper(shopper)) = &shopper {
        body.allowance = state
            .campaigns
            .allowance(&view, shopper)
            .await?
            .map(Into::into);
    }
    Ok((cache_control(&state, shopper.is_some()), Json(body)))
}
