//! Goal: the order service takes every reservation from a sale's stream
//! exactly once in effect, even when a consumer dies between reading and
//! acknowledging; hand-offs to the merchant are leased, retried and
//! forgotten once delivered.
//! Method: store level and through `OrderService::try_process_batch`, on
//! both stores.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flashsale::clock::{Clock, ManualClock, SystemClock};
use flashsale::domain::{system_now, OrderEvent, OrderId, Payment, Sale, SaleId, ShopperId};
use flashsale::inventory::{ActorSettings, Inventory};
use flashsale::orders::{OrderService, OrderSettings, Orders, Outcome};
use flashsale::store::{
    keys, Acceptance, DeliveryFailure, Errand, FollowUps, Store, StreamEntry, StreamRead,
};
use futures::future::join_all;

use crate::conformance::{request, sale, subject, with_live_order, Subject};
use crate::on_every_store;
use crate::support::{actor_settings, Backend};

const RESERVATIONS: usize = 100;
const CLAIM_IDLE: Duration = Duration::from_millis(200);

fn order_service(store: &Arc<dyn Store>, consumer: &str, batch: usize) -> OrderService {
    order_service_on(store, consumer, batch, Arc::new(SystemClock))
}

fn order_service_on(
    store: &Arc<dyn Store>,
    consumer: &str,
    batch: usize,
    clock: Arc<dyn Clock>,
) -> OrderService {
    order_service_with(store, consumer, batch, clock, CLAIM_IDLE)
}

fn order_service_with(
    store: &Arc<dyn Store>,
    consumer: &str,
    batch: usize,
    clock: Arc<dyn Clock>,
    claim_idle: Duration,
) -> OrderService {
    let settings = ActorSettings {
        refresh: Duration::from_secs(1),
        idle_stop: Duration::from_secs(60),
        ..actor_settings()
    };
    let inventory = Inventory::start(Arc::clone(store), 1, settings, Duration::from_secs(2))
        .expect("actor system");
    OrderService::new(
        Arc::clone(store),
        Arc::new(Orders::new(Arc::clone(store), Arc::new(inventory))),
        None,
        OrderSettings {
            sweep: Duration::from_millis(10),
            batch,
            claim_idle,
            consumer: consumer.into(),
            clock,
            retention: Duration::from_secs(3600),
        },
    )
}

/// The sale's reservations as the order service reads them.
async fn read_all(store: &Arc<dyn Store>, sale: &SaleId) -> Vec<StreamEntry> {
    store.join_reservations(sale).await.unwrap();
    store
        .read_reservations(sale, "test", StreamRead::New, 1_000)
        .await
        .unwrap()
}

