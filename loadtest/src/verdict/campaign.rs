//! The `campaign` scenario's checks across items: no shopper holds more
//! than the campaign's limit per round across the round's items, nor more
//! than its limit in total, judged from the orders the engine holds for
//! the suite's shoppers. Each round × item is also judged as a sale of its
//! own (exact stock, its per-user limit, every 201 an order) by the
//! verdict's sale checks.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{listed, Check};
use crate::engine::Order;

/// The campaign a run created: its id, its limits and the sale of each
/// round × item, by round.
pub struct SuiteCampaign {
    pub id: String,
    pub per_round: i64,
    pub total: Option<i64>,
    pub rounds: Vec<Vec<String>>,
}

#[derive(Debug, Serialize)]
pub struct CampaignVerdict {
    pub id: String,
    pub rounds: usize,
    pub items: usize,
    /// Units the suite's shoppers hold in each round.
    pub units_held_by_round: Vec<i64>,
    /// Most units one shopper holds in each round.
    pub shopper_units_max_by_round: Vec<i64>,
    /// Most units one shopper holds in the whole campaign.
    pub shopper_units_max: i64,
    pub checks: Vec<Check>,
}

/// Judges the campaign's limits against every shopper's orders that still
/// hold stock (a cancelled or expired order gave its units back).
pub fn judge_campaign(
    campaign: &SuiteCampaign,
    orders: &HashMap<String, Vec<Order>>,
) -> CampaignVerdict {
    let round_of: HashMap<&str, usize> = campaign
        .rounds
        .iter()
        .enumerate()
        .flat_map(|(round, sales)| sales.iter().map(move |sale| (sale.as_str(), round)))
        .collect();
    let rounds = campaign.rounds.len();
    let mut units_held_by_round = vec![0; rounds];
    let mut shopper_units_max_by_round = vec![0; rounds];
    let mut shopper_units_max = 0;
    let mut over_round: HashSet<&str> = HashSet::new();
    let mut over_total = Vec::new();
    for (shopper, list) in orders {
        let mut held = vec![0; rounds];
        for order in list.iter().filter(|order| order.holds_stock()) {
            if let Some(&round) = round_of.get(order.sale_id.as_str()) {
                held[round] += order.quantity;
            }
        }
        for (round, units) in held.iter().enumerate() {
            units_held_by_round[round] += units;
            shopper_units_max_by_round[round] = shopper_units_max_by_round[round].max(*units);
            if *units > campaign.per_round {
                over_round.insert(shopper.as_str());
            }
        }
        let total: i64 = held.iter().sum();
        shopper_units_max = shopper_units_max.max(total);
        if campaign.total.is_some_and(|limit| total > limit) {
            over_total.push(shopper.as_str());
        }
    }
    let mut over_round: Vec<&str> = over_round.into_iter().collect();
    over_round.sort_unstable();
    over_total.sort_unstable();
    let total_check = match campaign.total {
        Some(limit) => Check::new(
            format!("no shopper above the campaign's limit in total ({limit})"),
            over_total.is_empty(),
            format!(
                "most units one shopper holds in the campaign: {shopper_units_max}{}",
                listed("; over the limit: ", &over_total)
            ),
        ),
        None => Check::new(
            "no campaign limit in total set",
            true,
            format!("most units one shopper holds in the campaign: {shopper_units_max}"),
        ),
    };
    let checks = vec![
        Check::new(
            format!(
                "no shopper above the campaign's limit per round ({}) in any round",
                campaign.per_round
            ),
            over_round.is_empty(),
            format!(
                "most units one shopper holds, by round: {shopper_units_max_by_round:?}{}",
                listed("; over the limit: ", &over_round)
            ),
        ),
        total_check,
    ];
    CampaignVerdict {
        id: campaign.id.clone(),
        rounds,
        items: campaign.rounds.first().map_or(0, Vec::len),
        units_held_by_round,
        shopper_units_max_by_round,
        shopper_units_max,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{failed, order};
    use super::*;

    /// Two rounds of two items; at most 2 units per round, 3 in all.
    fn campaign(total: Option<i64>) -> SuiteCampaign {
        SuiteCampaign {
            id: "c_1".to_owned(),
            per_round: 2,
            total,
            rounds: vec![
                vec!["s_1-0a".to_owned(), "s_1-0b".to_owned()],
                vec!["s_1-1a".to_owned(), "s_1-1b".to_owned()],
            ],
        }
    }

    #[test]
    fn shoppers_within_both_limits_pass_and_returned_units_do_not_count() {
        // Goal: a shopper at both limits passes; a cancelled or expired
        // order gave its units back; an ordinary sale's order is not the
        // campaign's.
        let orders = HashMap::from([
            (
                "a".to_owned(),
                vec![
                    order("o_1", "s_1-0a", "paid"),
                    order("o_2", "s_1-0b", "pending_payment"),
                    order("o_3", "s_1-1a", "paid"),
                    order("o_4", "s_1-1b", "cancelled"),
                    order("o_5", "s_9", "paid"),
                ],
            ),
            (
                "b".to_owned(),
                vec![
                    order("o_6", "s_1-1a", "expired"),
                    order("o_7", "s_1-1b", "paid"),
                ],
            ),
        ]);
        let verdict = judge_campaign(&campaign(Some(3)), &orders);
        assert!(failed(&verdict.checks).is_empty(), "{:?}", verdict.checks);
        assert_eq!(verdict.units_held_by_round, vec![2, 2]);
        assert_eq!(verdict.shopper_units_max_by_round, vec![2, 1]);
        assert_eq!(verdict.shopper_units_max, 3);
    }

    #[test]
    fn a_shopper_over_the_round_limit_fails_it() {
        // Goal: three units across two items of one round fail the round's
        // check, even when each item's own limit holds.
        let orders = HashMap::from([(
            "a".to_owned(),
            vec![
                order("o_1", "s_1-0a", "paid"),
                order("o_2", "s_1-0b", "paid"),
                order("o_3", "s_1-0b", "pending_payment"),
            ],
        )]);
        let verdict = judge_campaign(&campaign(None), &orders);
        assert_eq!(
            failed(&verdict.checks),
            vec!["no shopper above the campaign's limit per round (2) in any round"]
        );
    }

    #[test]
    fn a_shopper_over_the_total_across_rounds_fails_it() {
        // Goal: within the limit in each round, above it over the campaign.
        let orders = HashMap::from([(
            "a".to_owned(),
            vec![
                order("o_1", "s_1-0a", "paid"),
                order("o_2", "s_1-0b", "paid"),
                order("o_3", "s_1-1a", "paid"),
                order("o_4", "s_1-1b", "pending_payment"),
            ],
        )]);
        let verdict = judge_campaign(&campaign(Some(3)), &orders);
        assert_eq!(
            failed(&verdict.checks),
            vec!["no shopper above the campaign's limit in total (3)"]
        );
        let unlimited = judge_campaign(&campaign(None), &orders);
        assert!(failed(&unlimited.checks).is_empty());
    }
}
