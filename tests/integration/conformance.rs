//! The store conformance suite: one set of tests, run against the embedded
//! store and against Redis, so both keep exactly the same semantics.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flashsale::config::RedisDurability;
use flashsale::domain::{
    system_now, Order, OrderId, OrderStatus, PatchStatus, Quantity, Rejection, Sale, SaleChange,
    SaleId, SalePatch, SaleRules, SaleState, SaleStatus, ShopperId,
};
use flashsale::domain::{
    OrderAsk, OrderEvent, Payment, PaymentException, PaymentExceptionKind, PaymentOutcome,
    RefundKind, RefundSettledBy, ReserveRequest,
};
use flashsale::store::{
    DeliveryFailure, EmbeddedStore, Errand, FollowUps, RedisStore, RedisTarget, RefundSettlement,
    ShopperBounds, Store, StoreError, CANCELS_PER_SHOPPER_DEFAULT, EXPIRIES_PER_SHOPPER_DEFAULT,
    PREPAY_CHANGED,
};
use futures::future::join_all;

use crate::support::{Backend, Servers};

const HOUR_MS: i64 = 3_600_000;

/// A store under test, with whatever servers it needs kept alive.
pub struct Subject {
    pub store: Arc<dyn Store>,
    pub redis: Servers,
}

pub async fn subject(backend: Backend) -> Subject {
    subject_bounded(backend, ShopperBounds::default()).await
}

/// The same, the store holding shoppers to `bounds`.
pub async fn subject_bounded(backend: Backend, bounds: ShopperBounds) -> Subject {
    let servers = Servers::start(backend);
    let store: Arc<dyn Store> = match &servers {
        Servers::None => Arc::new(EmbeddedStore::new().with_shopper_bounds(bounds)),
        Servers::Standalone(redis) => connect(&RedisTarget::Standalone(redis.url()), bounds).await,
        Servers::Cluster(cluster) => connect(&RedisTarget::Cluster(cluster.urls()), bounds).await,
    };
    Subject {
        store,
        redis: servers,
    }
}

async fn connect(target: &RedisTarget, bounds: ShopperBounds) -> Arc<dyn Store> {
    let store = RedisStore::connect(
        target,
        std::time::Duration::from_secs(2),
        RedisDurability::Always,
    )
    .await
    .expect("connect")
    .with_shopper_bounds(bounds);
    Arc::new(store)
}

/// A store under test with a live sale of 10 units, limit 1, and one order
/// `shopper` reserved in it.
pub async fn with_live_order(backend: Backend, shopper: &str) -> (Subject, Sale, Order) {
    let subject = subject(backend).await;
    let live = sale(10, 1, -1_000);
    subject.store.create_sale(&live).await.unwrap();
    let order = subject
        .store
        .reserve(&request(&live, shopper, 1, None))
        .await
        .unwrap()
        .order;
    (subject, live, order)
}

/// The sale's current version, for a change computed from a fresh read.
async fn version(store: &Arc<dyn Store>, id: &SaleId) -> i64 {
    store.view_sale(id).await.unwrap().unwrap().version
}

/// A sale of `stock` units, limit `limit`, starting `starts_in_ms` from now.
pub fn sale(stock: i64, limit: i64, starts_in_ms: i64) -> Sale {
    let now = system_now();
    Sale {
        id: SaleId::generate(),
        sku: "SKU-1".into(),
        title: "A sale".into(),
        price_cents: 250,
        currency: "CNY".into(),
        stock_total: stock,
        per_user_limit: limit,
        starts_at: now + starts_in_ms,
        ends_at: now + HOUR_MS,
        payment_timeout_secs: 600,
        require_purchase_token: false,
        admission: Default::default(),
        state: SaleState::Scheduled,
        created_at: now,
    }
}

fn shopper(name: &str) -> ShopperId {
    ShopperId::parse(name).unwrap()
}

/// What `who` asks of `sale`, as the order route passes it on.
pub fn ask(sale: &Sale, who: &str, quantity: i64, key: Option<&str>) -> OrderAsk {
    OrderAsk {
        sale_id: sale.id.clone(),
        shopper_id: shopper(who),
        quantity: Quantity::parse(quantity).unwrap(),
        idempotency_key: key.map(str::to_owned),
        purchase_token: None,
    }
}

/// The same ask with a new order id, as the store gets it.
pub fn request(sale: &Sale, who: &str, quantity: i64, key: Option<&str>) -> ReserveRequest {
    ReserveRequest::new(ask(sale, who, quantity, key))
}

pub fn rejection(result: Result<impl std::fmt::Debug, StoreError>) -> Rejection {
    match result {
        Err(StoreError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

async fn created_sale_reads_back_with_full_stock(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(7, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let view = store.view_sale(&live.id).await.unwrap().unwrap();
    assert_eq!(view.sale, live);
    assert_eq!(view.stats.remaining, 7);
    assert_eq!(view.stats.stock_total, 7);
    assert_eq!(
        (view.stats.reserved, view.stats.paid, view.stats.buyers),
        (0, 0, 0)
    );
    assert_eq!(view.status(), SaleStatus::Live);
    assert!(
        (view.now - system_now()).abs() < 5_000,
        "store clock is sane"
    );

    assert!(matches!(
        store.create_sale(&live).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store
        .view_sale(&SaleId::generate())
        .await
        .unwrap()
        .is_none());

    let newer = sale(1, 1, -1_000);
    let newer = Sale {
        created_at: live.created_at + 1,
        ..newer
    };
    store.create_sale(&newer).await.unwrap();
    assert_eq!(
        store
            .sale_index(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|sale| sale.id)
            .collect::<Vec<_>>(),
        vec![newer.id.clone(), live.id.clone()]
    );
}

async fn reserve_takes_stock_and_records_the_order(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(5, 3, -1_000);
    store.create_sale(&live).await.unwrap();
    let ask = request(&live, "amy", 2, None);
    let reservation = store.reserve(&ask).await.unwrap();
    let order = &reservation.order;
    assert_eq!(order.id, ask.order_id);
    assert_eq!(order.sale_id, live.id);
    assert_eq!(order.shopper_id, shopper("amy"));
    assert_eq!((order.quantity, order.amount_cents), (2, 500));
    assert_eq!(order.currency, "CNY");
    assert_eq!(order.status, OrderStatus::PendingPayment);
    assert_eq!(order.expires_at - order.created_at, 600_000);
    assert_eq!(reservation.remaining, Some(3));
    assert_eq!(reservation.held, Some(2));
    assert!(!reservation.replayed);

    assert_eq!(store.order(&order.id).await.unwrap().as_ref(), Some(order));
    assert_eq!(
        store.shopper_orders(&shopper("amy")).await.unwrap(),
        vec![order.clone()]
    );
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.remaining, stats.reserved, stats.buyers), (3, 2, 1));
}

async fn reserve_checks_window_limit_and_stock(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let upcoming = sale(5, 1, HOUR_MS / 2);
    store.create_sale(&upcoming).await.unwrap();
    let early = store.reserve(&request(&upcoming, "bea", 1, None)).await;
    assert_eq!(rejection(early), Rejection::NotStarted);

    let live = sale(3, 2, -1_000);
    store.create_sale(&live).await.unwrap();
    store
        .reserve(&request(&live, "bea", 2, None))
        .await
        .unwrap();
    let over = store.reserve(&request(&live, "bea", 1, None)).await;
    assert_eq!(rejection(over), Rejection::LimitExceeded);
    let too_many = store.reserve(&request(&live, "cy", 2, None)).await;
    assert_eq!(
        rejection(too_many),
        Rejection::SoldOut,
        "one left, two asked"
    );
    store.reserve(&request(&live, "cy", 1, None)).await.unwrap();
    let none_left = store.reserve(&request(&live, "dee", 1, None)).await;
    assert_eq!(rejection(none_left), Rejection::SoldOut);

    let missing = Sale {
        id: SaleId::generate(),
        ..live.clone()
    };
    let unknown = store.reserve(&request(&missing, "dee", 1, None)).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))));

    let change = live
        .patched(
            SalePatch {
                status: Some(PatchStatus::Ended),
                ..SalePatch::default()
            },
            &SaleRules::default(),
        )
        .unwrap();
    store
        .update_sale(&live.id, &change, version(&store, &live.id).await)
        .await
        .unwrap();
    let stopped = store.reserve(&request(&live, "eli", 1, None)).await;
    assert_eq!(rejection(stopped), Rejection::Ended);
    let view = store.view_sale(&live.id).await.unwrap().unwrap();
    assert_eq!(view.status(), SaleStatus::Ended);
}

