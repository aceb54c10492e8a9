//! The engine's own time: the steady instants and the timers of the
//! inventory actors (refresh, idle stop, their estimate of the store's
//! clock), and what any background loop of the engine waits on.
//!
//! Behind one trait so that tests move it by hand: [`SystemClock`] is the
//! process's, [`ManualClock`] stands still until a test calls
//! [`ManualClock::advance`]. tokio's paused time would not do: the actors
//! run on actix arbiter threads, each with a tokio runtime of its own, which
//! `tokio::time::pause()` in a test's runtime does not reach; and pausing a
//! runtime also stops the timeouts of its real I/O.
//!
//! Not this clock: the store's. Sale windows, order expiry and token expiry
//! are decided by the store's clock (Redis `TIME`, the embedded store's
//! wall clock), which keeps real time whatever a test does here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::domain::{system_now, Millis};

/// A steady clock in wall-clock milliseconds, and timers on it.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The steady instant now: it starts near the wall clock and never goes
    /// back, so a step of the machine's clock moves no estimate made on it.
    fn now(&self) -> Millis;

    /// Completes once [`now`](Self::now) has reached `deadline` (at once if
    /// it has).
    fn sleep_until(&self, deadline: Millis) -> BoxFuture<'static, Wakeup>;

    /// Completes `duration` from now.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, Wakeup>;
}

/// What a sleep completes with. Until it is dropped, a [`ManualClock`]
/// counts the sleep as still running, and [`ManualClock::advance`] waits:
/// hold it while doing what the sleep waited for, so a test that advanced
/// the clock sees that done. On the [`SystemClock`] it holds nothing.
#[derive(Debug)]
pub struct Wakeup {
    /// Held for its drop only.
    _pending: Option<PendingSleep>,
}

/// `duration` in whole milliseconds, rounded up (a timer never fires
/// early) and saturated.
pub fn duration_ms(duration: Duration) -> Millis {
    let whole =
        duration.as_millis() + u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
    Millis::try_from(whole).unwrap_or(Millis::MAX)
}

/// This process's clock: `Instant` for the steady instants, tokio's timers
/// for the sleeps (they need a tokio runtime on the calling thread, as the
/// actors' arbiters and the engine's own runtime have).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The `Instant` and the wall-clock reading the steady clock starts at.
    fn start() -> (Instant, Millis) {
        static START: OnceLock<(Instant, Millis)> = OnceLock::new();
        *START.get_or_init(|| (Instant::now(), system_now()))
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let (instant, wall) = Self::start();
        wall.saturating_add(Millis::try_from(instant.elapsed().as_millis()).unwrap_or(Millis::MAX))
    }

    fn sleep_until(&self, deadline: Millis) -> BoxFuture<'static, Wakeup> {
        let (instant, wall) = Self::start();
        let after_start = u64::try_from(deadline.saturating_sub(wall)).unwrap_or(0);
        let at = instant.checked_add(Duration::from_millis(after_start));
        Box::pin(async move {
            match at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                // Past what an Instant can hold: never.
                None => std::future::pending().await,
            }
            Wakeup { _pending: None }
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, Wakeup> {
        Box::pin(async move {
            tokio::time::sleep(duration).await;
            Wakeup { _pending: None }
        })
    }
}

/// A clock for tests: it stands still until [`advance`](Self::advance)
/// moves it, and then every sleep that fell due completes. Share one
/// (`Arc<ManualClock>`) between the test and what it drives.
///
/// The store's clock keeps real time meanwhile: an actor re-measures the
/// store's clock against this one at each snapshot, so between two
/// snapshots its estimate drifts by however far this clock and real time
/// drifted apart. A test that advances far should keep its sales' windows
/// far from the instants it crosses.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<Millis>,
    /// The deadlines of the sleeps still running (neither dropped before
    /// their deadline nor their [`Wakeup`] dropped), each with how many
    /// sleep until it.
    sleeps: Arc<watch::Sender<BTreeMap<Millis, usize>>>,
}

impl ManualClock {
    /// The longest real time [`advance`](Self::advance) waits for the sleeps
    /// that fell due to end.
    pub const SETTLE_MAX: Duration = Duration::from_secs(10);

    /// A clock standing at `start`. Use [`system_now`] when what it drives
    /// compares its instants with the store's.
    pub fn at(start: Millis) -> Self {
        Self {
            now: watch::Sender::new(start),
            sleeps: Arc::new(watch::Sender::new(BTreeMap::new())),
        }
    }

    /// Waits until at least `count` sleeps are running on this clock: what
    /// sleeps on it has come to rest (a loop between two passes).
    pub async fn sleeping(&self, count: usize) {
        let mut sleeps = self.sleeps.subscribe();
        // Fails only once the sender is gone, and `self` holds it.
        let _ = sleeps
            .wait_for(|deadlines| deadlines.values().sum::<usize>() >= count)
            .await;
    }

