//! Sales: every workflow on a sale, each written once. Merchants schedule,
//! change, end, cancel and audit sales; shoppers and merchants read them;
//! a shopper asks whether a sale is open for a purchase token. Handlers
//! parse a request, call one function here and map its outcome; only this
//! module tells the inventory actors that a merchant changed a sale.
//! [`live`] feeds merchants' consoles a sale's counts as they change.

pub(crate) mod cache;
pub mod live;

use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;

use self::cache::SaleViewCache;
use crate::domain::{
    system_now, InvalidField, NewSale, SaleChange, SaleId, SalePatch, SaleRecords, SaleRules,
    SaleView,
};
use crate::inventory::Inventory;
use crate::store::{cut_page, IndexedSale, Store, StoreError};

/// Why a merchant's request on a sale did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SaleError {
    /// A value breaks a rule; the message names the field.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Sales {
    store: Arc<dyn Store>,
    inventory: Arc<Inventory>,
    rules: SaleRules,
    /// The sale as shoppers poll it, read at most once per interval.
    polled: SaleViewCache,
}

impl Sales {
    /// `poll_fresh_for`: how long this node serves a sale's public view
    /// before reading it again.
    pub fn new(
        store: Arc<dyn Store>,
        inventory: Arc<Inventory>,
        rules: SaleRules,
        poll_fresh_for: Duration,
    ) -> Self {
        Self {
            store,
            inventory,
            rules,
            polled: SaleViewCache::new(poll_fresh_for),
        }
    }

    /// Validates and stores a new sale with its full stock; answers the
    /// sale as the store now shows it.
    pub async fn schedule(&self, new_sale: NewSale) -> Result<SaleView, SaleError> {
        let sale = new_sale.into_sale(SaleId::generate(), system_now(), &self.rules)?;
        self.store.create_sale(&sale).await?;
        self.polled.forget(&sale.id);
        Ok(self.view(&sale.id).await?)
    }

    /// A sale with its exact counts.
    pub async fn view(&self, id: &SaleId) -> Result<SaleView, StoreError> {
        self.store
            .view_sale(id)
            .await?
            .ok_or(StoreError::NotFound("sale"))
    }

    /// A sale as shoppers poll it: its status and clock exact, its
    /// remaining stock up to [`Self::poll_fresh_for`] old.
    pub async fn polled_view(&self, id: &SaleId) -> Result<SaleView, StoreError> {
        self.polled.view(id, || self.store.view_sale(id)).await
    }

    /// How old a polled view's remaining stock may be.
    pub fn poll_fresh_for(&self) -> Duration {
        self.polled.fresh_for()
    }

    /// Forgets the polled views of sales this node has not read from the
    /// store for a while (see `cache::UNREAD_KEPT`).
    pub fn prune_polled(&self) {
        self.polled.prune();
    }

    /// Up to `limit` sales, newest first, after `after`; with where the
    /// next page starts, when there is one. A page may hold fewer
    /// (an indexed sale still being created, or being deleted, is
    /// skipped).
    pub async fn page(
        &self,
        after: Option<&IndexedSale>,
        limit: usize,
    ) -> Result<(Vec<SaleView>, Option<IndexedSale>), StoreError> {
        let (index, next) = cut_page(
            self.store.sale_index(after, limit + 1).await?,
            limit,
            IndexedSale::clone,
        );
        let views = try_join_all(index.iter().map(|sale| self.store.view_sale(&sale.id))).await?;
        Ok((views.into_iter().flatten().collect(), next))
    }

