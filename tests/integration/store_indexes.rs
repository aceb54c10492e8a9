//! The indexes that keep reads off the history of sales, and retention,
//! on every store: the index of every sale pages newest first; the open
//! sales leave out closed windows; a shopper's orders are found in the
//! sales they bought in, before and after the sale is settled; a settled
//! sale past its retention is deleted, whole, and nothing else is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flashsale::domain::{
    system_now, OrderId, OrderStatus, Payment, RefundSettledBy, Sale, SaleId, ShopperId,
};
use flashsale::store::keys::SaleKeys;
use flashsale::store::{
    DeliveryFailure, FollowUps, Forgetting, IndexedSale, Store, StoreError, StreamRead,
};

use crate::conformance::{request, sale, subject, Subject};
use crate::support::{Backend, RedisServer};

/// A live sale whose payment window closes `closes_in_ms` from now (its
/// end, with no payment timeout).
fn closing_sale(stock: i64, closes_in_ms: i64) -> Sale {
    Sale {
        ends_at: system_now() + closes_in_ms,
        payment_timeout_secs: 0,
        ..sale(stock, 5, -1_000)
    }
}

/// Every sale of the index, `limit` at a time.
async fn every_page(store: &Arc<dyn Store>, limit: usize) -> Vec<IndexedSale> {
    let mut listed = Vec::new();
    let mut after: Option<IndexedSale> = None;
    loop {
        let page = store.sale_index(after.as_ref(), limit).await.unwrap();
        assert!(page.len() <= limit);
        listed.extend(page.iter().cloned());
        if page.len() < limit {
            return listed;
        }
        after = page.last().cloned();
    }
}

/// Takes the sale's reservations as the order service does: read, accept,
/// acknowledge.
pub async fn accept_all(store: &Arc<dyn Store>, sale: &SaleId) {
    store.join_reservations(sale).await.unwrap();
    let entries = store
        .read_reservations(sale, "test", StreamRead::New, 1_000)
        .await
        .unwrap();
    store.accept_orders(sale, &entries, false).await.unwrap();
    let entry_ids: Vec<_> = entries.into_iter().map(|entry| entry.id).collect();
    store.ack_reservations(sale, &entry_ids).await.unwrap();
}

fn paid_by(transaction: &str) -> Payment {
    Payment {
        amount: None,
        transaction_id: transaction.into(),
    }
}

fn shopper(name: &str) -> ShopperId {
    ShopperId::parse(name).unwrap()
}

/// The keys Redis holds that carry the sale's hash tag.
fn keys_of(redis: &RedisServer, sale: &SaleId) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("*{{{sale}}}*"))
        .query(&mut redis.connection())
        .unwrap()
}

async fn the_index_pages_newest_first_without_repeats(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let base = system_now();
    // Three created in the same millisecond: ties go by id.
    let created_at = [
        base,
        base + 5,
        base + 5,
        base + 5,
        base + 9,
        base + 1,
        base + 2,
    ];
    let mut sales: Vec<IndexedSale> = Vec::new();
    for at in created_at {
        let made = Sale {
            created_at: at,
            ..sale(1, 1, -1_000)
        };
        store.create_sale(&made).await.unwrap();
        sales.push(IndexedSale {
            created_at: at,
            id: made.id,
        });
    }
    sales.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    for limit in [1, 2, 3, 7, 50] {
        assert_eq!(every_page(&store, limit).await, sales, "pages of {limit}");
    }
}

async fn open_sales_leave_out_closed_windows(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(1, 1, -1_000);
    let upcoming = sale(1, 1, 60_000);
    let closed = closing_sale(1, -1_000);
    let closing = closing_sale(1, 300);
    let moved = closing_sale(1, 300);
    for made in [&live, &upcoming, &closed, &closing, &moved] {
        store.create_sale(made).await.unwrap();
    }
    let open: HashSet<SaleId> = store.open_sale_ids().await.unwrap().into_iter().collect();
    assert_eq!(
        open,
        HashSet::from([
            live.id.clone(),
            upcoming.id.clone(),
            closing.id.clone(),
            moved.id.clone()
        ])
    );
    // The merchant moves one end later: it stays open past its old end.
    let version = store.view_sale(&moved.id).await.unwrap().unwrap().version;
    let later = flashsale::domain::SaleChange {
        sale: Sale {
            ends_at: moved.ends_at + 60_000,
            ..moved.clone()
        },
        restricted: false,
        end_now: false,
    };
    store.update_sale(&moved.id, &later, version).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let open: HashSet<SaleId> = store.open_sale_ids().await.unwrap().into_iter().collect();
    assert_eq!(
        open,
        HashSet::from([live.id.clone(), upcoming.id.clone(), moved.id.clone()]),
        "a closed window leaves; a moved one stays"
    );
    assert_eq!(
        every_page(&store, 10).await.len(),
        5,
        "every sale stays indexed"
    );
}

