//! The embedded store's side of a campaign: its record, and the units each
//! shopper holds per round and in the whole campaign, the twin of the
//! campaign's hashes in Redis. The holds sit behind their own lock, which a
//! campaign's sale takes while it holds its own (never the other way
//! round), for the whole of a reservation's check and count: two sales of
//! one campaign deciding at once see each other's units.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::domain::{CampaignLimits, Rejection, ShopperId};
use crate::store::StoredCampaign;

/// A campaign in the embedded store.
pub(super) struct CampaignEntry {
    pub stored: Mutex<StoredCampaign>,
    pub holds: Arc<Mutex<CampaignHolds>>,
}

/// The limits across a campaign's items and what each shopper holds.
pub(super) struct CampaignHolds {
    pub limits: CampaignLimits,
    /// Round number -> shopper -> units held in the round.
    rounds: HashMap<u32, HashMap<ShopperId, i64>>,
    /// Shopper -> units held in the whole campaign.
    total: HashMap<ShopperId, i64>,
}

impl CampaignHolds {
    pub fn new(limits: CampaignLimits) -> Self {
        Self {
            limits,
            rounds: HashMap::new(),
            total: HashMap::new(),
        }
    }

    /// The shopper's units in the round and in the campaign.
    pub fn held(&self, round: u32, shopper: &ShopperId) -> (i64, i64) {
        let in_round = self
            .rounds
            .get(&round)
            .and_then(|holds| holds.get(shopper))
            .copied()
            .unwrap_or(0);
        (in_round, self.total.get(shopper).copied().unwrap_or(0))
    }

    /// Whether the shopper may take `quantity` more units in the round:
    /// the round's limit first, then the campaign's (as `reserve.lua`).
    pub fn check(&self, round: u32, shopper: &ShopperId, quantity: i64) -> Result<(), Rejection> {
        let (in_round, in_all) = self.held(round, shopper);
        if in_round + quantity > self.limits.per_round {
            return Err(Rejection::RoundLimitExceeded);
        }
        if self
            .limits
            .total
            .is_some_and(|total| in_all + quantity > total)
        {
            return Err(Rejection::CampaignLimitExceeded);
        }
        Ok(())
    }

    /// Counts `quantity` units (negative: gives them back) to the shopper.
    pub fn add(&mut self, round: u32, shopper: &ShopperId, quantity: i64) {
        add_to(self.rounds.entry(round).or_default(), shopper, quantity);
        add_to(&mut self.total, shopper, quantity);
    }
}

fn add_to(holds: &mut HashMap<ShopperId, i64>, shopper: &ShopperId, quantity: i64) {
    let held = holds.entry(shopper.clone()).or_default();
    *held += quantity;
    if *held <= 0 {
        holds.remove(shopper);
    }
}
