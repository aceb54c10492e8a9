//! The verdict after every run: reads the engine's exact stats and every
//! order of the suite's shoppers, checks the engine's promises against them
//! and against what the suite saw, prints a PASS/FAIL block and adds itself
//! to goose's JSON report. The queued sale's waiting-room checks are
//! [`queue`]'s, the campaign's limits across items [`campaign`]'s; a
//! `--payments wechatpay` run's WeChat Pay checks are [`wechatpay`]'s.
//!
//! A shared sale (joined with `--spike-sale` or `--buy-sale`) also holds
//! other generators' orders, which this run cannot see: its stats are
//! compared with this run's orders as a bound, and are not waited for to
//! settle, since other generators may still be buying.

mod campaign;
mod queue;
mod wechatpay;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::engine::{AdminSale, Engine, Order, SaleStats};
use crate::tally::{Kind, Snapshot};
pub use campaign::{CampaignVerdict, SuiteCampaign};
pub use queue::{QueueVerdict, QueuedSale};
pub use wechatpay::{WeChatPayRun, WeChatPayVerdict};

/// The buy-and-pay sale's name among the suite's sales.
pub const BUY_AND_PAY: &str = "buy-and-pay";

/// Reads of the stats, the orders and the stats again until both stats of
/// every sale the run created agree (an order may expire while the orders
/// are read).
const SETTLE_ATTEMPTS_MAX: u32 = 20;
const SETTLE_PAUSE: Duration = Duration::from_millis(250);

