//! Reconciliation of one sale: recomputes every count the engine keeps
//! (stock, units by order state, each shopper's units, the payment deadline
//! index, the order service's queue) from the raw records the store holds,
//! and lists every place where the two disagree. Both stores hand over the
//! same [`SaleRecords`], so one set of rules audits both.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Order, OrderId, OrderStatus, RefundKind, SaleView, ShopperId};

/// Everything the store holds about one sale, read in one atomic step.
#[derive(Debug, Clone)]
pub struct SaleRecords {
    /// The sale and the counters the engine maintains as it goes.
    pub view: SaleView,
    /// The per-shopper counter: units each shopper holds (reserved or paid).
    pub held: BTreeMap<ShopperId, i64>,
    /// Every order id the shopper index lists for this sale.
    pub indexed: BTreeSet<OrderId>,
    /// The order records found (by their ids), each with whether the order
    /// service has taken it from the stream.
    pub orders: Vec<RecordedOrder>,
    /// The payment deadline index's entries, each the ids it names: the
    /// orders of one reserve call (they share their deadline), or one
    /// held order. A payment or cancel takes out only an entry of the
    /// order alone; an order of a larger entry stays in it until it comes
    /// due (see `lua/expire_orders.lua`).
    pub deadlines: Vec<Vec<OrderId>>,
    /// Order ids of the stream entries the order service has not yet
    /// acknowledged.
    pub stream: Vec<OrderId>,
}

#[derive(Debug, Clone)]
pub struct RecordedOrder {
    pub order: Order,
    /// The order service has accepted it.
    pub queued: bool,
}

/// Units by order state, summed over the order records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecountedUnits {
    pub orders: i64,
    pub reserved: i64,
    pub paid: i64,
    /// Units of cancelled and expired orders, and of those among them that
    /// were paid late (`refund_required`): all went back on sale.
    pub released: i64,
    /// Units paid late: `refund_required` orders, and those refunded since
    /// (refund `late`).
    pub refund_required: i64,
    /// Units of paid orders the merchant refunds (refund `kept` or
    /// `restocked`, refunding or refunded).
    pub refunded: i64,
    /// Of `refunded`, the units put back on sale.
    pub restocked: i64,
    pub queued: i64,
    /// Orders the order service has not yet taken from the stream.
    pub awaiting_order_service: i64,
}

/// One disagreement between a count and the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Which rule: `stock_balance`, `remaining_range`, `reserved_units`,
    /// `paid_units`, `released_units`, `refund_required_units`,
    /// `refunded_units`, `restocked_units`, `refund_unknown`,
    /// `queued_units`, `shopper_units`, `per_user_limit`, `buyers_count`,
    /// `order_missing`, `order_unindexed`, `deadline_missing`,
    /// `deadline_stale`, `reservation_lost`, `stream_unknown_order`.
    pub check: &'static str,
    pub detail: String,
}

/// What an audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub recounted: RecountedUnits,
    pub differences: Vec<Difference>,
}

impl SaleRecords {
    /// Recomputes the sale's counts from its records and reports every
    /// difference from what the engine keeps.
    pub fn audit(&self) -> Audit {
        let mut differences = Vec::new();
        let mut differ = |check: &'static str, detail: String| {
            differences.push(Difference { check, detail });
        };
        let stats = &self.view.stats;
        let total = self.view.sale.stock_total;
        if stats.remaining + stats.reserved + stats.paid + stats.refunded - stats.restocked != total
        {
            differ(
                "stock_balance",
                format!(
                    "remaining {} + reserved {} + paid {} + refunded {} - restocked {} \
                     != stock_total {total}",
                    stats.remaining, stats.reserved, stats.paid, stats.refunded, stats.restocked
                ),
            );
        }
        if !(0..=total).contains(&stats.remaining) {
            differ(
                "remaining_range",
                format!("remaining {} is outside 0..={total}", stats.remaining),
            );
        }