async fn idempotency_replays_and_refuses_mismatches(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(5, 2, -1_000);
    store.create_sale(&live).await.unwrap();
    let first = store
        .reserve(&request(&live, "fin", 1, Some("k")))
        .await
        .unwrap();
    let replay = store
        .reserve(&request(&live, "fin", 1, Some("k")))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.order, first.order);
    let mismatch = store.reserve(&request(&live, "fin", 2, Some("k"))).await;
    assert_eq!(rejection(mismatch), Rejection::IdempotencyMismatch);
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.reserved, 1, "replays take nothing");

    // A cancelled order is still what the key answers.
    store
        .cancel_order(&first.order.id, &shopper("fin"))
        .await
        .unwrap();
    let after_cancel = store
        .reserve(&request(&live, "fin", 1, Some("k")))
        .await
        .unwrap();
    assert_eq!(after_cancel.order.status, OrderStatus::Cancelled);
}

async fn a_resent_call_takes_stock_once(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(5, 3, -1_000);
    store.create_sale(&live).await.unwrap();
    let ask = request(&live, "jo", 1, None);
    let first = store.reserve(&ask).await.unwrap();
    let resent = store.reserve(&ask).await.unwrap();
    assert_eq!(resent.order, first.order);
    assert!(
        !resent.replayed,
        "the same call is not an idempotent replay"
    );
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.remaining, stats.reserved), (4, 1));
    assert_eq!(
        store.shopper_orders(&shopper("jo")).await.unwrap(),
        vec![first.order]
    );
}

/// Shopper ids may hold any printable character but a space, `=` too,
/// even text that looks like another field of the order's record: every
/// order reads back whole, replays, lists, cancels and pays as its
/// shopper's, and the sale's records audit clean.
async fn any_printable_shopper_id_keeps_its_orders(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(10, 2, -1_000);
    store.create_sale(&live).await.unwrap();
    let shoppers = ["user_id=evil", "a=b=c", "=x", "quantity=9", "p%r*[s]{t}"];
    let mut orders = Vec::new();
    for who in shoppers {
        let first = request(&live, who, 2, Some("k"));
        let made = store.reserve(&first).await.unwrap().order;
        assert_eq!((made.shopper_id.as_str(), made.quantity), (who, 2));
        assert_eq!(store.order(&made.id).await.unwrap().as_ref(), Some(&made));
        let retry = ReserveRequest {
            order_id: OrderId::generate(&live.id),
            ..first
        };
        let replay = store.reserve(&retry).await.unwrap();
        assert!(replay.replayed, "{who}");
        assert_eq!(replay.order, made);
        assert_eq!(
            store.shopper_orders(&shopper(who)).await.unwrap(),
            std::slice::from_ref(&made)
        );
        orders.push(made);
    }
    let cancelled = store
        .cancel_order(&orders[0].id, &shopper(shoppers[0]))
        .await;
    assert_eq!(cancelled.unwrap().status, OrderStatus::Cancelled);
    let paid = store
        .pay_order(
            &orders[3].id,
            &Payment {
                amount: None,
                transaction_id: "t-1".into(),
            },
            FollowUps::default(),
        )
        .await
        .unwrap();
    assert!(
        matches!(paid, PaymentOutcome::Paid(ref order) if order.shopper_id == shopper(shoppers[3]))
    );

    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (stats.remaining, stats.reserved, stats.paid, stats.cancelled),
        (2, 6, 2, 2)
    );
    let audit = store.sale_records(&live.id).await.unwrap().unwrap().audit();
    assert!(audit.differences.is_empty(), "{:?}", audit.differences);
    assert_eq!(audit.recounted.orders, 5);
}

