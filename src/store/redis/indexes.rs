//! The indexes that have no sale's slot, and so are written beside the
//! sale's scripts rather than inside them:
//! - the index of every campaign (`fs:campaigns`), written just before a
//!   campaign is created (an id naming no campaign goes once a minute old),
//!   read a page at a time;
//! - the index of every sale (`fs:sales`) and of the sales not yet settled
//!   (`{fs:sales}:open`, scored by the end of the payment window), both
//!   written by `index_sale.lua` before a sale is created or its window
//!   changed, and read a page at a time;
//! - each shopper's settled sales (`fs:shopper_sales:<shopper>`), written
//!   when the order service settles a sale, from the sale's list of
//!   shoppers, just before the sale leaves the unsettled ones: listing a
//!   shopper's orders reads those two rather than every sale, and a race
//!   writes no key per shopper outside the sale's slot.
//!
//! Retention takes a sale off all of them after deleting its keys: a crash
//! in between leaves ids that name no sale, which every reader skips.

use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use rand::distr::{Alphanumeric, SampleString};

use super::codec::{corrupt, flag, millis};
use super::connection::{timed, Connection};
use super::RedisStore;
use crate::domain::{system_now, Campaign, CampaignId, Millis, Sale, SaleId};
use crate::store::keys::{self, SaleKeys, CAMPAIGN_INDEX, OPEN_SALE_INDEX, SALE_INDEX};
use crate::store::{Forgetting, IndexedCampaign, IndexedSale, StoreError};

/// Shopper indexes written at once on a Cluster when a sale is settled or
/// forgotten.
const SHOPPER_WRITES_IN_FLIGHT: usize = 64;

/// Shopper indexes written in one pipeline on a standalone Redis.
const SHOPPER_WRITES_PER_PIPELINE: usize = 256;

/// Shoppers of a sale read at a time when it is settled (a hint to
/// `HSCAN`).
const SHOPPERS_PER_SCAN: usize = 1_000;

/// How long an indexed campaign id without a record is left in the index
/// of campaigns: its creation may be under way (the id is indexed just
/// before the record is written), far longer than a creation takes.
const CAMPAIGN_CREATION_GRACE: Duration = Duration::from_secs(60);

/// How long a node may settle a sale before another may start again (the
/// lease of `lua/settle_sale.lua`; a node that died meanwhile leaves it).
const SETTLE_LEASE: Duration = Duration::from_secs(60);

impl RedisStore {
    /// Lists the sale (`new`), or raises its window's end while it is
    /// unsettled, in both indexes of sales.
    pub(super) async fn index(&self, sale: &Sale, new: bool) -> Result<(), StoreError> {
        let mut index = self.scripts.index_sale.key(SALE_INDEX);
        index
            .key(OPEN_SALE_INDEX)
            .arg(sale.created_at)
            .arg(sale.id.as_str())
            .arg(sale.payment_window_closes_at())
            .arg(flag(new));
        self.run("index_sale", &index).await.map(drop)
    }

    /// Every sale not yet settled, its payment window over or not: the
    /// sales a shopper's order list reads beside the shopper's own index.
    pub(super) async fn unsettled_sale_ids(&self) -> Result<Vec<SaleId>, StoreError> {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(OPEN_SALE_INDEX).arg(0).arg(-1);
        let ids: Vec<String> =
            timed("unsettled_sales", cmd.query_async(&mut self.conn.clone())).await?;
        ids.iter()
            .map(|id| SaleId::parse(id).map_err(corrupt))
            .collect()
    }

    /// Lists an unsettled sale among each of its shoppers' sales (a page
    /// of the sale's shoppers at a time), then takes it off the unsettled
    /// sales. Only once it has ended by Redis's clock, which refuses its
    /// reservations (or it was cancelled), and by one node at a time
    /// (`lua/settle_sale.lua`'s lease): else `Conflict`, to try again
    /// later. A sale already settled is left alone, so a settled sale's
    /// shoppers are not written again at every start.
    pub(super) async fn settle(&self, sale: &SaleId) -> Result<(), StoreError> {
        let mut unsettled = redis::cmd("ZSCORE");
        unsettled.arg(OPEN_SALE_INDEX).arg(sale.as_str());
        let Some(closes): Option<String> =
            timed("settle_sale", unsettled.query_async(&mut self.conn.clone())).await?
        else {
            return Ok(());
        };
        let keys = SaleKeys::new(sale);
        let token = Alphanumeric.sample_string(&mut rand::rng(), 16);
        let mut check = self.scripts.settle_sale.key(keys.sale());
        check
            .key(keys.settling())
            .arg(millis(SETTLE_LEASE))
            .arg(closes)
            .arg(&token);
        let verdict: String =
            redis::from_redis_value(self.run("settle_sale", &check).await?).map_err(corrupt)?;
        match verdict.as_str() {
            "go" => {}
            "open" => {
                return Err(StoreError::Conflict(
                    "it has not ended by the store's clock".into(),
                ))
            }
            "busy" => {
                return Err(StoreError::Conflict(
                    "another engine node is settling it".into(),
                ))
            }
            other => return Err(corrupt(format!("unknown settle verdict {other}"))),
        }
        // Given back whether the work was done or failed midway (a retry
        // then redoes it at once), unless it expired meanwhile and another
        // node holds it now; a crash leaves it to expire.
        let listed = self.list_for_shoppers_then_settle(sale, &keys).await;
        let mut release = self.scripts.release_settle.key(keys.settling());
        release.arg(&token);
        let released = self.run("release_settle", &release).await.map(drop);
        listed.and(released)
    }