        // An order alone in its entry must be pending; one of a call's
        // entry may be settled already, its entry not yet due.
        let alone: BTreeSet<&OrderId> = self
            .deadlines
            .iter()
            .filter_map(|entry| match entry.as_slice() {
                [id] => Some(id),
                _ => None,
            })
            .collect();
        let mut in_deadlines: BTreeMap<&OrderId, usize> = BTreeMap::new();
        for id in self.deadlines.iter().flatten() {
            *in_deadlines.entry(id).or_default() += 1;
        }
        let mut units = RecountedUnits::default();
        let mut held: BTreeMap<&ShopperId, i64> = BTreeMap::new();
        for recorded in &self.orders {
            let order = &recorded.order;
            units.orders += 1;
            let mut holds = false;
            match (order.status, order.refund) {
                (OrderStatus::PendingPayment, _) => {
                    units.reserved += order.quantity;
                    holds = true;
                }
                (OrderStatus::Paid, _) => {
                    units.paid += order.quantity;
                    holds = true;
                }
                (OrderStatus::Cancelled | OrderStatus::Expired, _) => {
                    units.released += order.quantity;
                }
                (OrderStatus::RefundRequired, _)
                | (OrderStatus::Refunding | OrderStatus::Refunded, Some(RefundKind::Late)) => {
                    units.released += order.quantity;
                    units.refund_required += order.quantity;
                }
                (OrderStatus::Refunding | OrderStatus::Refunded, Some(RefundKind::Kept)) => {
                    units.refunded += order.quantity;
                    holds = true;
                }
                (OrderStatus::Refunding | OrderStatus::Refunded, Some(RefundKind::Restocked)) => {
                    units.refunded += order.quantity;
                    units.restocked += order.quantity;
                }
                (OrderStatus::Refunding | OrderStatus::Refunded, None) => differ(
                    "refund_unknown",
                    format!(
                        "order {} is {} but does not say where its units went",
                        order.id,
                        order.status.as_str()
                    ),
                ),
            }
            if holds {
                *held.entry(&order.shopper_id).or_default() += order.quantity;
            }
            if recorded.queued {
                units.queued += order.quantity;
            } else {
                units.awaiting_order_service += 1;
            }
            if !self.indexed.contains(&order.id) {
                differ(
                    "order_unindexed",
                    format!("order {} is not in its shopper's index", order.id),
                );
            }
            let pending = order.status == OrderStatus::PendingPayment;
            match (pending, in_deadlines.contains_key(&order.id)) {
                (true, false) => differ(
                    "deadline_missing",
                    format!("unpaid order {} has no payment deadline", order.id),
                ),
                (false, true) if alone.contains(&order.id) => differ(
                    "deadline_stale",
                    format!(
                        "order {} is {} but still has a payment deadline",
                        order.id,
                        order.status.as_str()
                    ),
                ),
                _ => {}
            }
        }
        for (check, name, kept, found) in [
            ("reserved_units", "reserved", stats.reserved, units.reserved),
            ("paid_units", "paid", stats.paid, units.paid),
            (
                "released_units",
                "cancelled + expired",
                stats.cancelled + stats.expired,
                units.released,
            ),
            (
                "refund_required_units",
                "refund_required",
                stats.refund_required,
                units.refund_required,
            ),
            ("refunded_units", "refunded", stats.refunded, units.refunded),
            (
                "restocked_units",
                "restocked",
                stats.restocked,
                units.restocked,
            ),
            ("queued_units", "queued", stats.queued, units.queued),
        ] {
            if kept != found {
                differ(
                    check,
                    format!("stats.{name} is {kept}, the orders add up to {found}"),
                );
            }
        }

        let limit = self.view.sale.per_user_limit;
        let shoppers: BTreeSet<&ShopperId> = held.keys().copied().chain(self.held.keys()).collect();
        for shopper in shoppers {
            let kept = self.held.get(shopper).copied().unwrap_or(0);
            let found = held.get(shopper).copied().unwrap_or(0);
            if kept != found {
                differ(
                    "shopper_units",
                    format!("shopper {shopper} is counted {kept} units, holds {found}"),
                );
            }
            if found > limit {
                differ(
                    "per_user_limit",
                    format!("shopper {shopper} holds {found} units, the limit is {limit}"),
                );
            }
        }
        let holding = held.values().filter(|&&units| units > 0).count() as i64;
        if stats.buyers != holding {
            differ(
                "buyers_count",
                format!(
                    "stats.buyers is {}, {holding} shoppers hold units",
                    stats.buyers
                ),
            );
        }

