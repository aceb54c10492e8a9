//! The JSON shapes of sales and orders, as the contract shows them.

use serde::Serialize;

use crate::domain::{format_ms, SaleStats, SaleStatus, SaleView};

#[derive(Debug, Serialize)]
pub struct SaleBody {
    pub id: String,
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock_total: i64,
    pub per_user_limit: i64,
    pub starts_at: String,
    pub ends_at: String,
    pub payment_timeout_secs: i64,
    pub require_purchase_token: bool,
    pub status: SaleStatus,
    pub remaining: i64,
}

impl From<&SaleView> for SaleBody {
    fn from(view: &SaleView) -> Self {
        let sale = &view.sale;
        Self {
            id: sale.id.to_string(),
            sku: sale.sku.clone(),
            title: sale.title.clone(),
            price_cents: sale.price_cents,
            currency: sale.currency.clone(),
            stock_total: sale.stock_total,
            per_user_limit: sale.per_user_limit,
            starts_at: format_ms(sale.starts_at),
            ends_at: format_ms(sale.ends_at),
            payment_timeout_secs: sale.payment_timeout_secs,
            require_purchase_token: sale.require_purchase_token,
            status: view.status(),
            remaining: view.stats.remaining,
        }
    }
}

/// A sale for merchants: with exact stats.
#[derive(Debug, Serialize)]
pub struct AdminSaleBody {
    #[serde(flatten)]
    pub sale: SaleBody,
    pub stats: SaleStats,
}

impl From<&SaleView> for AdminSaleBody {
    fn from(view: &SaleView) -> Self {
        Self {
            sale: view.into(),
            stats: view.stats,
        }
    }
}

/// A sale for shoppers: with the server's clock for an exact countdown.
#[derive(Debug, Serialize)]
pub struct PublicSaleBody {
    #[serde(flatten)]
    pub sale: SaleBody,
    pub server_time: String,
}

impl From<&SaleView> for PublicSaleBody {
    fn from(view: &SaleView) -> Self {
        Self {
            sale: view.into(),
            server_time: format_ms(view.now),
        }
    }
}
