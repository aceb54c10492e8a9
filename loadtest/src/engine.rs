//! The engine as the suite sees it from outside the attack: its wire types
//! (sales, stats, orders, errors) and the admin client that creates or
//! reads the suite's sales before the attack and reads stats and orders for
//! the verdict after it. Requests made here are not part of goose's metrics.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A sale as the public routes show it (the fields the suite reads).
#[derive(Debug, Clone, Deserialize)]
pub struct PublicSale {
    pub status: String,
    pub starts_at: DateTime<Utc>,
    /// The engine's clock when the sale was read: countdowns use it, not ours.
    pub server_time: DateTime<Utc>,
    /// A queued sale's waiting room.
    #[serde(default)]
    pub admission: Option<PublicAdmission>,
}

/// A sale's admission as the public routes show it (the fields the suite reads).
#[derive(Debug, Clone, Deserialize)]
pub struct PublicAdmission {
    /// Hex SHA-256 of the shuffle's seed, shown before the pre-queue opens.
    pub seed_sha256: Option<String>,
    /// The seed, from the opening on.
    pub seed: Option<String>,
}

/// `GET /api/v1/sales` (the ids are all the suite reads of it).
#[derive(Debug, Deserialize)]
pub struct PublicSaleList {
    pub sales: Vec<ListedSale>,
}

#[derive(Debug, Deserialize)]
pub struct ListedSale {
    pub id: String,
}

/// The exact counts of `GET /admin/v1/sales/{id}`, in units (and
/// `buyers` in shoppers).
///
/// The suite is a client of the engine's HTTP contract, so it declares the
/// shape it reads rather than linking the engine's crate (which would
/// bring the actors, Redis and the server into every load generator), and
/// it reads this shape strictly: a field the engine adds or renames fails
/// the run (CI's smoke included) until it is declared here too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SaleStats {
    pub stock_total: i64,
    pub remaining: i64,
    pub reserved: i64,
    pub paid: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub refund_required: i64,
    /// Units of paid orders the merchant refunds (refunding or refunded).
    pub refunded: i64,
    /// Of `refunded`, the units put back on sale.
    pub restocked: i64,
    /// Units of orders the order service has taken from the sale's stream.
    pub queued: i64,
    /// Distinct shoppers holding reserved or paid units.
    pub buyers: i64,
}

/// `GET /admin/v1/sales/{id}`: the sale with its stats.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminSale {
    pub id: String,
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub per_user_limit: i64,
    pub stats: SaleStats,
}

/// An order (the fields the suite reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    pub id: String,
    pub sale_id: String,
    pub quantity: i64,
    pub status: String,
}

impl Order {
    /// Whether the order still holds its units (not cancelled, expired, or
    /// refunded because paid too late).
    pub fn holds_stock(&self) -> bool {
        matches!(self.status.as_str(), "pending_payment" | "paid")
    }
}

/// A page of `GET /api/v1/orders`.
#[derive(Debug, Deserialize)]
struct OrderList {
    orders: Vec<Order>,
    next_cursor: Option<String>,
}

/// Orders per page of a shopper's list: the engine's most.
const ORDER_PAGE: &str = "500";

/// The body of `POST /admin/v1/sales`.
#[derive(Debug, Serialize)]
pub struct NewSale {
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub stock_total: u32,
    pub per_user_limit: u32,
    pub starts_at: String,
    pub ends_at: String,
    pub payment_timeout_secs: u32,
    /// A queued sale's admission (`None`: an open sale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<NewAdmission>,
}

/// The `admission` of `POST /admin/v1/sales` for a queued sale.
#[derive(Debug, Serialize)]
pub struct NewAdmission {
    /// Always `queue`.
    pub mode: &'static str,
    pub prequeue_opens_secs: u32,
    pub admit_per_sec: u32,
}

/// The body of `POST /admin/v1/campaigns`.
#[derive(Debug, Serialize)]
pub struct NewCampaign {
    pub title: String,
    pub rounds: Vec<NewRound>,
    pub items: Vec<NewItem>,
    pub per_user_limit_per_round: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_user_limit_total: Option<u32>,
    pub payment_timeout_secs: u32,
}