/// One of the suite's sales, by the scenario that buys it.
pub struct SuiteSale {
    pub name: &'static str,
    pub id: String,
    /// Joined, not created by this run: other generators buy it too.
    pub shared: bool,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, pass: bool, detail: String) -> Self {
        Self {
            name: name.into(),
            pass,
            detail,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SaleVerdict {
    pub name: &'static str,
    pub id: String,
    pub shared: bool,
    pub per_user_limit: i64,
    pub stats: SaleStats,
    pub orders_created: usize,
    pub units_created: i64,
    pub units_held: i64,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct AnswerLine {
    pub route: String,
    pub status: u16,
    pub code: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub pass: bool,
    pub sales: Vec<SaleVerdict>,
    pub shoppers: usize,
    /// Spike shoppers who first looked after the sale had opened: they did
    /// not take part in the opening rush (raise `--start-in-secs`).
    pub spike_late: u64,
    /// `campaign` users who first looked at a round after it had ended:
    /// they did not race in it (raise `--start-in-secs`).
    pub campaign_rounds_missed: u64,
    pub orders_seen: usize,
    pub abandoned: u64,
    pub answers: Vec<AnswerLine>,
    pub rate_limited_429: u64,
    pub shed_503: u64,
    pub unexpected: u64,
    pub no_answer: u64,
    pub checks: Vec<Check>,
    /// The `queue` scenario's waiting room, when it ran.
    pub queue: Option<QueueVerdict>,
    /// WeChat Pay against its stand-in, with `--payments wechatpay`.
    pub wechatpay: Option<WeChatPayVerdict>,
    /// The `campaign` scenario's limits across items, when it ran.
    pub campaign: Option<CampaignVerdict>,
}

/// Reads the engine and judges the run; `queued` is the queued sale (one
/// of `sales`) when the `queue` scenario ran; `wechatpay` the WeChat Pay
/// stand-in when buy-and-pay shoppers paid through it; `campaign` the
/// campaign (whose sales are among `sales`) when `campaign` ran.
pub async fn judge(
    engine: &Engine,
    sales: &[SuiteSale],
    queued: Option<&QueuedSale>,
    wechatpay: Option<&WeChatPayRun<'_>>,
    campaign: Option<&SuiteCampaign>,
    seen: &Snapshot,
) -> anyhow::Result<Verdict> {
    let payments_settled = match wechatpay {
        Some(run) => wechatpay::wait_settled(engine, seen, run.settle_within).await?,
        None => true,
    };
    let (stats, orders, settled) = read_settled(engine, sales, seen).await?;
    let wechatpay = match wechatpay {
        Some(run) => {
            let ledger = wechatpay::read_ledger(run.standin).await?;
            let buy = sales
                .iter()
                .zip(&stats)
                .find(|(sale, _)| sale.name == BUY_AND_PAY)
                .context("no buy-and-pay sale to judge")?;
            Some(wechatpay::judge_wechatpay(
                run,
                payments_settled,
                &buy.0.id,
                &buy.1.stats,
                &orders,
                seen,
                &ledger,
            ))
        }
        None => None,
    };
    let queue = match queued {
        Some(queued) => {
            let revealed = engine.public_sale(&queued.id).await?;
            let seed = revealed.admission.and_then(|admission| admission.seed);
            let sold_out = stats
                .iter()
                .any(|admin| admin.id == queued.id && admin.stats.remaining == 0);
            Some(queue::judge_queue(
                queued,
                seed.as_deref(),
                sold_out,
                &orders,
                seen,
            ))
        }
        None => None,
    };
    let campaign = campaign.map(|campaign| campaign::judge_campaign(campaign, &orders));
    let any_shared = sales.iter().any(|sale| sale.shared);
    let mut verdict_sales = Vec::new();
    for (sale, admin) in sales.iter().zip(&stats) {
        verdict_sales.push(judge_sale(sale, admin, &orders, seen));
    }

    let mut sums: BTreeMap<Kind, u64> = BTreeMap::new();
    let mut answers = Vec::new();
    for ((route, status, code), count) in &seen.answers {
        *sums.entry(Kind::of(*status, code)).or_default() += count;
        answers.push(AnswerLine {
            route: route.clone(),
            status: *status,
            code: code.clone(),
            count: *count,
        });
    }
    let unexpected = sums.get(&Kind::Unexpected).copied().unwrap_or_default();
    let no_answer: u64 = seen.no_answer.values().sum();
    let checks = vec![
        Check::new(
            "stats settled while the orders were read",
            settled,
            format!(
                "within {SETTLE_ATTEMPTS_MAX} reads{}",
                if any_shared {
                    "; shared sales not waited for (other generators may still be buying)"
                } else {
                    ""
                }
            ),
        ),
        Check::new(
            "no 5xx but documented 503s, no unexpected answer, every request answered",
            unexpected == 0 && no_answer == 0,
            format!("{unexpected} unexpected answers, {no_answer} requests without an answer"),
        ),
    ];
    let pass = checks.iter().all(|check| check.pass)
        && verdict_sales
            .iter()
            .all(|sale| sale.checks.iter().all(|check| check.pass))
        && queue
            .iter()
            .all(|queue| queue.checks.iter().all(|check| check.pass))
        && wechatpay
            .iter()
            .all(|wechatpay| wechatpay.checks.iter().all(|check| check.pass))
        && campaign
            .iter()
            .all(|campaign| campaign.checks.iter().all(|check| check.pass));
    Ok(Verdict {
        pass,
        sales: verdict_sales,
        shoppers: seen.shoppers.len(),
        spike_late: seen.spike_late,
        campaign_rounds_missed: seen.campaign_rounds_missed,
        orders_seen: seen.orders.len(),
        abandoned: seen.abandoned.len() as u64,
        answers,
        rate_limited_429: sums.get(&Kind::RateLimited).copied().unwrap_or_default(),
        shed_503: sums.get(&Kind::Shed).copied().unwrap_or_default(),
        unexpected,
        no_answer,
        checks,
        queue,
        wechatpay,
        campaign,
    })
}

/// Every sale's stats and every shopper's orders, read until the stats
/// before and after the orders agree (see [`settled`]); `false` if they
/// never did. The stats are those read before the orders: a unit one of
/// this run's orders holds when the orders are read was held then already
/// (the attack is over, and a unit returned stays returned), so they bound
/// this run's orders even while other generators buy a shared sale.
async fn read_settled(
    engine: &Engine,
    sales: &[SuiteSale],
    seen: &Snapshot,
) -> anyhow::Result<(Vec<AdminSale>, HashMap<String, Vec<Order>>, bool)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = read_stats(engine, sales).await?;
        let mut orders = HashMap::new();
        for (shopper, token) in &seen.shoppers {
            let list = engine
                .shopper_orders(token)
                .await
                .with_context(|| format!("Failed to read the orders of {shopper}"))?;
            orders.insert(shopper.clone(), list);
        }
        let after = read_stats(engine, sales).await?;
        let settled = settled(sales, &before, &after);
        if settled || attempt >= SETTLE_ATTEMPTS_MAX {
            return Ok((before, orders, settled));
        }
        tokio::time::sleep(SETTLE_PAUSE).await;
    }
}

/// Whether the stats of every sale this run created are the same `before`
/// and `after` the orders were read. A shared sale's stats move with other
/// generators' traffic, which may go on for a while: they do not count.
fn settled(sales: &[SuiteSale], before: &[AdminSale], after: &[AdminSale]) -> bool {
    sales
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(sale, _)| !sale.shared)
        .all(|(_, (before, after))| before.stats == after.stats)
}