/// A shopper's order list finds the orders of a sale before, while and
/// after the order service settles it; on Redis the shopper's own index of
/// sales is written only when the sale is settled (a race writes no key
/// per shopper), and the settled sale leaves the sales the list reads
/// whole.
async fn a_shopper_finds_orders_of_closed_sales_throughout_settling(backend: Backend) {
    let Subject { store, redis } = subject(backend).await;
    let closing = closing_sale(5, 300);
    let live = sale(5, 5, -1_000);
    store.create_sale(&closing).await.unwrap();
    store.create_sale(&live).await.unwrap();
    let old = store
        .reserve(&request(&closing, "amy", 1, None))
        .await
        .unwrap();
    // A later millisecond: newest first is then by time, not by id.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new = store
        .reserve(&request(&live, "amy", 2, None))
        .await
        .unwrap();
    store
        .reserve(&request(&live, "bob", 1, None))
        .await
        .unwrap();
    accept_all(&store, &closing.id).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!store.open_sale_ids().await.unwrap().contains(&closing.id));
    let amys = || async {
        store
            .shopper_orders(&shopper("amy"))
            .await
            .unwrap()
            .into_iter()
            .map(|order| order.id)
            .collect::<Vec<_>>()
    };
    let both = vec![new.order.id.clone(), old.order.id.clone()];
    assert_eq!(
        amys().await,
        both,
        "the closed sale's order and the open sale's order, newest first"
    );
    // On Redis: what the shopper's index and the unsettled sales hold.
    let indexed = |sale: &SaleId| {
        redis.standalone().map(|redis| {
            let listed: Vec<String> = redis::cmd("ZRANGE")
                .arg(flashsale::store::keys::shopper_sales(&shopper("amy")))
                .arg(0)
                .arg(-1)
                .query(&mut redis.connection())
                .unwrap();
            let unsettled: Option<f64> = redis::cmd("ZSCORE")
                .arg(flashsale::store::keys::OPEN_SALE_INDEX)
                .arg(sale.as_str())
                .query(&mut redis.connection())
                .unwrap();
            (listed.contains(&sale.to_string()), unsettled.is_some())
        })
    };
    if let Some(before) = indexed(&closing.id) {
        assert_eq!(before, (false, true), "accepted, not settled yet");
    }

    store.settle_sale(&closing.id).await.unwrap();
    assert_eq!(amys().await, both, "settled: the same orders");
    if let Some(after) = indexed(&closing.id) {
        assert_eq!(
            after,
            (true, false),
            "in amy's sales, off the unsettled ones"
        );
    }
    store.settle_sale(&closing.id).await.unwrap();
    assert_eq!(amys().await, both, "settling again changes nothing");
    if let Some(live_sale) = indexed(&live.id) {
        assert_eq!(live_sale, (false, true), "the live sale is not settled");
    }
}

