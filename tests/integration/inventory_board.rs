//! Goal: the sold-out board (the front door's copy of an actor's certainty
//! that a sale is sold out) never refuses what the store would sell: a
//! request made after a cancel, a restock or the merchant's end has been
//! answered sees it; and a hot sold-out sale answered from the board keeps
//! its actor. Method: drive the inventory directly on the embedded store,
//! many rounds of "change, then ask at once"; the actors' timers run on a
//! manual clock the test advances.

use std::sync::Arc;
use std::time::Duration;

use flashsale::clock::ManualClock;
use flashsale::domain::{system_now, Reservation};
use flashsale::domain::{Order, Rejection, Sale, SaleChange};
use flashsale::inventory::{ActorSettings, Inventory, InventoryError};
use flashsale::store::{EmbeddedStore, ShopperBounds, Store, StoreError};

use crate::conformance::{ask, request, sale};
use crate::support::actor_settings;

fn embedded_inventory(settings: ActorSettings) -> (Arc<dyn Store>, Inventory) {
    // The rounds below cancel one shopper's orders hundreds of times.
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new().with_shopper_bounds(ShopperBounds {
        cancels: 1_000,
        ..ShopperBounds::default()
    }));
    let inventory = Inventory::start(Arc::clone(&store), 1, settings, Duration::from_secs(5))
        .expect("inventory");
    (store, inventory)
}

/// A live sale of one unit that `first` bought, once its actor trusts its
/// memory (its first snapshot after registration landed) and has learned
/// from a refused request that the sale is sold out.
async fn sold_out_sale(
    store: &Arc<dyn Store>,
    inventory: &Inventory,
    first: &str,
) -> (Sale, Order) {
    let hot = sale(1, 1, -1_000);
    store.create_sale(&hot).await.expect("create");
    let order = inventory
        .reserve(ask(&hot, first, 1, None))
        .await
        .expect("the one unit")
        .order;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let learned = inventory.reserve(ask(&hot, "learner", 1, None)).await;
    assert!(refused_sold_out(&learned), "{learned:?}");
    (hot, order)
}

fn refused_sold_out(answer: &Result<Reservation, InventoryError>) -> bool {
    matches!(
        answer,
        Err(InventoryError::Store(StoreError::Rejected(
            Rejection::SoldOut
        )))
    )
}

/// Applies a merchant's change to the sale and tells the inventory, as the
/// admin route does (store first, then `sale_changed` with the new view).
async fn merchant_changes(
    store: &Arc<dyn Store>,
    inventory: &Inventory,
    hot: &Sale,
    change: impl FnOnce(&Sale) -> SaleChange,
) {
    let view = store.view_sale(&hot.id).await.expect("view").expect("sale");
    store
        .update_sale(&hot.id, &change(&view.sale), view.version)
        .await
        .expect("change");
    let view = store.view_sale(&hot.id).await.expect("view").expect("sale");
    inventory.sale_changed(view);
}

/// A cancel that has returned (HTTP 200 in public.rs: store.cancel_order then
/// inventory.stock_returned) must be visible to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_cancel_is_seen_by_the_next_request() {
    let (store, inventory) = embedded_inventory(actor_settings());
    let users = ["alice", "bob"];
    let (hot, mut order) = sold_out_sale(&store, &inventory, users[0]).await;
    let mut holder = 0usize;
    let mut wrong = 0;
    let rounds = 200;
    for _ in 0..rounds {
        let cancelled = store
            .cancel_order(&order.id, &order.shopper_id)
            .await
            .unwrap();
        inventory
            .stock_returned(std::slice::from_ref(&cancelled))
            .await;
        let other = 1 - holder;
        let mut answer = inventory.reserve(ask(&hot, users[other], 1, None)).await;
        if refused_sold_out(&answer) {
            wrong += 1;
            // The unit is still there: take it the slow way to go on.
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer = inventory.reserve(ask(&hot, users[other], 1, None)).await;
        }
        order = answer.expect("the returned unit").order;
        holder = other;
        let view = store.view_sale(&hot.id).await.unwrap().unwrap();
        assert_eq!(view.stats.remaining, 0);
    }
    println!("wrong sold_out after a completed cancel: {wrong}/{rounds}");
    assert_eq!(
        wrong, 0,
        "the sold-out board refused a unit a completed cancel had returned"
    );
    inventory.stop();
}

/// A merchant's restock (admin PATCH: store.update_sale, then
/// inventory.sale_changed with the new view) must be visible to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_restock_is_seen_by_the_next_request() {
    let (store, inventory) = embedded_inventory(actor_settings());
    let (hot, _) = sold_out_sale(&store, &inventory, "first").await;
    let mut wrong = 0;
    let rounds = 100;
    for i in 0..rounds {
        merchant_changes(&store, &inventory, &hot, |sale| SaleChange {
            sale: Sale {
                stock_total: sale.stock_total + 1,
                ..sale.clone()
            },
            restricted: false,
            end_now: false,
        })
        .await;
        let who = format!("buyer-{i}");
        let answer = inventory.reserve(ask(&hot, &who, 1, None)).await;
        if refused_sold_out(&answer) {
            wrong += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            inventory.reserve(ask(&hot, &who, 1, None)).await.unwrap();
        } else {
            answer.expect("the restocked unit");
        }
    }
    println!("wrong sold_out after a completed restock: {wrong}/{rounds}");
    assert_eq!(wrong, 0);
    inventory.stop();
}

