//! The `queue` scenario's checks: what a fair, bounded waiting room
//! promises, judged from what its shoppers saw (the tally's queue visits),
//! the orders the engine holds for them, and the seed it revealed at the
//! opening.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::Check;
use crate::engine::Order;
use crate::fairness::{seed_matches, shuffled, spearman};
use crate::tally::Snapshot;

/// Pre-queue joiners below this many are too few for the rank correlation
/// to say anything: the fairness check is then reported, not judged.
pub const FAIRNESS_JOINERS_MIN: usize = 1_000;
/// The bound on |Spearman rho| of position against join order.
pub const RHO_MAX: f64 = 0.1;
/// Every waiting shopper's final answer comes this soon after the sell-out.
pub const FINAL_WITHIN: Duration = Duration::from_secs(5);
/// The README's polling bound: polls per shopper per second, one engine node.
pub const POLLS_PER_SEC_MAX: f64 = 1.0;

/// The queued sale, as set up: its id and the commitment shown before the
/// pre-queue opened.
pub struct QueuedSale {
    pub id: String,
    pub commitment: String,
}

#[derive(Debug, Serialize)]
pub struct QueueVerdict {
    pub sale_id: String,
    pub joined: usize,
    pub prequeue_placed: usize,
    pub admitted: usize,
    pub sold_out: usize,
    pub rho: f64,
    pub polls: u64,
    pub polls_per_sec_max: f64,
    pub polls_per_sec_mean: f64,
    /// Seconds from the sell-out (the last payment) to the last final answer.
    pub last_final_after_sell_out_secs: f64,
    pub checks: Vec<Check>,
}

