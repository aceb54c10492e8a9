//! The reservation hot path on the embedded store, measured three ways in
//! the same run so the ratios hold on a noisy machine. Each iteration is a
//! burst of `CALLERS` concurrent reservations (throughput is reported per
//! reservation), as in a sale's opening second:
//!
//! - `store_direct`: the store call alone (the baseline);
//! - `through_actor`: the same call routed through the sale's inventory
//!   actor (registry lookup, mailbox, reply channel);
//! - `sold_out_fast_path`: a request the actor answers from memory.
//!
//! Run: `cargo bench --bench reserve`.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use common::{ask, assert_no_oversell, request, sale, settings};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flashsale::inventory::Inventory;
use flashsale::store::{EmbeddedStore, Store};
use futures::future::join_all;

/// Concurrent reservations per iteration.
const CALLERS: usize = 256;

fn reserve(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
    let inventory = Inventory::start(
        Arc::clone(&store),
        1,
        settings(64, 1),
        Duration::from_secs(5),
    )
    .expect("actor system");
    let open = sale(1_000_000_000);
    let sold_out = sale(1);
    runtime.block_on(async {
        store.create_sale(&open).await.expect("create");
        store.create_sale(&sold_out).await.expect("create");
    });
    let counter = AtomicU64::new(0);
    // Sell the one unit so the actor learns the sale is sold out.
    runtime.block_on(async {
        inventory
            .reserve(ask(&sold_out.id, &counter))
            .await
            .expect("last unit");
        let refused = inventory.reserve(ask(&sold_out.id, &counter)).await;
        assert!(refused.is_err(), "sold out");
    });

    let mut group = c.benchmark_group("reserve_embedded");
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(CALLERS as u64));
    group.bench_function("store_direct", |b| {
        b.to_async(&runtime).iter(|| {
            join_all((0..CALLERS).map(|_| {
                let store = Arc::clone(&store);
                let request = request(&open.id, &counter);
                async move { store.reserve(&request).await.expect("reserved") }
            }))
        });
    });
    group.bench_function("through_actor", |b| {
        b.to_async(&runtime)
            .iter(|| join_all((0..CALLERS).map(|_| inventory.reserve(ask(&open.id, &counter)))));
    });
    group.bench_function("sold_out_fast_path", |b| {
        b.to_async(&runtime).iter(|| {
            join_all((0..CALLERS).map(|_| inventory.reserve(ask(&sold_out.id, &counter))))
        });
    });
    group.finish();
    inventory.stop();
    runtime.block_on(async {
        assert_no_oversell(store.as_ref(), &open, None).await;
        assert_no_oversell(store.as_ref(), &sold_out, Some(1)).await;
    });
}

criterion_group!(benches, reserve);
criterion_main!(benches);