    /// The sales shoppers see listed (upcoming, live and sold out), newest
    /// first: from the store's index of open sales, read at most once per
    /// [`Self::poll_fresh_for`] on this node.
    pub async fn list_for_shoppers(&self) -> Result<Vec<SaleView>, StoreError> {
        let read = || async {
            let ids = self.store.open_sale_ids().await?;
            let views = try_join_all(ids.iter().map(|id| self.store.view_sale(id))).await?;
            let mut views: Vec<SaleView> = views.into_iter().flatten().collect();
            views.sort_by(|a, b| {
                (b.sale.created_at, &b.sale.id).cmp(&(a.sale.created_at, &a.sale.id))
            });
            Ok(views)
        };
        let mut views = self.polled.open_sales(read).await?;
        views.retain(|view| view.status().is_listed());
        Ok(views)
    }

    /// The sale, if it is live now (by the store's clock); the reason
    /// otherwise, as an order would be refused.
    pub async fn open_for_purchase(&self, id: &SaleId) -> Result<SaleView, StoreError> {
        let view = self.view(id).await?;
        match view.status().closed_because() {
            None => Ok(view),
            Some(rejection) => Err(rejection.into()),
        }
    }

    /// Applies a merchant's patch to the sale as it is now: the store
    /// refuses it if the sale changed meanwhile or its phase does not allow
    /// it. Answers the change and the sale after it.
    pub async fn change(
        &self,
        id: &SaleId,
        patch: SalePatch,
    ) -> Result<(SaleChange, SaleView), SaleError> {
        refuse_campaign_sale(id)?;
        let current = self.view(id).await?;
        let change = current.sale.patched(patch, &self.rules)?;
        self.store.update_sale(id, &change, current.version).await?;
        Ok((change, self.changed(id).await?))
    }

    /// Calls off a sale that has not started.
    pub async fn cancel(&self, id: &SaleId) -> Result<SaleView, StoreError> {
        refuse_campaign_sale(id)?;
        self.store.cancel_sale(id).await?;
        self.changed(id).await
    }

    /// Every record of the sale, read in one atomic step, to audit.
    pub async fn records(&self, id: &SaleId) -> Result<SaleRecords, StoreError> {
        self.store
            .sale_records(id)
            .await?
            .ok_or(StoreError::NotFound("sale"))
    }

    /// Reads the changed sale and tells its actor; this node's shoppers
    /// see the change at their next poll. For the workflows that change a
    /// sale through the store themselves (a campaign's).
    pub(crate) async fn changed(&self, id: &SaleId) -> Result<SaleView, StoreError> {
        self.polled.forget(id);
        let view = self.view(id).await?;
        self.inventory.sale_changed(view.clone());
        Ok(view)
    }
}

/// A campaign's sale changes only with its campaign (`PATCH` or `DELETE
/// /admin/v1/campaigns/{id}`), so the campaign's record and its sales
/// never disagree.
fn refuse_campaign_sale(id: &SaleId) -> Result<(), StoreError> {
    match id.campaign() {
        None => Ok(()),
        Some(slot) => Err(StoreError::Conflict(format!(
            "the sale is round {} x item {} of campaign {}: change it with PATCH or DELETE \
             /admin/v1/campaigns/{}",
            slot.round, slot.item, slot.campaign, slot.campaign
        ))),
    }
}

/// A scheduled sale of `stock` units with `reserved` of them held, read at
/// store instant 1,000: the fixture of this module's unit tests.
#[cfg(test)]
pub(crate) fn test_view(id: &SaleId, stock: i64, reserved: i64) -> SaleView {
    use crate::domain::{Sale, SaleState, SaleStats};
    SaleView {
        sale: Sale {
            id: id.clone(),
            sku: "sku".into(),
            title: "title".into(),
            price_cents: 1,
            currency: "CNY".into(),
            stock_total: stock,
            per_user_limit: 1,
            starts_at: 0,
            ends_at: 1_000_000,
            payment_timeout_secs: 900,
            require_purchase_token: false,
            admission: Default::default(),
            state: SaleState::Scheduled,
            created_at: 0,
        },
        stats: SaleStats {
            stock_total: stock,
            remaining: stock - reserved,
            reserved,
            ..SaleStats::default()
        },
        now: 1_000,
        version: 1,
    }
}
