//! The engine drains its metrics' histograms without a scrape: a histogram
//! keeps every recorded sample until upkeep (or `/metrics`) drains it into
//! its buckets, so an engine nobody scrapes grew by every store call and
//! request (the soak's rising RSS). Its own test binary, because it counts
//! the process's live heap bytes with a global allocator.

use std::alloc::System;
use std::time::{Duration, Instant};

use flashsale::config::Config;
use flashsale::startup::Application;
use flashsale::telemetry;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The bytes allocated and not yet freed, in the whole process.
fn live_bytes() -> i128 {
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as i128 - stats.bytes_deallocated as i128
        + stats.bytes_reallocated as i128
}

const MIB: i128 = 1 << 20;

#[tokio::test]
async fn a_running_engine_drains_histogram_samples_without_a_scrape() {
    let app = Application::build(Config::for_tests())
        .await
        .expect("build the app");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    telemetry::observe_store_call("upkeep_test", Duration::from_micros(300));
    let baseline = live_bytes();

    // 8 bytes a sample until drained: 4 MiB.
    for _ in 0..(1 << 19) {
        telemetry::observe_store_call("upkeep_test", Duration::from_micros(300));
    }
    let held = live_bytes() - baseline;
    assert!(
        held > 3 * MIB,
        "the samples are held until drained: {held} bytes"
    );

    // Waits for the upkeep (every few seconds), bounded, while the engine
    // keeps recording as a live one does (a drained sample block is freed
    // once no recording thread can still be reading it).
    let deadline = Instant::now() + telemetry::METRICS_UPKEEP_EVERY * 6;
    let mut left = held;
    while left > MIB && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..64 {
            telemetry::observe_store_call("upkeep_test", Duration::from_micros(300));
        }
        left = live_bytes() - baseline;
    }
    assert!(
        left <= MIB,
        "{left} bytes of samples still held: the engine runs no metrics upkeep"
    );

    let _ = stop.send(());
    server.await.expect("the server task").expect("the server");
}
