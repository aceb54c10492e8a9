//! Campaigns: every workflow on a campaign, each written once. Merchants
//! schedule, change, cancel and inspect campaigns (a campaign's sales
//! change only through these, never one by one, so the campaign's record
//! and its sales agree); shoppers read the seckill page. Each
//! round × item is an ordinary sale (see [`crate::domain::Campaign`]): the
//! ordering route, the inventory actors and the order service handle them
//! as any sale; the limits across items are the store's. [`reminders`]:
//! the `campaign.round_starting` hand-off before each round.
//!
//! The seckill page is what every waiting shopper polls before a round
//! opens, so each engine node serves it from memory: a campaign is read
//! from the store (its record, then its sales' views) at most once per
//! `fresh_for` however many shoppers ask (one reader at a time; the others
//! wait and share its answer), and aged on the way out so `server_time`
//! and the statuses stay exact. Only campaigns that exist are kept: an id
//! no campaign has, or a read that failed, leaves nothing in memory. The
//! list of live and upcoming campaigns is kept the same way, as one entry;
//! it reads every campaign's record but only the sales of those not over.

pub mod reminders;

use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;

use crate::domain::{
    system_now, Allowance, CampaignChange, CampaignId, CampaignPatch, InvalidField, Millis,
    NewCampaign, SaleRules, SaleState, SaleView, ShopperId,
};
use crate::sales::cache::{aged, Slot, Slots, UNREAD_KEPT};
use crate::sales::{SaleError, Sales};
use crate::store::{cut_page, IndexedCampaign, Store, StoreError, StoredCampaign};

/// How long after its last round's end, by this node's clock, a campaign's
/// sales are still read for the list of live and upcoming campaigns: far
/// more than any clock of a working node is off from the store's, so the
/// store's clock decides whether a campaign is over, and a season's
/// campaigns over for longer are not read again at every refresh.
const OVER_SLACK_MS: Millis = 3_600_000;

/// A campaign with the views of its sales (round by round, each round's
/// items in order), read at the store's instant `now`.
#[derive(Debug, Clone)]
pub struct CampaignView {
    pub stored: StoredCampaign,
    pub sales: Vec<SaleView>,
    pub now: Millis,
}

impl CampaignView {
    /// The views of round `position`'s sales, in item order.
    pub fn round_sales(&self, position: usize) -> &[SaleView] {
        let items = self.stored.campaign.items.len();
        self.sales
            .get(position * items..(position + 1) * items)
            .unwrap_or_default()
    }

    /// The round live now, else the next one, else the last: the round
    /// whose allowance a shopper sees.
    pub fn current_round(&self) -> Option<usize> {
        let rounds = &self.stored.campaign.rounds;
        (0..rounds.len())
            .find(|&position| !self.round_closed(position))
            .or_else(|| rounds.len().checked_sub(1))
    }

    /// Round `position` is over: its window has passed, or every item's
    /// sale in it was stopped (or cancelled).
    pub fn round_closed(&self, position: usize) -> bool {
        let over = self
            .stored
            .campaign
            .rounds
            .get(position)
            .is_none_or(|round| self.now >= round.ends_at);
        over || self
            .round_sales(position)
            .iter()
            .all(|view| view.sale.state != SaleState::Scheduled)
    }

    fn aged(&self, age: Duration) -> Self {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        Self {
            stored: self.stored.clone(),
            sales: self.sales.iter().map(|view| aged(view, age)).collect(),
            now: self.now.saturating_add(age_ms),
        }
    }
}

pub struct Campaigns {
    store: Arc<dyn Store>,
    rules: SaleRules,
    fresh_for: Duration,
    pages: Slots<CampaignId, Arc<CampaignView>>,
    listing: Slot<Arc<Vec<CampaignView>>>,
    /// Whether a merchant's webhook is configured: the only place round
    /// reminders can go.
    webhook: bool,
}

impl Campaigns {
    /// `fresh_for`: how long this node serves a campaign's page before
    /// reading it again.
    pub fn new(store: Arc<dyn Store>, rules: SaleRules, fresh_for: Duration) -> Self {
        Self {
            store,
            rules,
            fresh_for,
            pages: Slots::new("campaign"),
            listing: Slot::default(),
            webhook: false,
        }
    }

