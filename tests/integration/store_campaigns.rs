//! Campaigns in the store conformance suite: the limits across a
//! campaign's items hold exactly, under concurrency, on the embedded store,
//! a standalone Redis and a Redis Cluster (a campaign's sales share its
//! slot, so one script sees the item's stock and the shopper's units
//! across the campaign), and a cancel, an expiry or a refund with restock
//! gives the allowance back. A merchant's change to a campaign applies to its record and its
//! sales in one atomic step, or not at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use flashsale::domain::{
    system_now, Campaign, CampaignChange, CampaignId, CampaignPatch, NewCampaign, NewItem,
    NewRound, Payment, Rejection, ReserveRequest, Sale, SaleRules, SaleState, ShopperId, Timestamp,
};
use flashsale::store::{EmbeddedStore, FollowUps, Forgetting, Store, StoreError};
use futures::future::join_all;
use serde_json::{json, Value};

use crate::conformance::{rejection, request, subject, Subject};
use crate::support::{Backend, Servers};

/// The shape of a test campaign: its rounds' windows (start and end, ms
/// from now), its items (each `stock` units a round, `per_item` a
/// shopper), its limits across items and its payment timeout.
pub struct Shape {
    pub windows: Vec<(i64, i64)>,
    pub items: usize,
    pub stock: i64,
    pub per_item: Option<i64>,
    pub per_round: i64,
    pub total: Option<i64>,
    pub timeout_secs: i64,
    pub remind_before_secs: Option<i64>,
}

impl Default for Shape {
    /// One live round (it started a second ago, ends in an hour), two
    /// items of 5 units, a round limit of 1, a payment timeout of 600 s.
    fn default() -> Self {
        Self {
            windows: vec![(-1_000, 3_600_000)],
            items: 2,
            stock: 5,
            per_item: None,
            per_round: 1,
            total: None,
            timeout_secs: 600,
            remind_before_secs: None,
        }
    }
}

/// A campaign of `shape`, as the store's conformance tests create it.
pub fn campaign_of(shape: Shape) -> Campaign {
    let now = system_now();
    NewCampaign {
        title: "11.11".into(),
        rounds: shape
            .windows
            .iter()
            .map(|(starts, ends)| NewRound {
                starts_at: Timestamp(now + starts).to_string(),
                ends_at: Timestamp(now + ends).to_string(),
            })
            .collect(),
        items: (0..shape.items)
            .map(|i| NewItem {
                sku: format!("SKU-{i}"),
                title: format!("item {i}"),
                price_cents: 990,
                original_price_cents: 1990,
                stock_per_round: shape.stock,
                stock_by_round: None,
                per_user_limit: shape.per_item,
            })
            .collect(),
        per_user_limit_per_round: shape.per_round,
        per_user_limit_total: shape.total,
        currency: None,
        payment_timeout_secs: Some(shape.timeout_secs),
        require_purchase_token: None,
        remind_before_secs: shape.remind_before_secs,
    }
    .into_campaign(
        CampaignId::generate(),
        now,
        &SaleRules {
            payment_timeout_secs_min: 1,
        },
    )
    .expect("a valid campaign")
}

/// A campaign of one live round offering `items` items of `stock` units
/// each (2 a shopper), with the limits given and a payment timeout of
/// `timeout_secs`.
fn live_campaign(
    items: usize,
    stock: i64,
    per_round: i64,
    total: Option<i64>,
    timeout_secs: i64,
) -> Campaign {
    campaign_of(Shape {
        items,
        stock,
        per_item: Some(2),
        per_round,
        total,
        timeout_secs,
        ..Shape::default()
    })
}