/// A consumer reads 60 entries, accepts 10 of them and dies without
/// acknowledging: another consumer takes all 60 over once they are idle,
/// and every order is accepted once.
async fn consumer_killed_mid_batch_loses_nothing(backend: Backend) {
    let Subject { store, redis } = subject(backend).await;
    let live = sale(1_000, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    for result in join_all((0..RESERVATIONS).map(|i| {
        let (store, request) = (&store, request(&live, &format!("s-{i}"), 1, None));
        async move { store.reserve(&request).await }
    }))
    .await
    {
        result.unwrap();
    }
    let backlog = store.order_backlog(&live.id).await.unwrap();
    assert_eq!((backlog.reservations, backlog.deadlines), (100, 100));
    store.join_reservations(&live.id).await.unwrap();
    let taken = store
        .read_reservations(&live.id, "doomed", StreamRead::New, 60)
        .await
        .unwrap();
    assert_eq!(taken.len(), 60);
    assert_eq!(
        store
            .accept_orders(&live.id, &taken[..10], false)
            .await
            .unwrap(),
        vec![Acceptance::Queued; 10]
    );
    // The doomed consumer dies here: nothing acknowledged.

    let mut heir = order_service(&store, "heir", 256);
    let first = heir.try_process_batch().await;
    assert_eq!(
        (first.accepted, first.reclaimed, first.store_errors),
        (40, 0, 0),
        "only the never-delivered entries at first: {first:?}"
    );
    tokio::time::sleep(CLAIM_IDLE + Duration::from_millis(50)).await;
    let second = heir.try_process_batch().await;
    assert_eq!(
        (second.reclaimed, second.accepted, second.redelivered),
        (60, 50, 10),
        "the dead consumer's entries are taken over: {second:?}"
    );
    assert_eq!(
        heir.try_process_batch().await,
        Outcome::default(),
        "nothing left"
    );

    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 100, "every order accepted once: {stats:?}");
    assert_eq!(
        store.accept_orders(&live.id, &taken, false).await.unwrap(),
        vec![Acceptance::Unchanged; 60],
        "a late redelivery changes nothing"
    );
    assert_eq!(
        store
            .view_sale(&live.id)
            .await
            .unwrap()
            .unwrap()
            .stats
            .queued,
        100
    );
    assert!(store
        .claim_reservations(&live.id, "late", Duration::ZERO, 1_000)
        .await
        .unwrap()
        .is_empty());
    let backlog = store.order_backlog(&live.id).await.unwrap();
    assert_eq!(
        (backlog.reservations, backlog.deadlines, backlog.hand_offs),
        (0, 100, 0),
        "every entry processed; the orders still wait for payment"
    );
    if let Some(redis) = redis.standalone() {
        let mut conn = redis.connection();
        let stream = format!("fs:{{{}}}:stream", live.id);
        let length: i64 = redis::cmd("XLEN").arg(&stream).query(&mut conn).unwrap();
        assert_eq!(length, 0, "acknowledged entries leave the stream");
    }
}

/// A store with a sale of `RESERVATIONS` reserve calls (one stream entry
/// each), of which `node` read the first 60 and accepted 10 before it
/// stopped, acknowledging nothing.
async fn read_by_a_node_that_stopped(backend: Backend, node: &str) -> (Subject, Sale) {
    let subject = subject(backend).await;
    let store = &subject.store;
    let live = sale(1_000, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    for i in 0..RESERVATIONS {
        store
            .reserve(&request(&live, &format!("s-{i}"), 1, None))
            .await
            .unwrap();
    }
    store.join_reservations(&live.id).await.unwrap();
    let taken = store
        .read_reservations(&live.id, node, StreamRead::New, 60)
        .await
        .unwrap();
    assert_eq!(taken.len(), 60);
    store
        .accept_orders(&live.id, &taken[..10], false)
        .await
        .unwrap();
    (subject, live)
}

/// A node restarted under its own name reads again, at its first passes,
/// the entries it had read and not acknowledged, a batch at a time, with
/// no wait for `claim_idle` (an hour here); only its own: another
/// consumer's pending entries are left to `claim_idle`.
async fn a_restarted_node_retakes_its_own_entries_at_once(backend: Backend) {
    let (subject, live) = read_by_a_node_that_stopped(backend, "node-a").await;
    let store = &subject.store;
    let hour = Duration::from_secs(3_600);
    let mut other = order_service_with(store, "node-b", 25, Arc::new(SystemClock), hour);
    let first = other.try_process_batch().await;
    assert_eq!(
        (first.reclaimed, first.accepted, first.redelivered),
        (0, 25, 0),
        "another node reads only new entries: {first:?}"
    );
    let second = other.try_process_batch().await;
    assert_eq!((second.reclaimed, second.accepted), (0, 15), "{second:?}");
    drop(other);

    let mut restarted = order_service_with(store, "node-a", 25, Arc::new(SystemClock), hour);
    let mut passes = Vec::new();
    for _ in 0..3 {
        let pass = restarted.try_process_batch().await;
        passes.push((pass.reclaimed, pass.accepted, pass.redelivered));
    }
    assert_eq!(
        passes,
        [(25, 15, 10), (25, 25, 0), (10, 10, 0)],
        "its own 60 entries, oldest first, 25 a pass"
    );
    assert_eq!(restarted.try_process_batch().await, Outcome::default());
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 100, "every order accepted once: {stats:?}");
    assert_eq!(store.order_backlog(&live.id).await.unwrap().reservations, 0);
}