/// One round of [`NewCampaign`].
#[derive(Debug, Serialize)]
pub struct NewRound {
    pub starts_at: String,
    pub ends_at: String,
}

/// One item of [`NewCampaign`], offered in every round.
#[derive(Debug, Serialize)]
pub struct NewItem {
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub original_price_cents: i64,
    pub stock_per_round: u32,
    pub per_user_limit: u32,
}

/// A campaign as its page (`GET /api/v1/campaigns/{id}`) and the admin
/// routes show it (the fields the suite reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub per_user_limit_per_round: i64,
    pub per_user_limit_total: Option<i64>,
    pub rounds: Vec<CampaignRound>,
    /// The engine's clock when the page was read: countdowns use it, not ours.
    pub server_time: DateTime<Utc>,
}

/// A round of a [`Campaign`].
#[derive(Debug, Clone, Deserialize)]
pub struct CampaignRound {
    pub starts_at: DateTime<Utc>,
    /// `upcoming`, `live` or `ended`.
    pub status: String,
    pub items: Vec<CampaignItem>,
}

/// An item of a [`CampaignRound`]: the round × item's sale.
#[derive(Debug, Clone, Deserialize)]
pub struct CampaignItem {
    pub sale_id: String,
}

/// The admin and read-back client.
pub struct Engine {
    client: reqwest::Client,
    base: reqwest::Url,
    admin_token: String,
}

impl Engine {
    pub fn new(host: &str, admin_token: &str) -> anyhow::Result<Self> {
        let base =
            reqwest::Url::parse(host).with_context(|| format!("host {host:?} is not a URL"))?;
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Self {
            client,
            base,
            admin_token: admin_token.to_owned(),
        })
    }

    fn url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        self.base
            .join(path)
            .with_context(|| format!("cannot join {path} to the host"))
    }

    /// Schedules a sale; its id.
    pub async fn create_sale(&self, sale: &NewSale) -> anyhow::Result<String> {
        let request = self
            .client
            .post(self.url("/admin/v1/sales")?)
            .bearer_auth(&self.admin_token)
            .json(sale);
        let created: AdminSale = call(request, "POST /admin/v1/sales").await?;
        Ok(created.id)
    }

    /// Schedules a campaign; the campaign with the sale of every round × item.
    pub async fn create_campaign(&self, campaign: &NewCampaign) -> anyhow::Result<Campaign> {
        let request = self
            .client
            .post(self.url("/admin/v1/campaigns")?)
            .bearer_auth(&self.admin_token)
            .json(campaign);
        call(request, "POST /admin/v1/campaigns").await
    }

    /// A sale with its exact stats.
    pub async fn admin_sale(&self, id: &str) -> anyhow::Result<AdminSale> {
        self.find_sale(id)
            .await?
            .with_context(|| format!("the engine has no sale {id}"))
    }

    /// A sale with its exact stats; `None` when the engine has no such sale
    /// (it answers 404 for an unknown id and for one that is not a sale id).
    pub async fn find_sale(&self, id: &str) -> anyhow::Result<Option<AdminSale>> {
        let route = "GET /admin/v1/sales/{id}";
        let response = self
            .client
            .get(self.url(&format!("/admin/v1/sales/{id}"))?)
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .with_context(|| format!("Failed to reach the engine for {route}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        read(response, route).await.map(Some)
    }

    /// A sale as shoppers see it.
    pub async fn public_sale(&self, id: &str) -> anyhow::Result<PublicSale> {
        let request = self.client.get(self.url(&format!("/api/v1/sales/{id}"))?);
        call(request, "GET /api/v1/sales/{id}").await
    }

    /// The order `id` of the shopper whose token this is.
    pub async fn shopper_order(&self, token: &str, id: &str) -> anyhow::Result<Order> {
        let request = self
            .client
            .get(self.url(&format!("/api/v1/orders/{id}"))?)
            .bearer_auth(token);
        call(request, "GET /api/v1/orders/{id}").await
    }

    /// Every order of the shopper whose token this is, page after page.
    pub async fn shopper_orders(&self, token: &str) -> anyhow::Result<Vec<Order>> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url("/api/v1/orders")?;
            url.query_pairs_mut().append_pair("limit", ORDER_PAGE);
            if let Some(cursor) = &cursor {
                url.query_pairs_mut().append_pair("cursor", cursor);
            }
            let request = self.client.get(url).bearer_auth(token);
            let page: OrderList = call(request, "GET /api/v1/orders").await?;
            orders.extend(page.orders);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return Ok(orders);
            }
        }
    }
}