async fn read_stats(engine: &Engine, sales: &[SuiteSale]) -> anyhow::Result<Vec<AdminSale>> {
    let mut stats = Vec::with_capacity(sales.len());
    for sale in sales {
        stats.push(engine.admin_sale(&sale.id).await?);
    }
    Ok(stats)
}

fn judge_sale(
    sale: &SuiteSale,
    admin: &AdminSale,
    orders: &HashMap<String, Vec<Order>>,
    seen: &Snapshot,
) -> SaleVerdict {
    let s = admin.stats;
    let mut orders_created = 0;
    let mut units_created = 0;
    let mut units_held = 0;
    let mut held_max = 0;
    let mut over_limit = Vec::new();
    let mut existing: HashSet<(&str, &str)> = HashSet::new();
    for (shopper, list) in orders {
        let mut held = 0;
        for order in list.iter().filter(|order| order.sale_id == sale.id) {
            orders_created += 1;
            units_created += order.quantity;
            if order.holds_stock() {
                held += order.quantity;
            }
            existing.insert((shopper.as_str(), order.id.as_str()));
        }
        units_held += held;
        held_max = held_max.max(held);
        if held > admin.per_user_limit {
            over_limit.push(shopper.clone());
        }
    }
    let created_201: Vec<&(String, String, String)> = seen
        .orders
        .iter()
        .filter(|(_, sale_id, _)| *sale_id == sale.id)
        .collect();
    let missing: Vec<&str> = created_201
        .iter()
        .filter(|(shopper, _, order_id)| !existing.contains(&(shopper.as_str(), order_id.as_str())))
        .map(|(_, _, order_id)| order_id.as_str())
        .collect();
    let returned = s.expired + s.cancelled;
    // A shared sale's stats count other generators' orders too: this run's
    // orders can only bound them.
    let held_check = if sale.shared {
        Check::new(
            "reserved + paid >= units this run's orders hold (shared sale)",
            s.reserved + s.paid >= units_held,
            format!("{} + {} >= {units_held}", s.reserved, s.paid),
        )
    } else {
        Check::new(
            "reserved + paid == units the orders hold",
            s.reserved + s.paid == units_held,
            format!("{} + {} vs {units_held}", s.reserved, s.paid),
        )
    };
    let checks = vec![
        Check::new(
            "remaining + reserved + paid == stock_total",
            s.remaining + s.reserved + s.paid == s.stock_total,
            format!(
                "{} + {} + {} vs {}",
                s.remaining, s.reserved, s.paid, s.stock_total
            ),
        ),
        Check::new(
            "units ordered <= stock_total + units returned (expired, cancelled)",
            units_created <= s.stock_total + returned,
            format!("{units_created} <= {} + {returned}", s.stock_total),
        ),
        held_check,
        Check::new(
            format!(
                "no shopper above the per-user limit ({})",
                admin.per_user_limit
            ),
            over_limit.is_empty(),
            format!(
                "most units one shopper holds: {held_max}{}",
                listed("; over the limit: ", &over_limit)
            ),
        ),
        Check::new(
            "every 201 the suite saw is an order that exists",
            missing.is_empty(),
            format!(
                "{} of {} found{}",
                created_201.len() - missing.len(),
                created_201.len(),
                listed("; missing: ", &missing)
            ),
        ),
    ];
    SaleVerdict {
        name: sale.name,
        id: sale.id.clone(),
        shared: sale.shared,
        per_user_limit: admin.per_user_limit,
        stats: s,
        orders_created,
        units_created,
        units_held,
        checks,
    }
}

