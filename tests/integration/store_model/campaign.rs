//! The model test's campaign: proptest draws a campaign (two rounds of one
//! to three items, small stock, a per-item limit, a limit per round across
//! items and maybe one in total) and a sequence of reservations (alone,
//! maybe under an `Idempotency-Key`, or 2 to 4 of one item in one reserve
//! call), cancels, payments, merchant's refunds (with or without restock),
//! merchant's changes (an item's stock in every round not ended, a round
//! ended now) and expiry steps across its round × item sales; each runs on
//! the store and on [`CampaignModel`], written from the README's
//! "Campaigns" (a key's replay first; then an ended sale, an item's own
//! limit, the round's, the campaign's, then stock; a cancel, an expiry or
//! a refund with restock gives the units back to both counts; a payment,
//! or a refund without restock, keeps them; a stock below the units off
//! sale in any round refuses the whole change; an ended round takes no
//! reservation nor restock).
//!
//! Goal: both stores (embedded, and Redis with `lua/`) keep the limits
//! across a campaign's items exactly as the model does, whatever the order
//! of the operations. After every step the test compares every sale's
//! stats and every shopper's round and campaign counts (`campaign_holds`)
//! with the model's, and checks from the store's answers alone that no
//! shopper holds more than either limit and every item is exact.
//!
//! Time: both rounds are live for the whole case unless the case ends one
//! (their windows overlap, which only this test's directly built campaign
//! may: the store keys a shopper's counts by the round's number, never by
//! its window; so the merchant's changes are built as the store's step
//! directly, as `Campaign::patched` would, which refuses overlapping
//! rounds), and the payment timeout is 0, so every unpaid order is due at
//! once and a payment before the expiry step is still accepted. No answer
//! depends on the clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flashsale::domain::{
    system_now, Campaign, CampaignChange, CampaignId, CampaignLimits, Item, Order, OrderId,
    OrderStatus, Payment, PaymentOutcome, Quantity, RefundKind, Rejection, ReserveRequest, Round,
    Sale, SaleChange, SaleStats, SaleStep, SaleView, ShopperId,
};
use flashsale::store::{FollowUps, Store};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use super::{
    add, answer, broken, conclude, count, outcome, runner, shopper_id, Answer, DeadlineIndex,
    Refusal, Tally, Target, BOUNDS, HOUR_MS, SHOPPERS,
};
use crate::support::Backend;

/// Cases on the embedded store.
const CASES_EMBEDDED: u32 = 2_000;
/// Cases on Redis (every step reads every sale and every shopper's counts).
const CASES_REDIS: u32 = 200;
/// Operations per case at most.
const STEPS_MAX: usize = 30;
/// Rounds of every case's campaign.
const ROUNDS: usize = 2;
/// Orders one expiry step looks at (in whole reserve calls).
const EXPIRE_LIMIT: usize = 8;

/// Idempotency keys a shopper draws from (a reservation may have none).
const KEYS: u8 = 2;

/// Outcomes every full run reaches.
const REACHED: [&str; 20] = [
    "reserve: reserved",
    "reserve: replayed",
    "reserve: Rejected(IdempotencyMismatch)",
    "reserve: Rejected(Ended)",
    "set_stock: changed",
    "set_stock: Conflict",
    "end_round: ended",
    "refund: Conflict",
    "batch: reserved",
    "batch: Rejected(RoundLimitExceeded)",
    "batch: Rejected(CampaignLimitExceeded)",
    "reserve: Rejected(LimitExceeded)",
    "reserve: Rejected(RoundLimitExceeded)",
    "reserve: Rejected(CampaignLimitExceeded)",
    "reserve: Rejected(SoldOut)",
    "cancel: cancelled",
    "pay: paid",
    "refund: kept",
    "refund: restocked",
    "expire: expired some",
];

/// The campaign a case runs on.
#[derive(Debug, Clone)]
struct Setup {
    items: usize,
    stock: i64,
    per_item: i64,
    per_round: i64,
    total: Option<i64>,
}