/// Goal: no shopper ever holds more than the round's limit across the
/// campaign's items, however their attempts interleave, and every item
/// stays exact. Method: 500 shoppers each send 4 concurrent attempts at
/// items of a 5-item round with a round limit of 1 and more shoppers than
/// units; then each shopper's units are counted from the won orders and
/// from the store's own counts. The race's figures (attempts, accepted,
/// refused by reason, most units per shopper, elapsed) are printed for
/// `--nocapture`.
async fn cross_item_limits_hold_under_concurrency(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let campaign = live_campaign(5, 60, 1, None, 600);
    store.create_campaign(&campaign).await.unwrap();
    let sales: Vec<Sale> = campaign.sales();
    let attempts = (0..500).flat_map(|shopper| {
        let sales = &sales;
        let store = &store;
        (0..4).map(move |k| {
            let store = Arc::clone(store);
            let sale = &sales[(shopper * 7 + k * 3) % sales.len()];
            let ask = request(sale, &format!("u{shopper}"), 1, None);
            tokio::spawn(async move { store.reserve(&ask).await })
        })
    });
    let started = Instant::now();
    let results = join_all(attempts).await;
    let elapsed = started.elapsed();
    let mut held: HashMap<ShopperId, i64> = HashMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for result in &results {
        match result.as_ref().unwrap() {
            Ok(won) => *held.entry(won.order.shopper_id.clone()).or_default() += 1,
            Err(StoreError::Rejected(
                reason @ (Rejection::SoldOut
                | Rejection::LimitExceeded
                | Rejection::RoundLimitExceeded),
            )) => *refused.entry(format!("{reason:?}")).or_default() += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let units_max = held.values().copied().max().unwrap_or_default();
    eprintln!(
        "cross-item race on {backend:?}: {} attempts (500 shoppers x 4, 5 items x 60 units, \
         round limit 1), {} accepted, refused {refused:?}, most units one shopper holds \
         in the round {units_max}, elapsed {} ms",
        results.len(),
        held.values().sum::<i64>(),
        elapsed.as_millis()
    );
    assert!(held.values().all(|units| *units == 1), "at most 1 each");
    assert_eq!(held.len(), 300, "every unit sold, one per shopper");
    for sale in &sales {
        let stats = store.view_sale(&sale.id).await.unwrap().unwrap().stats;
        assert_eq!(stats.remaining + stats.reserved + stats.paid, 60);
        assert_eq!(stats.remaining, 0, "sold out");
    }
    let round = campaign.rounds[0].number;
    for (shopper, units) in &held {
        let counted = store
            .campaign_holds(&campaign.id, round, shopper)
            .await
            .unwrap();
        assert_eq!(counted, (*units, *units), "{shopper}");
    }
}

/// Goal: the round's and the campaign's limits refuse exactly what passes
/// them, each with its own reason, and a cancel or an expiry gives the
/// units back to the shopper's allowance. Method: one shopper against a
/// round limit of 2 and a campaign limit of 1, then of 1 with 1.
async fn cancel_and_expiry_give_the_allowance_back(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let over_total = live_campaign(3, 10, 2, Some(1), 600);
    store.create_campaign(&over_total).await.unwrap();
    let sales = over_total.sales();
    store
        .reserve(&request(&sales[0], "ann", 1, None))
        .await
        .unwrap();
    let refused = store.reserve(&request(&sales[1], "ann", 1, None)).await;
    assert_eq!(rejection(refused), Rejection::CampaignLimitExceeded);

    let campaign = live_campaign(3, 10, 1, None, 1);
    store.create_campaign(&campaign).await.unwrap();
    let stored = store.campaign(&campaign.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.campaign.clone(), stored.version),
        (campaign.clone(), 1)
    );
    let sales = campaign.sales();
    let ask = |sale: usize| request(&sales[sale], "bob", 1, None);
    let first = store.reserve(&ask(0)).await.unwrap().order;
    let refused = store.reserve(&ask(1)).await;
    assert_eq!(rejection(refused), Rejection::RoundLimitExceeded);
    let other = store.reserve(&request(&sales[1], "cat", 1, None)).await;
    assert!(other.is_ok(), "another shopper's limit is their own");

    let bob = ShopperId::parse("bob").unwrap();
    store.cancel_order(&first.id, &bob).await.unwrap();
    let round = campaign.rounds[0].number;
    assert_eq!(
        store
            .campaign_holds(&campaign.id, round, &bob)
            .await
            .unwrap(),
        (0, 0)
    );
    let second = store.reserve(&ask(1)).await.unwrap().order;

    // Past its one-second payment timeout, the order expires: its unit is
    // back in the allowance.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let expiry = store
        .expire_due(&sales[1].id, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(expiry.expired.iter().any(|order| order.id == second.id));
    let third: ReserveRequest = ask(2);
    store.reserve(&third).await.unwrap();
    assert_eq!(
        store
            .campaign_holds(&campaign.id, round, &bob)
            .await
            .unwrap(),
        (1, 1)
    );
    for sale in &sales {
        let audit = store.sale_records(&sale.id).await.unwrap().unwrap().audit();
        assert!(audit.differences.is_empty(), "{audit:?}");
    }
}

/// Goal: a merchant's refund with restock of a campaign's order gives its
/// units back to the shopper's round and campaign allowance, as a cancel
/// does; one without restock keeps them spent. Method: two shoppers at a
/// round limit of 1 each pay for an item and are refunded, one with
/// restock, then try another item of the round.
async fn a_refund_with_restock_gives_the_allowance_back(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let campaign = live_campaign(3, 10, 1, Some(2), 600);
    store.create_campaign(&campaign).await.unwrap();
    let sales = campaign.sales();
    let round = campaign.rounds[0].number;
    for (n, (shopper, restock)) in [("dan", false), ("eva", true)].into_iter().enumerate() {
        let order = store
            .reserve(&request(&sales[0], shopper, 1, None))
            .await
            .unwrap()
            .order;
        let payment = Payment {
            amount: None,
            transaction_id: format!("4200000000000000000000000{n:03}"),
        };
        store
            .pay_order(&order.id, &payment, FollowUps::default())
            .await
            .unwrap();
        store
            .refund_order(&order.id, restock, FollowUps::default())
            .await
            .unwrap();
        let holds = store
            .campaign_holds(&campaign.id, round, &ShopperId::parse(shopper).unwrap())
            .await
            .unwrap();
        let next = store.reserve(&request(&sales[1], shopper, 1, None)).await;
        if restock {
            assert_eq!(holds, (0, 0), "{shopper}: given back");
            assert!(next.is_ok(), "{shopper}: {next:?}");
        } else {
            assert_eq!(holds, (1, 1), "{shopper}: still spent");
            assert_eq!(rejection(next), Rejection::RoundLimitExceeded);
        }
    }
    for sale in &sales {
        let audit = store.sale_records(&sale.id).await.unwrap().unwrap().audit();
        assert!(audit.differences.is_empty(), "{audit:?}");
    }
}

/// Goal: an ordinary sale next to a campaign keeps its own slot and knows
/// nothing of the campaign's limits. Method: a shopper at the round's
/// limit still buys an ordinary sale.
async fn ordinary_sales_ignore_campaign_limits(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let campaign = live_campaign(1, 10, 1, Some(1), 600);
    store.create_campaign(&campaign).await.unwrap();
    store
        .reserve(&request(&campaign.sales()[0], "dan", 1, None))
        .await
        .unwrap();
    let ordinary = crate::conformance::sale(10, 1, -1_000);
    store.create_sale(&ordinary).await.unwrap();
    store
        .reserve(&request(&ordinary, "dan", 1, None))
        .await
        .unwrap();
    assert_eq!(store.campaign_ids().await.unwrap(), vec![campaign.id]);
}

/// Goal: a campaign is stored whole or not at all (its record, every
/// round x item's sale, the limits across them), never a record with some
/// of its sales. Method: one of its sales exists already (made first as a
/// sale on its own); creating the campaign is refused with a conflict and
/// leaves no record and none of its other sales; the same campaign without
/// that sale in the way is then created whole.
async fn a_campaign_is_created_whole_or_not_at_all(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let campaign = live_and_upcoming();
    let sales = campaign.sales();
    let in_the_way = &sales[sales.len() - 1];
    store.create_sale(in_the_way).await.unwrap();
    assert!(matches!(
        store.create_campaign(&campaign).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.campaign(&campaign.id).await.unwrap().is_none());
    for sale in &sales[..sales.len() - 1] {
        assert!(
            store.view_sale(&sale.id).await.unwrap().is_none(),
            "{} was stored without its campaign",
            sale.id
        );
    }

    let whole = live_and_upcoming();
    store.create_campaign(&whole).await.unwrap();
    assert_eq!(store.campaign(&whole.id).await.unwrap().unwrap().version, 1);
    for sale in whole.sales() {
        let view = store.view_sale(&sale.id).await.unwrap().expect("its sale");
        assert_eq!(view.stats.remaining, sale.stock_total);
    }
}

/// Goal: on Redis the index of campaigns (`fs:campaigns`, in no
/// campaign's slot) is written before the campaign, so a crash between
/// the two never leaves a campaign no listing shows; what it can leave, an
/// id that names no campaign, goes at retention once it is too old to be a
/// creation under way. Method: a refused creation takes its own entry
/// off; an id indexed now without a record is kept by `forget_campaign`,
/// one indexed two minutes ago is taken off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_id_with_no_campaign_goes_once_too_old_to_be_created() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let Servers::Standalone(server) = &redis else {
        panic!("a standalone Redis");
    };
    let refused = live_and_upcoming();
    store.create_sale(&refused.sales()[0]).await.unwrap();
    assert!(store.create_campaign(&refused).await.is_err());
    assert!(!store.campaign_ids().await.unwrap().contains(&refused.id));

    let (fresh, stale) = (CampaignId::generate(), CampaignId::generate());
    let now = system_now();
    for (id, created_at) in [(&fresh, now), (&stale, now - 120_000)] {
        let _: () = redis::cmd("ZADD")
            .arg("fs:campaigns")
            .arg(created_at)
            .arg(id.as_str())
            .query(&mut server.connection())
            .unwrap();
    }
    assert_eq!(
        store.forget_campaign(&fresh).await.unwrap(),
        Forgetting::Kept
    );
    assert_eq!(
        store.forget_campaign(&stale).await.unwrap(),
        Forgetting::Gone
    );
    let indexed = store.campaign_ids().await.unwrap();
    assert!(indexed.contains(&fresh), "a creation may be under way");
    assert!(!indexed.contains(&stale));
}

/// A campaign of a live round (started a second ago) and an upcoming one
/// (in two hours), two items of 5 units each, a round limit of 1.
fn live_and_upcoming() -> Campaign {
    campaign_of(Shape {
        windows: vec![(-1_000, 3_600_000), (7_200_000, 10_800_000)],
        ..Shape::default()
    })
}

/// Reads the campaign and its sales as the engine does, and computes the
/// merchant's `patch` from them: the change and the version it was
/// computed from.
async fn computed(store: &dyn Store, id: &CampaignId, patch: Value) -> (CampaignChange, i64) {
    computed_with(store, id, patch, &SaleRules::default()).await
}

/// [`computed`] under `rules`.
pub async fn computed_with(
    store: &dyn Store,
    id: &CampaignId,
    patch: Value,
    rules: &SaleRules,
) -> (CampaignChange, i64) {
    let stored = store.campaign(id).await.unwrap().expect("the campaign");
    let mut views = Vec::new();
    for sale in stored.campaign.sales() {
        views.push(store.view_sale(&sale.id).await.unwrap().expect("its sale"));
    }
    let now = views
        .iter()
        .map(|view| view.now)
        .max()
        .unwrap_or_else(system_now);
    let patch: CampaignPatch = serde_json::from_value(patch).expect("a patch");
    let change = stored
        .campaign
        .patched(patch, &views, now, rules)
        .expect("a valid change");
    (change, stored.version)
}

/// Each sale's stock as the campaign's record says it, and as the sale
/// says it.
async fn stock_both_ways(store: &dyn Store, id: &CampaignId) -> (Vec<i64>, Vec<i64>) {
    let campaign = store.campaign(id).await.unwrap().unwrap().campaign;
    let mut stored = Vec::new();
    for sale in campaign.sales() {
        stored.push(
            store
                .view_sale(&sale.id)
                .await
                .unwrap()
                .unwrap()
                .sale
                .stock_total,
        );
    }
    (
        campaign.sales().iter().map(|s| s.stock_total).collect(),
        stored,
    )
}

fn conflict(result: Result<(), StoreError>) -> String {
    match result {
        Err(StoreError::Conflict(message)) => message,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Goal: a campaign's change is applied whole or not at all, and the
/// record and the sales always agree. Method: on a live campaign, a change
/// that tops up one item but takes another below what is reserved is
/// refused (naming the sale; its step comes after the top up's) and
/// leaves every sale, the record and the version as they were; the top
/// up alone then applies to record and sales at once, and the topped-up
/// sale sells the new units.
async fn a_change_applies_whole_or_not_at_all(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let campaign = live_and_upcoming();
    store.create_campaign(&campaign).await.unwrap();
    let sales = campaign.sales();
    for shopper in ["ann", "bob"] {
        store
            .reserve(&request(&sales[1], shopper, 1, None))
            .await
            .unwrap();
    }
    let before = stock_both_ways(store.as_ref(), &campaign.id).await;
    let (change, version) = computed(
        store.as_ref(),
        &campaign.id,
        json!({"items": [{"number": 0, "stock_per_round": 9},
                         {"number": 1, "stock_by_round": [1, 5]}]}),
    )
    .await;
    let message = conflict(store.update_campaign(&change, version).await);
    assert!(message.contains(sales[1].id.as_str()), "{message}");
    assert!(message.contains("below the 2 units"), "{message}");
    assert_eq!(stock_both_ways(store.as_ref(), &campaign.id).await, before);
    let stored = store.campaign(&campaign.id).await.unwrap().unwrap();
    assert_eq!((stored.campaign, stored.version), (campaign.clone(), 1));

    let (change, version) = computed(
        store.as_ref(),
        &campaign.id,
        json!({"items": [{"number": 1, "stock_per_round": 3}]}),
    )
    .await;
    store.update_campaign(&change, version).await.unwrap();
    let (stored, sold) = stock_both_ways(store.as_ref(), &campaign.id).await;
    assert_eq!(stored, vec![5, 3, 5, 3]);
    assert_eq!(sold, stored, "the record and the sales agree");
    assert_eq!(
        store.campaign(&campaign.id).await.unwrap().unwrap().version,
        2
    );
    let stats = store.view_sale(&sales[1].id).await.unwrap().unwrap().stats;
    assert_eq!((stats.remaining, stats.reserved), (1, 2));
    store
        .reserve(&request(&sales[1], "cat", 1, None))
        .await
        .unwrap();
    let refused = store.reserve(&request(&sales[1], "dan", 1, None)).await;
    assert_eq!(rejection(refused), Rejection::SoldOut);
}

/// Goal: a change computed from an old read is never applied, and many
/// merchants changing one campaign at once each either apply in full or
/// are refused. Method: apply one change twice (the second is stale),
/// then race 8 changes computed from the same read: exactly one applies,
/// and the record and the sales agree on its stock.
async fn stale_and_racing_changes_are_refused(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let campaign = live_and_upcoming();
    store.create_campaign(&campaign).await.unwrap();
    let patch = json!({"items": [{"number": 1, "stock_per_round": 7}]});
    let (change, version) = computed(store.as_ref(), &campaign.id, patch).await;
    store.update_campaign(&change, version).await.unwrap();
    let message = conflict(store.update_campaign(&change, version).await);
    assert!(message.contains("changed meanwhile"), "{message}");

    let mut racing = Vec::new();
    for stock in 10..18 {
        let patch = json!({"items": [{"number": 0, "stock_per_round": stock}]});
        racing.push(computed(store.as_ref(), &campaign.id, patch).await);
    }
    let outcomes = join_all(racing.iter().map(|(change, version)| {
        let store = Arc::clone(&store);
        async move { store.update_campaign(change, *version).await }
    }))
    .await;
    let applied: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i].is_ok())
        .collect();
    assert_eq!(applied.len(), 1, "{outcomes:?}");
    let (stored, sales) = stock_both_ways(store.as_ref(), &campaign.id).await;
    let stock = 10 + applied[0] as i64;
    assert_eq!(stored, vec![stock, 7, stock, 7]);
    assert_eq!(sales, stored);
}

/// Goal: rounds and items added or removed before the first round starts
/// become sales (or cancel theirs) with the record, and the new limits
/// hold in reservations; once the first round has started (store clock),
/// such a change is refused whole. Method: change an upcoming campaign,
/// check its sales and limits, then apply a change computed before the
/// start after it.
async fn before_the_start_rounds_and_items_come_and_go(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let now = system_now();
    let mut campaign = live_and_upcoming();
    campaign.rounds[0].starts_at = now + 1_500;
    store.create_campaign(&campaign).await.unwrap();
    let later = Timestamp(now + 20_000_000).to_string();
    let latest = Timestamp(now + 21_000_000).to_string();
    let (change, version) = computed(
        store.as_ref(),
        &campaign.id,
        json!({
            "per_user_limit_per_round": 2,
            "remove_items": [1],
            "add_items": [{"sku": "NEW", "title": "new", "price_cents": 1,
                           "original_price_cents": 2, "stock_per_round": 4}],
            "add_rounds": [{"starts_at": later, "ends_at": latest}],
        }),
    )
    .await;
    assert_eq!(
        change.before_start.as_deref(),
        Some("per_user_limit_per_round, items removed, rounds added, items added")
    );
    let late = change.clone();
    store.update_campaign(&change, version).await.unwrap();
    let stored = store.campaign(&campaign.id).await.unwrap().unwrap();
    assert_eq!(stored.campaign, change.campaign);
    let numbers: Vec<(u32, u32)> = stored
        .campaign
        .sales()
        .iter()
        .map(|sale| {
            let slot = sale.id.campaign().unwrap();
            (slot.round, slot.item)
        })
        .collect();
    assert_eq!(
        numbers,
        vec![(0, 0), (0, 2), (1, 0), (1, 2), (2, 0), (2, 2)]
    );
    for sale in stored.campaign.sales() {
        let view = store.view_sale(&sale.id).await.unwrap().expect("created");
        assert_eq!(view.stats.remaining, sale.stock_total);
    }
    for removed in [&campaign.sales()[1], &campaign.sales()[3]] {
        let view = store.view_sale(&removed.id).await.unwrap().unwrap();
        assert_eq!(view.sale.state, SaleState::Cancelled);
    }

    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let sales = stored.campaign.sales();
    store
        .reserve(&request(&sales[0], "eve", 1, None))
        .await
        .unwrap();
    store
        .reserve(&request(&sales[1], "eve", 1, None))
        .await
        .unwrap();
    let refused = store.reserve(&request(&sales[0], "eve", 1, None)).await;
    assert_eq!(rejection(refused), Rejection::LimitExceeded);
    assert_eq!(
        store
            .campaign_holds(&campaign.id, 0, &ShopperId::parse("eve").unwrap())
            .await
            .unwrap(),
        (2, 2),
        "the round's new limit of 2 held"
    );

    let (after_start, version) =
        computed(store.as_ref(), &campaign.id, json!({"title": "renamed"})).await;
    let message = conflict(store.update_campaign(&after_start, version).await);
    assert!(message.contains("has started; title"), "{message}");
    let message = conflict(store.update_campaign(&late, version).await);
    assert!(message.contains("has started"), "{message}");
    assert_eq!(
        store.campaign(&campaign.id).await.unwrap().unwrap().version,
        version
    );
}

crate::on_every_store!(
    cross_item_limits_hold_under_concurrency,
    cancel_and_expiry_give_the_allowance_back,
    a_refund_with_restock_gives_the_allowance_back,
    ordinary_sales_ignore_campaign_limits,
    a_change_applies_whole_or_not_at_all,
    stale_and_racing_changes_are_refused,
    before_the_start_rounds_and_items_come_and_go,
    a_campaign_is_created_whole_or_not_at_all,
);

/// Goal: on the embedded store, a campaign change that creates sales while
/// it holds its other sales' locks never deadlocks with a reader going
/// through every sale (the order service's open sales, a shopper's order
/// list, the index of sales) or with retention asking to forget a sale:
/// neither may wait for a sale's lock while it holds a part of the map the
/// change inserts into. Method: five upcoming campaigns of two rounds, each
/// changed 40 times, every change adding an item (a sale a round) and
/// changing every existing sale's payment timeout, while three threads
/// read every sale in a loop and a fourth asks to forget each (kept: none
/// is over); a watchdog fails the test if they are not all done within
/// 60 s.
#[test]
fn a_change_creating_sales_never_deadlocks_with_readers_of_every_sale() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        let stop = Arc::new(AtomicBool::new(false));
        let shopper = ShopperId::parse("reader").unwrap();
        let readers: Vec<_> = (0..4)
            .map(|reader| {
                let (store, stop, shopper) =
                    (Arc::clone(&store), Arc::clone(&stop), shopper.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        futures::executor::block_on(async {
                            match reader {
                                0 => drop(store.open_sale_ids().await.unwrap()),
                                1 => drop(store.shopper_orders(&shopper).await.unwrap()),
                                2 => drop(store.sale_index(None, 1_000).await.unwrap()),
                                _ => {
                                    for sale in store.open_sale_ids().await.unwrap() {
                                        let kept = store.forget_sale(&sale, Duration::ZERO);
                                        assert_eq!(kept.await.unwrap(), Forgetting::Kept);
                                    }
                                }
                            }
                        });
                    }
                })
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..5 {
                let campaign = campaign_of(Shape {
                    windows: vec![(7_200_000, 10_800_000), (14_400_000, 18_000_000)],
                    items: 10,
                    ..Shape::default()
                });
                store.create_campaign(&campaign).await.unwrap();
                for step in 0..40 {
                    let patch = json!({
                        "payment_timeout_secs": 600 + step,
                        "add_items": [{"sku": format!("ADDED-{step}"), "title": "added",
                                       "price_cents": 1, "original_price_cents": 2,
                                       "stock_per_round": 4}],
                    });
                    let (change, version) = computed(store.as_ref(), &campaign.id, patch).await;
                    store.update_campaign(&change, version).await.unwrap();
                }
            }
        });
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
        done.send(()).unwrap();
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the changes and the readers deadlocked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the changes failed (see above)"),
    }
}