/// Sends `request`; the JSON body of a 2xx answer, the engine's error otherwise.
async fn call<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    route: &str,
) -> anyhow::Result<T> {
    let response = request
        .send()
        .await
        .with_context(|| format!("Failed to reach the engine for {route}"))?;
    read(response, route).await
}

/// The JSON body of a 2xx answer, the engine's error otherwise.
async fn read<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    route: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("Failed to read the answer of {route}"))?;
    if !status.is_success() {
        bail!("{route} answered {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("unexpected answer of {route}: {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_engines_sale_list_and_sale() {
        // Goal: the wire types match the engine's bodies (the list carries
        // `server_time` once, not per sale; the admin sale its stats).
        let list: PublicSaleList = serde_json::from_str(
            r#"{"sales":[{"id":"s_1","status":"live","starts_at":"2026-11-11T00:00:00Z"}],
                "server_time":"2026-11-11T00:00:01.250Z"}"#,
        )
        .expect("a sale list");
        assert_eq!(list.sales[0].id, "s_1");
        let sale: PublicSale = serde_json::from_str(
            r#"{"id":"s_1","status":"upcoming","starts_at":"2026-11-11T00:00:00Z",
                "server_time":"2026-11-10T23:59:58.500Z","remaining":5}"#,
        )
        .expect("a sale");
        assert_eq!((sale.starts_at - sale.server_time).num_milliseconds(), 1500);
        let admin: AdminSale = serde_json::from_str(
            r#"{"id":"s_1","sku":"LT","title":"t","price_cents":1,"currency":"CNY",
                "stock_total":5,"per_user_limit":1,"starts_at":"2026-11-11T00:00:00Z",
                "ends_at":"2026-11-11T01:00:00Z","payment_timeout_secs":60,
                "require_purchase_token":false,"status":"upcoming","remaining":5,
                "stats":{"stock_total":5,"remaining":5,"reserved":0,"paid":0,"cancelled":0,
                         "expired":0,"refund_required":0,"refunded":0,"restocked":0,
                         "queued":0,"buyers":0}}"#,
        )
        .expect("an admin sale");
        assert_eq!(
            (admin.status.as_str(), admin.stats.remaining),
            ("upcoming", 5)
        );
    }

    #[test]
    fn reads_the_engines_campaign_page() {
        // Goal: the wire types match the engine's campaign body (the page's
        // shape, also the answer of the admin routes), ignoring the fields
        // the suite does not read.
        let page: Campaign = serde_json::from_str(
            r#"{"id":"c_k3v9x2m7","title":"11.11","currency":"CNY",
                "per_user_limit_per_round":2,"per_user_limit_total":null,
                "payment_timeout_secs":60,"require_purchase_token":false,
                "remind_before_secs":null,"version":1,
                "server_time":"2026-11-10T23:59:58.500Z",
                "rounds":[{"number":0,"starts_at":"2026-11-11T00:00:00Z",
                           "ends_at":"2026-11-11T01:00:00Z","status":"upcoming",
                           "items":[{"sale_id":"s_k3v9x2m7-000","sku":"A","title":"a",
                                     "price_cents":990,"original_price_cents":1990,
                                     "stock_total":5,"remaining":5,"sold_share":0.0,
                                     "per_user_limit":1,"status":"upcoming"}]}]}"#,
        )
        .expect("a campaign page");
        assert_eq!(
            (page.per_user_limit_per_round, page.per_user_limit_total),
            (2, None)
        );
        let round = &page.rounds[0];
        assert_eq!(
            (round.starts_at - page.server_time).num_milliseconds(),
            1500
        );
        assert_eq!(round.items[0].sale_id, "s_k3v9x2m7-000");
    }
}