async fn a_sales_orders_export_in_pages_each_once(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(100, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let mut made = HashSet::new();
    for i in 0..25 {
        let reservation = store
            .reserve(&request(&live, &format!("s{i}"), 1, None))
            .await
            .unwrap();
        made.insert(reservation.order.id);
    }
    let mut exported = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = store
            .sale_orders(&live.id, cursor.as_deref(), 4)
            .await
            .unwrap();
        exported.extend(page.into_iter().map(|order| order.id));
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(exported.len(), made.len(), "each order once");
    assert_eq!(exported.into_iter().collect::<HashSet<_>>(), made);
    let (none, next) = store
        .sale_orders(&SaleId::generate(), None, 4)
        .await
        .unwrap();
    assert!(none.is_empty() && next.is_none());
}

/// A refund call among a sale's dead letters (WeChat Pay refused it) is
/// money owed to a shopper: it keeps its sale from retention until the
/// merchant re-drives it and it is made; other dead letters go with the
/// sale.
async fn a_dead_refund_keeps_its_sale_from_retention(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let (closing, _) = owing_a_dead_refund(&store).await;
    let letters = store.dead_letters(&closing.id).await.unwrap();
    assert_eq!(
        store.redrive_dead_letters(&closing.id).await.unwrap(),
        u64::try_from(letters.len()).unwrap()
    );
    for delivery in store
        .claim_deliveries(&closing.id, 10, Duration::from_secs(60))
        .await
        .unwrap()
    {
        match delivery.errand.event() {
            "wechatpay.refund" => store.delivered(&closing.id, &delivery).await.unwrap(),
            _webhook => assert!(store
                .dead_letter(&closing.id, &delivery, &refused())
                .await
                .unwrap()),
        }
    }
    assert_eq!(
        store.forget_sale(&closing.id, RETENTION).await.unwrap(),
        Forgetting::Forgotten,
        "the webhook's dead letters go with the sale"
    );
}

/// A dead refund call the merchant paid back another way (settled by
/// hand) owes nothing any more: once its `order.refunded` hand-off is
/// done, the sale is forgotten.
async fn a_dead_refund_settled_by_hand_lets_its_sale_go(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let (closing, order) = owing_a_dead_refund(&store).await;
    store
        .settle_refund(&order, RefundSettledBy::Merchant, true)
        .await
        .unwrap();
    for delivery in store
        .claim_deliveries(&closing.id, 10, Duration::from_secs(60))
        .await
        .unwrap()
    {
        assert_eq!(delivery.errand.event(), "order.refunded");
        store.delivered(&closing.id, &delivery).await.unwrap();
    }
    assert_eq!(
        store.forget_sale(&closing.id, RETENTION).await.unwrap(),
        Forgetting::Forgotten
    );
}

/// The retention of the dead-refund tests.
const RETENTION: Duration = Duration::from_millis(300);

/// How WeChat Pay refuses a refund for good.
fn refused() -> DeliveryFailure {
    DeliveryFailure {
        status: Some(403),
        error: "NOT_ENOUGH".into(),
    }
}

/// A sale past its retention whose one paid order's refund call, and every
/// hand-off, failed for good: retention keeps it, as money owed. Answers
/// the sale and the order.
async fn owing_a_dead_refund(store: &Arc<dyn Store>) -> (Sale, OrderId) {
    let closing = closing_sale(5, 200);
    store.create_sale(&closing).await.unwrap();
    let amy = store
        .reserve(&request(&closing, "amy", 1, None))
        .await
        .unwrap();
    let both = FollowUps {
        hand_off: true,
        refund: true,
    };
    store
        .pay_order(&amy.order.id, &paid_by("tx-1"), both)
        .await
        .unwrap();
    store
        .refund_order(&amy.order.id, false, both)
        .await
        .unwrap();
    accept_all(store, &closing.id).await;
    for delivery in store
        .claim_deliveries(&closing.id, 10, Duration::from_secs(60))
        .await
        .unwrap()
    {
        assert!(store
            .dead_letter(&closing.id, &delivery, &refused())
            .await
            .unwrap());
    }
    let letters = store.dead_letters(&closing.id).await.unwrap();
    assert!(
        letters
            .iter()
            .any(|letter| letter.errand.event() == "wechatpay.refund"),
        "{letters:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.settle_sale(&closing.id).await.unwrap();
    assert_eq!(
        store.forget_sale(&closing.id, RETENTION).await.unwrap(),
        Forgetting::Owed,
        "the dead refund holds its sale"
    );
    (closing, amy.order.id)
}

async fn retention_deletes_a_settled_sale_and_nothing_else(backend: Backend) {
    let Subject { store, redis } = subject(backend).await;
    let retention = Duration::from_millis(300);
    // Settles: one order paid, one cancelled, every reservation accepted.
    let settled = closing_sale(5, 200);
    // Past its window too, but an order is still unpaid.
    let unpaid = closing_sale(5, 200);
    let live = sale(5, 5, -1_000);
    for made in [&settled, &unpaid, &live] {
        store.create_sale(made).await.unwrap();
    }
    let paid = store
        .reserve(&request(&settled, "amy", 1, None))
        .await
        .unwrap();
    let cancelled = store
        .reserve(&request(&settled, "bob", 1, None))
        .await
        .unwrap();
    store
        .reserve(&request(&unpaid, "amy", 1, None))
        .await
        .unwrap();
    let kept = store
        .reserve(&request(&live, "amy", 2, None))
        .await
        .unwrap();
    store
        .pay_order(&paid.order.id, &paid_by("tx-1"), FollowUps::default())
        .await
        .unwrap();
    store
        .cancel_order(&cancelled.order.id, &shopper("bob"))
        .await
        .unwrap();
    for made in [&settled, &unpaid, &live] {
        accept_all(&store, &made.id).await;
    }
    assert_eq!(
        store.forget_sale(&settled.id, retention).await.unwrap(),
        Forgetting::Kept,
        "its retention has not passed"
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        store.forget_sale(&unpaid.id, retention).await.unwrap(),
        Forgetting::Kept,
        "an unpaid order holds its sale"
    );
    assert_eq!(
        store.forget_sale(&live.id, retention).await.unwrap(),
        Forgetting::Kept
    );
    let live_before = store.sale_records(&live.id).await.unwrap().unwrap();
    // As the order service settles it first: in its shoppers' own index.
    store.settle_sale(&settled.id).await.unwrap();
    let bobs = || {
        redis.standalone().map(|redis| {
            redis::cmd("EXISTS")
                .arg(flashsale::store::keys::shopper_sales(&shopper("bob")))
                .query::<i64>(&mut redis.connection())
                .unwrap()
        })
    };
    if let Some(listed) = bobs() {
        assert_eq!(listed, 1, "bob's index lists the settled sale");
    }
    assert_eq!(
        store.forget_sale(&settled.id, retention).await.unwrap(),
        Forgetting::Forgotten
    );

    assert!(store.view_sale(&settled.id).await.unwrap().is_none());
    assert!(store.order(&paid.order.id).await.unwrap().is_none());
    let indexed: Vec<SaleId> = every_page(&store, 10)
        .await
        .into_iter()
        .map(|sale| sale.id)
        .collect();
    assert!(
        !indexed.contains(&settled.id),
        "off the index of every sale"
    );
    assert_eq!(indexed.len(), 2);
    let amy: Vec<_> = store.shopper_orders(&shopper("amy")).await.unwrap();
    assert!(amy.iter().all(|order| order.sale_id != settled.id));
    assert_eq!(amy.len(), 2, "amy's orders of the other sales stay");
    assert_eq!(
        store.forget_sale(&settled.id, retention).await.unwrap(),
        Forgetting::Gone
    );
    // A node that still watched the sale reads its reservations: told the
    // sale is gone, with nothing of it made again.
    for which in [StreamRead::New, StreamRead::OwnPending] {
        let read = store
            .read_reservations(&settled.id, "late-node", which, 10)
            .await;
        assert!(matches!(read, Err(StoreError::NotFound(_))), "{read:?}");
    }

    let live_after = store.sale_records(&live.id).await.unwrap().unwrap();
    assert_eq!(
        live_after.view.stats, live_before.view.stats,
        "nothing of a live sale touched"
    );
    assert!(live_after.audit().differences.is_empty());
    let order = store.order(&kept.order.id).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::PendingPayment);

    if let Some(redis) = redis.standalone() {
        assert_eq!(
            keys_of(redis, &settled.id),
            Vec::<String>::new(),
            "every key gone"
        );
        assert_eq!(
            keys_of(redis, &live.id).len(),
            keys_of(redis, &live.id)
                .iter()
                .filter(|key| SaleKeys::new(&live.id).all().contains(key))
                .count()
        );
        assert!(!keys_of(redis, &live.id).is_empty());
        assert_eq!(bobs(), Some(0), "bob bought only in the forgotten sale");
    }
}

/// On Redis: a sale is settled only once it has ended by Redis's clock
/// (no reservation can come after its shoppers are read), by one engine
/// node at a time (the lease), and a cancelled sale at once.
#[tokio::test]
async fn settling_waits_for_the_window_and_takes_turns() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let redis = redis.standalone().unwrap();
    let unsettled = |sale: &SaleId| {
        redis::cmd("ZSCORE")
            .arg(flashsale::store::keys::OPEN_SALE_INDEX)
            .arg(sale.as_str())
            .query::<Option<f64>>(&mut redis.connection())
            .unwrap()
            .is_some()
    };
    let live = sale(5, 1, -1_000);
    let closing = closing_sale(5, 50);
    let upcoming = sale(5, 1, 60_000);
    for made in [&live, &closing, &upcoming] {
        store.create_sale(made).await.unwrap();
    }
    assert!(
        matches!(
            store.settle_sale(&live.id).await,
            Err(StoreError::Conflict(why)) if why.contains("not ended")
        ),
        "a live sale may still take reservations"
    );
    assert!(unsettled(&live.id), "a live sale stays unsettled");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let lease = SaleKeys::new(&closing.id).settling();
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("1")
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        matches!(
            store.settle_sale(&closing.id).await,
            Err(StoreError::Conflict(why)) if why.contains("another engine node")
        ),
        "another node holds the lease"
    );
    assert!(unsettled(&closing.id));
    let _: () = redis::cmd("DEL")
        .arg(&lease)
        .query(&mut redis.connection())
        .unwrap();
    store.settle_sale(&closing.id).await.unwrap();
    assert!(!unsettled(&closing.id), "settled once it has ended");
    let lease_left: i64 = redis::cmd("EXISTS")
        .arg(&lease)
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(lease_left, 0, "the lease goes with the settling");

    store.cancel_sale(&upcoming.id).await.unwrap();
    store.settle_sale(&upcoming.id).await.unwrap();
    assert!(!unsettled(&upcoming.id), "a cancelled sale settles at once");
}

