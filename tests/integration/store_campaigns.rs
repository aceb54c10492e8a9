//! Campaigns in the store conformance suite: the limits across a
//! campaign's items hold exactly, under concurrency, on the embedded store,
//! a standalone Redis and a Redis Cluster (a campaign's sales share its
//! slot, so one script sees the item's stock and the shopper's units
//! across the campaign), and a cancel or an expiry gives the allowance
//! back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashsale::domain::{
    format_ms, system_now, Campaign, CampaignId, NewCampaign, NewItem, NewRound, Rejection,
    ReserveRequest, Sale, SaleRules, ShopperId,
};
use flashsale::store::StoreError;
use futures::future::join_all;

use crate::conformance::{rejection, request, subject, Subject};
use crate::support::Backend;

/// A campaign of one live round (it started a second ago) offering
/// `items` items of `stock` units each, with the limits given and a
/// payment timeout of `timeout_secs`.
fn live_campaign(
    items: usize,
    stock: i64,
    per_round: i64,
    total: Option<i64>,
    timeout_secs: i64,
) -> Campaign {
    let now = system_now();
    NewCampaign {
        title: "11.11".into(),
        rounds: vec![NewRound {
            starts_at: format_ms(now - 1_000),
            ends_at: format_ms(now + 3_600_000),
        }],
        items: (0..items)
            .map(|i| NewItem {
                sku: format!("SKU-{i}"),
                title: format!("item {i}"),
                price_cents: 990,
                original_price_cents: 1990,
                stock_per_round: stock,
                stock_by_round: None,
                per_user_limit: Some(2),
            })
            .collect(),
        per_user_limit_per_round: per_round,
        per_user_limit_total: total,
        currency: None,
        payment_timeout_secs: Some(timeout_secs),
        require_purchase_token: None,
        remind_before_secs: None,
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

crate::on_every_store!(
    cross_item_limits_hold_under_concurrency,
    cancel_and_expiry_give_the_allowance_back,
    ordinary_sales_ignore_campaign_limits,
);
