//! The checks of a `--payments wechatpay` run: what the engine's orders
//! say against what WeChat Pay (the stand-in) did, read from the
//! stand-in's ledger after the run. Only this run's orders on the
//! buy-and-pay sale are judged (a stand-in may serve other generators).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use wechatpay_standin::{LedgerView, OrderView};

use super::{listed, Check};
use crate::engine::{Engine, Order, SaleStats};
use crate::tally::Snapshot;

/// Pause between two reads while waiting for the run's payments to settle.
const SETTLE_PAUSE: Duration = Duration::from_millis(250);
/// Ids listed at most in a check's detail.
const LISTED_MAX: usize = 5;

/// A `--payments wechatpay` run, as the verdict needs it.
pub struct WeChatPayRun<'a> {
    /// The stand-in's address.
    pub standin: &'a str,
    /// How long the verdict waits for the run's prepaid orders to settle.
    pub settle_within: Duration,
}

#[derive(Debug, Serialize)]
pub struct WeChatPayVerdict {
    pub standin: String,
    /// WeChat Pay orders for this run's orders.
    pub wechatpay_orders: usize,
    pub paid: usize,
    pub closed: usize,
    /// Notifications the stand-in had to post again before the engine
    /// acknowledged them.
    pub notify_retries: u64,
    pub checks: Vec<Check>,
}