#[derive(Debug, Clone)]
enum Op {
    /// A shopper asks for units of one round × item, maybe under an
    /// idempotency key.
    Reserve {
        shopper: usize,
        round: usize,
        item: Index,
        quantity: i64,
        key: Option<u8>,
    },
    /// Shoppers ask for units of one round × item in one reserve call.
    ReserveBatch {
        round: usize,
        item: Index,
        /// (shopper, quantity) of each request, in order.
        requests: Vec<(usize, i64)>,
    },
    /// The owner cancels one of the orders made so far.
    Cancel { order: Index },
    /// A simulated payment of one of the orders made so far.
    Pay { order: Index },
    /// The merchant refunds one of the orders made so far (simulated
    /// payments: refunded at once), putting its units back on sale or not.
    Refund { order: Index, restock: bool },
    /// The order service's expiry step on one round × item.
    Expire { round: usize, item: Index },
    /// The merchant sets an item's stock in every round not ended.
    SetStock { item: Index, stock: i64 },
    /// The merchant ends a round now.
    EndRound { round: usize },
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        1..=3usize,
        1..=4i64,
        1..=2i64,
        1..=3i64,
        proptest::option::of(1..=4i64),
    )
        .prop_map(|(items, stock, per_item, per_round, total)| Setup {
            items,
            stock,
            per_item,
            per_round,
            total,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0..SHOPPERS.len(),
            0..ROUNDS,
            any::<Index>(),
            1..=2i64,
            proptest::option::of(0..KEYS)
        )
            .prop_map(|(shopper, round, item, quantity, key)| Op::Reserve {
                shopper,
                round,
                item,
                quantity,
                key,
            }),
        2 => (
            0..ROUNDS,
            any::<Index>(),
            proptest::collection::vec((0..SHOPPERS.len(), 1..=2i64), 2..=4)
        )
            .prop_map(|(round, item, requests)| Op::ReserveBatch {
                round,
                item,
                requests
            }),
        2 => any::<Index>().prop_map(|order| Op::Cancel { order }),
        1 => any::<Index>().prop_map(|order| Op::Pay { order }),
        2 => (any::<Index>(), any::<bool>())
            .prop_map(|(order, restock)| Op::Refund { order, restock }),
        1 => (0..ROUNDS, any::<Index>()).prop_map(|(round, item)| Op::Expire { round, item }),
        1 => (any::<Index>(), 1..=5i64).prop_map(|(item, stock)| Op::SetStock { item, stock }),
        1 => (0..ROUNDS).prop_map(|round| Op::EndRound { round }),
    ]
}

/// The campaign of `setup`, built directly (see the module's "Time").
fn campaign_of(setup: &Setup) -> Campaign {
    let now = system_now();
    Campaign {
        id: CampaignId::generate(),
        title: "model".into(),
        currency: "CNY".into(),
        rounds: (0..ROUNDS as u32)
            .map(|number| Round {
                number,
                starts_at: now - HOUR_MS,
                ends_at: now + HOUR_MS,
            })
            .collect(),
        items: (0..setup.items as u32)
            .map(|number| Item {
                number,
                sku: format!("SKU-{number}"),
                title: format!("item {number}"),
                price_cents: 990 + i64::from(number),
                original_price_cents: 1990,
                stock_by_round: vec![setup.stock; ROUNDS],
                per_user_limit: setup.per_item,
            })
            .collect(),
        limits: CampaignLimits {
            per_round: setup.per_round,
            total: setup.total,
        },
        payment_timeout_secs: 0,
        require_purchase_token: false,
        remind_before_secs: None,
        created_at: now,
        rounds_numbered: ROUNDS as u32,
        items_numbered: setup.items as u32,
    }
}

/// One round × item sale as the model keeps it.
#[derive(Debug, Clone)]
struct SaleModel {
    sale: Sale,
    round: usize,
    /// The merchant ended the sale's round.
    ended: bool,
    stats: SaleStats,
    /// Shopper -> units held (reserved or paid); absent when none.
    held: BTreeMap<ShopperId, i64>,
    /// Shopper -> orders of the sale they cancelled, and let expire (the
    /// stores bound both per sale).
    cancels: BTreeMap<ShopperId, i64>,
    expiries: BTreeMap<ShopperId, i64>,
    deadlines: DeadlineIndex,
}

/// A campaign as the README describes it.
#[derive(Debug, Clone)]
struct CampaignModel {
    limits: CampaignLimits,
    /// By round, then item: `round * items + item`.
    sales: Vec<SaleModel>,
    /// Every order with its sale's index, oldest first.
    orders: Vec<(Order, usize)>,
    /// (sale, shopper, idempotency key) -> (the order made under it, as
    /// an index of `orders`; the quantity asked).
    keys: BTreeMap<(usize, ShopperId, String), (usize, i64)>,
}

