//! A merchant's change to a scheduled campaign (the body of `PATCH
//! /admin/v1/campaigns/{id}`) and what it becomes: the campaign's new
//! record plus one step per round × item's sale that changes (create,
//! cancel, or a [`SaleChange`]), which the store applies in one atomic
//! step with the record. Field rules are checked here, as for a new
//! campaign; whether the change is allowed now is decided by the store
//! against its own clock: [`CampaignChange::before_start`] names what
//! needs the campaign's first round not yet started, and each sale's step
//! keeps the sale's own rules (a sale that has started cannot move its
//! start or change its terms, its stock never goes below the units off
//! sale, an ended one changes no more).

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Deserializer};

use super::campaign::{check_size, new_item};
use super::{
    parse_rfc3339_ms, Campaign, InvalidField, Millis, NewItem, PatchStatus, Round, Sale,
    SaleChange, SaleId, SaleRules, SaleState, SaleView,
};

/// The body of `PATCH /admin/v1/campaigns/{id}`: every field optional.
/// Rounds and items are named by their `number` (as the campaign shows
/// them); those not named stay as they are. Unknown fields are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignPatch {
    /// The campaign's `version` the merchant read: the change applies only
    /// if the campaign is still at it.
    pub version: Option<i64>,
    pub title: Option<String>,
    pub currency: Option<String>,
    pub per_user_limit_per_round: Option<i64>,
    /// `null` takes the limit off.
    #[serde(default, deserialize_with = "present")]
    pub per_user_limit_total: Option<Option<i64>>,
    pub payment_timeout_secs: Option<i64>,
    pub require_purchase_token: Option<bool>,
    /// `null` takes the reminders off.
    #[serde(default, deserialize_with = "present")]
    pub remind_before_secs: Option<Option<i64>>,
    /// Changes to existing rounds.
    #[serde(default)]
    pub rounds: Vec<RoundPatch>,
    /// Changes to existing items.
    #[serde(default)]
    pub items: Vec<ItemPatch>,
    #[serde(default)]
    pub add_rounds: Vec<AddedRound>,
    #[serde(default)]
    pub add_items: Vec<NewItem>,
    /// Numbers of the rounds to remove (their sales are cancelled).
    #[serde(default)]
    pub remove_rounds: Vec<u32>,
    /// Numbers of the items to remove (their sales are cancelled).
    #[serde(default)]
    pub remove_items: Vec<u32>,
}

/// A field sent as `null` is `Some(None)`; one left out is `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A change to one round: move it, or stop it now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundPatch {
    pub number: u32,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    /// `ended`: every item's sale in the round stops now.
    pub status: Option<PatchStatus>,
}

/// A change to one item, in every round (its stock: in the rounds still
/// open).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    pub number: u32,
    pub sku: Option<String>,
    pub title: Option<String>,
    pub price_cents: Option<i64>,
    pub original_price_cents: Option<i64>,
    /// The item's stock in every round not yet ended (nor stopped).
    pub stock_per_round: Option<i64>,
    /// The item's stock in each round, one entry per round of the campaign
    /// after the change, in order.
    pub stock_by_round: Option<Vec<i64>>,
    pub per_user_limit: Option<i64>,
}

/// A round to add.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddedRound {
    pub starts_at: String,
    pub ends_at: String,
    /// Each item's stock in the round, one entry per item the campaign
    /// keeps (in order; an item added by the same change offers its own
    /// `stock_per_round` or `stock_by_round`); without it each item offers
    /// what it offers in the campaign's last round as read.
    pub stock_by_item: Option<Vec<i64>>,
}

/// What the store does to one sale of the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleStep {
    /// A sale of an added round or item.
    Create(Sale),
    /// A sale of a removed round or item: called off as `DELETE
    /// /admin/v1/sales/{id}` would.
    Cancel(SaleId),
    /// A sale that changes, computed from it at `version`.
    Change { change: SaleChange, version: i64 },
}

impl SaleStep {
    pub fn sale_id(&self) -> &SaleId {
        match self {
            Self::Create(sale) => &sale.id,
            Self::Cancel(id) => id,
            Self::Change { change, .. } => &change.sale.id,
        }
    }
}