/// A merchant who ends the sale: the next request should be `ended`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sale_answers_ended_not_sold_out() {
    let (store, inventory) = embedded_inventory(actor_settings());
    let mut wrong = 0;
    let rounds = 10;
    for _ in 0..rounds {
        let (hot, _) = sold_out_sale(&store, &inventory, "first").await;
        merchant_changes(&store, &inventory, &hot, |sale| SaleChange {
            sale: sale.clone(),
            restricted: false,
            end_now: true,
        })
        .await;
        let answer = inventory.reserve(ask(&hot, "late", 1, None)).await;
        match answer {
            Err(InventoryError::Store(StoreError::Rejected(Rejection::Ended))) => {}
            ref sold_out if refused_sold_out(sold_out) => wrong += 1,
            other => panic!("{other:?}"),
        }
    }
    println!("sold_out instead of ended after the merchant ended the sale: {wrong}/{rounds}");
    assert_eq!(wrong, 0);
    inventory.stop();
}

/// A hot sold-out sale whose every request is refused by the board: the
/// actor sees no request and retires as idle although traffic never stopped.
/// The actor's clock moves 1 ms after each request; every tick that falls
/// due has run when the actors are counted, before the next request (which
/// would start a retired actor again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_sold_out_sale_keeps_its_actor() {
    let clock = Arc::new(ManualClock::at(system_now()));
    let (store, inventory) = embedded_inventory(ActorSettings {
        idle_stop: Duration::from_millis(1_000),
        refresh: Duration::from_millis(100),
        clock: Arc::clone(&clock) as _,
        ..actor_settings()
    });
    let (hot, _) = sold_out_sale(&store, &inventory, "alice").await;
    let (mut requests, mut no_actor) = (0, 0);
    while requests < 2_500 {
        let _ = inventory
            .reserve(ask(&hot, &format!("u{requests}"), 1, None))
            .await;
        requests += 1;
        clock.advance(Duration::from_millis(1)).await;
        if inventory.actor_count() == 0 {
            no_actor += 1;
        }
    }
    println!(
        "{requests} requests over 2.5 s of the actor's clock (one per ms); \
         times no actor was registered: {no_actor}"
    );
    assert_eq!(
        no_actor, 0,
        "the actor retired as idle during a steady stream of requests"
    );
    inventory.stop();
}

fn refused_ended(answer: &Result<Reservation, InventoryError>) -> bool {
    matches!(
        answer,
        Err(InventoryError::Store(StoreError::Rejected(
            Rejection::Ended
        )))
    )
}

/// Requests for a finished sale (ended by the merchant, cancelled, or past
/// its end by the store's clock) are answered `ended` and start no actor;
/// a keyed retry of an order made before the end still replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sales_are_answered_without_an_actor() {
    let (store, inventory) = embedded_inventory(actor_settings());
    let stopped = sale(5, 1, -1_000);
    store.create_sale(&stopped).await.expect("create");
    let early = store
        .reserve(&request(&stopped, "early", 1, Some("k")))
        .await
        .expect("before the end")
        .order;
    merchant_changes(&store, &inventory, &stopped, |sale| SaleChange {
        sale: sale.clone(),
        restricted: false,
        end_now: true,
    })
    .await;
    let called_off = sale(5, 1, 60_000);
    store.create_sale(&called_off).await.expect("create");
    store.cancel_sale(&called_off.id).await.expect("cancel");
    let now = system_now();
    let over = Sale {
        starts_at: now - 60_000,
        ends_at: now - 1_000,
        ..sale(5, 1, -60_000)
    };
    store.create_sale(&over).await.expect("create");
    for finished in [&stopped, &called_off, &over] {
        for i in 0..3 {
            let answer = inventory
                .reserve(ask(finished, &format!("late-{i}"), 1, None))
                .await;
            assert!(refused_ended(&answer), "{answer:?}");
        }
    }
    let replay = inventory
        .reserve(ask(&stopped, "early", 1, Some("k")))
        .await
        .expect("the replay");
    assert!(replay.replayed);
    assert_eq!(replay.order.id, early.id);
    assert_eq!(inventory.actor_count(), 0, "no actor for a finished sale");
    assert_eq!(inventory.finished_count(), 3);
}

/// A sale's actor that finds its sale ended at a refresh records it and
/// retires; later requests get `ended` without a new actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_retires_once_its_sale_is_finished() {
    let (store, inventory) = embedded_inventory(ActorSettings {
        refresh: Duration::from_millis(20),
        ..actor_settings()
    });
    let live = sale(5, 1, -1_000);
    store.create_sale(&live).await.expect("create");
    inventory
        .reserve(ask(&live, "first", 1, None))
        .await
        .expect("live");
    assert_eq!(inventory.actor_count(), 1);
    merchant_changes(&store, &inventory, &live, |sale| SaleChange {
        sale: sale.clone(),
        restricted: false,
        end_now: true,
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while inventory.actor_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the actor stays");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = inventory.reserve(ask(&live, "late", 1, None)).await;
    assert!(refused_ended(&answer), "{answer:?}");
    assert_eq!(inventory.actor_count(), 0);
}

/// The record of finished sales is bounded: past its bound an older sale
/// is forgotten, and still answered `ended` without an actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_of_finished_sales_is_bounded() {
    let (store, inventory) = embedded_inventory(actor_settings());
    let inventory = inventory.with_finished_sales_max(2);
    let mut finished = Vec::new();
    for _ in 0..5 {
        let over = sale(5, 1, 60_000);
        store.create_sale(&over).await.expect("create");
        store.cancel_sale(&over.id).await.expect("cancel");
        finished.push(over);
    }
    for over in finished.iter().chain(&finished) {
        let answer = inventory.reserve(ask(over, "late", 1, None)).await;
        assert!(refused_ended(&answer), "{answer:?}");
        assert!(inventory.finished_count() <= 2);
    }
    assert_eq!(inventory.actor_count(), 0);
}