impl CampaignModel {
    fn new(campaign: &Campaign) -> Self {
        let items = campaign.items.len();
        let sales = campaign
            .sales()
            .into_iter()
            .enumerate()
            .map(|(at, sale)| SaleModel {
                stats: SaleStats {
                    stock_total: sale.stock_total,
                    remaining: sale.stock_total,
                    ..SaleStats::default()
                },
                sale,
                round: at / items,
                ended: false,
                held: BTreeMap::new(),
                cancels: BTreeMap::new(),
                expiries: BTreeMap::new(),
                deadlines: DeadlineIndex::default(),
            })
            .collect();
        Self {
            limits: campaign.limits,
            sales,
            orders: Vec::new(),
            keys: BTreeMap::new(),
        }
    }

    /// A new order's request of shopper `shopper` for `quantity` units of
    /// sale `at`, under the idempotency key `key`.
    fn request(
        &self,
        at: usize,
        shopper: usize,
        quantity: i64,
        key: Option<u8>,
    ) -> Result<ReserveRequest, TestCaseError> {
        let sale_id = &self.sales[at].sale.id;
        Ok(ReserveRequest {
            sale_id: sale_id.clone(),
            shopper_id: shopper_id(SHOPPERS[shopper]),
            quantity: Quantity::parse(quantity).map_err(broken)?,
            order_id: OrderId::generate(sale_id),
            idempotency_key: key.map(|key| format!("key-{key}")),
            purchase_token: None,
        })
    }

    /// Units `shopper` holds in `round` and in the whole campaign.
    fn holds(&self, shopper: &ShopperId, round: usize) -> (i64, i64) {
        let held = |sale: &SaleModel| sale.held.get(shopper).copied().unwrap_or(0);
        let in_round = self
            .sales
            .iter()
            .filter(|sale| sale.round == round)
            .map(held)
            .sum();
        (in_round, self.sales.iter().map(held).sum())
    }

    /// The reservation's refusal, or the order it makes (stamped `now`)
    /// or replays (as it is now: `true`).
    fn reserve(&mut self, at: usize, request: &ReserveRequest, now: i64) -> Answer<(Order, bool)> {
        let shopper = &request.shopper_id;
        let quantity = request.quantity.get();
        let key = request
            .idempotency_key
            .clone()
            .map(|key| (at, shopper.clone(), key));
        if let Some(&(made, asked)) = key.as_ref().and_then(|key| self.keys.get(key)) {
            if asked != quantity {
                return Err(Refusal::Rejected(Rejection::IdempotencyMismatch));
            }
            return Ok((self.orders[made].0.clone(), true));
        }
        let (in_round, in_total) = self.holds(shopper, self.sales[at].round);
        let sale = &self.sales[at];
        let held = sale.held.get(shopper).copied().unwrap_or(0);
        let counted = |counts: &BTreeMap<ShopperId, i64>| counts.get(shopper).copied().unwrap_or(0);
        let refused = if sale.ended {
            Some(Rejection::Ended)
        } else if held + quantity > sale.sale.per_user_limit {
            Some(Rejection::LimitExceeded)
        } else if counted(&sale.cancels) >= BOUNDS.cancels
            || counted(&sale.expiries) >= BOUNDS.expiries
        {
            Some(Rejection::UnpaidLimitExceeded)
        } else if in_round + quantity > self.limits.per_round {
            Some(Rejection::RoundLimitExceeded)
        } else if self
            .limits
            .total
            .is_some_and(|total| in_total + quantity > total)
        {
            Some(Rejection::CampaignLimitExceeded)
        } else if sale.stats.remaining < quantity {
            Some(Rejection::SoldOut)
        } else {
            None
        };
        if let Some(rejection) = refused {
            return Err(Refusal::Rejected(rejection));
        }
        let sale = &mut self.sales[at];
        sale.stats.remaining -= quantity;
        sale.stats.reserved += quantity;
        sale.held.insert(shopper.clone(), held + quantity);
        sale.stats.buyers = sale.held.len() as i64;
        let order = Order {
            id: request.order_id.clone(),
            sale_id: sale.sale.id.clone(),
            shopper_id: shopper.clone(),
            quantity,
            amount_cents: quantity * sale.sale.price_cents,
            currency: sale.sale.currency.as_str().into(),
            status: OrderStatus::PendingPayment,
            created_at: now,
            expires_at: now,
            paid_at: None,
            prepay_id: None,
            transaction_id: None,
            refund: None,
            refund_settled_by_hand_at: None,
        };
        if let Some(key) = key {
            self.keys.insert(key, (self.orders.len(), quantity));
        }
        self.orders.push((order.clone(), at));
        Ok((order, false))
    }