/// A validated change to a campaign, for the store to apply in one atomic
/// step: all of it, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignChange {
    /// The record as it will be.
    pub campaign: Campaign,
    pub steps: Vec<SaleStep>,
    /// What in the change is only allowed before the campaign's first round
    /// starts (store clock), for the refusal's message; `None`: allowed
    /// after too.
    pub before_start: Option<String>,
    /// When the campaign's first round starts, as read.
    pub starts_at: Millis,
    /// The round reminders the change moves, as they will be (the sale of
    /// the round's first item and when it is due): each round's whose due
    /// time or first item differs from before, a new round's too. The
    /// store (re)schedules them in the change's own step. A round left
    /// without one (`remind_before_secs` taken off) is not among them: a
    /// reminder queued before stays in the outbox and is dropped unsent
    /// when it comes due.
    pub reminders: Vec<(SaleId, Millis)>,
}

/// The reminders `after` moves from `before` (see
/// [`CampaignChange::reminders`]).
fn moved_reminders(before: &Campaign, after: &Campaign) -> Vec<(SaleId, Millis)> {
    after
        .rounds
        .iter()
        .filter_map(|round| {
            let now = after.reminder(round)?;
            let was = before.round(round.number).and_then(|r| before.reminder(r));
            (was.as_ref() != Some(&now)).then_some(now)
        })
        .collect()
}

/// What the merchant asked of the rounds and items, as `patched` builds it.
struct Draft {
    campaign: Campaign,
    /// Round numbers to stop now.
    ending: BTreeSet<u32>,
    /// What needs the campaign not yet started.
    before_start: Vec<&'static str>,
}

impl Draft {
    fn restrict(&mut self, what: &'static str, changed: bool) {
        if changed && !self.before_start.contains(&what) {
            self.before_start.push(what);
        }
    }

    fn round_position(&self, field: &'static str, number: u32) -> Result<usize, InvalidField> {
        self.campaign
            .rounds
            .iter()
            .position(|round| round.number == number)
            .ok_or_else(|| InvalidField::new(field, format!("the campaign has no round {number}")))
    }

    fn item_position(&self, field: &'static str, number: u32) -> Result<usize, InvalidField> {
        self.campaign
            .items
            .iter()
            .position(|item| item.number == number)
            .ok_or_else(|| InvalidField::new(field, format!("the campaign has no item {number}")))
    }
}

impl Campaign {
    /// Applies a merchant's patch to the campaign as read at `now`, with
    /// the views of its sales, and says what the store must do. Field
    /// rules are those of a new campaign.
    pub fn patched(
        &self,
        patch: CampaignPatch,
        sales: &[SaleView],
        now: Millis,
        rules: &SaleRules,
    ) -> Result<CampaignChange, InvalidField> {
        let views: HashMap<&SaleId, &SaleView> =
            sales.iter().map(|view| (&view.sale.id, view)).collect();
        let mut draft = Draft {
            campaign: self.clone(),
            ending: BTreeSet::new(),
            before_start: Vec::new(),
        };
        draft.settings(&patch);
        if let Some(remind) = patch.remind_before_secs {
            draft.campaign.remind_before_secs = remind;
        }
        draft.remove(&patch)?;
        draft.change_rounds(patch.rounds)?;
        let last_stock: Vec<(u32, i64)> = self
            .items
            .iter()
            .map(|item| {
                (
                    item.number,
                    item.stock_by_round.last().copied().unwrap_or(0),
                )
            })
            .collect();
        draft.add_rounds(patch.add_rounds, &last_stock, now)?;
        // In the order the campaign has after the change, which
        // `stock_by_round` (of an item added or changed) follows.
        draft.campaign.order_rounds();
        draft.add_items(patch.add_items)?;
        // Before any sale id is made of the new numbers.
        draft.campaign.check_numbering()?;
        draft.change_items(patch.items, &views, now)?;
        check_size(
            (draft.campaign.rounds.len(), draft.campaign.items.len()),
            (self.rounds.len(), self.items.len()),
        )?;
        draft.campaign.validate(rules)?;
        let steps = self.steps(&draft, &views);
        Ok(CampaignChange {
            before_start: (!draft.before_start.is_empty()).then(|| draft.before_start.join(", ")),
            reminders: moved_reminders(self, &draft.campaign),
            campaign: draft.campaign,
            steps,
            starts_at: self.first_starts_at(),
        })
    }

    /// Calling the campaign off: every sale of it still scheduled is
    /// cancelled, only before the first round starts.
    pub fn called_off(&self, sales: &[SaleView]) -> CampaignChange {
        CampaignChange {
            campaign: self.clone(),
            steps: sales
                .iter()
                .filter(|view| view.sale.state == SaleState::Scheduled)
                .map(|view| SaleStep::Cancel(view.sale.id.clone()))
                .collect(),
            before_start: Some("cancelling the campaign".to_owned()),
            starts_at: self.first_starts_at(),
            reminders: Vec::new(),
        }
    }

