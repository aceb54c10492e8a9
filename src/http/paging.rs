//! Paging of listings: `?limit=N&cursor=C`, answered with `next_cursor`
//! (`null` after the last page). A cursor is opaque to clients: it names
//! where the last page ended (`<ms>.<id>`: the listed item's time and id),
//! so a page never repeats or skips an item because others were added
//! before it.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use crate::domain::{CampaignId, Millis, Order, OrderId, SaleId};
use crate::store::{cut_page, IndexedCampaign, IndexedSale};

/// Items per page unless asked otherwise.
pub const PAGE_LIMIT_DEFAULT: usize = 50;
/// The most items one page holds.
pub const PAGE_LIMIT_MAX: usize = 500;

/// The longest cursor any listing gives.
const CURSOR_LEN_MAX: usize = 96;

/// `?limit=N&cursor=C`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items on this page: 1 to 500, default 50.
    limit: Option<usize>,
    /// Where to go on: the `next_cursor` of the page before.
    cursor: Option<String>,
}

/// A page asked for: how many items, from where.
pub struct Paging {
    pub limit: usize,
    cursor: Option<String>,
}

impl Paging {
    /// The cursor as the client sent it, for listings whose cursor is the
    /// store's own (the export of a sale's orders).
    pub fn store_cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// A `<ms>.<id>` cursor's parts.
    fn timed_cursor(&self) -> Result<Option<(Millis, &str)>, ApiError> {
        self.cursor
            .as_deref()
            .map(|cursor| {
                let (at, id) = cursor.split_once('.').ok_or_else(bad_cursor)?;
                Ok((at.parse().map_err(|_| bad_cursor())?, id))
            })
            .transpose()
    }

    /// The sale the page goes on after.
    pub fn after_sale(&self) -> Result<Option<IndexedSale>, ApiError> {
        self.timed_cursor()?
            .map(|(created_at, id)| {
                Ok(IndexedSale {
                    created_at,
                    id: SaleId::parse(id).map_err(|_| bad_cursor())?,
                })
            })
            .transpose()
    }

    /// The campaign the page goes on after.
    pub fn after_campaign(&self) -> Result<Option<IndexedCampaign>, ApiError> {
        self.timed_cursor()?
            .map(|(created_at, id)| {
                Ok(IndexedCampaign {
                    created_at,
                    id: CampaignId::parse(id).map_err(|_| bad_cursor())?,
                })
            })
            .transpose()
    }

    /// The order the page goes on after (newest first: created at, then
    /// id).
    pub fn after_order(&self) -> Result<Option<(Millis, OrderId)>, ApiError> {
        self.timed_cursor()?
            .map(|(created_at, id)| Ok((created_at, OrderId::parse(id).map_err(|_| bad_cursor())?)))
            .transpose()
    }
}

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    NewestFirst,
    OldestFirst,
}

/// A page of `items`, already in `listing` order by `key` (a time and an
/// id), after the paging's cursor; with the cursor of the next page. For
/// listings read whole from the store (they are bounded by what went
/// wrong: dead letters, payment exceptions), so the answer stays bounded.
pub fn page_of<T>(
    items: Vec<T>,
    paging: &Paging,
    listing: Listing,
    key: impl Fn(&T) -> (Millis, String),
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let after = paging.timed_cursor()?.map(|(at, id)| (at, id.to_owned()));
    let read: Vec<T> = items
        .into_iter()
        .filter(|item| {
            after.as_ref().is_none_or(|after| match listing {
                Listing::NewestFirst => key(item) < *after,
                Listing::OldestFirst => key(item) > *after,
            })
        })
        .take(paging.limit + 1)
        .collect();
    Ok(cut_page(read, paging.limit, |last| {
        let (at, id) = key(last);
        format!("{at}.{id}")
    }))
}

/// The cursor of the page after the one ending at `sale`.
pub fn sale_cursor(sale: &IndexedSale) -> String {
    format!("{}.{}", sale.created_at, sale.id)
}

/// The cursor of the page after the one ending at `campaign`.
pub fn campaign_cursor(campaign: &IndexedCampaign) -> String {
    format!("{}.{}", campaign.created_at, campaign.id)
}

/// The cursor of the page after the one ending at `order`.
pub fn order_cursor(order: &Order) -> String {
    format!("{}.{}", order.created_at, order.id)
}