    /// The same, with a merchant's webhook configured: campaigns may ask
    /// for round reminders (`remind_before_secs`, see [`reminders`]).
    pub fn with_webhook(mut self, configured: bool) -> Self {
        self.webhook = configured;
        self
    }

    /// How old a served page may be.
    pub fn fresh_for(&self) -> Duration {
        self.fresh_for
    }

    /// Validates and stores a new campaign and its sales; answers it as
    /// the store now shows it.
    pub async fn schedule(&self, new: NewCampaign) -> Result<CampaignView, SaleError> {
        if new.remind_before_secs.is_some() && !self.webhook {
            return Err(no_webhook_to_remind().into());
        }
        let campaign = new.into_campaign(CampaignId::generate(), system_now(), &self.rules)?;
        self.store.create_campaign(&campaign).await?;
        *self.listing.last.write() = None;
        Ok(self.view(&campaign.id).await?)
    }

    /// Calls off a campaign whose first round has not started (store
    /// clock): every round × item's sale still scheduled is cancelled as
    /// `DELETE /admin/v1/sales/{id}` would, all in the one atomic step of
    /// a campaign's change (all of them, or none).
    pub async fn cancel(&self, id: &CampaignId, sales: &Sales) -> Result<CampaignView, StoreError> {
        let view = self.view(id).await?;
        let change = view.stored.campaign.called_off(&view.sales);
        self.apply(&change, view.stored.version, sales).await?;
        self.view(id).await
    }

    /// Applies a merchant's patch to the campaign as it is now (see
    /// [`Campaign::patched`](crate::domain::Campaign::patched)): the store
    /// refuses it if the campaign (or a sale it touches) changed meanwhile,
    /// or if the campaign's phase or a sale's own rules do not allow it.
    /// With `patch.version`, it applies only if the campaign is still at
    /// that version. Answers the change and the campaign after it.
    pub async fn change(
        &self,
        id: &CampaignId,
        patch: CampaignPatch,
        sales: &Sales,
    ) -> Result<(CampaignChange, CampaignView), SaleError> {
        let view = self.view(id).await?;
        if let Some(read) = patch.version.filter(|read| *read != view.stored.version) {
            return Err(StoreError::Conflict(format!(
                "the campaign is at version {}, not {read}: read it again and retry",
                view.stored.version
            ))
            .into());
        }
        if matches!(patch.remind_before_secs, Some(Some(_))) && !self.webhook {
            return Err(no_webhook_to_remind().into());
        }
        let change = view
            .stored
            .campaign
            .patched(patch, &view.sales, view.now, &self.rules)?;
        self.apply(&change, view.stored.version, sales).await?;
        Ok((change, self.view(id).await?))
    }

    /// Has the store apply a change computed from the campaign at
    /// `version`, then tells each touched sale's actor on this node.
    async fn apply(
        &self,
        change: &CampaignChange,
        version: i64,
        sales: &Sales,
    ) -> Result<(), StoreError> {
        self.store.update_campaign(change, version).await?;
        self.forget(&change.campaign.id);
        let told = change
            .steps
            .iter()
            .map(|step| sales.changed(step.sale_id()));
        try_join_all(told).await.map(drop)
    }

    /// Forgets what this node read of the campaign, and its listing.
    fn forget(&self, id: &CampaignId) {
        self.pages.forget(id);
        *self.listing.last.write() = None;
    }

    /// A campaign with the exact counts of each of its sales.
    pub async fn view(&self, id: &CampaignId) -> Result<CampaignView, StoreError> {
        read(self.store.as_ref(), id)
            .await?
            .ok_or(StoreError::NotFound("campaign"))
    }

    /// Up to `limit` campaigns, newest first, after `after`; with where
    /// the next page starts, when there is one. A page may hold fewer
    /// (an indexed campaign whose record is gone is skipped).
    pub async fn list_page(
        &self,
        after: Option<&IndexedCampaign>,
        limit: usize,
    ) -> Result<(Vec<CampaignView>, Option<IndexedCampaign>), StoreError> {
        let (index, next) = cut_page(
            self.store.campaign_index(after, limit + 1).await?,
            limit,
            IndexedCampaign::clone,
        );
        let views = try_join_all(
            index
                .iter()
                .map(|listed| read(self.store.as_ref(), &listed.id)),
        )
        .await?;
        Ok((views.into_iter().flatten().collect(), next))
    }