    /// When the first round starts.
    fn first_starts_at(&self) -> Millis {
        self.rounds.first().map_or(0, |round| round.starts_at)
    }

    /// Sorts the rounds by their start, each item's stock with them.
    fn order_rounds(&mut self) {
        let mut order: Vec<usize> = (0..self.rounds.len()).collect();
        order.sort_by_key(|&position| self.rounds[position].starts_at);
        self.rounds = order.iter().map(|&p| self.rounds[p].clone()).collect();
        for item in &mut self.items {
            item.stock_by_round = order
                .iter()
                .map(|&p| item.stock_by_round.get(p).copied().unwrap_or(0))
                .collect();
        }
    }

    /// Every round × item's sale by id, from the campaign's record.
    fn sales_by_id(&self) -> HashMap<SaleId, Sale> {
        self.sales()
            .into_iter()
            .map(|sale| (sale.id.clone(), sale))
            .collect()
    }

    /// The store's steps from this campaign to `draft`'s: a sale whose
    /// terms in the record do not change gets no step (unless its round
    /// stops now).
    fn steps(&self, draft: &Draft, views: &HashMap<&SaleId, &SaleView>) -> Vec<SaleStep> {
        let before = self.sales_by_id();
        let after = draft.campaign.sales();
        let mut steps = Vec::new();
        for sale in &after {
            let ending = sale
                .id
                .campaign()
                .is_some_and(|slot| draft.ending.contains(&slot.round));
            match (before.get(&sale.id), views.get(&sale.id)) {
                (Some(planned), Some(view)) if planned != sale || ending => {
                    let mut target = sale.clone();
                    target.state = view.sale.state;
                    target.admission = view.sale.admission.clone();
                    if planned.ends_at == sale.ends_at {
                        // A round stopped earlier keeps its sales' end.
                        target.ends_at = view.sale.ends_at;
                    }
                    steps.push(SaleStep::Change {
                        change: SaleChange::between(&view.sale, target, ending),
                        version: view.version,
                    });
                }
                (None, _) | (Some(_), None) => steps.push(SaleStep::Create(sale.clone())),
                _ => {}
            }
        }
        let kept: BTreeSet<&SaleId> = after.iter().map(|sale| &sale.id).collect();
        for sale in self.sales() {
            if !kept.contains(&sale.id) {
                steps.push(SaleStep::Cancel(sale.id));
            }
        }
        steps
    }
}

impl Draft {
    /// The campaign's own settings; each needs the campaign not started.
    fn settings(&mut self, patch: &CampaignPatch) {
        let campaign = &mut self.campaign;
        let mut changed = Vec::new();
        if let Some(title) = &patch.title {
            changed.push(("title", *title != campaign.title));
            campaign.title.clone_from(title);
        }
        if let Some(currency) = &patch.currency {
            changed.push(("currency", *currency != campaign.currency));
            campaign.currency.clone_from(currency);
        }
        if let Some(limit) = patch.per_user_limit_per_round {
            changed.push((
                "per_user_limit_per_round",
                limit != campaign.limits.per_round,
            ));
            campaign.limits.per_round = limit;
        }
        if let Some(limit) = patch.per_user_limit_total {
            changed.push(("per_user_limit_total", limit != campaign.limits.total));
            campaign.limits.total = limit;
        }
        if let Some(timeout) = patch.payment_timeout_secs {
            changed.push((
                "payment_timeout_secs",
                timeout != campaign.payment_timeout_secs,
            ));
            campaign.payment_timeout_secs = timeout;
        }
        if let Some(required) = patch.require_purchase_token {
            let differs = required != campaign.require_purchase_token;
            changed.push(("require_purchase_token", differs));
            campaign.require_purchase_token = required;
        }
        for (what, differs) in changed {
            self.restrict(what, differs);
        }
    }

    /// Takes the removed items and rounds out (a round with its place in
    /// every item's stock).
    fn remove(&mut self, patch: &CampaignPatch) -> Result<(), InvalidField> {
        for &number in &patch.remove_items {
            let position = self.item_position("remove_items", number)?;
            self.campaign.items.remove(position);
            self.restrict("items removed", true);
        }
        for &number in &patch.remove_rounds {
            let position = self.round_position("remove_rounds", number)?;
            self.campaign.rounds.remove(position);
            for item in &mut self.campaign.items {
                if position < item.stock_by_round.len() {
                    item.stock_by_round.remove(position);
                }
            }
            self.restrict("rounds removed", true);
        }
        Ok(())
    }