/// With `claim_idle` at zero, the entries a restarted node reads again of
/// its own are idle enough for its takeover read in the same pass too:
/// each is still taken, and counted, once.
async fn own_entries_read_again_are_taken_once_under_any_claim_idle(backend: Backend) {
    let (subject, live) = read_by_a_node_that_stopped(backend, "node-a").await;
    let store = &subject.store;
    let mut restarted =
        order_service_with(store, "node-a", 256, Arc::new(SystemClock), Duration::ZERO);
    let first = restarted.try_process_batch().await;
    assert_eq!(
        (first.reclaimed, first.accepted, first.redelivered),
        (60, 90, 10),
        "its own 60 entries once, then the 40 never read: {first:?}"
    );
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 100, "every order accepted once: {stats:?}");
    assert_eq!(restarted.try_process_batch().await, Outcome::default());
}

/// A live sale of 1,000 units, already watched by an order service that
/// takes over no other consumer's entries (`claim_idle` an hour).
async fn watched_live_sale(backend: Backend, per_user_limit: i64) -> (Subject, Sale, OrderService) {
    let subject = subject(backend).await;
    let live = sale(1_000, per_user_limit, -1_000);
    subject.store.create_sale(&live).await.unwrap();
    let mut service = order_service_with(
        &subject.store,
        "node-a",
        256,
        Arc::new(SystemClock),
        Duration::from_secs(3_600),
    );
    assert_eq!(service.try_process_batch().await, Outcome::default());
    (subject, live, service)
}

/// A pass that reads reservations and then fails to accept them (Redis
/// out of memory refuses the accept script's writes but not
/// `XREADGROUP`) leaves them pending on this consumer; the next pass
/// reads them again at once, with no wait for `claim_idle` (an hour
/// here). Redis only: the embedded store cannot fail.
async fn a_pass_that_fails_after_reading_retakes_its_entries_next_pass(backend: Backend) {
    let (Subject { store, redis }, live, mut service) = watched_live_sale(backend, 1).await;
    for i in 0..20 {
        store
            .reserve(&request(&live, &format!("s-{i}"), 1, None))
            .await
            .unwrap();
    }

    redis.config_set("maxmemory", "1");
    let full = service.try_process_batch().await;
    redis.config_set("maxmemory", "0");
    assert_eq!(full.accepted, 0, "{full:?}");
    assert!(full.store_errors > 0, "{full:?}");
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 0, "nothing accepted while full: {stats:?}");

    let next = service.try_process_batch().await;
    assert_eq!(
        (next.reclaimed, next.accepted, next.store_errors),
        (20, 20, 0),
        "the entries read while full are taken at once: {next:?}"
    );
    assert_eq!(service.try_process_batch().await, Outcome::default());
    assert_eq!(store.order_backlog(&live.id).await.unwrap().reservations, 0);
}

/// At its first pass the order service takes up every sale of the index,
/// which it reads a page (1,000 sales) at a time: here one page and one
/// sale more, created in the same millisecond or a few (ties go by id).
async fn the_first_pass_watches_every_sale_of_the_index(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let mut sales = Vec::new();
    for _ in 0..1_001 {
        let upcoming = sale(10, 1, 60_000);
        store.create_sale(&upcoming).await.unwrap();
        sales.push(upcoming.id);
    }
    let mut service = order_service(&store, "node-a", 256);
    assert_eq!(service.try_process_batch().await.store_errors, 0);
    let unwatched: Vec<&SaleId> = sales.iter().filter(|id| !service.watches(id)).collect();
    assert!(unwatched.is_empty(), "not taken up: {unwatched:?}");
}

crate::on_both_stores!(the_first_pass_watches_every_sale_of_the_index);

