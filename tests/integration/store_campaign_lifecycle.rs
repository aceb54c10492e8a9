//! A campaign's life in the store conformance suite, on the embedded
//! store, a standalone Redis and a Redis Cluster: each round's reminder is
//! queued in its first item's sale's outbox when the campaign is created,
//! due `remind_before_secs` before the round (none for a round that has
//! started), moves with the change that moves it (in the change's own
//! step), and goes when its sale is called off;
//! and once retention has forgotten every sale of a campaign, the
//! campaign's own records go too, and no key with its hash tag remains.

use std::time::Duration;

use flashsale::domain::{system_now, Campaign, Millis, Payment, SaleId, SaleRules, Timestamp};
use flashsale::store::{Errand, FollowUps, Forgetting, Store};
use serde_json::{json, Value};

use crate::conformance::{request, subject, Subject};
use crate::store_campaigns::{campaign_of, computed_with, Shape};
use crate::store_indexes::accept_all;
use crate::support::Backend;

/// A campaign of two items whose rounds run over `windows` (start and end,
/// ms from now), with a payment timeout of one second.
fn campaign(windows: &[(i64, i64)], remind_before_secs: Option<i64>) -> Campaign {
    campaign_of(Shape {
        windows: windows.to_vec(),
        timeout_secs: 1,
        remind_before_secs,
        ..Shape::default()
    })
}

const HOUR_MS: i64 = 3_600_000;

/// The instant `ms` from now, as a patch writes it.
fn in_ms(ms: i64) -> Value {
    json!(Timestamp(system_now() + ms))
}

/// The merchant's `patch` of `campaign`, applied by the store in one step
/// (as `PATCH /admin/v1/campaigns/{id}` does; payment timeouts from 1 s).
async fn changed(store: &dyn Store, campaign: &Campaign, patch: Value) {
    let rules = SaleRules {
        payment_timeout_secs_min: 1,
    };
    let (change, version) = computed_with(store, &campaign.id, patch, &rules).await;
    store.update_campaign(&change, version).await.unwrap();
}

const LEASE: Duration = Duration::from_secs(60);