async fn cancel_returns_units_once(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(1, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let order = store
        .reserve(&request(&live, "gil", 1, None))
        .await
        .unwrap()
        .order;

    let stranger = store.cancel_order(&order.id, &shopper("hana")).await;
    assert!(matches!(stranger, Err(StoreError::NotFound(_))));
    let cancelled = store
        .cancel_order(&order.id, &shopper("gil"))
        .await
        .unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(
        store.order(&order.id).await.unwrap().unwrap().status,
        OrderStatus::Cancelled
    );
    let twice = store.cancel_order(&order.id, &shopper("gil")).await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))));

    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (
            stats.remaining,
            stats.reserved,
            stats.cancelled,
            stats.buyers
        ),
        (1, 0, 1, 0)
    );
    // Holding nothing, gil is still known by his orders: he counts again
    // as a buyer, both orders are his, and the first call resent is
    // recognised, not reserved again.
    let first_call = request(&live, "gil", 1, None);
    let again = store.reserve(&first_call).await.unwrap().order;
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.remaining, stats.reserved, stats.buyers), (0, 1, 1));
    let mut listed: Vec<OrderId> = store
        .shopper_orders(&shopper("gil"))
        .await
        .unwrap()
        .into_iter()
        .map(|order| order.id)
        .collect();
    listed.sort();
    let mut both = vec![order.id.clone(), again.id.clone()];
    both.sort();
    assert_eq!(listed, both);
    let resent = ReserveRequest {
        order_id: order.id.clone(),
        ..first_call
    };
    let resent = store.reserve(&resent).await.unwrap();
    assert_eq!(
        resent.order.status,
        OrderStatus::Cancelled,
        "the first order, as it is"
    );
    assert_audit_clean(&store, &live.id).await;
    let unknown = OrderId::generate(&SaleId::generate());
    assert!(matches!(
        store.cancel_order(&unknown, &shopper("gil")).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A shopper may cancel at most `CANCELS_PER_SHOPPER_DEFAULT` orders of a
/// sale: past it their cancels are `Conflict` and their reservations
/// `unpaid_limit_exceeded`, while an idempotent retry still replays and other
/// shoppers are untouched.
async fn cancels_per_shopper_are_bounded(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(100, 2, -1_000);
    store.create_sale(&live).await.unwrap();
    let kept = store
        .reserve(&request(&live, "cy", 1, Some("first")))
        .await
        .unwrap()
        .order;
    for _ in 0..CANCELS_PER_SHOPPER_DEFAULT {
        let order = store
            .reserve(&request(&live, "cy", 1, None))
            .await
            .unwrap()
            .order;
        store.cancel_order(&order.id, &shopper("cy")).await.unwrap();
    }
    assert!(matches!(
        store.reserve(&request(&live, "cy", 1, None)).await,
        Err(StoreError::Rejected(Rejection::UnpaidLimitExceeded))
    ));
    let exhausted = store.take_cancel(&live.id, &shopper("cy")).await;
    let Err(StoreError::Conflict(taken)) = exhausted else {
        panic!("the allowance is spent: {exhausted:?}");
    };
    let refused = store.cancel_order(&kept.id, &shopper("cy")).await;
    let Err(StoreError::Conflict(cancelled)) = refused else {
        panic!("the allowance is spent: {refused:?}");
    };
    assert_eq!(taken, cancelled, "the take answers as the cancel");
    let retry = store
        .reserve(&request(&live, "cy", 1, Some("first")))
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.order.id, kept.id);
    assert_eq!(
        store.order(&kept.id).await.unwrap().unwrap().status,
        OrderStatus::PendingPayment
    );
    assert_eq!(
        store.shopper_orders(&shopper("cy")).await.unwrap().len() as i64,
        CANCELS_PER_SHOPPER_DEFAULT + 1
    );
    // A cancel taken, then given back (its WeChat Pay close failed), then
    // taken again and made: one cancel of the shopper's in all.
    let dee = shopper("dee");
    let other = store
        .reserve(&request(&live, "dee", 1, None))
        .await
        .unwrap()
        .order;
    store.take_cancel(&live.id, &dee).await.unwrap();
    store.give_back_cancel(&live.id, &dee).await.unwrap();
    store.take_cancel(&live.id, &dee).await.unwrap();
    store
        .cancel_taken_order(&other.id, &dee, None)
        .await
        .unwrap();
    for _ in 1..CANCELS_PER_SHOPPER_DEFAULT {
        store.take_cancel(&live.id, &dee).await.unwrap();
    }
    assert!(
        matches!(
            store.take_cancel(&live.id, &dee).await,
            Err(StoreError::Conflict(_))
        ),
        "the cancel made under a take counted once"
    );

    // A prepay recorded after the order was read: the cancel under a take
    // that closed no WeChat Pay order is refused, the one that closed it
    // goes through.
    let eve = shopper("eve");
    let prepaid = store
        .reserve(&request(&live, "eve", 1, None))
        .await
        .unwrap()
        .order;
    store.record_prepay(&prepaid.id, "wx-eve-1").await.unwrap();
    store.take_cancel(&live.id, &eve).await.unwrap();
    let refused = store.cancel_taken_order(&prepaid.id, &eve, None).await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(why)) if why == PREPAY_CHANGED),
        "{refused:?}"
    );
    store
        .cancel_taken_order(&prepaid.id, &eve, Some("wx-eve-1"))
        .await
        .unwrap();
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (stats.remaining, stats.reserved, stats.cancelled),
        (99, 1, CANCELS_PER_SHOPPER_DEFAULT + 2)
    );
    assert_audit_clean(&store, &live.id).await;
}