/// Stream entries the order service cannot read (hand-edited or corrupt
/// data: no orders, an order id that is not one, units missing or not a
/// whole number) are dropped and counted, and hold up neither the sale's
/// other entries, read before and after them in the same pass, nor its
/// count of queued units: the accept script checks an entry before it
/// writes anything of it, as Redis keeps the writes a failing script made.
/// Redis only: the embedded store holds no such entry.
async fn unreadable_entries_are_dropped_and_the_rest_taken(backend: Backend) {
    let (Subject { store, redis }, live, mut service) = watched_live_sale(backend, 2).await;
    let mut made = Vec::new();
    for i in 0..3 {
        let who = format!("before-{i}");
        made.push(store.reserve(&request(&live, &who, 2, None)).await.unwrap());
    }
    let known = made[0].order.id.as_str();
    let unreadable: [&[(&str, &str)]; 6] = [
        &[("batch", "900"), ("units", "1")],
        &[("order_ids", " "), ("batch", "901"), ("units", "1")],
        &[("order_ids", "not/an id"), ("batch", "902"), ("units", "1")],
        &[("order_ids", known), ("batch", "903")],
        &[("order_ids", known), ("batch", "904"), ("units", "1.5")],
        &[("order_ids", known), ("batch", "905"), ("units", "inf")],
    ];
    let stream = keys::SaleKeys::new(&live.id).stream();
    for fields in unreadable {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&stream).arg("*");
        for (name, value) in fields {
            xadd.arg(*name).arg(*value);
        }
        let _: String = redis.query(&xadd);
    }
    for i in 0..3 {
        let who = format!("after-{i}");
        store.reserve(&request(&live, &who, 2, None)).await.unwrap();
    }

    let pass = service.try_process_batch().await;
    assert_eq!(
        (pass.accepted, pass.dropped, pass.store_errors),
        (6, 6, 0),
        "every readable reservation taken, every other dropped: {pass:?}"
    );
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 12, "the units of the six taken: {stats:?}");
    assert_eq!(service.try_process_batch().await, Outcome::default());
    assert_eq!(store.order_backlog(&live.id).await.unwrap().reservations, 0);
    let audit = store.sale_records(&live.id).await.unwrap().unwrap().audit();
    assert!(audit.differences.is_empty(), "{:?}", audit.differences);
}

/// A watched sale that another node's retention forgot is no longer
/// watched after the next pass: no store error pass after pass, and no key
/// of it made again (a stream made for it would outlive every retention).
/// Method: every key of a watched sale deleted behind the service's back,
/// as `forget_sale.lua` deletes them; then passes. Redis only: the
/// embedded store is forgotten by its own node's service.
async fn a_watched_sale_forgotten_elsewhere_is_let_go(backend: Backend) {
    let (Subject { store, redis }, live, mut service) = watched_live_sale(backend, 1).await;
    store
        .reserve(&request(&live, "early", 1, None))
        .await
        .unwrap();
    assert!(service.try_process_batch().await.accepted > 0);
    assert!(service.watches(&live.id));

    let keys = keys::SaleKeys::new(&live.id).all();
    let _: i64 = redis.query(redis::cmd("DEL").arg(&keys));
    for _ in 0..3 {
        let outcome = service.try_process_batch().await;
        assert_eq!(outcome.store_errors, 0, "{outcome:?}");
    }
    assert!(!service.watches(&live.id), "let go");
    let exists: i64 = redis.query(redis::cmd("EXISTS").arg(&keys));
    assert_eq!(exists, 0, "nothing of the sale made again");
}

crate::store_tests!(
    [redis => Redis, redis_cluster => RedisCluster];
    a_pass_that_fails_after_reading_retakes_its_entries_next_pass,
    unreadable_entries_are_dropped_and_the_rest_taken,
    a_watched_sale_forgotten_elsewhere_is_let_go,
);