        let recorded: BTreeSet<&OrderId> = self.orders.iter().map(|r| &r.order.id).collect();
        for id in self.indexed.iter().filter(|id| !recorded.contains(id)) {
            differ(
                "order_missing",
                format!("order {id} is indexed but has no record"),
            );
        }
        for (id, entries) in &in_deadlines {
            if !recorded.contains(id) {
                differ(
                    "deadline_stale",
                    format!("the deadline index names order {id}, which has no record"),
                );
            }
            if *entries > 1 {
                differ(
                    "deadline_stale",
                    format!("order {id} is named by {entries} payment deadline entries"),
                );
            }
        }
        let streamed: BTreeSet<&OrderId> = self.stream.iter().collect();
        for id in self.stream.iter().filter(|id| !recorded.contains(id)) {
            differ(
                "stream_unknown_order",
                format!("a stream entry names order {id}, which has no record"),
            );
        }
        for recorded in self
            .orders
            .iter()
            .filter(|r| !r.queued && !streamed.contains(&r.order.id))
        {
            differ(
                "reservation_lost",
                format!(
                    "order {} was never taken by the order service and is not on the stream",
                    recorded.order.id
                ),
            );
        }
        Audit {
            recounted: units,
            differences,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Sale, SaleId, SaleState, SaleStats};

    fn records(orders: &[(OrderStatus, i64, &str, bool)]) -> SaleRecords {
        let sale = Sale {
            id: SaleId::generate(),
            sku: "LC-POUCH-RED".into(),
            title: "Le Pliage pouch, red".into(),
            price_cents: 100,
            currency: "CNY".into(),
            stock_total: 10,
            per_user_limit: 2,
            starts_at: 0,
            ends_at: 1,
            payment_timeout_secs: 900,
            require_purchase_token: false,
            admission: Default::default(),
            state: SaleState::Scheduled,
            created_at: 0,
        };
        let id = sale.id.clone();
        let mut records = SaleRecords {
            view: SaleView {
                stats: SaleStats {
                    stock_total: 10,
                    remaining: 10,
                    ..SaleStats::default()
                },
                sale,
                now: 0,
                version: 1,
            },
            held: BTreeMap::new(),
            indexed: BTreeSet::new(),
            orders: Vec::new(),
            deadlines: Vec::new(),
            stream: Vec::new(),
        };
        for (status, quantity, shopper, queued) in orders {
            let mut order = order(&id, *status, *quantity, shopper);
            if matches!(status, OrderStatus::Refunding | OrderStatus::Refunded) {
                order.refund = Some(RefundKind::Kept);
            }
            let stats = &mut records.view.stats;
            match status {
                OrderStatus::PendingPayment => {
                    stats.reserved += quantity;
                    records.deadlines.push(vec![order.id.clone()]);
                }
                OrderStatus::Paid => stats.paid += quantity,
                OrderStatus::Cancelled => stats.cancelled += quantity,
                OrderStatus::Expired => stats.expired += quantity,
                OrderStatus::RefundRequired => {
                    stats.expired += quantity;
                    stats.refund_required += quantity;
                }
                // Refunded by the merchant, units kept off sale.
                OrderStatus::Refunding | OrderStatus::Refunded => {
                    stats.refunded += quantity;
                }
            }
            if matches!(
                status,
                OrderStatus::PendingPayment
                    | OrderStatus::Paid
                    | OrderStatus::Refunding
                    | OrderStatus::Refunded
            ) {
                stats.remaining -= quantity;
                *records.held.entry(order.shopper_id.clone()).or_default() += quantity;
            }
            stats.buyers = records.held.len() as i64;
            if *queued {
                stats.queued += quantity;
            } else {
                records.stream.push(order.id.clone());
            }
            records.indexed.insert(order.id.clone());
            records.orders.push(RecordedOrder {
                order,
                queued: *queued,
            });
        }
        records
    }

    fn order(sale: &SaleId, status: OrderStatus, quantity: i64, shopper: &str) -> Order {
        Order {
            id: OrderId::generate(sale),
            sale_id: sale.clone(),
            shopper_id: ShopperId::parse(shopper).expect("user id"),
            quantity,
            amount_cents: quantity * 100,
            currency: "CNY".into(),
            status,
            created_at: 0,
            expires_at: 1,
            paid_at: None,
            prepay_id: None,
            transaction_id: None,
            refund: None,
            refund_settled_by_hand_at: None,
        }
    }