/// A shopper may let at most `EXPIRIES_PER_SHOPPER_DEFAULT` orders of a
/// sale expire unpaid, whether the expiry step expired them or their
/// WeChat Pay order was closed first: past it their reservations are
/// `unpaid_limit_exceeded` (their order list stops growing), while an idempotent
/// retry still replays and other shoppers are untouched.
async fn expiries_per_shopper_are_bounded(backend: Backend) {
    let subject = subject(backend).await;
    let store = &subject.store;
    let live = live_sale_paid_within(store, 0).await;
    let reserve = |who: &'static str, key: Option<&'static str>| {
        let request = request(&live, who, 1, key);
        async move { store.reserve(&request).await }
    };
    // Due as soon as made: the expiry step takes it once the clock moved on.
    let sale_id = &live.id;
    let expire = |order: Order| async move {
        while system_now() <= order.expires_at {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let hold = std::time::Duration::from_secs(600);
        let expiry = store.expire_due(sale_id, 10, hold).await.unwrap();
        assert_eq!(
            expiry.expired.iter().map(|o| &o.id).collect::<Vec<_>>(),
            [&order.id]
        );
    };
    let first = reserve("fay", Some("first")).await.unwrap().order;
    expire(first.clone()).await;
    for _ in 1..EXPIRIES_PER_SHOPPER_DEFAULT {
        expire(reserve("fay", None).await.unwrap().order).await;
    }
    assert_eq!(
        rejection(reserve("fay", None).await),
        Rejection::UnpaidLimitExceeded,
        "the shopper let the most orders expire"
    );
    let retry = reserve("fay", Some("first")).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(
        (retry.order.id, retry.order.status),
        (first.id, OrderStatus::Expired)
    );
    assert_eq!(
        store.shopper_orders(&shopper("fay")).await.unwrap().len() as i64,
        EXPIRIES_PER_SHOPPER_DEFAULT
    );

    // An order expired after its WeChat Pay close counts the same.
    for _ in 1..EXPIRIES_PER_SHOPPER_DEFAULT {
        expire(reserve("hal", None).await.unwrap().order).await;
    }
    let prepaid = reserve("hal", None).await.unwrap().order;
    store.record_prepay(&prepaid.id, "wx_hal").await.unwrap();
    while system_now() <= prepaid.expires_at {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let hold = std::time::Duration::from_secs(600);
    let held = store.expire_due(&live.id, 10, hold).await.unwrap().held;
    assert_eq!(
        held.iter().map(|o| &o.id).collect::<Vec<_>>(),
        [&prepaid.id]
    );
    assert!(store.expire_order(&prepaid.id).await.unwrap().is_some());
    assert_eq!(
        rejection(reserve("hal", None).await),
        Rejection::UnpaidLimitExceeded
    );
    reserve("gus", None)
        .await
        .expect("another shopper reserves");

    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (stats.reserved, stats.expired),
        (1, 2 * EXPIRIES_PER_SHOPPER_DEFAULT)
    );
    assert_audit_clean(store, &live.id).await;
}

async fn updates_follow_the_sale_phase(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let upcoming = sale(5, 1, HOUR_MS / 2);
    store.create_sale(&upcoming).await.unwrap();
    let retitle = upcoming
        .patched(
            SalePatch {
                title: Some("Renamed".into()),
                stock_total: Some(9),
                ..SalePatch::default()
            },
            &SaleRules::default(),
        )
        .unwrap();
    store
        .update_sale(&upcoming.id, &retitle, version(&store, &upcoming.id).await)
        .await
        .unwrap();
    let view = store.view_sale(&upcoming.id).await.unwrap().unwrap();
    assert_eq!(view.sale.title, "Renamed");
    assert_eq!((view.stats.stock_total, view.stats.remaining), (9, 9));
    store.cancel_sale(&upcoming.id).await.unwrap();
    let view = store.view_sale(&upcoming.id).await.unwrap().unwrap();
    assert_eq!(view.status(), SaleStatus::Cancelled);
    assert!(matches!(
        store
            .update_sale(&upcoming.id, &retitle, version(&store, &upcoming.id).await)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.cancel_sale(&upcoming.id).await,
        Err(StoreError::Conflict(_))
    ));

    let live = sale(5, 2, -1_000);
    store.create_sale(&live).await.unwrap();
    store
        .reserve(&request(&live, "ivo", 2, None))
        .await
        .unwrap();
    let restricted = live
        .patched(
            SalePatch {
                title: Some("Renamed".into()),
                ..SalePatch::default()
            },
            &SaleRules::default(),
        )
        .unwrap();
    assert!(matches!(
        store
            .update_sale(&live.id, &restricted, version(&store, &live.id).await)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let below_held = live
        .patched(
            SalePatch {
                stock_total: Some(1),
                ..SalePatch::default()
            },
            &SaleRules::default(),
        )
        .unwrap();
    assert!(matches!(
        store
            .update_sale(&live.id, &below_held, version(&store, &live.id).await)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.cancel_sale(&live.id).await,
        Err(StoreError::Conflict(_))
    ));
    let past_end = Sale {
        ends_at: system_now() - 1,
        ..live.clone()
    };
    let past_end = SaleChange {
        sale: past_end,
        restricted: false,
        end_now: false,
    };
    assert!(matches!(
        store
            .update_sale(&live.id, &past_end, version(&store, &live.id).await)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let read_version = version(&store, &live.id).await;
    let shrink = live
        .patched(
            SalePatch {
                stock_total: Some(2),
                ..SalePatch::default()
            },
            &SaleRules::default(),
        )
        .unwrap();
    store
        .update_sale(&live.id, &shrink, read_version)
        .await
        .unwrap();
    // Another change computed from the same (now old) read would undo the
    // first one: refused.
    let restock = live
        .patched(
            SalePatch {
                stock_total: Some(9),
                ..SalePatch::default()
            },
            &SaleRules::default(),
        )
        .unwrap();
    let lost_update = store.update_sale(&live.id, &restock, read_version).await;
    assert!(
        matches!(lost_update, Err(StoreError::Conflict(_))),
        "{lost_update:?}"
    );
    let view = store.view_sale(&live.id).await.unwrap().unwrap();
    assert_eq!((view.stats.remaining, view.stats.reserved), (0, 2));
    assert_eq!(view.status(), SaleStatus::SoldOut);
    assert_eq!(view.version, read_version + 1);
    let missing = store.update_sale(&SaleId::generate(), &shrink, 1).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

async fn concurrent_reservations_never_oversell(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(50, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let attempts = (0..400).map(|i| {
        let store = Arc::clone(&store);
        let ask = request(&live, &format!("u{}", i % 200), 1, None);
        tokio::spawn(async move { store.reserve(&ask).await })
    });
    let results = join_all(attempts).await;
    let mut won = 0;
    for result in results {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Rejected(Rejection::SoldOut | Rejection::LimitExceeded)) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 50);
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.remaining, stats.reserved, stats.buyers), (0, 50, 50));
}

/// A batch is decided exactly as its requests one by one: the same shopper
/// twice (the second over the limit), an idempotency key twice (a replay),
/// a mismatch, a request resent within the batch, and the stock running out
/// midway, all in one call.
async fn a_batch_decides_like_requests_one_by_one(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let (batched, alone) = (sale(4, 2, -1_000), sale(4, 2, -1_000));
    store.create_sale(&batched).await.unwrap();
    store.create_sale(&alone).await.unwrap();
    let asks = |sale: &Sale| {
        let mut asks = vec![
            request(sale, "ann", 2, None),
            request(sale, "ann", 1, None),
            request(sale, "bo", 1, Some("k")),
            request(sale, "bo", 1, Some("k")),
            request(sale, "bo", 2, Some("k")),
        ];
        asks.push(asks[0].clone());
        asks.extend([
            request(sale, "cy", 2, None),
            request(sale, "di", 1, None),
            request(sale, "di", 1, None),
        ]);
        asks
    };
    assert_eq!(
        decided_alike(store.as_ref(), asks(&batched), asks(&alone)).await,
        [
            "ann x2 remaining Some(2) held Some(2) replayed false",
            "this order would pass the sale's per-user limit",
            "bo x1 remaining Some(1) held Some(1) replayed false",
            "bo x1 remaining None held None replayed true",
            "the Idempotency-Key was already used with a different request",
            "ann x2 remaining None held None replayed false",
            "not enough stock left",
            "di x1 remaining Some(0) held Some(1) replayed false",
            "not enough stock left",
        ]
    );
    let (a, b) = (
        store.view_sale(&batched.id).await.unwrap().unwrap().stats,
        store.view_sale(&alone.id).await.unwrap().unwrap().stats,
    );
    assert_eq!(a, b);
    assert_eq!((a.remaining, a.reserved, a.buyers), (0, 4, 3));

    let mixed = [
        request(&batched, "ed", 1, None),
        request(&alone, "ed", 1, None),
    ];
    assert!(matches!(
        store.reserve_batch(&mixed).await,
        Err(StoreError::Corrupt(_))
    ));
}

/// Sends `batched` in one call and `alone` (the same asks of another sale)
/// one by one, asserts that both were answered alike, and returns what each
/// answer says, without the ids and instants that differ between sales.
async fn decided_alike(
    store: &dyn Store,
    batched: Vec<ReserveRequest>,
    alone: Vec<ReserveRequest>,
) -> Vec<String> {
    let gist = |outcomes: &[Result<flashsale::domain::Reservation, StoreError>]| {
        outcomes
            .iter()
            .map(|outcome| match outcome {
                Ok(r) => format!(
                    "{} x{} remaining {:?} held {:?} replayed {}",
                    r.order.shopper_id, r.order.quantity, r.remaining, r.held, r.replayed
                ),
                Err(err) => err.to_string(),
            })
            .collect::<Vec<_>>()
    };
    let in_one_call = store.reserve_batch(&batched).await.unwrap();
    let mut one_by_one = Vec::new();
    for ask in &alone {
        one_by_one.push(store.reserve(ask).await);
    }
    assert_eq!(gist(&in_one_call), gist(&one_by_one));
    gist(&in_one_call)
}

/// A sale that asks for purchase tokens decides a batch as its requests
/// one by one: a request without a token, a token used twice in the call,
/// tokens on requests with and without an idempotency key, anywhere in the
/// batch (a request with a key or a token carries more than one without).
async fn a_batch_of_purchase_tokens_decides_like_requests_one_by_one(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let gated = |sale: Sale| Sale {
        require_purchase_token: true,
        ..sale
    };
    let (batched, alone) = (gated(sale(5, 2, -1_000)), gated(sale(5, 2, -1_000)));
    store.create_sale(&batched).await.unwrap();
    store.create_sale(&alone).await.unwrap();
    let with_token = |sale: &Sale, who: &str, key: Option<&str>, token: &str| {
        ReserveRequest::new(OrderAsk {
            purchase_token: Some(token.to_owned()),
            ..ask(sale, who, 1, key)
        })
    };
    let asks = |sale: &Sale| {
        vec![
            request(sale, "ann", 1, None),
            with_token(sale, "bo", None, "t1"),
            with_token(sale, "cy", None, "t1"),
            with_token(sale, "di", Some("k"), "t2"),
            request(sale, "ed", 1, None),
            with_token(sale, "di", Some("k"), "t3"),
            with_token(sale, "fay", None, "t4"),
        ]
    };
    assert_eq!(
        decided_alike(store.as_ref(), asks(&batched), asks(&alone)).await,
        [
            "this sale needs a purchase token (POST /api/v1/sales/{id}/purchase-token)",
            "bo x1 remaining Some(4) held Some(1) replayed false",
            "this purchase token has already bought",
            "di x1 remaining Some(3) held Some(1) replayed false",
            "this sale needs a purchase token (POST /api/v1/sales/{id}/purchase-token)",
            "di x1 remaining None held None replayed true",
            "fay x1 remaining Some(2) held Some(1) replayed false",
        ]
    );
}

/// The largest order the rules allow (10,000 units at the highest price)
/// keeps an exact amount, read back as written.
async fn the_largest_amount_is_exact(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let big = Sale {
        price_cents: 10_000_000_000,
        ..sale(20_000, 10_000, -1_000)
    };
    store.create_sale(&big).await.unwrap();
    let reservation = store
        .reserve(&request(&big, "whale", 10_000, None))
        .await
        .unwrap();
    assert_eq!(reservation.order.amount_cents, 100_000_000_000_000);
    let stored = store.order(&reservation.order.id).await.unwrap().unwrap();
    assert_eq!(stored, reservation.order);
}

/// A payment exception is kept once per transaction (the first record
/// stays), stamped with the store's clock, and listed newest first; any
/// text the provider sent as the order id is kept as sent. Settling one
/// takes it off the list once and for good.
async fn payment_exceptions_are_kept_once_per_transaction(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let exception = |transaction: &str, kind, out_trade_no: &str, amount| PaymentException {
        kind,
        transaction_id: transaction.into(),
        out_trade_no: out_trade_no.into(),
        amount: (amount, "CNY".into()),
        recorded_at: 0,
    };
    let before = system_now();
    let first = exception("tx-1", PaymentExceptionKind::AmountMismatch, "o_x y=z", 100);
    assert!(store.record_payment_exception(&first).await.unwrap());
    let repeat = exception("tx-1", PaymentExceptionKind::UnknownOrder, "other", 5);
    assert!(!store.record_payment_exception(&repeat).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = exception("tx-2", PaymentExceptionKind::UnknownOrder, "", 7);
    assert!(store.record_payment_exception(&second).await.unwrap());

    let listed = store.payment_exceptions().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].transaction_id, "tx-2", "newest first");
    assert_eq!(
        PaymentException {
            recorded_at: 0,
            ..listed[1].clone()
        },
        first,
        "the first record of a transaction stays"
    );
    assert!(listed.iter().all(|kept| kept.recorded_at >= before - 1_000));

    // Settled by hand: taken off the list once, as it was listed; a
    // repeat of the transaction is not recorded again.
    assert_eq!(
        store.payment_exception("tx-1").await.unwrap().as_ref(),
        Some(&listed[1])
    );
    assert_eq!(store.payment_exception("tx-9").await.unwrap(), None);
    let settled = store.settle_payment_exception("tx-1").await.unwrap();
    assert_eq!(settled.as_ref(), Some(&listed[1]));
    assert_eq!(store.settle_payment_exception("tx-1").await.unwrap(), None);
    assert_eq!(store.settle_payment_exception("tx-9").await.unwrap(), None);
    assert_eq!(
        store.payment_exception("tx-1").await.unwrap(),
        None,
        "settled"
    );
    assert_eq!(store.payment_exceptions().await.unwrap(), listed[..1]);
    assert!(!store.record_payment_exception(&repeat).await.unwrap());
    assert_eq!(store.payment_exceptions().await.unwrap(), listed[..1]);
}

/// A prepay id is kept once on an unpaid order (a second one answers the
/// first), refused once the order is no longer pending; a payment keeps
/// its transaction id on the order, paid or marked for refund.
async fn prepay_and_transaction_ids_are_kept(backend: Backend) {
    let (subject, live, order) = with_live_order(backend, "pam").await;
    let store = &subject.store;

    let kept = store.record_prepay(&order.id, "wx_first").await.unwrap();
    assert_eq!(kept.prepay_id.as_deref(), Some("wx_first"));
    assert_eq!(kept.status, OrderStatus::PendingPayment);
    let second = store.record_prepay(&order.id, "wx_second").await.unwrap();
    assert_eq!(
        second.prepay_id.as_deref(),
        Some("wx_first"),
        "the first stays"
    );
    let racing = join_all((0..4).map(|n| {
        let id = order.id.clone();
        async move { store.record_prepay(&id, &format!("wx_race{n}")).await }
    }))
    .await;
    assert!(racing
        .iter()
        .all(|kept| kept.as_ref().unwrap().prepay_id.as_deref() == Some("wx_first")));
    let missing = OrderId::generate(&live.id);
    assert!(matches!(
        store.record_prepay(&missing, "wx").await,
        Err(StoreError::NotFound(_))
    ));

    let payment = Payment {
        amount: Some((order.amount_cents, order.currency.to_string())),
        transaction_id: "4200000000000000000000000001".into(),
    };
    let PaymentOutcome::Paid(paid) = store
        .pay_order(&order.id, &payment, FollowUps::default())
        .await
        .unwrap()
    else {
        panic!("paid");
    };
    assert_eq!(
        paid.transaction_id.as_deref(),
        Some("4200000000000000000000000001")
    );
    assert_eq!(paid.prepay_id.as_deref(), Some("wx_first"));
    let read = store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(read, paid);
    assert!(matches!(
        store.record_prepay(&order.id, "wx_late").await,
        Err(StoreError::Conflict(_))
    ));

    // A payment after a cancel keeps its transaction id for the refund.
    let other = store
        .reserve(&request(&live, "quinn", 1, None))
        .await
        .unwrap()
        .order;
    let shopper = ShopperId::parse("quinn").unwrap();
    store.cancel_order(&other.id, &shopper).await.unwrap();
    let late = Payment {
        transaction_id: "4200000000000000000000000002".into(),
        ..payment
    };
    let outcome = store
        .pay_order(&other.id, &late, FollowUps::default())
        .await
        .unwrap();
    let PaymentOutcome::RefundRequired(marked) = outcome else {
        panic!("refund required: {outcome:?}");
    };
    assert_eq!(
        marked.transaction_id.as_deref(),
        Some("4200000000000000000000000002")
    );
    assert_eq!(marked.prepay_id, None);
}

/// Fails when the audit of `sale` finds any difference.
async fn assert_audit_clean(store: &Arc<dyn Store>, sale: &SaleId) {
    let audit = store.sale_records(sale).await.unwrap().unwrap().audit();
    assert!(audit.differences.is_empty(), "{:?}", audit.differences);
}

/// A live sale of 10 units, one a shopper, whose orders must be paid within
/// `payment_timeout_secs` (0: due as soon as made), created in `store`.
async fn live_sale_paid_within(store: &Arc<dyn Store>, payment_timeout_secs: i64) -> Sale {
    let live = Sale {
        payment_timeout_secs,
        ..sale(10, 1, -1_000)
    };
    store.create_sale(&live).await.unwrap();
    live
}

/// Past its deadline, an unpaid order with a prepay id is held, not
/// expired: left pending with its unit, not due again for the hold (nor
/// after a postponement) while another without one expires; once closed it
/// expires alone, once. The audit is clean at every step.
async fn orders_with_a_prepay_are_held_at_their_deadline(backend: Backend) {
    let subject = subject(backend).await;
    let store = &subject.store;
    let live = live_sale_paid_within(store, 1).await;
    let reserve = |who: &'static str| {
        let request = request(&live, who, 1, None);
        async move { store.reserve(&request).await.unwrap().order }
    };
    let (prepaid, plain) = (reserve("ray").await, reserve("sue").await);
    store.record_prepay(&prepaid.id, "wx_ray").await.unwrap();
    let audit_clean = || assert_audit_clean(store, &live.id);
    // Not a timing assertion: the deadline must be in the past.
    let due_at = prepaid.expires_at.max(plain.expires_at) + 50;
    while system_now() <= due_at {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hold = std::time::Duration::from_secs(600);
    let expiry = store.expire_due(&live.id, 10, hold).await.unwrap();
    assert_eq!(
        expiry.expired.iter().map(|o| &o.id).collect::<Vec<_>>(),
        [&plain.id]
    );
    assert_eq!(
        expiry.held.iter().map(|o| &o.id).collect::<Vec<_>>(),
        [&prepaid.id]
    );
    assert_eq!(expiry.held[0].status, OrderStatus::PendingPayment);
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (stats.remaining, stats.reserved, stats.expired),
        (9, 1, 1),
        "the held unit stays held"
    );
    audit_clean().await;
    let again = store.expire_due(&live.id, 10, hold).await.unwrap();
    assert_eq!(again, Default::default(), "held: not due again yet");

    store
        .postpone_expiry(&prepaid.id, std::time::Duration::ZERO)
        .await
        .unwrap();
    let due_again = store.expire_due(&live.id, 10, hold).await.unwrap();
    assert_eq!(due_again.held.len(), 1, "due again after the postponement");
    audit_clean().await;

    let expired = store.expire_order(&prepaid.id).await.unwrap();
    let expired = expired.expect("closed: it expires");
    assert_eq!(expired.status, OrderStatus::Expired);
    assert_eq!(store.expire_order(&prepaid.id).await.unwrap(), None, "once");
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.remaining, stats.reserved, stats.expired), (10, 0, 2));
    audit_clean().await;
    let none = store.expire_due(&live.id, 10, hold).await.unwrap();
    assert_eq!(none, Default::default(), "nothing left in the index");
}