/// A hand-off is leased for one attempt, comes back after a failure's
/// backoff with the next attempt number, and is forgotten once delivered.
async fn hand_offs_are_leased_retried_and_forgotten(backend: Backend) {
    let (subject, live, order) = with_live_order(backend, "buyer").await;
    let store = &subject.store;
    let entries = read_all(store, &live.id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        store.accept_orders(&live.id, &entries, true).await.unwrap(),
        [Acceptance::Queued]
    );
    assert_eq!(
        store.accept_orders(&live.id, &entries, true).await.unwrap(),
        [Acceptance::Unchanged],
        "queued once"
    );

    let lease = Duration::from_secs(60);
    let due = store.claim_deliveries(&live.id, 10, lease).await.unwrap();
    assert_eq!(due.len(), 1, "queued once: {due:?}");
    assert_eq!(
        (&due[0].errand, due[0].attempt),
        (&Errand::Order(OrderEvent::Reserved, order.id.clone()), 1)
    );
    assert!(
        store
            .claim_deliveries(&live.id, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "leased: nobody else sends it"
    );
    store
        .postpone_delivery(&live.id, &due[0], Duration::ZERO)
        .await
        .unwrap();
    let retry = store.claim_deliveries(&live.id, 10, lease).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempt, 2, "the attempt count goes on");
    store.delivered(&live.id, &retry[0]).await.unwrap();

    let payment = Payment {
        amount: None,
        transaction_id: "tx-1".into(),
    };
    store
        .pay_order(
            &order.id,
            &payment,
            FollowUps {
                hand_off: true,
                refund: false,
            },
        )
        .await
        .unwrap();
    let paid = store.claim_deliveries(&live.id, 10, lease).await.unwrap();
    assert_eq!(paid.len(), 1, "only the payment is left: {paid:?}");
    assert_eq!(
        (&paid[0].errand, paid[0].attempt),
        (&Errand::Order(OrderEvent::Paid, order.id.clone()), 1)
    );
    store.delivered(&live.id, &paid[0]).await.unwrap();
    store
        .postpone_delivery(&live.id, &paid[0], Duration::ZERO)
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(&live.id, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "delivered hand-offs are gone for good"
    );
}

/// A hand-off that failed for good leaves the outbox for the dead letters
/// with its attempts and failure (once: a second move finds it gone), is
/// no longer leased nor counted as work left, and a re-drive puts every
/// dead letter back, due now, its attempts counted from zero.
async fn dead_letters_leave_the_outbox_until_redriven(backend: Backend) {
    let (subject, live, _) = with_live_order(backend, "dl-a").await;
    let store = &subject.store;
    store
        .reserve(&request(&live, "dl-b", 1, None))
        .await
        .unwrap();
    let entries = read_all(store, &live.id).await;
    assert_eq!(entries.len(), 2);
    store.accept_orders(&live.id, &entries, true).await.unwrap();
    let lease = Duration::from_secs(60);
    let first = store.claim_deliveries(&live.id, 10, lease).await.unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    let (tried_twice, tried_once) = (&first[0], &first[1]);
    store
        .postpone_delivery(&live.id, tried_twice, Duration::ZERO)
        .await
        .unwrap();
    let retry = store.claim_deliveries(&live.id, 10, lease).await.unwrap();
    assert_eq!(retry.len(), 1, "{retry:?}");
    assert_eq!(retry[0].attempt, 2);

    let answered = DeliveryFailure {
        status: Some(500),
        error: "the webhook answered 500 Internal Server Error".into(),
    };
    let unanswered = DeliveryFailure {
        status: None,
        error: "connection refused".into(),
    };
    assert!(store
        .dead_letter(&live.id, &retry[0], &answered)
        .await
        .unwrap());
    assert!(
        !store
            .dead_letter(&live.id, &retry[0], &answered)
            .await
            .unwrap(),
        "moved once"
    );
    assert!(store
        .dead_letter(&live.id, tried_once, &unanswered)
        .await
        .unwrap());
    assert_eq!(store.order_backlog(&live.id).await.unwrap().hand_offs, 0);
    assert!(store
        .claim_deliveries(&live.id, 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    let letters = store.dead_letters(&live.id).await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters.windows(2).all(|pair| pair[0].at <= pair[1].at));
    for letter in &letters {
        assert_eq!(letter.errand.event(), "order.reserved");
        assert!((letter.at - system_now()).abs() < 5_000, "{letter:?}");
        let (attempts, failure) = if letter.errand == tried_twice.errand {
            (2, &answered)
        } else {
            assert_eq!(letter.errand, tried_once.errand);
            (1, &unanswered)
        };
        assert_eq!((letter.attempts, &letter.failure), (attempts, failure));
    }

    assert_eq!(store.redrive_dead_letters(&live.id).await.unwrap(), 2);
    assert!(store.dead_letters(&live.id).await.unwrap().is_empty());
    assert_eq!(store.order_backlog(&live.id).await.unwrap().hand_offs, 2);
    let again = store.claim_deliveries(&live.id, 10, lease).await.unwrap();
    assert_eq!(again.len(), 2, "due at once: {again:?}");
    assert!(
        again.iter().all(|delivery| delivery.attempt == 1),
        "attempts reset: {again:?}"
    );
    assert_eq!(store.redrive_dead_letters(&live.id).await.unwrap(), 0);
}

/// A consumer group lost with Redis's data (say restored from before it
/// existed) is created again: reservations and expiry go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_consumer_group_is_recreated() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let mut live = sale(10, 1, -1_000);
    live.payment_timeout_secs = 1;
    store.create_sale(&live).await.unwrap();
    let first = store.reserve(&request(&live, "a", 1, None)).await.unwrap();
    let mut service = order_service(&store, "survivor", 256);
    assert_eq!(service.try_process_batch().await.accepted, 1);

    let stream = format!("fs:{{{}}}:stream", live.id);
    let mut conn = redis.standalone().unwrap().connection();
    let destroyed: i64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&stream)
        .arg("orders")
        .query(&mut conn)
        .unwrap();
    assert_eq!(destroyed, 1);
    let second = store.reserve(&request(&live, "b", 1, None)).await.unwrap();
    let deadline = first.order.expires_at.max(second.order.expires_at);
    let wait = deadline - flashsale::domain::system_now() + 20;
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;

    let outcome = service.try_process_batch().await;
    assert_eq!(
        (outcome.accepted, outcome.expired, outcome.store_errors),
        (1, 2, 0),
        "{outcome:?}"
    );
}