    /// Every campaign whose last round may still be to come, newest
    /// first, with exact counts. Each campaign's record is read, but only
    /// those whose last round ended less than [`OVER_SLACK_MS`] ago by
    /// this node's clock have their sales read: the campaigns of a season
    /// that ended, kept until retention, cost a read each, not one per
    /// round × item. The store's clock decides for the rest.
    async fn list_to_come(&self) -> Result<Vec<CampaignView>, StoreError> {
        let store = self.store.as_ref();
        let ids = self.store.campaign_ids().await?;
        let records = try_join_all(ids.iter().map(|id| store.campaign(id))).await?;
        let horizon = system_now().saturating_sub(OVER_SLACK_MS);
        let views = try_join_all(
            records
                .into_iter()
                .flatten()
                .filter(|stored| stored.campaign.ends_at() > horizon)
                .map(|stored| with_sales(store, stored)),
        )
        .await?;
        Ok(views.into_iter().flatten().collect())
    }

    /// Forgets the seckill pages this node has not read from the store for
    /// a while (see `UNREAD_KEPT`).
    pub fn prune_pages(&self) {
        self.pages.prune(UNREAD_KEPT);
    }

    /// The seckill page of a campaign, from this node's memory (see the
    /// module's doc).
    pub async fn page(&self, id: &CampaignId) -> Result<CampaignView, StoreError> {
        let read = || async { Ok(read(self.store.as_ref(), id).await?.map(Arc::new)) };
        let (view, age) = self.pages.get(id, self.fresh_for, read).await?;
        Ok(view.aged(age))
    }

    /// The campaigns with a round live or still to come, newest first,
    /// from this node's memory.
    pub async fn live_and_upcoming(&self) -> Result<Vec<CampaignView>, StoreError> {
        let (views, age) = self
            .listing
            .get(self.fresh_for, || async {
                self.list_to_come().await.map(Arc::new)
            })
            .await?;
        Ok(views
            .iter()
            .map(|view| view.aged(age))
            .filter(|view| {
                let to_come = view.now < view.stored.campaign.ends_at();
                let called_off = view
                    .sales
                    .iter()
                    .all(|sale| sale.sale.state == SaleState::Cancelled);
                to_come && !called_off
            })
            .collect())
    }

    /// What the shopper may still reserve in the campaign's current round
    /// and in the whole campaign (exact: read from the store).
    pub async fn allowance(
        &self,
        view: &CampaignView,
        shopper: &ShopperId,
    ) -> Result<Option<Allowance>, StoreError> {
        let campaign = &view.stored.campaign;
        let Some(round) = view.current_round().and_then(|p| campaign.rounds.get(p)) else {
            return Ok(None);
        };
        let (in_round, in_all) = self
            .store
            .campaign_holds(&campaign.id, round.number, shopper)
            .await?;
        Ok(Some(campaign.limits.allowance(in_round, in_all)))
    }
}

/// The refusal of `remind_before_secs` when no webhook is configured.
fn no_webhook_to_remind() -> InvalidField {
    InvalidField::new(
        "remind_before_secs",
        "reminders go to the merchant's webhook, and none is configured \
         (FLASHSALE_ORDER_WEBHOOK_URL)",
    )
}

/// Reads a campaign and its sales' views (each an atomic read of its
/// sale's counts).
async fn read(store: &dyn Store, id: &CampaignId) -> Result<Option<CampaignView>, StoreError> {
    match store.campaign(id).await? {
        Some(stored) => with_sales(store, stored).await,
        None => Ok(None),
    }
}

/// A campaign read with its sales' views.
async fn with_sales(
    store: &dyn Store,
    stored: StoredCampaign,
) -> Result<Option<CampaignView>, StoreError> {
    let sales = stored.campaign.sales();
    let views = try_join_all(sales.iter().map(|sale| store.view_sale(&sale.id))).await?;
    let Some(sales) = views.into_iter().collect::<Option<Vec<_>>>() else {
        // A sale of it is not there: the campaign is being created, or
        // retention is forgetting it (its sales go before its record).
        return Ok(None);
    };
    let now = sales
        .iter()
        .map(|view| view.now)
        .max()
        .unwrap_or_else(system_now);
    Ok(Some(CampaignView { stored, sales, now }))
}