    /// An unpaid order gives its units back to the item and to the
    /// shopper's counts.
    fn release(&mut self, at: usize, status: OrderStatus) -> Order {
        let (order, sale) = &mut self.orders[at];
        order.status = status;
        let order = order.clone();
        let sale = &mut self.sales[*sale];
        sale.stats.remaining += order.quantity;
        sale.stats.reserved -= order.quantity;
        if status == OrderStatus::Cancelled {
            sale.stats.cancelled += order.quantity;
        } else {
            sale.stats.expired += order.quantity;
            *sale.expiries.entry(order.shopper_id.clone()).or_default() += 1;
        }
        if let Some(held) = sale.held.get_mut(&order.shopper_id) {
            *held -= order.quantity;
            if *held <= 0 {
                sale.held.remove(&order.shopper_id);
            }
        }
        sale.stats.buyers = sale.held.len() as i64;
        sale.deadlines.settled(&order);
        order
    }

    fn cancel(&mut self, at: usize) -> Answer<Order> {
        let (order, sale) = &self.orders[at];
        if order.status != OrderStatus::PendingPayment {
            return Err(Refusal::Conflict);
        }
        let cancels = &mut self.sales[*sale].cancels;
        let cancelled = cancels.entry(order.shopper_id.clone()).or_default();
        if *cancelled >= BOUNDS.cancels {
            return Err(Refusal::Conflict);
        }
        *cancelled += 1;
        Ok(self.release(at, OrderStatus::Cancelled))
    }

    /// The payment's outcome, by name (the store stamps the time).
    fn pay(&mut self, at: usize) -> &'static str {
        let (order, sale) = &mut self.orders[at];
        let stats = &mut self.sales[*sale].stats;
        match order.status {
            OrderStatus::PendingPayment => {
                order.status = OrderStatus::Paid;
                stats.reserved -= order.quantity;
                stats.paid += order.quantity;
                self.sales[*sale].deadlines.settled(order);
                "paid"
            }
            OrderStatus::Cancelled | OrderStatus::Expired => {
                order.status = OrderStatus::RefundRequired;
                stats.refund_required += order.quantity;
                "refund_required"
            }
            _ => "unchanged",
        }
    }

    /// The merchant's refund of a paid order (both rounds are live for the
    /// whole case, so a restock is always allowed): its units leave `paid`
    /// for `refunded`, and with restock go back on sale and off the
    /// shopper's counts (the campaign's derive from them).
    fn refund(&mut self, at: usize, restock: bool) -> Answer<&'static str> {
        let (order, sale) = &mut self.orders[at];
        if order.status != OrderStatus::Paid || (restock && self.sales[*sale].ended) {
            return Err(Refusal::Conflict);
        }
        order.status = OrderStatus::Refunded;
        let quantity = order.quantity;
        let shopper = order.shopper_id.clone();
        let sale = &mut self.sales[*sale];
        sale.stats.paid -= quantity;
        sale.stats.refunded += quantity;
        if !restock {
            return Ok("kept");
        }
        sale.stats.remaining += quantity;
        sale.stats.restocked += quantity;
        if let Some(held) = sale.held.get_mut(&shopper) {
            *held -= quantity;
            if *held <= 0 {
                sale.held.remove(&shopper);
            }
        }
        sale.stats.buyers = sale.held.len() as i64;
        Ok("restocked")
    }

    /// The merchant's stock of `item` in every round not ended: refused
    /// whole when below the units off sale (reserved, paid, or refunded
    /// without restock) in any of them.
    fn set_stock(&mut self, item: usize, items: usize, stock: i64) -> Answer<&'static str> {
        let open = |sale: &&mut SaleModel| !sale.ended;
        let mut touched: Vec<&mut SaleModel> = self
            .sales
            .iter_mut()
            .skip(item)
            .step_by(items)
            .filter(open)
            .collect();
        if touched.iter().any(|sale| stock < sale.stats.taken()) {
            return Err(Refusal::Conflict);
        }
        for sale in &mut touched {
            sale.stats.stock_total = stock;
            sale.stats.remaining = stock - sale.stats.taken();
        }
        Ok("changed")
    }

    /// The expiry step on sale `sale` (every order is due: the payment
    /// timeout is 0): the unpaid orders of its deadline entries, taken whole
    /// until `limit` orders were looked at.
    fn expire(&mut self, sale: usize, limit: usize) -> Vec<OrderId> {
        let mut expired = Vec::new();
        for id in self.sales[sale].deadlines.take_due(i64::MAX, limit) {
            let at = self.orders.iter().position(|(order, _)| order.id == id);
            if let Some(at) =
                at.filter(|at| self.orders[*at].0.status == OrderStatus::PendingPayment)
            {
                expired.push(self.release(at, OrderStatus::Expired).id);
            }
        }
        expired
    }
}