    /// The lease held: lists the sale among each of its shoppers' sales,
    /// then takes it off the unsettled sales.
    async fn list_for_shoppers_then_settle(
        &self,
        sale: &SaleId,
        keys: &SaleKeys,
    ) -> Result<(), StoreError> {
        let shoppers = keys.shoppers();
        let mut cursor = String::from("0");
        loop {
            let mut scan = redis::cmd("HSCAN");
            scan.arg(&shoppers)
                .arg(&cursor)
                .arg("COUNT")
                .arg(SHOPPERS_PER_SCAN);
            let (next, page): (String, Vec<(String, String)>) =
                timed("settle_sale", scan.query_async(&mut self.conn.clone())).await?;
            let page: Vec<&str> = page.iter().map(|(shopper, _)| shopper.as_str()).collect();
            self.index_for_shoppers(sale, &page).await?;
            if next == "0" {
                break;
            }
            cursor = next;
        }
        let mut settled = redis::cmd("ZREM");
        settled.arg(OPEN_SALE_INDEX).arg(sale.as_str());
        timed("settle_sale", settled.query_async(&mut self.conn.clone())).await
    }

    /// Takes the sale off both indexes of sales (one slot: one
    /// transaction).
    pub(super) async fn unindex(&self, sale: &SaleId) -> Result<(), StoreError> {
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("ZREM")
            .arg(SALE_INDEX)
            .arg(sale.as_str())
            .ignore()
            .cmd("ZREM")
            .arg(OPEN_SALE_INDEX)
            .arg(sale.as_str())
            .ignore();
        timed("unindex_sale", pipeline.query_async(&mut self.conn.clone())).await
    }

    /// A page of the index of every sale, newest first, after `after`.
    pub(super) async fn sale_index_page(
        &self,
        after: Option<&IndexedSale>,
        limit: usize,
    ) -> Result<Vec<IndexedSale>, StoreError> {
        let after = after.map(|sale| (sale.created_at, sale.id.as_str()));
        self.index_page(SALE_INDEX, after, limit)
            .await?
            .into_iter()
            .map(|(created_at, id)| {
                Ok(IndexedSale {
                    created_at,
                    id: SaleId::parse(&id).map_err(corrupt)?,
                })
            })
            .collect()
    }

    /// Writes the campaign's entry in the index of campaigns; `new_only`:
    /// only if it has none (`NX`). Whether it was added.
    pub(super) async fn index_campaign(
        &self,
        campaign: &Campaign,
        new_only: bool,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(CAMPAIGN_INDEX);
        if new_only {
            cmd.arg("NX");
        }
        cmd.arg(campaign.created_at).arg(campaign.id.as_str());
        let added: i64 = timed("index_campaign", cmd.query_async(&mut self.conn.clone())).await?;
        Ok(added == 1)
    }