/// Judges the queued sale. `seed` is the one revealed at the opening;
/// `sold_out` whether the sale had no stock left after the run.
pub fn judge_queue(
    sale: &QueuedSale,
    seed: Option<&str>,
    sold_out: bool,
    orders: &HashMap<String, Vec<Order>>,
    seen: &Snapshot,
) -> QueueVerdict {
    let visits = &seen.queue;
    let outcome = |status: &str| {
        visits
            .values()
            .filter(|visit| visit.outcome.as_ref().is_some_and(|(s, _)| s == status))
            .count()
    };

    // Fairness: the pre-queue's positions against its join order.
    let mut placed: Vec<(&str, u64, u64)> = visits
        .iter()
        .filter(|(_, visit)| visit.prequeue)
        .filter_map(|(id, visit)| Some((id.as_str(), visit.position?, visit.join_seq)))
        .collect();
    placed.sort_by_key(|&(_, position, _)| position);
    let positions: Vec<u64> = placed.iter().map(|&(_, position, _)| position).collect();
    let joins: Vec<u64> = placed.iter().map(|&(_, _, join)| join).collect();
    let rho = spearman(&positions, &joins);
    let judged = placed.len() >= FAIRNESS_JOINERS_MIN;
    let by_position: Vec<&str> = placed.iter().map(|&(id, _, _)| id).collect();
    let replayed =
        seed.is_some_and(|seed| shuffled(seed, by_position.iter().copied()) == by_position);
    let committed = seed.is_some_and(|seed| seed_matches(seed, &sale.commitment));

    // No order without admission.
    let unadmitted: Vec<&str> = orders
        .iter()
        .filter(|(_, list)| list.iter().any(|order| order.sale_id == sale.id))
        .filter(|(shopper, _)| {
            visits
                .get(*shopper)
                .and_then(|visit| visit.outcome.as_ref())
                .is_none_or(|(status, _)| status != "admitted")
        })
        .map(|(shopper, _)| shopper.as_str())
        .collect();

    // Final answers, and how soon after the sell-out.
    let unanswered = visits
        .values()
        .filter(|visit| visit.outcome.is_none())
        .count();
    let last_final =
        seen.queue_last_order
            .filter(|_| sold_out)
            .map_or(Duration::ZERO, |sell_out| {
                visits
                    .values()
                    .filter_map(|visit| visit.outcome.as_ref())
                    .filter(|(status, _)| status == "sold_out")
                    .map(|(_, at)| at.saturating_duration_since(sell_out))
                    .max()
                    .unwrap_or_default()
            });

    // Polls per shopper per second, over each shopper's time in the room
    // (at least a second).
    let (mut polls, mut seconds, mut rate_max) = (0, 0.0, 0.0_f64);
    for visit in visits.values() {
        let Some((_, at)) = &visit.outcome else {
            continue;
        };
        let span = at.duration_since(visit.joined_at).as_secs_f64().max(1.0);
        rate_max = rate_max.max(visit.polls as f64 / span);
        polls += visit.polls;
        seconds += span;
    }
    let rate_mean = if seconds > 0.0 {
        polls as f64 / seconds
    } else {
        0.0
    };

    let checks = vec![
        Check::new(
            format!("|Spearman rho| < {RHO_MAX} (pre-queue position vs join order)"),
            !judged || rho.abs() < RHO_MAX,
            if judged {
                format!("rho {rho:.4} over {} pre-queue joiners", placed.len())
            } else {
                format!(
                    "rho {rho:.4} over {} pre-queue joiners: too few to judge (fewer than {FAIRNESS_JOINERS_MIN})",
                    placed.len()
                )
            },
        ),
        Check::new(
            "the revealed seed matches the commitment",
            committed,
            format!("seed {}", seed.unwrap_or("not revealed")),
        ),
        Check::new(
            "the order recomputed from the seed is the positions'",
            replayed,
            format!("{} pre-queue joiners placed", placed.len()),
        ),
        Check::new(
            "no order without admission",
            unadmitted.is_empty(),
            format!(
                "{} shoppers hold orders without having been admitted{}",
                unadmitted.len(),
                super::listed(": ", &unadmitted)
            ),
        ),
        Check::new(
            format!(
                "every waiting shopper got a final answer, within {} s of the sell-out",
                FINAL_WITHIN.as_secs()
            ),
            unanswered == 0 && last_final <= FINAL_WITHIN,
            format!(
                "{unanswered} without one; the last {:.2} s after the sell-out",
                last_final.as_secs_f64()
            ),
        ),
        Check::new(
            format!("polls per shopper per second <= {POLLS_PER_SEC_MAX}"),
            rate_max <= POLLS_PER_SEC_MAX,
            format!("max {rate_max:.3}, mean {rate_mean:.3} ({polls} polls)"),
        ),
    ];
    QueueVerdict {
        sale_id: sale.id.clone(),
        joined: visits.len(),
        prequeue_placed: placed.len(),
        admitted: outcome("admitted"),
        sold_out: outcome("sold_out"),
        rho,
        polls,
        polls_per_sec_max: rate_max,
        polls_per_sec_mean: rate_mean,
        last_final_after_sell_out_secs: last_final.as_secs_f64(),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::tests::{failed, order};
    use super::*;
    use crate::tally::QueueVisit;

    fn visit(join_seq: u64, polls: u64, status: &str, secs: u64) -> QueueVisit {
        let joined_at = Instant::now();
        QueueVisit {
            prequeue: true,
            join_seq,
            joined_at,
            position: Some(join_seq + 1),
            polls,
            outcome: Some((status.to_owned(), joined_at + Duration::from_secs(secs))),
        }
    }

    #[test]
    fn an_order_without_admission_and_a_fast_poller_fail() {
        // Goal: the shopper who ordered without being admitted and the one
        // who polled 5 times in 2 s each fail their check; a seed that
        // does not match the commitment fails too.
        let mut seen = Snapshot::default();
        seen.queue
            .insert("a".to_owned(), visit(0, 1, "admitted", 2));
        seen.queue
            .insert("b".to_owned(), visit(1, 5, "sold_out", 2));
        let orders = HashMap::from([("b".to_owned(), vec![order("o_1", "s_q", "paid")])]);
        let sale = QueuedSale {
            id: "s_q".to_owned(),
            commitment: "00".to_owned(),
        };
        let verdict = judge_queue(&sale, Some(&"00".repeat(32)), false, &orders, &seen);
        assert_eq!(
            failed(&verdict.checks),
            vec![
                "the revealed seed matches the commitment",
                "no order without admission",
                "polls per shopper per second <= 1",
            ]
        );
        assert_eq!((verdict.admitted, verdict.sold_out), (1, 1));
    }
}
