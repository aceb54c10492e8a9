//! A seckill campaign: rounds at set hours, each offering the same items at
//! seckill prices, with limits per shopper across every item of a round and
//! across the whole campaign. Each round × item is an ordinary [`Sale`]
//! (its own stock, window, per-user limit and inventory actor) whose id
//! names the campaign ([`SaleId::of_campaign`]); this module holds what a
//! merchant may schedule and how it becomes those sales. The limits across
//! items are kept by the store, in the same atomic step that takes stock.

use serde::{Deserialize, Serialize};

use super::ids::{CAMPAIGN_ITEMS_MAX, CAMPAIGN_ROUNDS_MAX};
use super::sale::{check_text, CURRENCY_DEFAULT, PAYMENT_TIMEOUT_SECS_DEFAULT, TITLE_LEN_MAX};
use super::{
    parse_rfc3339_ms, Admission, CampaignId, InvalidField, Millis, Sale, SaleId, SaleRules,
    SaleState, QUANTITY_MAX,
};

/// The most rounds one campaign may have.
pub const CAMPAIGN_ROUNDS_LEN_MAX: usize = 24;
/// The most items one campaign may offer per round.
pub const CAMPAIGN_ITEMS_LEN_MAX: usize = 50;
/// The longest reminder lead: a week.
const REMIND_BEFORE_SECS_MAX: i64 = 7 * 24 * 3600;

/// One round as a merchant sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRound {
    pub starts_at: String,
    pub ends_at: String,
}

/// One item as a merchant sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub original_price_cents: i64,
    pub stock_per_round: i64,
    /// The item's stock in each round, one entry per round, in place of
    /// `stock_per_round`.
    #[serde(default)]
    pub stock_by_round: Option<Vec<i64>>,
    #[serde(default)]
    pub per_user_limit: Option<i64>,
}

/// The body of `POST /admin/v1/campaigns`. Unknown fields are refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub title: String,
    pub rounds: Vec<NewRound>,
    pub items: Vec<NewItem>,
    pub per_user_limit_per_round: i64,
    #[serde(default)]
    pub per_user_limit_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub payment_timeout_secs: Option<i64>,
    #[serde(default)]
    pub require_purchase_token: Option<bool>,
    #[serde(default)]
    pub remind_before_secs: Option<i64>,
}

/// A round of a campaign: its number (fixed for the campaign's life: it is
/// in the ids of the round's sales) and its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub number: u32,
    pub starts_at: Millis,
    pub ends_at: Millis,
}

/// An item of a campaign, offered in every round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub number: u32,
    pub sku: String,
    pub title: String,
    pub price_cents: i64,
    pub original_price_cents: i64,
    /// Units offered in each round, by the round's position.
    pub stock_by_round: Vec<i64>,
    pub per_user_limit: i64,
}

/// The limits across the items of a campaign, as the store keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignLimits {
    /// Units one shopper may hold across all items of one round.
    pub per_round: i64,
    /// Units one shopper may hold across the whole campaign (`None`: only
    /// the round's limit).
    pub total: Option<i64>,
}

/// A scheduled campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub title: String,
    pub currency: String,
    pub rounds: Vec<Round>,
    pub items: Vec<Item>,
    pub limits: CampaignLimits,
    pub payment_timeout_secs: i64,
    pub require_purchase_token: bool,
    pub remind_before_secs: Option<i64>,
    pub created_at: Millis,
    /// Rounds and items numbered so far: a round or item added later takes
    /// the next number, never one a removed round or item had (its
    /// cancelled sales keep their ids).
    #[serde(default)]
    pub rounds_numbered: u32,
    #[serde(default)]
    pub items_numbered: u32,
}