    /// Moves rounds and marks those to stop now.
    fn change_rounds(&mut self, patches: Vec<RoundPatch>) -> Result<(), InvalidField> {
        for patch in patches {
            let position = self.round_position("rounds", patch.number)?;
            let round = &mut self.campaign.rounds[position];
            if let Some(starts_at) = &patch.starts_at {
                round.starts_at = parse_rfc3339_ms("starts_at", starts_at)?;
            }
            if let Some(ends_at) = &patch.ends_at {
                round.ends_at = parse_rfc3339_ms("ends_at", ends_at)?;
            }
            if patch.status == Some(PatchStatus::Ended) {
                self.ending.insert(patch.number);
            }
        }
        Ok(())
    }

    /// Adds rounds, numbered after every round the campaign ever had.
    fn add_rounds(
        &mut self,
        added: Vec<AddedRound>,
        last_stock: &[(u32, i64)],
        now: Millis,
    ) -> Result<(), InvalidField> {
        for round in added {
            let number = self.campaign.next_round_number();
            let round_at = Round {
                number,
                starts_at: parse_rfc3339_ms("starts_at", &round.starts_at)?,
                ends_at: parse_rfc3339_ms("ends_at", &round.ends_at)?,
            };
            if round_at.ends_at <= now {
                return Err(InvalidField::new("ends_at", "must be in the future"));
            }
            let items = &mut self.campaign.items;
            let stock: Vec<i64> = match round.stock_by_item {
                Some(stock) if stock.len() != items.len() => {
                    return Err(InvalidField::new(
                        "stock_by_item",
                        "must hold one entry per item the campaign keeps",
                    ))
                }
                Some(stock) => stock,
                None => items
                    .iter()
                    .map(|item| {
                        last_stock
                            .iter()
                            .find(|(n, _)| *n == item.number)
                            .map_or(0, |(_, stock)| *stock)
                    })
                    .collect(),
            };
            for (item, units) in items.iter_mut().zip(stock) {
                item.stock_by_round.push(units);
            }
            self.campaign.rounds.push(round_at);
            self.campaign.rounds_numbered = number + 1;
            self.restrict("rounds added", true);
        }
        Ok(())
    }

    /// Adds items, numbered after every item the campaign ever had.
    fn add_items(&mut self, added: Vec<NewItem>) -> Result<(), InvalidField> {
        for item in added {
            let number = self.campaign.next_item_number();
            let item = new_item(item, number, self.campaign.rounds.len())?;
            self.campaign.items.push(item);
            self.campaign.items_numbered = number + 1;
            self.restrict("items added", true);
        }
        Ok(())
    }