/// Between passes the order service sleeps on its clock: a reservation made
/// while it sleeps waits for the next pass, which comes when the clock has
/// moved one sweep on (a manual clock here, moved by the test).
async fn the_order_service_passes_when_its_clock_says(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(10, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let clock = Arc::new(ManualClock::at(system_now()));
    let service = order_service_on(&store, "timed", 256, Arc::clone(&clock) as Arc<dyn Clock>);
    let sweep = Duration::from_millis(10);
    let running = tokio::spawn(service.run());
    clock.sleeping(1).await;

    store.reserve(&request(&live, "a", 1, None)).await.unwrap();
    let waiting = store.order_backlog(&live.id).await.unwrap();
    assert_eq!(waiting.reservations, 1, "asleep: the reservation waits");
    clock.advance(sweep).await;
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        stats.queued, 1,
        "the pass one sweep later took it: {stats:?}"
    );
    running.abort();
}

/// A sale is listed in the index one step before it is stored. An order
/// service pass that reads the index between the two steps must not take
/// the listed id for a finished sale: once the sale is stored, its
/// reservations are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_listed_before_it_is_stored_is_watched() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let live = sale(10, 1, -1_000);
    let mut conn = redis.standalone().unwrap().connection();
    let listed: i64 = redis::cmd("ZADD")
        .arg(flashsale::store::keys::SALE_INDEX)
        .arg(live.created_at)
        .arg(live.id.as_str())
        .query(&mut conn)
        .unwrap();
    assert_eq!(listed, 1, "the first step of creating the sale");
    let mut service = order_service(&store, "early", 256);
    assert_eq!(
        service.try_process_batch().await,
        Outcome::default(),
        "nothing to do yet"
    );

    store.create_sale(&live).await.unwrap();
    store.reserve(&request(&live, "a", 1, None)).await.unwrap();
    let outcome = service.try_process_batch().await;
    assert_eq!(
        (outcome.accepted, outcome.store_errors),
        (1, 0),
        "the sale is watched once it exists: {outcome:?}"
    );
}