    /// Moves the clock `by` forward, then waits until every sleep that fell
    /// due has ended: its [`Wakeup`] dropped. The actors hold theirs through
    /// a tick, so when this returns every due tick of every actor on this
    /// clock has run.
    ///
    /// # Panics
    /// If a sleep that fell due has not ended after [`Self::SETTLE_MAX`] of
    /// real time: nothing polls it (its runtime stopped, or the caller
    /// itself holds it or its wake-up).
    pub async fn advance(&self, by: Duration) {
        let mut now = 0;
        self.now.send_modify(|clock| {
            *clock = clock.saturating_add(duration_ms(by));
            now = *clock;
        });
        let mut sleeps = self.sleeps.subscribe();
        let none_due = |deadlines: &BTreeMap<Millis, usize>| {
            deadlines.keys().next().is_none_or(|first| *first > now)
        };
        let settled = async move {
            // Fails only once the sender is gone, and `self` holds it.
            let _ = sleeps.wait_for(none_due).await;
        };
        if tokio::time::timeout(Self::SETTLE_MAX, settled)
            .await
            .is_err()
        {
            panic!(
                "a sleep due at or before {now} has not ended after {:?}",
                Self::SETTLE_MAX
            );
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: Millis) -> BoxFuture<'static, Wakeup> {
        self.sleeps
            .send_modify(|deadlines| *deadlines.entry(deadline).or_default() += 1);
        // Dropped with the future if it never completes, else handed on.
        let pending = PendingSleep {
            deadline,
            sleeps: Arc::clone(&self.sleeps),
        };
        let mut clock = self.now.subscribe();
        Box::pin(async move {
            // The sender lives in the clock, which outlives what sleeps on it.
            let _ = clock.wait_for(|now| *now >= deadline).await;
            Wakeup {
                _pending: Some(pending),
            }
        })
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, Wakeup> {
        self.sleep_until(self.now().saturating_add(duration_ms(duration)))
    }
}

/// One running sleep among a [`ManualClock`]'s deadlines, removed on drop.
#[derive(Debug)]
struct PendingSleep {
    deadline: Millis,
    sleeps: Arc<watch::Sender<BTreeMap<Millis, usize>>>,
}

impl Drop for PendingSleep {
    fn drop(&mut self) {
        self.sleeps.send_modify(|deadlines| {
            if let Some(count) = deadlines.get_mut(&self.deadline) {
                *count -= 1;
                if *count == 0 {
                    deadlines.remove(&self.deadline);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn durations_round_up_to_whole_milliseconds() {
        assert_eq!(duration_ms(Duration::from_millis(50)), 50);
        assert_eq!(duration_ms(Duration::from_micros(50_001)), 51);
        assert_eq!(duration_ms(Duration::from_nanos(1)), 1);
        assert_eq!(duration_ms(Duration::MAX), Millis::MAX);
    }

    #[test]
    fn the_system_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let before = system_now();
        let first = SystemClock.now();
        let second = SystemClock.now();
        assert!(second >= first);
        // Started at the wall clock the first time any test asked.
        assert!(
            first <= before + 1_000,
            "{first} vs the wall clock {before}"
        );
    }

    #[tokio::test]
    async fn a_system_sleep_until_ends_at_its_deadline() {
        let clock = SystemClock;
        let deadline = clock.now() + 20;
        clock.sleep_until(deadline).await;
        assert!(clock.now() >= deadline);
        clock.sleep_until(Millis::MIN).await;
    }

    /// Goal: a sleep completes exactly when the clock reaches its deadline,
    /// and `advance` returns only once its wake-up was dropped. Method: a
    /// task on another thread counts the ticks of a 100 ms loop, holding
    /// each wake-up until it counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn advancing_runs_exactly_the_sleeps_that_fell_due() {
        let clock = Arc::new(ManualClock::at(1_000));
        let ticks = Arc::new(AtomicUsize::new(0));
        let mut sleep = clock.sleep(Duration::from_millis(100));
        let ticker = {
            let (clock, ticks) = (Arc::clone(&clock), Arc::clone(&ticks));
            tokio::spawn(async move {
                loop {
                    let wakeup = sleep.await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                    sleep = clock.sleep(Duration::from_millis(100));
                    drop(wakeup);
                }
            })
        };
        clock.advance(Duration::from_millis(99)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 0, "not yet due");
        clock.advance(Duration::from_millis(1)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 1, "due at 1100");
        clock.advance(Duration::from_millis(250)).await;
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            2,
            "one wake-up however far it moved"
        );
        assert_eq!(clock.now(), 1_350);
        ticker.abort();
        let _ = ticker.await;
        assert!(clock.sleeps.borrow().is_empty(), "a dropped sleep is gone");
    }
}