fn payment_name(outcome: &PaymentOutcome) -> &'static str {
    match outcome {
        PaymentOutcome::Paid(_) => "paid",
        PaymentOutcome::Unchanged(_) => "unchanged",
        PaymentOutcome::RefundRequired(_) => "refund_required",
        PaymentOutcome::AmountMismatch(_) => "amount_mismatch",
    }
}

/// `what`'s answer from the store must be the model's.
fn same<T: PartialEq + std::fmt::Debug>(
    what: &Op,
    store: &T,
    model: &T,
) -> Result<(), TestCaseError> {
    if store == model {
        Ok(())
    } else {
        Err(broken(format!(
            "{what:?}: the store answered {store:?}, the model {model:?}"
        )))
    }
}

async fn apply(
    store: &dyn Store,
    campaign_id: &CampaignId,
    model: &mut CampaignModel,
    items: usize,
    op: &Op,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    match op {
        Op::Reserve {
            shopper,
            round,
            item,
            quantity,
            key,
        } => {
            let at = round * items + item.index(items);
            let request = model.request(at, *shopper, *quantity, *key)?;
            let actual = answer(store.reserve(&request).await.map(|won| {
                let mut order = won.order;
                if won.replayed {
                    // What the model does not keep of an order since paid
                    // (its status it keeps).
                    order.paid_at = None;
                    order.transaction_id = None;
                    order.refund = None;
                }
                (order, won.replayed)
            }));
            count(
                tally,
                outcome("reserve", &actual, |(_, replayed)| {
                    if *replayed {
                        "replayed"
                    } else {
                        "reserved"
                    }
                }),
            );
            let now = actual.as_ref().map_or(0, |(order, _)| order.created_at);
            let expected = model.reserve(at, &request, now);
            if let Ok((order, false)) = &expected {
                model.sales[at]
                    .deadlines
                    .add_call(std::slice::from_ref(order));
            }
            same(op, &actual, &expected)
        }
        Op::ReserveBatch {
            round,
            item,
            requests,
        } => {
            let at = round * items + item.index(items);
            let requests = requests
                .iter()
                .map(|(shopper, quantity)| model.request(at, *shopper, *quantity, None))
                .collect::<Result<Vec<_>, _>>()?;
            let answers = store.reserve_batch(&requests).await.map_err(broken)?;
            let mut made = Vec::new();
            for (request, actual) in requests.iter().zip(answers) {
                let actual = answer(actual.map(|won| won.order));
                count(tally, outcome("batch", &actual, |_| "reserved"));
                let now = actual.as_ref().map_or(0, |order| order.created_at);
                let expected = model.reserve(at, request, now).map(|(order, _)| order);
                same(op, &actual, &expected)?;
                made.extend(expected);
            }
            model.sales[at].deadlines.add_call(&made);
            Ok(())
        }
        Op::Cancel { order } => {
            if model.orders.is_empty() {
                return Ok(());
            }
            let at = order.index(model.orders.len());
            let (id, owner) = {
                let (order, _) = &model.orders[at];
                (order.id.clone(), order.shopper_id.clone())
            };
            let actual = answer(store.cancel_order(&id, &owner).await).map(|order| order.status);
            count(tally, outcome("cancel", &actual, |_| "cancelled"));
            let expected = model.cancel(at).map(|order| order.status);
            same(op, &actual, &expected)
        }
        Op::Pay { order } => {
            if model.orders.is_empty() {
                return Ok(());
            }
            let at = order.index(model.orders.len());
            let id = model.orders[at].0.id.clone();
            let payment = Payment {
                amount: None,
                transaction_id: format!("tx-{id}"),
            };
            let follow_ups = FollowUps {
                hand_off: true,
                refund: false,
            };
            let actual = answer(store.pay_order(&id, &payment, follow_ups).await);
            let actual = actual.map(|outcome| payment_name(&outcome));
            count(tally, outcome("pay", &actual, |name| name));
            same(op, &actual, &Ok(model.pay(at)))
        }
        Op::Refund { order, restock } => {
            if model.orders.is_empty() {
                return Ok(());
            }
            let at = order.index(model.orders.len());
            let id = model.orders[at].0.id.clone();
            let actual = answer(
                store
                    .refund_order(&id, *restock, FollowUps::default())
                    .await,
            )
            .map(|order| match order.refund {
                Some(RefundKind::Restocked) => "restocked",
                _ => "kept",
            });
            count(tally, outcome("refund", &actual, |name| name));
            same(op, &actual, &model.refund(at, *restock))
        }
        Op::Expire { round, item } => {
            let at = round * items + item.index(items);
            let sale_id = model.sales[at].sale.id.clone();
            let actual = answer(
                store
                    .expire_due(&sale_id, EXPIRE_LIMIT, Duration::from_secs(1))
                    .await
                    .map(|expiry| {
                        let mut ids: Vec<OrderId> =
                            expiry.expired.into_iter().map(|order| order.id).collect();
                        ids.sort();
                        ids
                    }),
            );
            count(
                tally,
                outcome("expire", &actual, |ids| {
                    if ids.is_empty() {
                        "none due"
                    } else {
                        "expired some"
                    }
                }),
            );
            let mut expected = model.expire(at, EXPIRE_LIMIT);
            expected.sort();
            same(op, &actual, &Ok(expected))
        }
        Op::SetStock { item, stock } => {
            let item = item.index(items);
            let (mut campaign, version) = stored(store, campaign_id).await?;
            let mut steps = Vec::new();
            for sale in model.sales.iter().skip(item).step_by(items) {
                if sale.ended {
                    continue;
                }
                let view = view(store, &sale.sale).await?;
                let target = Sale {
                    stock_total: *stock,
                    ..view.sale.clone()
                };
                campaign.items[item].stock_by_round[sale.round] = *stock;
                steps.push(SaleStep::Change {
                    change: SaleChange::between(&view.sale, target, false),
                    version: view.version,
                });
            }
            let actual = answer(
                store
                    .update_campaign(&change_of(campaign, steps), version)
                    .await,
            )
            .map(|()| "changed");
            count(tally, outcome("set_stock", &actual, |name| name));
            same(op, &actual, &model.set_stock(item, items, *stock))
        }
        Op::EndRound { round } => {
            let ended: Vec<&SaleModel> = model
                .sales
                .iter()
                .filter(|sale| sale.round == *round && !sale.ended)
                .collect();
            if ended.is_empty() {
                return Ok(());
            }
            let (campaign, version) = stored(store, campaign_id).await?;
            let mut steps = Vec::new();
            for sale in ended {
                let view = view(store, &sale.sale).await?;
                steps.push(SaleStep::Change {
                    change: SaleChange::between(&view.sale, view.sale.clone(), true),
                    version: view.version,
                });
            }
            let actual = answer(
                store
                    .update_campaign(&change_of(campaign, steps), version)
                    .await,
            )
            .map(|()| "ended");
            count(tally, outcome("end_round", &actual, |name| name));
            for sale in model.sales.iter_mut().filter(|sale| sale.round == *round) {
                sale.ended = true;
            }
            same(op, &actual, &Ok("ended"))
        }
    }
}