/// The orders of one reserve call share one payment deadline entry: a
/// payment or a cancel leaves it (the audit expects that), the expiry step
/// takes it whole however small its limit, expiring what is still unpaid,
/// holding what has a prepay id (in an entry of its own, which a
/// postponement moves) and passing over the paid and the cancelled (counted:
/// the order service goes on at once after such a step); an
/// order still in its call's entry is not postponed. The audit is clean at
/// every step.
async fn a_calls_orders_share_one_payment_deadline(backend: Backend) {
    let subject = subject(backend).await;
    let store = &subject.store;
    // Every order due as soon as it is made.
    let live = live_sale_paid_within(store, 0).await;
    let deadlines = || async { store.order_backlog(&live.id).await.unwrap().deadlines };
    let audit_clean = || assert_audit_clean(store, &live.id);
    let batch = |who: &[&str]| {
        let requests: Vec<_> = who.iter().map(|w| request(&live, w, 1, None)).collect();
        async move {
            let outcomes = store.reserve_batch(&requests).await.unwrap();
            outcomes
                .into_iter()
                .map(|outcome| outcome.unwrap().order)
                .collect::<Vec<_>>()
        }
    };
    let made = batch(&["ann", "bob", "cai", "dan"]).await;
    let [paid, cancelled, unpaid, prepaid] = &made[..] else {
        panic!("four orders");
    };
    assert_eq!(deadlines().await, 1, "one entry for the call");
    let payment = Payment {
        amount: None,
        transaction_id: "4200000000000000000000000001".into(),
    };
    store
        .pay_order(&paid.id, &payment, FollowUps::default())
        .await
        .unwrap();
    store
        .cancel_order(&cancelled.id, &cancelled.shopper_id)
        .await
        .unwrap();
    store.record_prepay(&prepaid.id, "wx_dan").await.unwrap();
    assert_eq!(deadlines().await, 1, "paid and cancelled wait in the entry");
    audit_clean().await;

    let hold = Duration::from_secs(600);
    let expiry = store.expire_due(&live.id, 1, hold).await.unwrap();
    let ids = |orders: &[Order]| orders.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&expiry.expired),
        vec![unpaid.id.clone()],
        "the unpaid one"
    );
    assert_eq!(
        ids(&expiry.held),
        vec![prepaid.id.clone()],
        "the prepaid one"
    );
    assert_eq!(expiry.passed_over, 2, "the paid and the cancelled one");
    assert_eq!(deadlines().await, 1, "the held order's own entry");
    let status = |id: &OrderId| {
        let id = id.clone();
        async move { store.order(&id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(&paid.id).await, OrderStatus::Paid);
    assert_eq!(status(&cancelled.id).await, OrderStatus::Cancelled);
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (
            stats.remaining,
            stats.reserved,
            stats.paid,
            stats.cancelled,
            stats.expired
        ),
        (8, 1, 1, 1, 1)
    );
    audit_clean().await;
    store
        .postpone_expiry(&prepaid.id, Duration::ZERO)
        .await
        .unwrap();
    let again = store.expire_due(&live.id, 1, hold).await.unwrap();
    assert_eq!(
        ids(&again.held),
        vec![prepaid.id.clone()],
        "moved by the postponement"
    );

    // Held in its call's entry no longer: a prepaid order not yet due is
    // not postponed (it has no entry of its own), and its call's entry
    // still brings it up.
    let later = batch(&["eve", "fay"]).await;
    store.record_prepay(&later[0].id, "wx_eve").await.unwrap();
    store.postpone_expiry(&later[0].id, hold).await.unwrap();
    assert_eq!(deadlines().await, 2, "the held order's and the new call's");
    audit_clean().await;
    let expiry = store.expire_due(&live.id, 10, hold).await.unwrap();
    assert_eq!(ids(&expiry.expired), vec![later[1].id.clone()]);
    assert_eq!(ids(&expiry.held), vec![later[0].id.clone()]);
    audit_clean().await;
}