    fn checks(records: &SaleRecords) -> Vec<&'static str> {
        records
            .audit()
            .differences
            .iter()
            .map(|d| d.check)
            .collect()
    }

    fn consistent() -> SaleRecords {
        records(&[
            (OrderStatus::PendingPayment, 2, "ann", false),
            (OrderStatus::Paid, 1, "bob", true),
            (OrderStatus::Cancelled, 1, "bob", true),
            (OrderStatus::RefundRequired, 1, "cai", true),
            (OrderStatus::Refunded, 1, "eve", true),
        ])
    }

    #[test]
    fn consistent_records_have_no_differences() {
        let records = consistent();
        let audit = records.audit();
        assert_eq!(audit.differences, vec![]);
        assert_eq!(
            audit.recounted,
            RecountedUnits {
                orders: 5,
                reserved: 2,
                paid: 1,
                released: 2,
                refund_required: 1,
                refunded: 1,
                restocked: 0,
                queued: 4,
                awaiting_order_service: 1,
            }
        );
    }

    #[test]
    fn refunds_count_where_their_units_went() {
        // A refund restocked: its units are back in `remaining` and off
        // the shopper's count.
        let mut records = consistent();
        let refunded = records.orders.len() - 1;
        records.orders[refunded].order.refund = Some(RefundKind::Restocked);
        let eve = ShopperId::parse("eve").expect("id");
        records.held.remove(&eve);
        records.view.stats.buyers -= 1;
        records.view.stats.remaining += 1;
        assert_eq!(checks(&records), ["stock_balance", "restocked_units"]);
        records.view.stats.restocked += 1;
        assert_eq!(checks(&records), Vec::<&str>::new());
        // A late payment refunded counts as paid late, nothing more.
        records.orders[refunded].order.refund = Some(RefundKind::Late);
        records.view.stats.refunded -= 1;
        records.view.stats.restocked -= 1;
        records.view.stats.refund_required += 1;
        records.view.stats.expired += 1;
        assert_eq!(checks(&records), Vec::<&str>::new());
        records.orders[refunded].order.refund = None;
        assert_eq!(
            checks(&records),
            ["refund_unknown", "released_units", "refund_required_units"]
        );
    }

    #[test]
    fn a_count_off_by_one_is_reported() {
        let mut records = consistent();
        records.view.stats.reserved += 1;
        assert_eq!(checks(&records), ["stock_balance", "reserved_units"]);
    }

    #[test]
    fn oversold_stock_is_reported() {
        let mut records = consistent();
        records.view.stats.remaining = -1;
        assert_eq!(checks(&records), ["stock_balance", "remaining_range"]);
    }

    #[test]
    fn shopper_counts_and_limits_are_checked() {
        let mut records = consistent();
        records.held.insert(ShopperId::parse("dan").expect("id"), 1);
        assert_eq!(checks(&records), ["shopper_units"]);
        let mut records = consistent();
        records.view.stats.buyers += 1;
        assert_eq!(checks(&records), ["buyers_count"]);
        let mut records = records_over_limit();
        records.view.sale.per_user_limit = 1;
        assert_eq!(checks(&records), ["per_user_limit"]);
    }

    fn records_over_limit() -> SaleRecords {
        records(&[(OrderStatus::PendingPayment, 2, "ann", true)])
    }

    #[test]
    fn a_reservation_neither_queued_nor_streamed_is_lost() {
        let mut records = consistent();
        records.stream.clear();
        assert_eq!(checks(&records), ["reservation_lost"]);
    }

    #[test]
    fn index_and_deadline_gaps_are_reported() {
        let mut records = consistent();
        let pending = records.orders[0].order.id.clone();
        records.deadlines.retain(|entry| !entry.contains(&pending));
        records.indexed.remove(&pending);
        assert_eq!(checks(&records), ["order_unindexed", "deadline_missing"]);

        let mut records = consistent();
        let ghost = OrderId::generate(&records.view.sale.id);
        records.indexed.insert(ghost.clone());
        records.deadlines.push(vec![ghost.clone()]);
        records.stream.push(ghost);
        assert_eq!(
            checks(&records),
            ["order_missing", "deadline_stale", "stream_unknown_order"]
        );
    }

    #[test]
    fn a_settled_order_may_wait_in_its_calls_deadline_entry_not_alone() {
        // The pending and the paid order of one reserve call share an
        // entry until it comes due: no difference.
        let mut records = consistent();
        let pending = records.orders[0].order.id.clone();
        let paid = records.orders[1].order.id.clone();
        records.deadlines = vec![vec![pending.clone(), paid.clone()]];
        assert_eq!(checks(&records), Vec::<&str>::new());
        // Alone in an entry, a paid order should have left the index.
        records.deadlines = vec![vec![pending.clone()], vec![paid]];
        assert_eq!(checks(&records), ["deadline_stale"]);
        // A call's entry naming an order with no record is stale too, and
        // so is a second entry naming an order.
        let ghost = OrderId::generate(&records.view.sale.id);
        records.deadlines = vec![vec![pending.clone(), ghost]];
        assert_eq!(checks(&records), ["deadline_stale"]);
        records.deadlines = vec![vec![pending.clone()], vec![pending]];
        assert_eq!(checks(&records), ["deadline_stale"]);
    }
}