    /// Changes items: their terms (before the start only) and their stock
    /// (`stock_per_round`: in each round whose sale of the item is still
    /// open, by the sales as read).
    fn change_items(
        &mut self,
        patches: Vec<ItemPatch>,
        views: &HashMap<&SaleId, &SaleView>,
        now: Millis,
    ) -> Result<(), InvalidField> {
        for patch in patches {
            let position = self.item_position("items", patch.number)?;
            let campaign_id = self.campaign.id.clone();
            let rounds: Vec<u32> = self.campaign.rounds.iter().map(|r| r.number).collect();
            let item = &mut self.campaign.items[position];
            let mut terms_changed = false;
            if let Some(sku) = patch.sku {
                terms_changed |= sku != item.sku;
                item.sku = sku;
            }
            if let Some(title) = patch.title {
                terms_changed |= title != item.title;
                item.title = title;
            }
            if let Some(price) = patch.price_cents {
                terms_changed |= price != item.price_cents;
                item.price_cents = price;
            }
            if let Some(price) = patch.original_price_cents {
                terms_changed |= price != item.original_price_cents;
                item.original_price_cents = price;
            }
            if let Some(limit) = patch.per_user_limit {
                terms_changed |= limit != item.per_user_limit;
                item.per_user_limit = limit;
            }
            if let Some(stock) = patch.stock_by_round {
                if stock.len() != rounds.len() {
                    return Err(InvalidField::new(
                        "stock_by_round",
                        "must hold one entry per round",
                    ));
                }
                item.stock_by_round = stock;
            }
            if let Some(stock) = patch.stock_per_round {
                for (units, &round) in item.stock_by_round.iter_mut().zip(&rounds) {
                    let sale = SaleId::of_campaign(&campaign_id, round, item.number);
                    let open = views.get(&sale).is_none_or(|view| {
                        view.sale.state == SaleState::Scheduled && now < view.sale.ends_at
                    });
                    if open {
                        *units = stock;
                    }
                }
            }
            self.restrict("items' terms", terms_changed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CampaignId, NewCampaign, NewRound, SaleStats};

    const HOUR: i64 = 3_600_000;
    const T0: Millis = 1_900_000_000_000;

    fn campaign() -> Campaign {
        let round = |h: i64| NewRound {
            starts_at: crate::domain::Timestamp(T0 + h * HOUR).to_string(),
            ends_at: crate::domain::Timestamp(T0 + h * HOUR + HOUR / 2).to_string(),
        };
        NewCampaign {
            title: "11.11".into(),
            rounds: vec![round(0), round(2)],
            items: ["A", "B"]
                .iter()
                .map(|sku| NewItem {
                    sku: (*sku).into(),
                    title: (*sku).into(),
                    price_cents: 100,
                    original_price_cents: 200,
                    stock_per_round: 5,
                    stock_by_round: None,
                    per_user_limit: None,
                })
                .collect(),
            per_user_limit_per_round: 1,
            per_user_limit_total: None,
            currency: None,
            payment_timeout_secs: None,
            require_purchase_token: None,
            remind_before_secs: None,
        }
        .into_campaign(CampaignId::generate(), T0 - HOUR, &SaleRules::default())
        .expect("valid")
    }

    fn views(campaign: &Campaign) -> Vec<SaleView> {
        campaign
            .sales()
            .into_iter()
            .map(|sale| SaleView {
                stats: SaleStats {
                    stock_total: sale.stock_total,
                    remaining: sale.stock_total,
                    ..SaleStats::default()
                },
                sale,
                now: T0,
                version: 1,
            })
            .collect()
    }

    fn patch(json: serde_json::Value) -> CampaignPatch {
        serde_json::from_value(json).expect("a patch")
    }

    /// `stock_by_round` follows the rounds in their order after the
    /// change: an earlier round added, or two rounds swapped, in the same
    /// patch.
    #[test]
    fn stock_by_round_follows_the_rounds_as_they_will_be() {
        let campaign = campaign();
        let hour = |h: i64| crate::domain::Timestamp(T0 + h * HOUR).to_string();
        let change = campaign
            .patched(
                patch(serde_json::json!({
                    "rounds": [{"number": 0, "starts_at": hour(4), "ends_at": hour(5)}],
                    "add_rounds": [{"starts_at": hour(1), "ends_at": hour(2) }],
                    "items": [{"number": 0, "stock_by_round": [7, 8, 9]}],
                    "add_items": [{"sku": "C", "title": "C", "price_cents": 1,
                                   "original_price_cents": 1, "stock_per_round": 1,
                                   "stock_by_round": [1, 2, 3]}],
                })),
                &views(&campaign),
                T0 - HOUR,
                &SaleRules::default(),
            )
            .expect("valid");
        let starts: Vec<(u32, Millis)> = change
            .campaign
            .rounds
            .iter()
            .map(|round| (round.number, round.starts_at))
            .collect();
        assert_eq!(
            starts,
            vec![(2, T0 + HOUR), (1, T0 + 2 * HOUR), (0, T0 + 4 * HOUR)]
        );
        let stock = |sku: &str| {
            change
                .campaign
                .items
                .iter()
                .find(|item| item.sku == sku)
                .map(|item| item.stock_by_round.clone())
        };
        assert_eq!(stock("A"), Some(vec![7, 8, 9]));
        assert_eq!(stock("B"), Some(vec![5, 5, 5]));
        assert_eq!(stock("C"), Some(vec![1, 2, 3]));
        let created = change.steps.iter().find_map(|step| match step {
            SaleStep::Create(sale) if sale.sku == "A" && sale.starts_at == T0 + HOUR => {
                Some(sale.stock_total)
            }
            _ => None,
        });
        assert_eq!(created, Some(7), "{:?}", change.steps);
    }

    #[test]
    fn removed_and_added_rounds_and_items_take_new_numbers() {
        let campaign = campaign();
        let change = campaign
            .patched(
                patch(serde_json::json!({
                    "remove_rounds": [1],
                    "remove_items": [1],
                    "add_rounds": [{"starts_at": "2030-03-17T20:00:00Z",
                                    "ends_at": "2030-03-17T21:00:00Z"}],
                    "add_items": [{"sku": "C", "title": "C", "price_cents": 1,
                                   "original_price_cents": 1, "stock_per_round": 3}],
                })),
                &views(&campaign),
                T0 - HOUR,
                &SaleRules::default(),
            )
            .expect("valid");
        let rounds: Vec<u32> = change.campaign.rounds.iter().map(|r| r.number).collect();
        let items: Vec<u32> = change.campaign.items.iter().map(|i| i.number).collect();
        assert_eq!((rounds, items), (vec![0, 2], vec![0, 2]));
        assert_eq!(change.campaign.items[0].stock_by_round, vec![5, 5]);
        assert_eq!(change.campaign.items[1].stock_by_round, vec![3, 3]);
        let cancelled = change
            .steps
            .iter()
            .filter(|step| matches!(step, SaleStep::Cancel(_)))
            .count();
        let created = change
            .steps
            .iter()
            .filter(|step| matches!(step, SaleStep::Create(_)))
            .count();
        assert_eq!((cancelled, created), (3, 3), "{:?}", change.steps);
        assert_eq!(
            change.before_start.as_deref(),
            Some("items removed, rounds removed, rounds added, items added")
        );
    }

    #[test]
    fn a_top_up_and_a_move_are_sale_changes_allowed_after_the_start() {
        let campaign = campaign();
        let change = campaign
            .patched(
                patch(serde_json::json!({
                    "items": [{"number": 0, "stock_per_round": 9}],
                    "rounds": [{"number": 1, "starts_at": "2030-03-17T19:00:00Z",
                                "ends_at": "2030-03-17T20:00:00Z"},
                               {"number": 0, "status": "ended"}],
                })),
                &views(&campaign),
                T0,
                &SaleRules::default(),
            )
            .expect("valid");
        assert_eq!(change.before_start, None);
        let changes: Vec<&SaleChange> = change
            .steps
            .iter()
            .filter_map(|step| match step {
                SaleStep::Change { change, .. } => Some(change),
                _ => None,
            })
            .collect();
        assert_eq!(changes.len(), 4, "every sale of both rounds");
        assert!(changes[0].end_now && changes[1].end_now);
        assert_eq!(changes[0].sale.stock_total, 9);
        assert!(changes[2].restricted, "a moved start");
        assert_eq!(changes[3].sale.stock_total, 5, "item B as it was");
    }

    #[test]
    fn overlapping_rounds_and_unknown_numbers_are_refused() {
        let campaign = campaign();
        let refused = |json| {
            campaign
                .patched(patch(json), &views(&campaign), T0, &SaleRules::default())
                .map(|_| ())
                .map_err(|err| err.field)
        };
        let overlap = serde_json::json!({"rounds": [{"number": 1,
            "starts_at": "2030-03-17T17:50:00Z", "ends_at": "2030-03-17T19:00:00Z"}]});
        assert_eq!(refused(overlap), Err("rounds"));
        assert_eq!(
            refused(serde_json::json!({"remove_items": [7]})),
            Err("remove_items")
        );
        assert_eq!(
            refused(serde_json::json!({"items": [{"number": 0,
            "stock_by_round": [1]}]})),
            Err("stock_by_round")
        );
        assert_eq!(
            refused(serde_json::json!({"items": [{"number": 0,
            "stock_per_round": 0}]})),
            Err("stock_per_round")
        );
        // Round numbers past what a sale id names (36), with an item's
        // stock changed in every round: refused, before any sale id of
        // them is made.
        let past_the_numbers: Vec<serde_json::Value> = (0..35)
            .map(|n| {
                let starts = T0 + (4 + 2 * n) * HOUR;
                serde_json::json!({
                    "starts_at": crate::domain::Timestamp(starts).to_string(),
                    "ends_at": crate::domain::Timestamp(starts + HOUR).to_string(),
                })
            })
            .collect();
        let refusal = campaign
            .patched(
                patch(serde_json::json!({"add_rounds": past_the_numbers,
                    "items": [{"number": 0, "stock_per_round": 1}]})),
                &views(&campaign),
                T0,
                &SaleRules::default(),
            )
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refusal.field, "rounds");
        assert!(
            refusal.reason.contains("at most 36 rounds"),
            "the numbering, not the count: {refusal:?}"
        );
    }
}