/// The expiry step takes due entries whole, in order, until `limit` orders
/// were looked at: with a limit of 2, one call of 3 orders or one of 2 goes
/// in a step, never part of either, and the next step takes the other.
async fn the_expiry_step_takes_whole_calls(backend: Backend) {
    let subject = subject(backend).await;
    let store = &subject.store;
    let live = live_sale_paid_within(store, 0).await;
    let mut calls = Vec::new();
    for who in [&["ann", "bob", "cai"][..], &["dan", "eve"]] {
        let requests: Vec<_> = who.iter().map(|w| request(&live, w, 1, None)).collect();
        let made: BTreeSet<OrderId> = store
            .reserve_batch(&requests)
            .await
            .unwrap()
            .into_iter()
            .map(|outcome| outcome.unwrap().order.id)
            .collect();
        calls.push(made);
    }
    let hold = Duration::from_secs(600);
    let mut steps = Vec::new();
    for _ in 0..2 {
        let expiry = store.expire_due(&live.id, 2, hold).await.unwrap();
        steps.push(
            expiry
                .expired
                .into_iter()
                .map(|o| o.id)
                .collect::<BTreeSet<_>>(),
        );
    }
    assert!(
        steps == calls || steps.iter().rev().eq(calls.iter()),
        "each step one whole call: {steps:?} of {calls:?}"
    );
    assert_eq!(store.order_backlog(&live.id).await.unwrap().deadlines, 0);
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!((stats.remaining, stats.expired), (10, 5));
}

