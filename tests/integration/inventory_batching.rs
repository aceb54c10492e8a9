//! Goal: while a sale's store call is in flight, its actor queues what comes;
//! when the call returns, one atomic call carries everything that waited (up
//! to the batch bound), each caller gets its own exact answer, and a lone
//! buyer on an idle sale costs one call.
//! Method: drive the inventory on a real Redis frozen with `CLIENT PAUSE`
//! while 200 shoppers ask at once, and count the script calls Redis ran
//! (`INFO commandstats`).

use std::sync::Arc;
use std::time::Duration;

use flashsale::config::RedisDurability;
use flashsale::domain::Rejection;
use flashsale::inventory::{ActorSettings, Inventory, InventoryError};
use flashsale::store::{RedisStore, RedisTarget, Store, StoreError};
use futures::future::join_all;

use crate::conformance::{ask, request, sale};
use crate::support::{actor_settings, RedisServer};

const SHOPPERS: usize = 200;
const STOCK: i64 = 50;
const BATCH_MAX: usize = 64;

fn reset_stats(redis: &RedisServer) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.connection())
        .expect("CONFIG RESETSTAT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_reservations_reach_the_store_in_batches() {
    let redis = RedisServer::start();
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(
            &RedisTarget::Standalone(redis.url()),
            Duration::from_secs(5),
            RedisDurability::Always,
        )
        .await
        .expect("connect"),
    );
    let hot = sale(STOCK, 1, -1_000);
    store.create_sale(&hot).await.expect("create");
    let settings = ActorSettings {
        batch_max: BATCH_MAX,
        // No background reads: every script call counted is a reservation.
        ..actor_settings()
    };
    let inventory = Inventory::start(Arc::clone(&store), 1, settings, Duration::from_secs(5))
        .expect("inventory");
    inventory
        .reserve(ask(&hot, "warm-up", 1, None))
        .await
        .expect("warm-up");

    // An idle sale: one buyer, one call.
    reset_stats(&redis);
    inventory
        .reserve(ask(&hot, "lone", 1, None))
        .await
        .expect("lone buyer");
    assert_eq!(redis.script_calls(), 1, "a lone buyer costs one call");

    // Frozen Redis: the first call hangs, everyone else queues behind it.
    reset_stats(&redis);
    redis.pause(300);
    let answers = join_all(
        (0..SHOPPERS).map(|i| inventory.reserve(ask(&hot, &format!("shopper-{i}"), 1, None))),
    )
    .await;
    let calls = redis.script_calls();
    let won = answers.iter().filter(|answer| answer.is_ok()).count();
    let sold_out = answers
        .iter()
        .filter(|answer| {
            matches!(
                answer,
                Err(InventoryError::Store(StoreError::Rejected(
                    Rejection::SoldOut
                )))
            )
        })
        .count();
    assert_eq!(
        won,
        STOCK as usize - 2,
        "exactly the stock left: {answers:?}"
    );
    assert_eq!(won + sold_out, SHOPPERS, "every other answer is sold_out");
    let unbatched_calls = (won + 1) as u64;
    assert!(
        calls <= 1 + SHOPPERS.div_ceil(BATCH_MAX) as u64,
        "{calls} script calls for {SHOPPERS} shoppers: the queue went in batches of up to \
         {BATCH_MAX}, not one call each (at least {unbatched_calls})"
    );
    let stats = store
        .view_sale(&hot.id)
        .await
        .expect("view")
        .expect("sale")
        .stats;
    assert_eq!((stats.remaining, stats.reserved), (0, STOCK));
    println!("{SHOPPERS} shoppers, {calls} script calls");
    inventory.stop();
}

/// A request of a batch whose answer cannot be read (here: its replayed
/// order is corrupt) fails alone; the others keep their outcomes, since the
/// script decided them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_answer_fails_only_its_request() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(
        &RedisTarget::Standalone(redis.url()),
        Duration::from_secs(5),
        RedisDurability::Always,
    )
    .await
    .expect("connect");
    let open = sale(10, 1, -1_000);
    store.create_sale(&open).await.expect("create");
    let keyed = |who: &str| request(&open, who, 1, Some("k1"));
    let first = store.reserve(&keyed("alice")).await.expect("first order");
    let _: () = redis::cmd("HSET")
        .arg(format!("fs:{{{}}}:orders", open.id))
        .arg(first.order.id.as_str())
        .arg("user_id=alice quantity=1 amount_cents=not-a-number")
        .query(&mut redis.connection())
        .expect("corrupt the order");
    let bob = request(&open, "bob", 1, None);
    let outcomes = store
        .reserve_batch(&[keyed("alice"), bob.clone()])
        .await
        .expect("the call itself succeeded");
    assert!(
        matches!(outcomes[0], Err(StoreError::Corrupt(_))),
        "{outcomes:?}"
    );
    let bobs = outcomes[1].as_ref().expect("bob's reservation stands");
    assert_eq!(bobs.order.id, bob.order_id);
}