/// The campaign's record and version, as the store has them.
async fn stored(store: &dyn Store, id: &CampaignId) -> Result<(Campaign, i64), TestCaseError> {
    let stored = store
        .campaign(id)
        .await
        .map_err(broken)?
        .ok_or_else(|| broken("the campaign is gone"))?;
    Ok((stored.campaign, stored.version))
}

/// The sale as the store has it.
async fn view(store: &dyn Store, sale: &Sale) -> Result<SaleView, TestCaseError> {
    store
        .view_sale(&sale.id)
        .await
        .map_err(broken)?
        .ok_or_else(|| broken(format!("sale {} is gone", sale.id)))
}

/// A merchant's change after the start, as `Campaign::patched` makes it:
/// the record as it will be and its sales' steps (no reminder moves).
fn change_of(campaign: Campaign, steps: Vec<SaleStep>) -> CampaignChange {
    let starts_at = campaign.rounds.iter().map(|round| round.starts_at).min();
    CampaignChange {
        campaign,
        steps,
        before_start: None,
        starts_at: starts_at.unwrap_or_default(),
        reminders: Vec::new(),
    }
}

/// Compares every sale's stats and every shopper's counts with the model,
/// and checks the limits and the stock from the store's answers alone.
async fn check(
    store: &dyn Store,
    campaign: &Campaign,
    model: &CampaignModel,
) -> Result<(), TestCaseError> {
    for sale in &model.sales {
        let stats = store
            .view_sale(&sale.sale.id)
            .await
            .map_err(broken)?
            .ok_or_else(|| broken(format!("sale {} is gone", sale.sale.id)))?
            .stats;
        if stats != sale.stats {
            return Err(broken(format!(
                "sale {}: the store's stats {stats:?}, the model's {:?}",
                sale.sale.id, sale.stats
            )));
        }
        if stats.remaining < 0
            || stats.remaining + stats.reserved + stats.paid + stats.refunded - stats.restocked
                != stats.stock_total
        {
            return Err(broken(format!(
                "sale {} is not exact: {stats:?}",
                sale.sale.id
            )));
        }
        let deadlines = store
            .order_backlog(&sale.sale.id)
            .await
            .map_err(broken)?
            .deadlines;
        if deadlines != sale.deadlines.len() {
            return Err(broken(format!(
                "sale {}: {deadlines} payment deadline entries, the model's {}",
                sale.sale.id,
                sale.deadlines.len()
            )));
        }
    }
    for name in SHOPPERS {
        let shopper = shopper_id(name);
        for (position, round) in campaign.rounds.iter().enumerate() {
            let counted = store
                .campaign_holds(&campaign.id, round.number, &shopper)
                .await
                .map_err(broken)?;
            let expected = model.holds(&shopper, position);
            if counted != expected {
                return Err(broken(format!(
                    "{name} in round {position}: the store counts {counted:?}, the model {expected:?}"
                )));
            }
            let (in_round, in_total) = counted;
            let over_total = campaign.limits.total.is_some_and(|total| in_total > total);
            if in_round > campaign.limits.per_round || over_total {
                return Err(broken(format!(
                    "{name} holds {counted:?} in round {position}, over {:?}",
                    campaign.limits
                )));
            }
        }
    }
    Ok(())
}