    /// Takes the campaign off the index of campaigns.
    pub(super) async fn unindex_campaign(&self, id: &CampaignId) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(CAMPAIGN_INDEX).arg(id.as_str());
        timed("unindex_campaign", cmd.query_async(&mut self.conn.clone())).await
    }

    /// Takes an indexed id that names no campaign off the index, once too
    /// old to be a creation under way (`lua/unindex_campaign.lua`): `Gone`,
    /// else `Kept`.
    pub(super) async fn unindex_unmade_campaign(
        &self,
        id: &CampaignId,
    ) -> Result<Forgetting, StoreError> {
        let mut unindex = self.scripts.unindex_campaign.key(CAMPAIGN_INDEX);
        unindex
            .arg(id.as_str())
            .arg(millis(CAMPAIGN_CREATION_GRACE));
        let outcome: String =
            redis::from_redis_value(self.run("unindex_campaign", &unindex).await?)
                .map_err(corrupt)?;
        match outcome.as_str() {
            "gone" => Ok(Forgetting::Gone),
            "kept" => Ok(Forgetting::Kept),
            other => Err(corrupt(format!("unknown unindex outcome {other}"))),
        }
    }

    /// A page of the index of every campaign, newest first, after `after`.
    pub(super) async fn campaign_index_page(
        &self,
        after: Option<&IndexedCampaign>,
        limit: usize,
    ) -> Result<Vec<IndexedCampaign>, StoreError> {
        let after = after.map(|campaign| (campaign.created_at, campaign.id.as_str()));
        self.index_page(CAMPAIGN_INDEX, after, limit)
            .await?
            .into_iter()
            .map(|(created_at, id)| {
                Ok(IndexedCampaign {
                    created_at,
                    id: CampaignId::parse(&id).map_err(corrupt)?,
                })
            })
            .collect()
    }

    /// A page of an index of ids scored by creation time, newest first
    /// (then the greater id), after `after` (a time and an id): the ids
    /// created at `after`'s instant with a smaller id, then the older ones.
    async fn index_page(
        &self,
        index: &str,
        after: Option<(Millis, &str)>,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        let mut page = Vec::with_capacity(limit);
        let older_than = match after {
            None => "+inf".to_owned(),
            Some((created_at, after_id)) => {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(index)
                    .arg(created_at)
                    .arg(created_at)
                    .arg("BYSCORE")
                    .arg("REV");
                let tied: Vec<String> = self.query("index_page", &cmd).await?;
                page.extend(
                    tied.into_iter()
                        .filter(|id| id.as_str() < after_id)
                        .map(|id| (created_at, id)),
                );
                format!("({created_at}")
            }
        };
        page.truncate(limit);
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(index)
            .arg(older_than)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit - page.len())
            .arg("WITHSCORES");
        // Scores are doubles to Redis; creation times are whole ms well
        // inside a double's exact integers.
        let older: Vec<(String, f64)> = if page.len() < limit {
            self.query("index_page", &cmd).await?
        } else {
            Vec::new()
        };
        page.extend(
            older
                .into_iter()
                .map(|(id, created_at)| (created_at as Millis, id)),
        );
        Ok(page)
    }

    /// Lists the sale among each shopper's sales.
    pub(super) async fn index_for_shoppers(
        &self,
        sale: &SaleId,
        shoppers: &[impl AsRef<str>],
    ) -> Result<(), StoreError> {
        self.each_shopper(shoppers, |key| {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(key).arg("NX").arg(system_now()).arg(sale.as_str());
            cmd
        })
        .await
    }

    /// Takes the sale off each shopper's sales.
    pub(super) async fn unindex_for_shoppers(
        &self,
        sale: &SaleId,
        shoppers: &[impl AsRef<str>],
    ) -> Result<(), StoreError> {
        self.each_shopper(shoppers, |key| {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(key).arg(sale.as_str());
            cmd
        })
        .await
    }

    /// One command per shopper's index (each its own slot). On a
    /// standalone Redis they go as pipelines of up to
    /// `SHOPPER_WRITES_PER_PIPELINE` (one round trip each: a sale's
    /// shoppers are mostly new ones); on a Cluster one by one, a bounded
    /// number in flight, since the keys are on many nodes.
    async fn each_shopper(
        &self,
        shoppers: &[impl AsRef<str>],
        command: impl Fn(String) -> redis::Cmd,
    ) -> Result<(), StoreError> {
        if let Connection::Standalone(conn) = &self.conn {
            for chunk in shoppers.chunks(SHOPPER_WRITES_PER_PIPELINE) {
                let mut pipeline = redis::pipe();
                for shopper in chunk {
                    pipeline
                        .add_command(command(keys::shopper_sales_key(shopper.as_ref())))
                        .ignore();
                }
                timed(
                    "shopper_sales",
                    pipeline.query_async::<()>(&mut conn.clone()),
                )
                .await?;
            }
            return Ok(());
        }
        // Owned futures, each with its own handle on the connection.
        let writes: Vec<_> = shoppers
            .iter()
            .map(|shopper| {
                let cmd = command(keys::shopper_sales_key(shopper.as_ref()));
                let mut conn = self.conn.clone();
                async move { timed("shopper_sales", cmd.query_async::<()>(&mut conn)).await }
            })
            .collect();
        stream::iter(writes)
            .buffer_unordered(SHOPPER_WRITES_IN_FLIGHT)
            .try_collect()
            .await
    }
}