pub(super) fn bad_cursor() -> ApiError {
    ApiError::Invalid("cursor: is not a cursor this listing gave".into())
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::Invalid(rejection.body_text()))?;
        let limit = query.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
        if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
            return Err(ApiError::Invalid(format!(
                "limit: must be 1 to {PAGE_LIMIT_MAX}"
            )));
        }
        // Whatever a listing's cursor may hold: ids (a campaign's sales and
        // orders hold a `-`), event names, a payment provider's
        // transaction ids (any printable ASCII but `=`). Each listing then
        // reads its own cursor's parts.
        let cursor = query.cursor;
        let well_formed = |cursor: &String| {
            cursor.len() <= CURSOR_LEN_MAX && cursor.bytes().all(|b| b.is_ascii_graphic())
        };
        if !cursor.as_ref().is_none_or(well_formed) {
            return Err(bad_cursor());
        }
        Ok(Self { limit, cursor })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;
    use crate::http::error::ErrorCode;

    async fn paging(query: &str) -> Result<Paging, ApiError> {
        let request = Request::get(format!("/x?{query}"))
            .body(())
            .expect("request");
        let (mut parts, ()) = request.into_parts();
        Paging::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn a_listing_read_whole_pages_both_ways_each_item_once() {
        let items: Vec<(Millis, String)> = vec![
            (1, "a".into()),
            (2, "a".into()),
            (2, "b".into()),
            (3, "x.y".into()),
        ];
        for (listing, mut expected) in [
            (Listing::OldestFirst, items.clone()),
            (Listing::NewestFirst, items.iter().rev().cloned().collect()),
        ] {
            let mut sorted = items.clone();
            if listing == Listing::NewestFirst {
                sorted.reverse();
            }
            let mut seen = Vec::new();
            let mut query = "limit=2".to_owned();
            loop {
                let paging = paging(&query).await.expect("paging");
                let (page, next) =
                    page_of(sorted.clone(), &paging, listing, Clone::clone).expect("page");
                seen.extend(page);
                match next {
                    Some(next) => query = format!("limit=2&cursor={next}"),
                    None => break,
                }
            }
            assert_eq!(seen, std::mem::take(&mut expected), "{listing:?}");
        }
    }

    #[tokio::test]
    async fn limits_are_bounded_and_cursors_checked() {
        assert_eq!(paging("").await.expect("default").limit, PAGE_LIMIT_DEFAULT);
        assert_eq!(paging("limit=7").await.expect("seven").limit, 7);
        for bad in ["limit=0", "limit=501", "limit=x", "cursor=a%20b", "page=2"] {
            let err = paging(bad)
                .await
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.code(), ErrorCode::InvalidRequest, "{bad}");
        }
        for bad in ["cursor=nodot", "cursor=x.s_1"] {
            let paging = paging(bad).await.expect("well-formed");
            let err = paging
                .after_sale()
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.code(), ErrorCode::InvalidRequest, "{bad}");
        }
        let sale = IndexedSale {
            created_at: 42,
            id: SaleId::generate(),
        };
        let cursor = sale_cursor(&sale);
        let back = paging(&format!("cursor={cursor}")).await.expect("cursor");
        assert_eq!(back.after_sale().expect("a sale cursor"), Some(sale));
        assert!(
            back.after_order().is_err(),
            "a sale's cursor names no order"
        );
    }

    fn encoded(cursor: &str) -> String {
        percent_encoding::utf8_percent_encode(cursor, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
    }

    /// Every cursor a listing gives is taken back: a campaign's sale and
    /// its orders (ids with a `-`), a dead letter's key, a transaction id
    /// of any printable characters but `=`.
    #[tokio::test]
    async fn every_cursor_a_listing_gives_is_taken_back() {
        let campaign = CampaignId::generate();
        let sale = IndexedSale {
            created_at: 42,
            id: SaleId::of_campaign(&campaign, 1, 2),
        };
        assert!(sale.id.as_str().contains('-'), "{}", sale.id);
        let cursor = sale_cursor(&sale);
        let back = paging(&format!("cursor={cursor}")).await.expect(&cursor);
        assert_eq!(
            back.after_sale().expect("a sale cursor"),
            Some(sale.clone())
        );

        let order = OrderId::generate(&sale.id);
        let cursor = format!("43.{order}");
        let back = paging(&format!("cursor={cursor}")).await.expect(&cursor);
        assert_eq!(
            back.after_order().expect("an order cursor"),
            Some((43, order))
        );

        let items: Vec<(Millis, String)> = vec![
            (1, "4200001234-x/y+z".into()),
            (2, "o_abc-0a1_def.order.refunded".into()),
            (3, "last".into()),
        ];
        let mut query = "limit=1".to_owned();
        let mut seen = Vec::new();
        loop {
            let paging = paging(&query).await.expect(&query);
            let (page, next) =
                page_of(items.clone(), &paging, Listing::OldestFirst, Clone::clone).expect("page");
            seen.extend(page);
            match next {
                // As a client sends it: percent-encoded.
                Some(next) => query = format!("limit=1&cursor={}", encoded(&next)),
                None => break,
            }
        }
        assert_eq!(seen, items);
    }
}