impl Verdict {
    pub fn print(&self) {
        let word = if self.pass { "PASS" } else { "FAIL" };
        println!();
        println!("=== flashsale verdict: {word} ===");
        for sale in &self.sales {
            let s = sale.stats;
            println!(
                "sale {} ({}): stock {}, remaining {}, reserved {}, paid {}, cancelled {}, expired {}, refund_required {}; {} orders created by the suite's shoppers",
                sale.name,
                sale.id,
                s.stock_total,
                s.remaining,
                s.reserved,
                s.paid,
                s.cancelled,
                s.expired,
                s.refund_required,
                sale.orders_created
            );
            if sale.shared {
                println!(
                    "  shared sale (joined, not created by this run): its stats count other generators' orders too, so they bound this run's"
                );
            }
            print_checks(&sale.checks);
        }
        println!(
            "shoppers: {}; 201s seen: {}; orders abandoned on purpose: {}",
            self.shoppers, self.orders_seen, self.abandoned
        );
        if self.spike_late > 0 {
            println!(
                "note: {} spike shoppers arrived after the sale had opened (raise --start-in-secs for one rush)",
                self.spike_late
            );
        }
        if self.campaign_rounds_missed > 0 {
            println!(
                "note: campaign users found a round ended {} times before racing in it (raise --start-in-secs for every round's rush)",
                self.campaign_rounds_missed
            );
        }
        println!("answers:");
        for line in &self.answers {
            let code = if line.code.is_empty() {
                "-"
            } else {
                &line.code
            };
            println!(
                "  {:<34} {} {:<16} {:>9}",
                line.route, line.status, code, line.count
            );
        }
        println!(
            "429 rate_limited (retried after Retry-After; not failures): {}",
            self.rate_limited_429
        );
        println!(
            "503 overloaded/unavailable (documented shedding, retried; not failures): {}",
            self.shed_503
        );
        println!("unexpected answers (failures): {}", self.unexpected);
        println!("requests without an answer (failures): {}", self.no_answer);
        print_checks(&self.checks);
        if let Some(queue) = &self.queue {
            println!(
                "waiting room of sale {}: {} joined ({} of the pre-queue placed); {} admitted, {} sold_out",
                queue.sale_id, queue.joined, queue.prequeue_placed, queue.admitted, queue.sold_out
            );
            print_checks(&queue.checks);
        }
        if let Some(wechatpay) = &self.wechatpay {
            println!(
                "WeChat Pay stand-in {}: {} WeChat Pay orders for this run's orders, {} paid, {} closed; {} notifications posted again",
                wechatpay.standin,
                wechatpay.wechatpay_orders,
                wechatpay.paid,
                wechatpay.closed,
                wechatpay.notify_retries
            );
            print_checks(&wechatpay.checks);
        }
        if let Some(campaign) = &self.campaign {
            println!(
                "campaign {}: {} rounds x {} items; units the suite's shoppers hold, by round: {:?}",
                campaign.id, campaign.rounds, campaign.items, campaign.units_held_by_round
            );
            print_checks(&campaign.checks);
        }
        println!("=== flashsale verdict: {word} ===");
    }

    /// Adds the verdict to goose's JSON report under `flashsale_verdict`.
    pub fn merge_into(&self, path: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Failed to read goose's JSON report {path}"))?;
        let mut report: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("goose's report {path} is not JSON"))?;
        let object = report
            .as_object_mut()
            .with_context(|| format!("goose's report {path} is not a JSON object"))?;
        object.insert(
            "flashsale_verdict".to_owned(),
            serde_json::to_value(self).context("Failed to encode the verdict")?,
        );
        let text = serde_json::to_string_pretty(&report).context("Failed to encode the report")?;
        std::fs::write(path, text).with_context(|| format!("Failed to write {path}"))
    }
}

/// `prefix` and the items, or nothing when there are none.
fn listed(prefix: &str, items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("{prefix}{}", items.join(", "))
}