/// A refund of a paid order moves its units from `paid` to `refunded`
/// (with restock, back on sale and off the shopper's count), queues the
/// refund call in the outbox beside the hand-offs, and settles once to
/// `refunded` (queueing `order.refunded`); a late payment queues its own
/// refund; only a paid order can be refunded, and only one asked for can
/// be settled. The audit stays clean throughout.
async fn refunds_move_units_and_queue_their_calls(backend: Backend) {
    let (subject, live, kept) = with_live_order(backend, "rae").await;
    let store = &subject.store;
    let audit_clean = || assert_audit_clean(store, &live.id);
    let both = FollowUps {
        hand_off: true,
        refund: true,
    };
    let pay = |n: u32| Payment {
        amount: None,
        transaction_id: format!("42000000000000000000000000{n:02}"),
    };
    let restocked = store
        .reserve(&request(&live, "ray", 1, None))
        .await
        .unwrap()
        .order;
    assert!(matches!(
        store.refund_order(&kept.id, false, both).await,
        Err(StoreError::Conflict(_))
    ));
    for (n, order) in [&kept, &restocked].into_iter().enumerate() {
        store
            .pay_order(&order.id, &pay(n as u32), FollowUps::default())
            .await
            .unwrap();
    }
    let before = store.view_sale(&live.id).await.unwrap().unwrap().stats;

    let refunding = store.refund_order(&kept.id, false, both).await.unwrap();
    assert_eq!(refunding.status, OrderStatus::Refunding);
    assert_eq!(refunding.refund, Some(RefundKind::Kept));
    let restocking = store.refund_order(&restocked.id, true, both).await.unwrap();
    assert_eq!(restocking.refund, Some(RefundKind::Restocked));
    assert!(matches!(
        store.refund_order(&kept.id, false, both).await,
        Err(StoreError::Conflict(_))
    ));
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.paid, before.paid - 2);
    assert_eq!((stats.refunded, stats.restocked), (2, 1));
    assert_eq!(stats.remaining, before.remaining + 1);
    assert_eq!(stats.buyers, before.buyers - 1, "restocked: off the count");
    audit_clean().await;

    let leased = store
        .claim_deliveries(&live.id, 10, Duration::from_secs(60))
        .await
        .unwrap();
    let mut calls: Vec<Errand> = leased
        .iter()
        .map(|delivery| delivery.errand.clone())
        .collect();
    calls.sort_by_key(ToString::to_string);
    let mut expected = vec![
        Errand::Order(OrderEvent::Refund, kept.id.clone()),
        Errand::Order(OrderEvent::Refund, restocked.id.clone()),
    ];
    expected.sort_by_key(ToString::to_string);
    assert_eq!(calls, expected);
    for delivery in &leased {
        store.delivered(&live.id, delivery).await.unwrap();
    }

    let RefundSettlement::Refunded(settled) = store
        .settle_refund(&kept.id, RefundSettledBy::WeChatPay, true)
        .await
        .unwrap()
    else {
        panic!("refunded");
    };
    assert_eq!(settled.status, OrderStatus::Refunded);
    assert!(matches!(
        store
            .settle_refund(&kept.id, RefundSettledBy::WeChatPay, true)
            .await
            .unwrap(),
        RefundSettlement::Unchanged(_)
    ));
    let leased = store
        .claim_deliveries(&live.id, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(
        leased[0].errand,
        Errand::Order(OrderEvent::Refunded, kept.id.clone())
    );
    store.delivered(&live.id, &leased[0]).await.unwrap();
    assert_eq!(
        store.view_sale(&live.id).await.unwrap().unwrap().stats,
        stats,
        "settling moves no count"
    );

    // A late payment queues its own refund; settled, it counts as paid late.
    let late = store
        .reserve(&request(&live, "rex", 1, None))
        .await
        .unwrap()
        .order;
    store
        .cancel_order(&late.id, &ShopperId::parse("rex").unwrap())
        .await
        .unwrap();
    assert!(matches!(
        store
            .settle_refund(&late.id, RefundSettledBy::WeChatPay, false)
            .await,
        Err(StoreError::Conflict(_))
    ));
    let PaymentOutcome::RefundRequired(marked) =
        store.pay_order(&late.id, &pay(9), both).await.unwrap()
    else {
        panic!("refund required");
    };
    assert_eq!(marked.refund, Some(RefundKind::Late));
    let leased = store
        .claim_deliveries(&live.id, 10, Duration::from_secs(60))
        .await
        .unwrap();
    let mut events: Vec<&str> = leased.iter().map(|d| d.errand.event()).collect();
    events.sort_unstable();
    assert_eq!(events, ["order.refund_required", "wechatpay.refund"]);
    store
        .settle_refund(&late.id, RefundSettledBy::WeChatPay, false)
        .await
        .unwrap();
    let late = store.order(&late.id).await.unwrap().unwrap();
    assert_eq!(late.status, OrderStatus::Refunded);
    assert_eq!(late.refund_settled_by_hand_at, None, "WeChat Pay paid it");
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(stats.refund_required, 1);
    audit_clean().await;
}