/// Goal: a round's reminder waits in its first item's sale's outbox until
/// `remind_before_secs` before the round (store clock), is sent at once
/// when that is already past, never for a round that has started; it
/// moves when its round moves, and calling the sale off drops it. Method:
/// a campaign whose first round is live, whose second round's reminder is
/// past due and whose third's is an hour away; lease each sale's due
/// entries.
async fn a_round_reminder_is_due_before_its_round_and_goes_with_its_sale(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let made = campaign(
        &[
            (-1_000, 60_000),
            (HOUR_MS / 2, HOUR_MS),
            (2 * HOUR_MS, 3 * HOUR_MS),
        ],
        Some(3600),
    );
    store.create_campaign(&made).await.unwrap();
    let sale = |round: u32, item: u32| SaleId::of_campaign(&made.id, round, item);

    let due_now = store
        .claim_deliveries(&sale(1, 0), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(due_now.len(), 1, "{due_now:?}");
    assert_eq!(
        (&due_now[0].errand, due_now[0].attempt),
        (&Errand::RoundStarting, 1)
    );
    for (round, item) in [(0, 0), (0, 1), (1, 1), (2, 0), (2, 1)] {
        assert!(
            store
                .claim_deliveries(&sale(round, item), 10, LEASE)
                .await
                .unwrap()
                .is_empty(),
            "nothing due in round {round} item {item}"
        );
    }

    // The third round moves to start just after the second ends: the
    // change itself moves its reminder, due a second from now.
    changed(
        store.as_ref(),
        &made,
        json!({"rounds": [{"number": 2, "starts_at": in_ms(HOUR_MS + 1_000)}]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let moved = store
        .claim_deliveries(&sale(2, 0), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].errand, Errand::RoundStarting);
    // Reminders an hour earlier: every round's moves, but the round that
    // has started gets none.
    changed(store.as_ref(), &made, json!({"remind_before_secs": 7200})).await;
    assert!(store
        .claim_deliveries(&sale(0, 0), 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    // A round that started since drops the reminder queued for its old
    // time when a change moves it.
    let soon = campaign(&[(1_500, HOUR_MS)], Some(3600));
    store.create_campaign(&soon).await.unwrap();
    let first = SaleId::of_campaign(&soon.id, 0, 0);
    assert_eq!(store.order_backlog(&first).await.unwrap().hand_offs, 1);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    changed(store.as_ref(), &soon, json!({"remind_before_secs": 1800})).await;
    assert!(
        store.order_backlog(&first).await.unwrap().is_empty(),
        "the old reminder went"
    );

    // Called off, the sale keeps no reminder: no work left to hold it,
    // and a change moving its round's reminder queues none.
    assert_eq!(store.order_backlog(&sale(1, 0)).await.unwrap().hand_offs, 1);
    store.cancel_sale(&sale(1, 0)).await.unwrap();
    assert!(store.order_backlog(&sale(1, 0)).await.unwrap().is_empty());
    changed(store.as_ref(), &made, json!({"remind_before_secs": 3600})).await;
    assert!(
        store.order_backlog(&sale(1, 0)).await.unwrap().is_empty(),
        "a cancelled sale gets no reminder"
    );
    assert_eq!(
        store.order_backlog(&sale(2, 0)).await.unwrap().hand_offs,
        1,
        "the others are moved"
    );

    // Without `remind_before_secs`, nothing is queued.
    let quiet = campaign(&[(HOUR_MS / 2, HOUR_MS)], None);
    store.create_campaign(&quiet).await.unwrap();
    assert!(store
        .order_backlog(&SaleId::of_campaign(&quiet.id, 0, 0))
        .await
        .unwrap()
        .is_empty());
}

/// Goal: retention deletes a campaign's own records once every sale of it
/// is forgotten, and touches no other campaign. Method: a campaign whose
/// one round ends in two seconds, with a paid order (so the shoppers' counts
/// exist); forget its sales one by one after the retention, asking to
/// forget the campaign before, between and after; then look for any key
/// with its hash tag on Redis.
async fn retention_forgets_a_campaign_after_its_last_sale(backend: Backend) {
    let Subject { store, redis } = subject(backend).await;
    let retention = Duration::from_millis(300);
    // Room to make both campaigns and take its order before it ends, on a
    // loaded Cluster too.
    let settling = campaign(&[(-1_000, 2_000)], Some(1));
    let other = campaign(&[(-1_000, HOUR_MS)], None);
    for made in [&settling, &other] {
        store.create_campaign(made).await.unwrap();
    }
    let sales = settling.sales();
    let order = store
        .reserve(&request(&sales[0], "amy", 1, None))
        .await
        .unwrap()
        .order;
    let payment = Payment {
        amount: None,
        transaction_id: "tx-1".into(),
    };
    store
        .pay_order(&order.id, &payment, FollowUps::default())
        .await
        .unwrap();
    store
        .reserve(&request(&other.sales()[0], "amy", 1, None))
        .await
        .unwrap();
    for sale in &sales {
        accept_all(&store, &sale.id).await;
    }
    assert_eq!(
        store.forget_campaign(&settling.id).await.unwrap(),
        Forgetting::Kept,
        "its retention has not passed, and its sales are there"
    );

    let forgettable: Millis = sales
        .iter()
        .map(|sale| sale.payment_window_closes_at())
        .max()
        .unwrap()
        + 300;
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(forgettable - system_now() + 200).unwrap_or(0),
    ))
    .await;
    assert_eq!(
        store.forget_sale(&sales[0].id, retention).await.unwrap(),
        Forgetting::Forgotten
    );
    assert_eq!(
        store.forget_campaign(&settling.id).await.unwrap(),
        Forgetting::Kept,
        "a sale of it is left"
    );
    assert!(store.campaign(&settling.id).await.unwrap().is_some());
    assert_eq!(
        store.forget_sale(&sales[1].id, retention).await.unwrap(),
        Forgetting::Forgotten
    );
    assert_eq!(
        store.forget_campaign(&settling.id).await.unwrap(),
        Forgetting::Forgotten
    );

    assert!(store.campaign(&settling.id).await.unwrap().is_none());
    assert_eq!(
        store.campaign_ids().await.unwrap(),
        std::slice::from_ref(&other.id)
    );
    assert_eq!(
        store.forget_campaign(&settling.id).await.unwrap(),
        Forgetting::Gone
    );
    let shopper = flashsale::domain::ShopperId::parse("amy").unwrap();
    assert_eq!(
        store.campaign_holds(&other.id, 0, &shopper).await.unwrap(),
        (1, 1),
        "the other campaign's counts are untouched"
    );
    if let Some(redis) = redis.standalone() {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{{{}}}*", settling.id))
            .query(&mut redis.connection())
            .unwrap();
        assert_eq!(left, Vec::<String>::new(), "every key of the campaign gone");
    }
}

/// Goal: a reminder queued again while an earlier attempt of it is being
/// sent (its round moved) is not taken by that attempt's result: neither
/// delivered, postponed nor dead-lettered, it stays due at its new time.
/// Method: lease the reminder, reschedule it, then record each result for
/// the old lease.
async fn a_reminder_moved_while_it_is_sent_stays_queued(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let made = campaign(&[(HOUR_MS / 2, HOUR_MS)], Some(3600));
    store.create_campaign(&made).await.unwrap();
    let first = SaleId::of_campaign(&made.id, 0, 0);
    let leased = store.claim_deliveries(&first, 10, LEASE).await.unwrap();
    assert_eq!(leased.len(), 1, "{leased:?}");

    changed(
        store.as_ref(),
        &made,
        json!({"rounds": [{"number": 0, "starts_at": in_ms(HOUR_MS / 2 + 10 * 60_000)}]}),
    )
    .await;
    let failure = flashsale::store::DeliveryFailure {
        status: Some(500),
        error: "late".into(),
    };
    store.delivered(&first, &leased[0]).await.unwrap();
    store
        .postpone_delivery(&first, &leased[0], Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(!store
        .dead_letter(&first, &leased[0], &failure)
        .await
        .unwrap());

    assert_eq!(
        store.order_backlog(&first).await.unwrap().hand_offs,
        1,
        "still queued"
    );
    assert!(store.dead_letters(&first).await.unwrap().is_empty());
    let due = store.claim_deliveries(&first, 10, LEASE).await.unwrap();
    assert_eq!(
        due.len(),
        1,
        "due now (its new time is past), not an hour on"
    );
    assert_eq!(due[0].attempt, 1, "its attempts from zero");
}

/// Goal: a campaign whose last round the merchant stopped early goes with
/// its last sale, not an hour later (its planned end). Method: a live
/// round of an hour, stopped now; once its sales' payment window and the
/// retention have passed, its sales are forgotten, then the campaign.
async fn a_campaign_stopped_early_goes_with_its_last_sale(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let retention = Duration::from_millis(300);
    let stopped = campaign(&[(-1_000, HOUR_MS)], None);
    store.create_campaign(&stopped).await.unwrap();
    changed(
        store.as_ref(),
        &stopped,
        json!({"rounds": [{"number": 0, "status": "ended"}]}),
    )
    .await;
    // Its sales' payment window (a second) and the retention pass.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    for sale in stopped.sales() {
        assert_eq!(
            store.forget_sale(&sale.id, retention).await.unwrap(),
            Forgetting::Forgotten
        );
    }
    assert_eq!(
        store.forget_campaign(&stopped.id).await.unwrap(),
        Forgetting::Forgotten,
        "no sale of it is left"
    );
    assert!(store.campaign(&stopped.id).await.unwrap().is_none());
}

crate::on_every_store!(
    a_round_reminder_is_due_before_its_round_and_goes_with_its_sale,
    retention_forgets_a_campaign_after_its_last_sale,
    a_campaign_stopped_early_goes_with_its_last_sale,
    a_reminder_moved_while_it_is_sent_stays_queued,
);
