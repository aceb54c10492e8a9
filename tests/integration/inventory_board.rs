//! Goal: the sold-out board (the front door's copy of an actor's certainty
//! that a sale is sold out) never refuses what the store would sell: a
//! request made after a cancel, a restock or the merchant's end has been
//! answered sees it; and a hot sold-out sale answered from the board keeps
//! its actor. Method: drive the inventory directly on the embedded store,
//! many rounds of "change, then ask at once".

use std::sync::Arc;
use std::time::Duration;

use flashsale::domain::Rejection;
use flashsale::inventory::{Inventory, InventoryError};
use flashsale::store::{EmbeddedStore, Store, StoreError};

use crate::conformance::{request, sale};
use crate::support::actor_settings;

/// A cancel that has returned (HTTP 200 in public.rs: store.cancel_order then
/// inventory.stock_returned) must be visible to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_cancel_is_seen_by_the_next_request() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let hot = sale(1, 1, -1_000);
    store.create_sale(&hot).await.unwrap();
    let inventory = Inventory::start(
        Arc::clone(&store),
        1,
        actor_settings(),
        Duration::from_secs(5),
    )
    .unwrap();
    let users = ["alice", "bob"];
    let mut holder = 0usize;
    let mut order = inventory
        .reserve(request(&hot, users[0], 1, None))
        .await
        .unwrap()
        .order;
    // Let the actor's first snapshot (after Registered) land: memory trusted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = inventory.reserve(request(&hot, users[1], 1, None)).await; // learn sold out
    let mut wrong = 0;
    let rounds = 200;
    for _ in 0..rounds {
        let cancelled = store.cancel_order(&order.id, &order.user_id).await.unwrap();
        inventory
            .stock_returned(std::slice::from_ref(&cancelled))
            .await;
        let other = 1 - holder;
        match inventory
            .reserve(request(&hot, users[other], 1, None))
            .await
        {
            Ok(r) => {
                order = r.order;
                holder = other;
            }
            Err(InventoryError::Store(StoreError::Rejected(Rejection::SoldOut))) => {
                wrong += 1;
                // the unit is still there: take it the slow way to continue
                tokio::time::sleep(Duration::from_millis(20)).await;
                let r = inventory
                    .reserve(request(&hot, users[other], 1, None))
                    .await
                    .unwrap();
                order = r.order;
                holder = other;
            }
            Err(e) => panic!("{e:?}"),
        }
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
    use flashsale::domain::SaleChange;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let hot = sale(1, 1, -1_000);
    store.create_sale(&hot).await.unwrap();
    let inventory = Inventory::start(
        Arc::clone(&store),
        1,
        actor_settings(),
        Duration::from_secs(5),
    )
    .unwrap();
    inventory
        .reserve(request(&hot, "first", 1, None))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = inventory.reserve(request(&hot, "learn", 1, None)).await;
    let mut wrong = 0;
    let rounds = 100;
    for i in 0..rounds {
        let view = store.view_sale(&hot.id).await.unwrap().unwrap();
        let mut next = view.sale.clone();
        next.stock_total += 1;
        let change = SaleChange {
            sale: next,
            restricted: false,
            end_now: false,
        };
        store
            .update_sale(&hot.id, &change, view.version)
            .await
            .unwrap();
        let view = store.view_sale(&hot.id).await.unwrap().unwrap();
        inventory.sale_changed(view);
        let who = format!("buyer-{i}");
        match inventory.reserve(request(&hot, &who, 1, None)).await {
            Ok(_) => {}
            Err(InventoryError::Store(StoreError::Rejected(Rejection::SoldOut))) => {
                wrong += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                inventory
                    .reserve(request(&hot, &who, 1, None))
                    .await
                    .unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    println!("wrong sold_out after a completed restock: {wrong}/{rounds}");
    assert_eq!(wrong, 0);
    inventory.stop();
}

/// A merchant who ends the sale: the next request should be `ended`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_sale_answers_ended_not_sold_out() {
    use flashsale::domain::SaleChange;
    let mut wrong = 0;
    let rounds = 10;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let inventory = Inventory::start(
        Arc::clone(&store),
        1,
        actor_settings(),
        Duration::from_secs(5),
    )
    .unwrap();
    for _ in 0..rounds {
        let hot = sale(1, 1, -1_000);
        store.create_sale(&hot).await.unwrap();
        inventory
            .reserve(request(&hot, "first", 1, None))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let _ = inventory.reserve(request(&hot, "learn", 1, None)).await;
        let view = store.view_sale(&hot.id).await.unwrap().unwrap();
        let change = SaleChange {
            sale: view.sale.clone(),
            restricted: false,
            end_now: true,
        };
        store
            .update_sale(&hot.id, &change, view.version)
            .await
            .unwrap();
        let view = store.view_sale(&hot.id).await.unwrap().unwrap();
        inventory.sale_changed(view);
        match inventory.reserve(request(&hot, "late", 1, None)).await {
            Err(InventoryError::Store(StoreError::Rejected(Rejection::Ended))) => {}
            Err(InventoryError::Store(StoreError::Rejected(Rejection::SoldOut))) => wrong += 1,
            other => panic!("{other:?}"),
        }
    }
    println!("sold_out instead of ended after the merchant ended the sale: {wrong}/{rounds}");
    assert_eq!(wrong, 0);
    inventory.stop();
}

/// A hot sold-out sale whose every request is refused by the board: the
/// actor sees no request and retires as idle although traffic never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_sold_out_sale_keeps_its_actor() {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let hot = sale(1, 1, -1_000);
    store.create_sale(&hot).await.unwrap();
    let mut s = actor_settings();
    s.idle_stop = Duration::from_millis(1_000);
    s.refresh = Duration::from_millis(100);
    let inventory = Inventory::start(Arc::clone(&store), 1, s, Duration::from_secs(5)).unwrap();
    inventory
        .reserve(request(&hot, "alice", 1, None))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let (mut requests, mut no_actor) = (0, 0);
    while started.elapsed() < Duration::from_millis(2_500) {
        let _ = inventory
            .reserve(request(&hot, &format!("u{requests}"), 1, None))
            .await;
        requests += 1;
        if inventory.actor_count() == 0 {
            no_actor += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "{requests} requests over 2.5 s (one per ms); times no actor was registered: {no_actor}"
    );
    assert_eq!(
        no_actor, 0,
        "the actor retired as idle during a steady stream of requests"
    );
    inventory.stop();
}