/// On Redis: a settle that runs past its lease gives back only its own.
/// While this node lists 20,000 shoppers, its lease is replaced as if it
/// had expired and another node had taken it; once done, the other
/// node's lease is still there.
#[tokio::test]
async fn a_settle_past_its_lease_leaves_the_next_holders_lease() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let redis = redis.standalone().unwrap();
    let closing = closing_sale(5, 50);
    store.create_sale(&closing).await.unwrap();
    let keys = SaleKeys::new(&closing.id);
    let mut conn = redis.connection();
    for first in (0..20_000).step_by(1_000) {
        let mut fill = redis::cmd("HSET");
        fill.arg(keys.shoppers());
        for n in first..first + 1_000 {
            fill.arg(format!("shopper-{n}")).arg("0");
        }
        let _: () = fill.query(&mut conn).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let settling = tokio::spawn({
        let store = Arc::clone(&store);
        let id = closing.id.clone();
        async move { store.settle_sale(&id).await }
    });
    let lease = keys.settling();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held: Option<String> = redis::cmd("GET").arg(&lease).query(&mut conn).unwrap();
        if held.is_some() {
            break;
        }
        assert!(
            !settling.is_finished(),
            "the settle ended before its lease was seen"
        );
        assert!(tokio::time::Instant::now() < deadline, "no lease taken");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("the-next-node")
        .query(&mut conn)
        .unwrap();
    settling.await.unwrap().unwrap();
    let held: Option<String> = redis::cmd("GET").arg(&lease).query(&mut conn).unwrap();
    assert_eq!(held.as_deref(), Some("the-next-node"));
}