impl NewCampaign {
    /// Validates the campaign scheduled at `now`: rounds ordered and not
    /// overlapping, the last ending in the future; every round × item a
    /// valid sale.
    pub fn into_campaign(
        self,
        id: CampaignId,
        now: Millis,
        rules: &SaleRules,
    ) -> Result<Campaign, InvalidField> {
        check_size((self.rounds.len(), self.items.len()), (0, 0))?;
        let rounds = self
            .rounds
            .iter()
            .zip(0u32..)
            .map(|(round, number)| {
                Ok(Round {
                    number,
                    starts_at: parse_rfc3339_ms("starts_at", &round.starts_at)?,
                    ends_at: parse_rfc3339_ms("ends_at", &round.ends_at)?,
                })
            })
            .collect::<Result<Vec<_>, InvalidField>>()?;
        let items = self
            .items
            .into_iter()
            .zip(0u32..)
            .map(|(item, number)| new_item(item, number, rounds.len()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut campaign = Campaign {
            id,
            title: self.title,
            currency: self.currency.unwrap_or_else(|| CURRENCY_DEFAULT.to_owned()),
            rounds,
            items,
            limits: CampaignLimits {
                per_round: self.per_user_limit_per_round,
                total: self.per_user_limit_total,
            },
            payment_timeout_secs: self
                .payment_timeout_secs
                .unwrap_or(PAYMENT_TIMEOUT_SECS_DEFAULT),
            require_purchase_token: self.require_purchase_token.unwrap_or(false),
            remind_before_secs: self.remind_before_secs,
            created_at: now,
            rounds_numbered: 0,
            items_numbered: 0,
        };
        campaign.rounds_numbered = campaign.next_round_number();
        campaign.items_numbered = campaign.next_item_number();
        campaign.validate(rules)?;
        if campaign.ends_at() <= now {
            return Err(InvalidField::new("ends_at", "must be in the future"));
        }
        Ok(campaign)
    }
}

/// A campaign holds 1 to [`CAMPAIGN_ROUNDS_LEN_MAX`] rounds and 1 to
/// [`CAMPAIGN_ITEMS_LEN_MAX`] items (`(rounds, items)`), as scheduled and
/// after every change: all its sales are written in one store step.
/// `before`: the counts it is made from, `(0, 0)` for a new campaign. A
/// change never empties a campaign nor grows a count past its bound; one a
/// change grew past a bound before changes were held to them may keep or
/// shrink it.
pub(super) fn check_size(
    (rounds, items): (usize, usize),
    (rounds_before, items_before): (usize, usize),
) -> Result<(), InvalidField> {
    if rounds == 0 || (rounds > CAMPAIGN_ROUNDS_LEN_MAX && rounds > rounds_before) {
        return Err(InvalidField::new(
            "rounds",
            format!("must hold 1 to {CAMPAIGN_ROUNDS_LEN_MAX} rounds"),
        ));
    }
    if items == 0 || (items > CAMPAIGN_ITEMS_LEN_MAX && items > items_before) {
        return Err(InvalidField::new(
            "items",
            format!("must hold 1 to {CAMPAIGN_ITEMS_LEN_MAX} items"),
        ));
    }
    Ok(())
}

pub(super) fn new_item(item: NewItem, number: u32, rounds: usize) -> Result<Item, InvalidField> {
    let stock_by_round = match item.stock_by_round {
        Some(stock) if stock.len() != rounds => {
            return Err(InvalidField::new(
                "stock_by_round",
                "must hold one entry per round",
            ))
        }
        Some(stock) => stock,
        None => vec![item.stock_per_round; rounds],
    };
    Ok(Item {
        number,
        sku: item.sku,
        title: item.title,
        price_cents: item.price_cents,
        original_price_cents: item.original_price_cents,
        stock_by_round,
        per_user_limit: item.per_user_limit.unwrap_or(1),
    })
}

impl Campaign {
    /// When its last round ends (rounds are kept in order).
    pub fn ends_at(&self) -> Millis {
        self.rounds
            .last()
            .map_or(Millis::MIN, |round| round.ends_at)
    }

    /// Every round and item numbered within what a sale id can name (see
    /// [`SaleId::of_campaign`]): numbers are never reused, so a campaign
    /// numbers at most that many in its life.
    pub(super) fn check_numbering(&self) -> Result<(), InvalidField> {
        let numbered = self.rounds.iter().all(|r| r.number < CAMPAIGN_ROUNDS_MAX)
            && self.items.iter().all(|i| i.number < CAMPAIGN_ITEMS_MAX);
        if numbered {
            return Ok(());
        }
        Err(InvalidField::new(
            "rounds",
            "a campaign numbers at most 36 rounds and 1296 items in its life",
        ))
    }

    /// Checks the rules a campaign keeps whatever made it (a new one, or a
    /// merchant's change): and every sale it makes is a valid sale.
    pub fn validate(&self, rules: &SaleRules) -> Result<(), InvalidField> {
        check_text("title", &self.title, TITLE_LEN_MAX)?;
        if !(1..=QUANTITY_MAX).contains(&self.limits.per_round) {
            return Err(InvalidField::new(
                "per_user_limit_per_round",
                format!("must be between 1 and {QUANTITY_MAX}"),
            ));
        }
        if self
            .limits
            .total
            .is_some_and(|total| !(1..=QUANTITY_MAX * 100).contains(&total))
        {
            return Err(InvalidField::new(
                "per_user_limit_total",
                format!("must be between 1 and {}", QUANTITY_MAX * 100),
            ));
        }
        if self
            .remind_before_secs
            .is_some_and(|secs| !(1..=REMIND_BEFORE_SECS_MAX).contains(&secs))
        {
            return Err(InvalidField::new(
                "remind_before_secs",
                format!("must be between 1 and {REMIND_BEFORE_SECS_MAX}"),
            ));
        }
        for pair in self.rounds.windows(2) {
            if pair[1].starts_at < pair[0].ends_at {
                return Err(InvalidField::new(
                    "rounds",
                    "must be in order and must not overlap",
                ));
            }
        }
        self.check_numbering()?;
        for item in &self.items {
            if item.original_price_cents < item.price_cents {
                return Err(InvalidField::new(
                    "original_price_cents",
                    "must not be below price_cents",
                ));
            }
            if item.stock_by_round.len() != self.rounds.len() {
                return Err(InvalidField::new(
                    "stock_by_round",
                    "must hold one entry per round",
                ));
            }
        }
        for sale in self.sales() {
            sale.validate(rules).map_err(|err| match err.field {
                "stock_total" => InvalidField::new("stock_per_round", err.reason),
                _ => err,
            })?;
        }
        Ok(())
    }

    /// The sale of every round × item, round by round.
    pub fn sales(&self) -> Vec<Sale> {
        self.rounds
            .iter()
            .enumerate()
            .flat_map(|(position, round)| {
                self.items
                    .iter()
                    .map(move |item| self.sale(position, round, item))
            })
            .collect()
    }

    /// The number the next round added takes.
    pub(super) fn next_round_number(&self) -> u32 {
        let after_last = self.rounds.iter().map(|r| r.number + 1).max();
        self.rounds_numbered.max(after_last.unwrap_or(0))
    }

    /// The number the next item added takes.
    pub(super) fn next_item_number(&self) -> u32 {
        let after_last = self.items.iter().map(|i| i.number + 1).max();
        self.items_numbered.max(after_last.unwrap_or(0))
    }

    /// The sale of one round (at `position`) × item.
    pub(super) fn sale(&self, position: usize, round: &Round, item: &Item) -> Sale {
        Sale {
            id: SaleId::of_campaign(&self.id, round.number, item.number),
            sku: item.sku.clone(),
            title: item.title.clone(),
            price_cents: item.price_cents,
            currency: self.currency.clone(),
            stock_total: item.stock_by_round.get(position).copied().unwrap_or(0),
            per_user_limit: item.per_user_limit,
            starts_at: round.starts_at,
            ends_at: round.ends_at,
            payment_timeout_secs: self.payment_timeout_secs,
            require_purchase_token: self.require_purchase_token,
            admission: Admission::default(),
            state: SaleState::Scheduled,
            created_at: self.created_at,
        }
    }

    /// Each round's start reminder (see [`Campaign::reminder`]).
    pub fn reminders(&self) -> Vec<(SaleId, Millis)> {
        self.rounds
            .iter()
            .filter_map(|round| self.reminder(round))
            .collect()
    }

    /// A round's start reminder: the sale whose outbox keeps it (the
    /// round's first item's) and when it is due, `remind_before_secs`
    /// before the round starts. `None` without `remind_before_secs`.
    pub fn reminder(&self, round: &Round) -> Option<(SaleId, Millis)> {
        let secs = self.remind_before_secs?;
        let item = self.items.first()?;
        Some((
            SaleId::of_campaign(&self.id, round.number, item.number),
            round.starts_at.saturating_sub(secs.saturating_mul(1000)),
        ))
    }

    /// The round numbered `number`.
    pub fn round(&self, number: u32) -> Option<&Round> {
        self.rounds.iter().find(|round| round.number == number)
    }
}

/// A shopper's allowance left in a round and in the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allowance {
    pub round_left: i64,
    /// `None` when the campaign has no total limit.
    pub campaign_left: Option<i64>,
}

impl CampaignLimits {
    /// What a shopper holding `round_held` units in a round and
    /// `total_held` in the campaign may still reserve.
    pub fn allowance(&self, round_held: i64, total_held: i64) -> Allowance {
        let campaign_left = self.total.map(|total| (total - total_held).max(0));
        let round_left = (self.per_round - round_held).max(0);
        Allowance {
            round_left: campaign_left.map_or(round_left, |left| round_left.min(left)),
            campaign_left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_is_never_empty_nor_grown_past_its_bounds() {
        let (rounds, items) = (CAMPAIGN_ROUNDS_LEN_MAX, CAMPAIGN_ITEMS_LEN_MAX);
        let field = |counts, before| check_size(counts, before).err().map(|err| err.field);
        assert_eq!(field((rounds, items), (0, 0)), None);
        assert_eq!(field((0, 1), (0, 0)), Some("rounds"));
        assert_eq!(field((1, 0), (0, 0)), Some("items"));
        assert_eq!(field((rounds + 1, 1), (0, 0)), Some("rounds"));
        assert_eq!(field((1, items + 1), (0, 0)), Some("items"));
        // A change: grown past a bound, or emptied, is refused; a count
        // already past its bound may stay or shrink.
        assert_eq!(field((rounds + 1, 1), (rounds, 1)), Some("rounds"));
        assert_eq!(field((1, items + 2), (1, items + 1)), Some("items"));
        assert_eq!(field((1, 0), (1, 3)), Some("items"));
        assert_eq!(field((rounds + 3, 1), (rounds + 3, 1)), None);
        assert_eq!(
            field((rounds + 2, items + 1), (rounds + 3, items + 1)),
            None
        );
    }

    fn new_campaign(rounds: &[(&str, &str)]) -> NewCampaign {
        NewCampaign {
            title: "11.11".into(),
            rounds: rounds
                .iter()
                .map(|(starts_at, ends_at)| NewRound {
                    starts_at: (*starts_at).into(),
                    ends_at: (*ends_at).into(),
                })
                .collect(),
            items: vec![NewItem {
                sku: "A".into(),
                title: "a".into(),
                price_cents: 100,
                original_price_cents: 200,
                stock_per_round: 5,
                stock_by_round: None,
                per_user_limit: None,
            }],
            per_user_limit_per_round: 1,
            per_user_limit_total: Some(2),
            currency: None,
            payment_timeout_secs: None,
            require_purchase_token: None,
            remind_before_secs: None,
        }
    }

    #[test]
    fn every_round_and_item_is_a_sale_named_for_the_campaign() {
        let campaign = new_campaign(&[
            ("2030-11-11T10:00:00Z", "2030-11-11T11:00:00Z"),
            ("2030-11-11T12:00:00Z", "2030-11-11T13:00:00Z"),
        ])
        .into_campaign(CampaignId::generate(), 0, &SaleRules::default())
        .expect("valid");
        let sales = campaign.sales();
        assert_eq!(sales.len(), 2);
        let slot = sales[1].id.campaign().expect("a campaign sale");
        assert_eq!((slot.campaign, slot.round, slot.item), (campaign.id, 1, 0));
    }

    #[test]
    fn overlapping_or_unordered_rounds_are_refused() {
        let overlapping = new_campaign(&[
            ("2030-11-11T10:00:00Z", "2030-11-11T12:30:00Z"),
            ("2030-11-11T12:00:00Z", "2030-11-11T13:00:00Z"),
        ])
        .into_campaign(CampaignId::generate(), 0, &SaleRules::default());
        assert_eq!(overlapping.map_err(|e| e.field), Err("rounds"));
    }

    #[test]
    fn allowance_is_the_tighter_of_both_limits() {
        let limits = CampaignLimits {
            per_round: 2,
            total: Some(3),
        };
        assert_eq!(limits.allowance(0, 2).round_left, 1);
        assert_eq!(limits.allowance(1, 1).round_left, 1);
        assert_eq!(limits.allowance(0, 0).campaign_left, Some(3));
    }
}