fn print_checks(checks: &[Check]) {
    for check in checks {
        let mark = if check.pass { "PASS" } else { "FAIL" };
        println!("  [{mark}] {}: {}", check.name, check.detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An order of one unit (also the `queue` checks' tests').
    pub(super) fn order(id: &str, sale_id: &str, status: &str) -> Order {
        Order {
            id: id.to_owned(),
            sale_id: sale_id.to_owned(),
            quantity: 1,
            status: status.to_owned(),
        }
    }

    fn admin(stats: SaleStats) -> AdminSale {
        AdminSale {
            id: "s_1".to_owned(),
            status: "live".to_owned(),
            starts_at: chrono::DateTime::UNIX_EPOCH,
            per_user_limit: 1,
            stats,
        }
    }

    fn sale(shared: bool) -> SuiteSale {
        SuiteSale {
            name: "spike",
            id: "s_1".to_owned(),
            shared,
        }
    }

    fn stats(remaining: i64, reserved: i64, paid: i64, expired: i64) -> SaleStats {
        SaleStats {
            stock_total: 2,
            remaining,
            reserved,
            paid,
            expired,
            ..SaleStats::default()
        }
    }

    /// The names of the failed checks (also the `queue` checks' tests').
    pub(super) fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|check| !check.pass)
            .map(|check| check.name.as_str())
            .collect()
    }

    #[test]
    fn a_consistent_sale_passes_and_expired_orders_do_not_count() {
        // Goal: an expired order neither holds stock nor counts towards the
        // limit; orders of another sale are ignored.
        let sale = SuiteSale {
            name: "buy-and-pay",
            id: "s_1".to_owned(),
            shared: false,
        };
        let orders = HashMap::from([
            (
                "a".to_owned(),
                vec![order("o_1", "s_1", "expired"), order("o_2", "s_1", "paid")],
            ),
            (
                "b".to_owned(),
                vec![
                    order("o_3", "s_1", "pending_payment"),
                    order("o_9", "s_2", "paid"),
                ],
            ),
        ]);
        let mut seen = Snapshot::default();
        seen.orders
            .insert(("a".to_owned(), "s_1".to_owned(), "o_2".to_owned()));
        let verdict = judge_sale(&sale, &admin(stats(0, 1, 1, 1)), &orders, &seen);
        assert!(failed(&verdict.checks).is_empty(), "{:?}", verdict.checks);
        assert_eq!((verdict.units_created, verdict.units_held), (3, 2));
    }

    #[test]
    fn oversold_stock_a_shopper_over_the_limit_and_a_lost_order_fail() {
        // Goal: each broken promise fails its own check.
        let orders = HashMap::from([(
            "a".to_owned(),
            vec![
                order("o_1", "s_1", "pending_payment"),
                order("o_2", "s_1", "pending_payment"),
                order("o_3", "s_1", "paid"),
            ],
        )]);
        let mut seen = Snapshot::default();
        seen.orders
            .insert(("b".to_owned(), "s_1".to_owned(), "o_4".to_owned()));
        let verdict = judge_sale(&sale(false), &admin(stats(0, 1, 1, 0)), &orders, &seen);
        assert_eq!(
            failed(&verdict.checks),
            vec![
                "units ordered <= stock_total + units returned (expired, cancelled)",
                "reserved + paid == units the orders hold",
                "no shopper above the per-user limit (1)",
                "every 201 the suite saw is an order that exists",
            ]
        );
    }

    #[test]
    fn a_shared_sale_holds_more_than_this_runs_orders_and_passes() {
        // Goal: on a shared sale another generator's order is in the stats
        // but not among this run's orders: the bound passes where the
        // equality of a sale of this run's own fails.
        let orders = HashMap::from([("a".to_owned(), vec![order("o_1", "s_1", "paid")])]);
        let mut seen = Snapshot::default();
        seen.orders
            .insert(("a".to_owned(), "s_1".to_owned(), "o_1".to_owned()));
        let sold_out = admin(stats(0, 1, 1, 0));
        let shared = judge_sale(&sale(true), &sold_out, &orders, &seen);
        assert!(failed(&shared.checks).is_empty(), "{:?}", shared.checks);
        assert!(shared.shared);
        let own = judge_sale(&sale(false), &sold_out, &orders, &seen);
        assert_eq!(
            failed(&own.checks),
            vec!["reserved + paid == units the orders hold"]
        );
    }

    #[test]
    fn a_shared_sale_holding_less_than_this_runs_orders_fails() {
        // Goal: the bound still catches stats below what this run's own
        // orders hold.
        let orders = HashMap::from([
            ("a".to_owned(), vec![order("o_1", "s_1", "pending_payment")]),
            ("b".to_owned(), vec![order("o_2", "s_1", "paid")]),
        ]);
        let verdict = judge_sale(
            &sale(true),
            &admin(stats(1, 1, 0, 0)),
            &orders,
            &Snapshot::default(),
        );
        assert_eq!(
            failed(&verdict.checks),
            vec!["reserved + paid >= units this run's orders hold (shared sale)"]
        );
    }

    #[test]
    fn only_the_sales_this_run_created_must_settle() {
        // Goal: a shared sale whose stats moved between two reads (other
        // generators still buying) does not keep the verdict waiting; one
        // of this run's own does.
        let before = [admin(stats(1, 1, 0, 0))];
        let after = [admin(stats(0, 2, 0, 0))];
        assert!(settled(&[sale(true)], &before, &after));
        assert!(!settled(&[sale(false)], &before, &after));
        assert!(settled(&[sale(false)], &before, &before));
    }
}