/// A live sale and the ids of the 10 orders one reserve call made in it.
async fn one_batch_of_ten(store: &Arc<dyn Store>) -> (Sale, BTreeSet<OrderId>) {
    let live = sale(1_000, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let requests: Vec<_> = (0..10)
        .map(|i| request(&live, &format!("b-{i}"), 1, None))
        .collect();
    let mut made = BTreeSet::new();
    for outcome in store.reserve_batch(&requests).await.unwrap() {
        made.insert(outcome.unwrap().order.id);
    }
    (live, made)
}

/// One reserve call of 10 reservations is one stream entry carrying 10
/// orders; an order service whose batch is 4 (it accepts about 4 orders a
/// call, but never part of an entry) accepts all 10 in one pass and
/// acknowledges the entry, leaving nothing behind.
async fn a_batch_is_one_entry_accepted_whole(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let (live, _) = one_batch_of_ten(&store).await;
    let backlog = store.order_backlog(&live.id).await.unwrap();
    assert_eq!(
        (backlog.reservations, backlog.deadlines),
        (1, 1),
        "one stream entry and one payment deadline for the call"
    );

    let mut service = order_service(&store, "chunked", 4);
    let outcome = service.try_process_batch().await;
    assert_eq!(
        (outcome.accepted, outcome.store_errors),
        (10, 0),
        "{outcome:?}"
    );
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 10, "{stats:?}");
    let backlog = store.order_backlog(&live.id).await.unwrap();
    assert_eq!(
        (backlog.reservations, backlog.deadlines),
        (0, 1),
        "the entry is acknowledged and gone; the call's orders still wait for payment"
    );
}

/// Every order of a batch (one entry) is handed to the merchant once when
/// the entry is accepted, and a second acceptance of the entry queues
/// nothing more.
async fn every_order_of_a_batch_is_handed_off_once(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let (live, made) = one_batch_of_ten(&store).await;
    let entries = read_all(&store, &live.id).await;
    assert_eq!(entries.len(), 10, "an entry read as one item per order");
    assert_eq!(
        store.accept_orders(&live.id, &entries, true).await.unwrap(),
        vec![Acceptance::Queued; 10]
    );
    assert_eq!(
        store.accept_orders(&live.id, &entries, true).await.unwrap(),
        vec![Acceptance::Unchanged; 10]
    );
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 10, "{stats:?}");
    let due = store
        .claim_deliveries(&live.id, 100, Duration::from_secs(60))
        .await
        .unwrap();
    let handed: BTreeSet<_> = due
        .iter()
        .map(|delivery| match &delivery.errand {
            Errand::Order(OrderEvent::Reserved, id) => id.clone(),
            other => panic!("not a reservation's hand-off: {other:?}"),
        })
        .collect();
    assert_eq!(due.len(), 10, "each once: {due:?}");
    assert_eq!(handed, made);
}

/// On Redis: once a sale's payment window is over and nothing is left to
/// do, the order service settles it: the sale goes into its shoppers' own
/// index of sales and leaves the unsettled ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_service_settles_a_closed_sale() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let redis = redis.standalone().unwrap();
    let closing = Sale {
        ends_at: system_now() + 300,
        payment_timeout_secs: 0,
        ..sale(5, 1, -1_000)
    };
    store.create_sale(&closing).await.unwrap();
    let sol = ShopperId::parse("sol").unwrap();
    let made = store
        .reserve(&request(&closing, sol.as_str(), 1, None))
        .await
        .unwrap();
    store.cancel_order(&made.order.id, &sol).await.unwrap();
    let settled = || {
        let mut conn = redis.connection();
        let listed: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys::shopper_sales(&sol))
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        let unsettled: Option<f64> = redis::cmd("ZSCORE")
            .arg(keys::OPEN_SALE_INDEX)
            .arg(closing.id.as_str())
            .query(&mut conn)
            .unwrap();
        (listed == [closing.id.to_string()], unsettled.is_none())
    };
    let mut service = order_service(&store, "settler", 256);
    service.try_process_batch().await;
    assert_eq!(settled(), (false, false), "open: not settled");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while settled() != (true, true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {:?}",
            settled()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        service.try_process_batch().await;
    }
    let listed = store.shopper_orders(&sol).await.unwrap();
    assert_eq!(listed.len(), 1, "still listed once settled: {listed:?}");
}