async fn run_case(
    store: &dyn Store,
    setup: &Setup,
    ops: &[Op],
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let campaign = campaign_of(setup);
    store.create_campaign(&campaign).await.map_err(broken)?;
    let mut model = CampaignModel::new(&campaign);
    for op in ops {
        apply(store, &campaign.id, &mut model, setup.items, op, tally).await?;
        check(store, &campaign, &model).await?;
    }
    Ok(())
}

/// Runs `cases` generated campaigns on a fresh store of `backend` each and
/// prints what they reached; a full run must reach every [`REACHED`].
fn run(name: &'static str, backend: Backend, cases: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut runner, replay) = runner(name, cases);
    let full_run = runner.config().cases >= cases;
    let target = runtime.block_on(Target::start(name, backend));
    let tally = Tally::default();
    let strategy = (
        setup_strategy(),
        proptest::collection::vec(op_strategy(), 1..=STEPS_MAX),
    );
    let result = runner.run(&strategy, |(setup, ops)| {
        let store: Arc<dyn Store> = target.fresh()?;
        count(&tally, "case".into());
        add(&tally, "step".into(), ops.len() as u64);
        runtime.block_on(run_case(store.as_ref(), &setup, &ops, &tally))
    });
    let tally = tally.into_inner().expect("tally");
    let required: &[&str] = if full_run { &REACHED } else { &[] };
    conclude(name, &tally, result, &replay, required);
}

#[test]
fn embedded_store_keeps_campaign_limits_as_the_model() {
    run(
        "store_model campaign embedded",
        Backend::Embedded,
        CASES_EMBEDDED,
    );
}

#[test]
fn redis_store_keeps_campaign_limits_as_the_model() {
    run("store_model campaign redis", Backend::Redis, CASES_REDIS);
}