/// The stand-in's ledger.
pub async fn read_ledger(standin: &str) -> anyhow::Result<LedgerView> {
    let url = format!("{}/standin/ledger", standin.trim_end_matches('/'));
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("Failed to reach the WeChat Pay stand-in at {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    response
        .json()
        .await
        .with_context(|| format!("unexpected answer of {url}"))
}

/// Waits, at most `bound`, until none of this run's orders that have a
/// WeChat Pay order is still `pending_payment` in the engine: abandoned
/// ones expire (through the close) after the payment timeout, paid ones
/// once their notification is in. Whether they all settled.
pub async fn wait_settled(
    engine: &Engine,
    seen: &Snapshot,
    bound: Duration,
) -> anyhow::Result<bool> {
    let owners: BTreeMap<&str, &str> = seen
        .orders
        .iter()
        .filter(|(_, _, order_id)| seen.prepays.contains_key(order_id))
        .map(|(shopper, _, order_id)| (order_id.as_str(), shopper.as_str()))
        .collect();
    let deadline = Instant::now() + bound;
    let mut pending: Vec<&str> = owners.keys().copied().collect();
    loop {
        let mut still = Vec::new();
        for order_id in pending {
            let token = seen
                .shoppers
                .get(owners[order_id])
                .context("an order of a shopper the tally does not know")?;
            if engine.shopper_order(token, order_id).await?.status == "pending_payment" {
                still.push(order_id);
            }
        }
        if still.is_empty() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        pending = still;
        tokio::time::sleep(SETTLE_PAUSE).await;
    }
}

/// Judges the buy-and-pay sale `sale_id` of a `--payments wechatpay` run:
/// its stats, this run's orders, what the suite saw, and the ledger.
pub fn judge_wechatpay(
    run: &WeChatPayRun<'_>,
    settled: bool,
    sale_id: &str,
    stats: &SaleStats,
    orders: &HashMap<String, Vec<Order>>,
    seen: &Snapshot,
    ledger: &LedgerView,
) -> WeChatPayVerdict {
    let ours: BTreeMap<&str, &str> = orders
        .values()
        .flatten()
        .filter(|order| order.sale_id == sale_id)
        .map(|order| (order.id.as_str(), order.status.as_str()))
        .collect();
    let at_wechat: BTreeMap<&str, &OrderView> = ledger
        .orders
        .iter()
        .filter(|wx| ours.contains_key(wx.out_trade_no.as_str()))
        .map(|wx| (wx.out_trade_no.as_str(), wx))
        .collect();
    let paid_at_wechat = |id: &str| at_wechat.get(id).map_or(0, |wx| wx.payments);
    let trade_state = |id: &str| at_wechat.get(id).map_or("none", |wx| &wx.trade_state);

    // Paid in the engine exactly when paid (once) at WeChat Pay.
    let payment_mismatch: Vec<String> = ours
        .iter()
        .filter(|(id, status)| {
            (**status == "paid") != (paid_at_wechat(id) == 1) || paid_at_wechat(id) > 1
        })
        .map(|(id, status)| {
            format!(
                "{id} ({status}, paid {} times at WeChat Pay)",
                paid_at_wechat(id)
            )
        })
        .collect();
    let unacknowledged: Vec<&str> = at_wechat
        .values()
        .filter(|wx| wx.payments > 0 && !wx.notified)
        .map(|wx| wx.out_trade_no.as_str())
        .collect();
    let abandoned_open: Vec<String> = seen
        .abandoned
        .iter()
        .filter(|id| ours.contains_key(id.as_str()))
        .filter(|id| ours[id.as_str()] != "expired" || trade_state(id) != "CLOSED")
        .map(|id| {
            format!(
                "{id} ({}, {} at WeChat Pay)",
                ours[id.as_str()],
                trade_state(id)
            )
        })
        .collect();
    let abandoned = seen
        .abandoned
        .iter()
        .filter(|id| ours.contains_key(id.as_str()))
        .count();
    let released_open: Vec<String> = ours
        .iter()
        .filter(|(id, status)| {
            matches!(**status, "expired" | "cancelled") && at_wechat.contains_key(*id)
        })
        .filter(|(id, _)| trade_state(id) != "CLOSED")
        .map(|(id, status)| format!("{id} ({status}, {} at WeChat Pay)", trade_state(id)))
        .collect();
    // One WeChat Pay order per order: every answer named the one prepay id
    // the stand-in made for it.
    let prepay_mismatch: Vec<String> = seen
        .prepays
        .iter()
        .filter(|(id, _)| ours.contains_key(id.as_str()))
        .filter(|(id, packages)| {
            let made = at_wechat
                .get(id.as_str())
                .map(|wx| format!("prepay_id={}", wx.prepay_id));
            packages.len() != 1 || made.as_ref() != packages.iter().next()
        })
        .map(|(id, packages)| format!("{id} ({} prepay ids)", packages.len()))
        .collect();

    let checks = vec![
        Check::new(
            "every prepaid order settled (paid, or expired through the close)",
            settled,
            format!("within {} s", run.settle_within.as_secs()),
        ),
        Check::new(
            "every order paid in the engine was paid once at WeChat Pay, and every WeChat Pay payment paid its order",
            payment_mismatch.is_empty(),
            format!(
                "{} paid in the engine, {} paid at WeChat Pay{}",
                ours.values().filter(|status| **status == "paid").count(),
                at_wechat.values().filter(|wx| wx.payments > 0).count(),
                shown("; mismatched: ", &payment_mismatch)
            ),
        ),
        Check::new(
            "every payment notification was acknowledged by the engine",
            unacknowledged.is_empty(),
            format!("{} not acknowledged{}", unacknowledged.len(), shown(": ", &unacknowledged)),
        ),
        Check::new(
            "every abandoned order expired through the close (its WeChat Pay order CLOSED)",
            abandoned_open.is_empty(),
            format!(
                "{abandoned} abandoned; {} not expired and closed{}",
                abandoned_open.len(),
                shown(": ", &abandoned_open)
            ),
        ),
        Check::new(
            "every expired or cancelled order's WeChat Pay order is closed",
            released_open.is_empty(),
            format!("{} left open{}", released_open.len(), shown(": ", &released_open)),
        ),
        Check::new(
            "one WeChat Pay order per order: every /wechatpay answer named its one prepay_id",
            prepay_mismatch.is_empty(),
            format!(
                "{} orders prepaid, {} WeChat Pay orders{}",
                seen.prepays.len(),
                at_wechat.len(),
                shown("; mismatched: ", &prepay_mismatch)
            ),
        ),
        Check::new(
            "no order left refund_required (the suite never pays after the close)",
            stats.refund_required == 0,
            format!("refund_required {}", stats.refund_required),
        ),
    ];
    WeChatPayVerdict {
        standin: run.standin.to_owned(),
        wechatpay_orders: at_wechat.len(),
        paid: at_wechat.values().filter(|wx| wx.payments > 0).count(),
        closed: at_wechat
            .values()
            .filter(|wx| wx.trade_state == "CLOSED")
            .count(),
        notify_retries: at_wechat
            .values()
            .map(|wx| u64::from(wx.notify_attempts.saturating_sub(1)))
            .sum(),
        checks,
    }
}

/// The first [`LISTED_MAX`] items after `prefix`, and how many more.
fn shown(prefix: &str, items: &[impl AsRef<str>]) -> String {
    let more = items.len().saturating_sub(LISTED_MAX);
    let first = listed(prefix, &items[..items.len().min(LISTED_MAX)]);
    if more > 0 {
        format!("{first} and {more} more")
    } else {
        first
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{failed, order};
    use super::*;

    const RUN: WeChatPayRun<'static> = WeChatPayRun {
        standin: "http://127.0.0.1:9",
        settle_within: Duration::from_secs(62),
    };

    /// A WeChat Pay order of `id` as the stand-in shows it: paid
    /// (`payments` times, notified), closed, or open.
    fn wx(id: &str, trade_state: &str, payments: u32) -> OrderView {
        OrderView {
            out_trade_no: id.to_owned(),
            prepay_id: format!("wx{id}"),
            trade_state: trade_state.to_owned(),
            prepay_calls: 1,
            payments,
            notify_attempts: payments,
            notified: payments > 0,
            ..OrderView::default()
        }
    }

    /// One shopper per order, each `/wechatpay` answered with the order's
    /// prepay id; `abandoned` left unpaid on purpose.
    fn seen(orders: &[&str], abandoned: &[&str]) -> Snapshot {
        let mut seen = Snapshot::default();
        for id in orders {
            seen.prepays
                .entry((*id).to_owned())
                .or_default()
                .insert(format!("prepay_id=wx{id}"));
        }
        seen.abandoned = abandoned.iter().map(|id| (*id).to_owned()).collect();
        seen
    }

    fn judged(
        orders: Vec<Order>,
        seen: &Snapshot,
        ledger: Vec<OrderView>,
        refund_required: i64,
    ) -> WeChatPayVerdict {
        let stats = SaleStats {
            refund_required,
            ..SaleStats::default()
        };
        let orders = HashMap::from([("a".to_owned(), orders)]);
        let ledger = LedgerView {
            orders: ledger,
            refunds: Vec::new(),
        };
        judge_wechatpay(&RUN, true, "s_1", &stats, &orders, seen, &ledger)
    }

    #[test]
    fn paid_and_abandoned_orders_that_match_the_ledger_pass() {
        // Goal: a paid order paid once at WeChat Pay, an abandoned one
        // expired with its WeChat Pay order closed, and another sale's
        // order and another generator's WeChat Pay order ignored: PASS.
        let verdict = judged(
            vec![
                order("o_1", "s_1", "paid"),
                order("o_2", "s_1", "expired"),
                order("o_9", "s_2", "paid"),
            ],
            &seen(&["o_1", "o_2"], &["o_2"]),
            vec![
                wx("o_1", "SUCCESS", 1),
                wx("o_2", "CLOSED", 0),
                wx("o_x", "NOTPAY", 0),
            ],
            0,
        );
        assert!(failed(&verdict.checks).is_empty(), "{:?}", verdict.checks);
        assert_eq!(
            (verdict.wechatpay_orders, verdict.paid, verdict.closed),
            (2, 1, 1)
        );
    }

    #[test]
    fn each_broken_payment_promise_fails_its_own_check() {
        // Goal: a payment WeChat Pay took that never paid the order (its
        // notification unacknowledged), an abandoned order left open at
        // WeChat Pay, a second prepay id for one order and a late payment
        // each fail their check.
        let mut seen = seen(&["o_1", "o_2", "o_3"], &["o_2"]);
        seen.prepays
            .entry("o_3".to_owned())
            .or_default()
            .insert("prepay_id=wxother".to_owned());
        let mut unacknowledged = wx("o_1", "SUCCESS", 1);
        unacknowledged.notified = false;
        let verdict = judged(
            vec![
                order("o_1", "s_1", "pending_payment"),
                order("o_2", "s_1", "expired"),
                order("o_3", "s_1", "paid"),
            ],
            &seen,
            vec![
                unacknowledged,
                wx("o_2", "NOTPAY", 0),
                wx("o_3", "SUCCESS", 1),
            ],
            1,
        );
        assert_eq!(
            failed(&verdict.checks),
            vec![
                "every order paid in the engine was paid once at WeChat Pay, and every WeChat Pay payment paid its order",
                "every payment notification was acknowledged by the engine",
                "every abandoned order expired through the close (its WeChat Pay order CLOSED)",
                "every expired or cancelled order's WeChat Pay order is closed",
                "one WeChat Pay order per order: every /wechatpay answer named its one prepay_id",
                "no order left refund_required (the suite never pays after the close)",
            ]
        );
    }

    #[test]
    fn a_payment_taken_twice_or_paid_without_wechat_pay_fails() {
        // Goal: "paid once" means once: two payments at WeChat Pay for one
        // order, or an engine payment WeChat Pay never took, both fail.
        let verdict = judged(
            vec![order("o_1", "s_1", "paid"), order("o_2", "s_1", "paid")],
            &seen(&["o_1", "o_2"], &[]),
            vec![wx("o_1", "SUCCESS", 2), wx("o_2", "NOTPAY", 0)],
            0,
        );
        assert_eq!(
            failed(&verdict.checks),
            vec!["every order paid in the engine was paid once at WeChat Pay, and every WeChat Pay payment paid its order"]
        );
    }

    #[test]
    fn unsettled_payments_fail() {
        // Goal: prepaid orders still pending when the wait ran out fail
        // the run (an abandoned order the close never expired, say).
        let orders = HashMap::new();
        let verdict = judge_wechatpay(
            &RUN,
            false,
            "s_1",
            &SaleStats::default(),
            &orders,
            &Snapshot::default(),
            &LedgerView::default(),
        );
        assert_eq!(
            failed(&verdict.checks),
            vec!["every prepaid order settled (paid, or expired through the close)"]
        );
    }
}
