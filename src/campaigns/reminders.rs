//! Round-start reminders: `remind_before_secs` before each round of a
//! campaign starts, the order service hands the merchant's webhook a
//! `campaign.round_starting` event (the campaign, the round, its items),
//! so the merchant can send WeChat subscribe messages to the shoppers who
//! asked to be reminded. This module owns what a reminder says and where
//! it is scheduled; sending it is the outbox's (see
//! [`crate::orders::service`]).
//!
//! **Where it lives.** A reminder is an entry of the outbox of its round's
//! first item's sale ([`Campaign::reminder`]), beside that sale's order
//! hand-offs: it is leased, retried with backoff, signed, dead-lettered and
//! re-driven exactly as they are (`/admin/v1/sales/{id}/dead-letters`), by
//! the order service that already watches every upcoming sale, so an
//! engine restart or a second engine node neither loses nor doubles it. A
//! campaign-level outbox would need a second set of outbox scripts, a
//! second listing for the order service to find campaigns with work, and
//! its own dead-letter routes, for one entry per round. The entry is
//! queued when the campaign is created (before it is listed) and is due at
//! `starts_at - remind_before_secs` by the store's clock; a round whose
//! reminder time has already passed at creation is reminded at once, and
//! a round that has started gets none. The sale keeps no order before it
//! starts, so cancelling it (a `DELETE` of the campaign) drops the
//! reminder with it (a change removing a round or the first item cancels
//! its sales the same way), and a reminder whose sale was cancelled or
//! stopped (a round stopped before it starts), whose round left the
//! campaign or whose campaign's reminders were taken off
//! (`remind_before_secs: null`) is dropped unsent.
//!
//! **Once per round**: the entry's name in the outbox is the event alone
//! (the sale names the round), so the round has one reminder however
//! often it is scheduled. A change reschedules each round's reminder it
//! moves ([`crate::domain::CampaignChange::reminders`]) in the store step
//! that applies it, so no crash leaves a moved round's reminder at its
//! old time.

use serde::Serialize;
use serde_json::Value;

use crate::domain::{Campaign, SaleId, SaleState, Timestamp};
use crate::store::{Store, StoreError, ROUND_STARTING};

/// What one round's reminder tells the merchant.
#[derive(Debug, Clone, Serialize)]
pub struct RoundStarting {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub campaign: CampaignRef,
    pub round: RoundRef,
    pub items: Vec<ItemRef>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CampaignRef {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundRef {
    pub number: u32,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
}

/// An item of the round, with the sale to order it through.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRef {
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub original_price_cents: i64,
    pub currency: String,
    pub sale_id: String,
}

impl RoundStarting {
    /// The reminder of round `round` of `campaign`; `None` when the
    /// campaign has no such round.
    pub fn of(campaign: &Campaign, round: u32) -> Option<Self> {
        let round = campaign.round(round)?;
        let items = campaign
            .items
            .iter()
            .map(|item| ItemRef {
                sku: item.sku.clone(),
                title: item.title.clone(),
                price_cents: item.price_cents,
                original_price_cents: item.original_price_cents,
                currency: campaign.currency.clone(),
                sale_id: SaleId::of_campaign(&campaign.id, round.number, item.number).to_string(),
            })
            .collect();
        Some(Self {
            kind: ROUND_STARTING,
            campaign: CampaignRef {
                id: campaign.id.to_string(),
                title: campaign.title.clone(),
            },
            round: RoundRef {
                number: round.number,
                starts_at: Timestamp(round.starts_at),
                ends_at: Timestamp(round.ends_at),
            },
            items,
        })
    }

    /// `<campaign id>:<round number>:<round start, Unix ms>:campaign.round_starting`:
    /// one reminder per round and start, which may arrive more than once; a
    /// round moved after its reminder is reminded again under a new key.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}:{}:{}:{ROUND_STARTING}",
            self.campaign.id, self.round.number, self.round.starts_at.0
        )
    }

    pub fn body(&self) -> Value {
        // A struct of strings and numbers always serializes.
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The reminder kept in `sale`'s outbox as the store shows it now; `None`
/// when there is nothing to send: the sale is no campaign's, or is gone,
/// cancelled or stopped (a round stopped before its start keeps its
/// reminder in the outbox), its round left the campaign, or the campaign's
/// reminders were taken off.
pub async fn read(store: &dyn Store, sale: &SaleId) -> Result<Option<RoundStarting>, StoreError> {
    let Some(slot) = sale.campaign() else {
        return Ok(None);
    };
    let called_off = store
        .view_sale(sale)
        .await?
        .is_none_or(|view| view.sale.state != SaleState::Scheduled);
    if called_off {
        return Ok(None);
    }
    Ok(store
        .campaign(&slot.campaign)
        .await?
        .filter(|stored| stored.campaign.remind_before_secs.is_some())
        .and_then(|stored| RoundStarting::of(&stored.campaign, slot.round)))
}