/// The merchant settles a refund by hand only once WeChat Pay lets it go:
/// while its call is queued or leased (WeChat Pay may still pay it) it is
/// refused and nothing changes; once the call is dead-lettered (refused
/// for good) or done (`ABNORMAL`, `CLOSED`: by its last attempt, or ended
/// at once by WeChat Pay's notification), the order is `refunded` with
/// the time it was settled, its dead letter goes (nothing is left to
/// re-drive), `order.refunded` is queued once, and no count moves. A late
/// payment's refund settles the same way; a repeat, or WeChat Pay's
/// `SUCCESS` after it, changes nothing; an order whose refund was never
/// asked for is refused. The audit stays clean throughout.
async fn a_refund_is_settled_by_hand_once_wechatpay_lets_it_go(backend: Backend) {
    let (subject, live, dead) = with_live_order(backend, "ada").await;
    let store = &subject.store;
    let both = FollowUps {
        hand_off: true,
        refund: true,
    };
    let pay = |n: u32| Payment {
        amount: None,
        transaction_id: format!("42000000000000000000000001{n:02}"),
    };
    let by_hand = |id: &OrderId| {
        let id = id.clone();
        async move {
            store
                .settle_refund(&id, RefundSettledBy::Merchant, true)
                .await
        }
    };
    let closed = store
        .reserve(&request(&live, "ben", 1, None))
        .await
        .unwrap()
        .order;
    let late = store
        .reserve(&request(&live, "cal", 1, None))
        .await
        .unwrap()
        .order;
    let pending = store
        .reserve(&request(&live, "dee", 1, None))
        .await
        .unwrap()
        .order;
    for (n, order) in [&dead, &closed].into_iter().enumerate() {
        store
            .pay_order(&order.id, &pay(n as u32), FollowUps::default())
            .await
            .unwrap();
    }
    store
        .cancel_order(&late.id, &ShopperId::parse("cal").unwrap())
        .await
        .unwrap();
    let paid = store.order(&dead.id).await.unwrap().unwrap();
    for order in [&paid, &pending] {
        assert!(
            matches!(by_hand(&order.id).await, Err(StoreError::Conflict(_))),
            "{:?}: no refund asked for",
            order.status
        );
    }
    let unknown = OrderId::generate(&live.id);
    assert!(matches!(
        by_hand(&unknown).await,
        Err(StoreError::NotFound(_))
    ));
    for order in [&dead, &closed] {
        store.refund_order(&order.id, false, both).await.unwrap();
    }
    store.pay_order(&late.id, &pay(2), both).await.unwrap();
    assert_audit_clean(store, &live.id).await;
    let before = store.view_sale(&live.id).await.unwrap().unwrap().stats;

    // Queued, then leased: WeChat Pay may still pay it.
    let refused = |id: &OrderId| {
        let id = id.clone();
        async move {
            assert!(matches!(by_hand(&id).await, Err(StoreError::Conflict(_))));
            let order = store.order(&id).await.unwrap().unwrap();
            assert_ne!(order.status, OrderStatus::Refunded);
            assert_eq!(order.refund_settled_by_hand_at, None);
        }
    };
    for order in [&dead, &closed, &late] {
        refused(&order.id).await;
    }
    let leased = store
        .claim_deliveries(&live.id, 10, Duration::from_secs(60))
        .await
        .unwrap();
    for order in [&dead, &closed, &late] {
        refused(&order.id).await;
    }
    let failure = DeliveryFailure {
        status: Some(403),
        error: "NOT_ENOUGH".into(),
    };
    // WeChat Pay refuses one call for good; notifies that it closed
    // another while its attempt is leased (the call ends at once, and that
    // attempt's end changes nothing); answers the third's query
    // `ABNORMAL`.
    store.end_refund_call(&closed.id).await.unwrap();
    store.end_refund_call(&closed.id).await.unwrap();
    for delivery in &leased {
        match &delivery.errand {
            Errand::Order(OrderEvent::Refund, id) if *id == dead.id => {
                assert!(store
                    .dead_letter(&live.id, delivery, &failure)
                    .await
                    .unwrap());
            }
            _ => store.delivered(&live.id, delivery).await.unwrap(),
        }
    }
    assert_eq!(store.dead_letters(&live.id).await.unwrap().len(), 1);
    assert_eq!(
        store
            .claim_deliveries(&live.id, 10, Duration::ZERO)
            .await
            .unwrap(),
        [],
        "no refund call is left to send or ask"
    );

    let started = system_now();
    for (order, kind) in [
        (&dead, RefundKind::Kept),
        (&closed, RefundKind::Kept),
        (&late, RefundKind::Late),
    ] {
        let RefundSettlement::Refunded(settled) = by_hand(&order.id).await.unwrap() else {
            panic!("refunded by hand");
        };
        assert_eq!(settled.status, OrderStatus::Refunded);
        assert_eq!(settled.refund, Some(kind));
        let at = settled.refund_settled_by_hand_at.expect("settled by hand");
        assert!(at >= started - 1_000, "{at} {started}");
        assert_eq!(store.order(&order.id).await.unwrap().unwrap(), settled);
        assert!(matches!(
            by_hand(&order.id).await.unwrap(),
            RefundSettlement::Unchanged(ref again) if *again == settled
        ));
        assert!(matches!(
            store
                .settle_refund(&order.id, RefundSettledBy::WeChatPay, true)
                .await
                .unwrap(),
            RefundSettlement::Unchanged(ref again) if *again == settled
        ));
    }
    assert_eq!(
        store.dead_letters(&live.id).await.unwrap(),
        [],
        "the refund's dead letter went with it"
    );
    assert_eq!(store.redrive_dead_letters(&live.id).await.unwrap(), 0);
    let mut told: Vec<Errand> = store
        .claim_deliveries(&live.id, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|delivery| delivery.errand)
        .collect();
    told.sort_by_key(ToString::to_string);
    let mut expected: Vec<Errand> = [&dead, &closed, &late]
        .into_iter()
        .map(|order| Errand::Order(OrderEvent::Refunded, order.id.clone()))
        .collect();
    expected.sort_by_key(ToString::to_string);
    assert_eq!(told, expected, "order.refunded once each, and nothing else");
    assert_eq!(
        store.view_sale(&live.id).await.unwrap().unwrap().stats,
        before,
        "settling moves no count"
    );
    assert_audit_clean(store, &live.id).await;
}

/// Units the merchant refunded without restock stay sold: a change to the
/// live sale (its end moved, its stock) never puts them back on sale, nor
/// lets the stock go below them.
async fn a_sale_change_keeps_refunded_units_off_sale(backend: Backend) {
    let Subject {
        store,
        redis: _redis,
    } = subject(backend).await;
    let live = sale(3, 1, -1_000);
    store.create_sale(&live).await.unwrap();
    let kept = store
        .reserve(&request(&live, "rue", 1, None))
        .await
        .unwrap()
        .order;
    let payment = Payment {
        amount: None,
        transaction_id: "4200000000000000000000000077".into(),
    };
    store
        .pay_order(&kept.id, &payment, FollowUps::default())
        .await
        .unwrap();
    store
        .refund_order(&kept.id, false, FollowUps::default())
        .await
        .unwrap();
    store
        .reserve(&request(&live, "rio", 1, None))
        .await
        .unwrap();
    let below_taken = live
        .patched(
            SalePatch {
                stock_total: Some(1),
                ..SalePatch::default()
            },
            &SaleRules::default(),
        )
        .unwrap();
    let refused = store
        .update_sale(&live.id, &below_taken, version(&store, &live.id).await)
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(why)) if why.contains("2 units")),
        "one reserved and one refunded without restock: {refused:?}"
    );
    let later = SaleChange {
        sale: Sale {
            ends_at: live.ends_at + HOUR_MS,
            ..live.clone()
        },
        restricted: false,
        end_now: false,
    };
    store
        .update_sale(&live.id, &later, version(&store, &live.id).await)
        .await
        .unwrap();
    let stats = store.view_sale(&live.id).await.unwrap().unwrap().stats;
    assert_eq!(
        (stats.remaining, stats.reserved, stats.refunded),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_audit_clean(&store, &live.id).await;
    store
        .reserve(&request(&live, "ray", 1, None))
        .await
        .unwrap();
    assert_eq!(
        rejection(store.reserve(&request(&live, "rex", 1, None)).await),
        Rejection::SoldOut,
        "three units, three sold"
    );
    assert_audit_clean(&store, &live.id).await;
}

crate::on_every_store!(
    a_calls_orders_share_one_payment_deadline,
    the_expiry_step_takes_whole_calls,
    refunds_move_units_and_queue_their_calls,
    a_refund_is_settled_by_hand_once_wechatpay_lets_it_go,
    a_sale_change_keeps_refunded_units_off_sale,
    orders_with_a_prepay_are_held_at_their_deadline,
    prepay_and_transaction_ids_are_kept,
    payment_exceptions_are_kept_once_per_transaction,
    a_batch_decides_like_requests_one_by_one,
    a_batch_of_purchase_tokens_decides_like_requests_one_by_one,
    the_largest_amount_is_exact,
    created_sale_reads_back_with_full_stock,
    reserve_takes_stock_and_records_the_order,
    reserve_checks_window_limit_and_stock,
    idempotency_replays_and_refuses_mismatches,
    a_resent_call_takes_stock_once,
    cancel_returns_units_once,
    cancels_per_shopper_are_bounded,
    expiries_per_shopper_are_bounded,
    any_printable_shopper_id_keeps_its_orders,
    updates_follow_the_sale_phase,
    concurrent_reservations_never_oversell,
);