/// On Redis: a forget that stopped after deleting the sale's records (the
/// process died before the shoppers' indexes were done) is finished by
/// the next call.
#[tokio::test]
async fn an_interrupted_forget_is_finished_by_the_next() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let redis = redis.standalone().unwrap();
    let closed = closing_sale(5, 50);
    store.create_sale(&closed).await.unwrap();
    let order = store
        .reserve(&request(&closed, "cai", 1, None))
        .await
        .unwrap();
    store
        .cancel_order(&order.order.id, &shopper("cai"))
        .await
        .unwrap();
    accept_all(&store, &closed.id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.settle_sale(&closed.id).await.unwrap();
    // What the first step leaves: every key but the shoppers hash.
    let keys = SaleKeys::new(&closed.id);
    for key in keys.all() {
        if key != keys.shoppers() {
            let _: () = redis::cmd("DEL")
                .arg(&key)
                .query(&mut redis.connection())
                .unwrap();
        }
    }
    let cais = flashsale::store::keys::shopper_sales(&shopper("cai"));
    let listed: i64 = redis::cmd("EXISTS")
        .arg(&cais)
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(listed, 1);
    assert_eq!(
        store.forget_sale(&closed.id, Duration::ZERO).await.unwrap(),
        Forgetting::Forgotten,
        "finished"
    );
    assert_eq!(keys_of(redis, &closed.id), Vec::<String>::new());
    let listed: i64 = redis::cmd("EXISTS")
        .arg(&cais)
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(listed, 0, "off cai's sales");
    assert!(every_page(&store, 10).await.is_empty(), "off the index");
    assert_eq!(
        store.forget_sale(&closed.id, Duration::ZERO).await.unwrap(),
        Forgetting::Gone
    );
}

crate::on_every_store!(
    the_index_pages_newest_first_without_repeats,
    open_sales_leave_out_closed_windows,
    a_shopper_finds_orders_of_closed_sales_throughout_settling,
    a_sales_orders_export_in_pages_each_once,
    retention_deletes_a_settled_sale_and_nothing_else,
    a_dead_refund_keeps_its_sale_from_retention,
    a_dead_refund_settled_by_hand_lets_its_sale_go,
);