/// On Redis: an order record a build before batches marked taken
/// (`queued_at`, no batch) audits as taken, and a stream entry such a
/// build wrote (no batch) is told `NotFound` and takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_entries_of_a_build_before_batches() {
    let Subject { store, redis } = subject(Backend::Redis).await;
    let redis = redis.standalone().unwrap();
    let live = sale(10, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let made = store
        .reserve(&request(&live, "old", 1, None))
        .await
        .unwrap();
    let entries = read_all(&store, &live.id).await;
    store
        .accept_orders(&live.id, &entries, false)
        .await
        .unwrap();
    let entry_ids: Vec<_> = entries.into_iter().map(|entry| entry.id).collect();
    store.ack_reservations(&live.id, &entry_ids).await.unwrap();

    // The record as such a build kept it, and its batch unknown.
    let keys = keys::SaleKeys::new(&live.id);
    let mut conn = redis.connection();
    let record: String = redis::cmd("HGET")
        .arg(keys.orders())
        .arg(made.order.id.as_str())
        .query(&mut conn)
        .unwrap();
    let old: Vec<&str> = record
        .split(' ')
        .filter(|pair| !pair.starts_with("batch="))
        .chain(["queued_at=1"])
        .collect();
    let _: () = redis::cmd("HSET")
        .arg(keys.orders())
        .arg(made.order.id.as_str())
        .arg(old.join(" "))
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys.accepted())
        .query(&mut conn)
        .unwrap();
    let audit = store.sale_records(&live.id).await.unwrap().unwrap().audit();
    assert!(audit.differences.is_empty(), "{:?}", audit.differences);

    let _: String = redis::cmd("XADD")
        .arg(keys.stream())
        .arg("*")
        .arg("order_ids")
        .arg(made.order.id.as_str())
        .query(&mut conn)
        .unwrap();
    let legacy = read_all(&store, &live.id).await;
    assert_eq!(legacy.len(), 1);
    assert_eq!(
        store.accept_orders(&live.id, &legacy, true).await.unwrap(),
        [Acceptance::NotFound]
    );
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.queued, 1, "counted once, by its own build: {stats:?}");
    let backlog = store.order_backlog(&live.id).await.unwrap();
    assert_eq!(backlog.hand_offs, 0, "nothing queued for the webhook");
}

/// A pass may acknowledge more entries than a Lua stack holds values
/// (about 8,000): 9,000 lone reservations, taken in one pass, are all
/// acknowledged and leave the stream.
async fn a_pass_acknowledges_more_entries_than_a_lua_stack_holds(backend: Backend) {
    const LONE: usize = 9_000;
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(LONE as i64, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    // 500 calls at a time, well within the store's timeout.
    for wave in 0..LONE / 500 {
        for result in join_all((0..500).map(|i| {
            let who = format!("l-{}", wave * 500 + i);
            let (store, request) = (&store, request(&live, &who, 1, None));
            async move { store.reserve(&request).await }
        }))
        .await
        {
            result.unwrap();
        }
    }
    let mut service = order_service(&store, "wide", 10_000);
    let outcome = service.try_process_batch().await;
    assert_eq!(
        (outcome.accepted, outcome.store_errors),
        (LONE, 0),
        "{outcome:?}"
    );
    let backlog = store.order_backlog(&live.id).await.unwrap();
    assert_eq!(backlog.reservations, 0, "every entry acknowledged and gone");
}

on_every_store!(
    dead_letters_leave_the_outbox_until_redriven,
    the_order_service_passes_when_its_clock_says,
    consumer_killed_mid_batch_loses_nothing,
    hand_offs_are_leased_retried_and_forgotten,
    a_batch_is_one_entry_accepted_whole,
    every_order_of_a_batch_is_handed_off_once,
    a_pass_acknowledges_more_entries_than_a_lua_stack_holds,
    a_restarted_node_retakes_its_own_entries_at_once,
    own_entries_read_again_are_taken_once_under_any_claim_idle,
);
