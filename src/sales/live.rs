//! The live feed of a sale, for merchants' consoles
//! (`GET /admin/v1/sales/{id}/events`): one publisher per watched sale
//! reads the sale once per interval (and a queued sale's line) and
//! broadcasts what it read to every console watching it, so the store
//! sees one read per interval per sale (two for a queued sale) however
//! many consoles are open.
//!
//! A publisher starts with its sale's first watcher and stops at the first
//! tick that finds none left. Watchers are bounded per engine node
//! (`FLASHSALE_CONSOLE_WATCHERS_MAX`), which bounds the publishers too.
//! Each tick carries the sale with its exact counts (and a queued sale's
//! line in counts), the units taken from stock per second since the
//! previous tick, and this node's 429 and 503 answers per second (its
//! [`Sheds`]), so a console charts the race.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::domain::{QueueStats, SaleId, SaleStats, SaleView};
use crate::store::{Store, StoreError};
use crate::telemetry::{ShedTotals, Sheds};

/// Ticks a slow console may fall behind before it skips to the newest.
const FEED_BACKLOG: usize = 16;

/// The one store read a publisher makes per tick (two for a queued sale:
/// the sale, then its line).
pub type ReadSale =
    Arc<dyn Fn(SaleId) -> BoxFuture<'static, Result<Option<SaleRead>, StoreError>> + Send + Sync>;

/// What a tick reads: the sale, and a queued sale's line.
#[derive(Debug, Clone)]
pub struct SaleRead {
    pub view: SaleView,
    /// `None` for an open sale, or when the line's read failed.
    pub queue: Option<QueueStats>,
}

/// The read of a sale per tick from `store`: the sale, then a queued
/// sale's line. The sale read is the tick; the line's read failing (or
/// the sale switched to open between the two) leaves the tick without
/// the line, and a sale gone between the two is gone.
pub fn read_from(store: &Arc<dyn Store>) -> ReadSale {
    let store = Arc::clone(store);
    Arc::new(move |id| {
        let store = Arc::clone(&store);
        Box::pin(async move {
            let Some(view) = store.view_sale(&id).await? else {
                return Ok(None);
            };
            let queue = if view.sale.admission.is_queue() {
                match store.queue_stats(&id).await {
                    Ok(stats) => Some(stats),
                    Err(StoreError::NotFound(_)) => return Ok(None),
                    Err(StoreError::Conflict(_)) => None,
                    Err(err) => {
                        tracing::warn!(sale = %id, error = %err, "live feed: cannot read the line");
                        None
                    }
                }
            } else {
                None
            };
            Ok(Some(SaleRead { view, queue }))
        })
    })
}

#[derive(Debug, Clone, Copy)]
pub struct LiveSettings {
    /// Time between two reads of a watched sale.
    pub interval: Duration,
    /// Consoles that may watch sales at once on this node.
    pub watchers_max: usize,
}

/// What a publisher broadcasts at each tick; `seq` counts its ticks from 1.
#[derive(Debug, Clone)]
pub enum LiveTick {
    Sale(Box<LiveSale>),
    /// This tick's read failed (or found no sale); the next tick tries again.
    Unavailable {
        seq: u64,
        message: String,
    },
}

impl LiveTick {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Sale(sale) => sale.seq,
            Self::Unavailable { seq, .. } => *seq,
        }
    }
}

/// The sale as one tick read it.
#[derive(Debug, Clone)]
pub struct LiveSale {
    pub seq: u64,
    pub view: SaleView,
    /// A queued sale's line; `None` for an open sale, or when its read failed.
    pub queue: Option<QueueStats>,
    /// Units taken from stock (reserved) per second since the previous
    /// tick: 0 at the first.
    pub sold_per_sec: f64,
    /// This node's 429 answers per second since the previous tick.
    pub shed_429_per_sec: f64,
    /// This node's 503 answers per second since the previous tick.
    pub shed_503_per_sec: f64,
}

/// Why a console cannot watch now.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0} consoles already watch sales on this node (FLASHSALE_CONSOLE_WATCHERS_MAX)")]
    Full(usize),
    #[error("the engine is stopping")]
    Closed,
}

/// One console's place on a sale's feed; leaving drops it.
pub struct Watcher {
    ticks: broadcast::Receiver<Arc<LiveTick>>,
    _slot: OwnedSemaphorePermit,
}

impl Watcher {
    /// The next tick (the newest one, if this watcher fell behind); `None`
    /// once the feed is closed.
    pub async fn next(&mut self) -> Option<Arc<LiveTick>> {
        loop {
            match self.ticks.recv().await {
                Ok(tick) => return Some(tick),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The publishers of one engine node, one per watched sale.
pub struct LiveFeeds {
    inner: Arc<Inner>,
}

struct Inner {
    read: ReadSale,
    sheds: Arc<Sheds>,
    settings: LiveSettings,
    slots: Arc<Semaphore>,
    feeds: Mutex<Feeds>,
}

#[derive(Default)]
struct Feeds {
    closed: bool,
    by_sale: HashMap<SaleId, Feed>,
}

struct Feed {
    ticks: broadcast::Sender<Arc<LiveTick>>,
    publisher: AbortHandle,
}

/// What one tick measured, to compute the next tick's rates.
struct Sample {
    units_taken: i64,
    sheds: ShedTotals,
    at: Instant,
}

impl LiveFeeds {
    pub fn new(read: ReadSale, sheds: Arc<Sheds>, settings: LiveSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                read,
                sheds,
                settings,
                slots: Arc::new(Semaphore::new(settings.watchers_max)),
                feeds: Mutex::new(Feeds::default()),
            }),
        }
    }

    /// A place on the sale's feed, starting its publisher if nobody
    /// watches it yet. Must be called within the tokio runtime.
    pub fn watch(&self, id: &SaleId) -> Result<Watcher, WatchError> {
        let slot = Arc::clone(&self.inner.slots)
            .try_acquire_owned()
            .map_err(|_| WatchError::Full(self.inner.settings.watchers_max))?;
        let mut feeds = self.inner.feeds.lock();
        if feeds.closed {
            return Err(WatchError::Closed);
        }
        let ticks = match feeds.by_sale.get(id) {
            Some(feed) => feed.ticks.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(FEED_BACKLOG);
                let publisher =
                    tokio::spawn(Arc::clone(&self.inner).publish(id.clone(), sender.clone()))
                        .abort_handle();
                feeds.by_sale.insert(
                    id.clone(),
                    Feed {
                        ticks: sender,
                        publisher,
                    },
                );
                receiver
            }
        };
        Ok(Watcher { ticks, _slot: slot })
    }

    /// Sales with a publisher now.
    pub fn feeds(&self) -> usize {
        self.inner.feeds.lock().by_sale.len()
    }

    /// Stops every publisher, which ends every watcher's feed (so open
    /// consoles do not hold a graceful shutdown), and refuses new watchers.
    pub fn close(&self) {
        let mut feeds = self.inner.feeds.lock();
        feeds.closed = true;
        for (_, feed) in feeds.by_sale.drain() {
            feed.publisher.abort();
        }
    }
}

impl Inner {
    /// Reads the sale once per interval and broadcasts it, until a tick
    /// finds no watcher left.
    async fn publish(self: Arc<Self>, id: SaleId, ticks: broadcast::Sender<Arc<LiveTick>>) {
        let mut timer = tokio::time::interval(self.settings.interval);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut previous: Option<Sample> = None;
        for seq in 1.. {
            timer.tick().await;
            if self.let_go_if_unwatched(&id, &ticks) {
                return;
            }
            let sheds = self.sheds.totals();
            let tick = match (self.read)(id.clone()).await {
                Ok(Some(read)) => {
                    let sample = Sample {
                        units_taken: units_taken(&read.view.stats),
                        sheds,
                        at: Instant::now(),
                    };
                    let tick = LiveSale::measured(seq, read, previous.as_ref(), &sample);
                    previous = Some(sample);
                    LiveTick::Sale(Box::new(tick))
                }
                Ok(None) => LiveTick::Unavailable {
                    seq,
                    message: "sale not found".into(),
                },
                Err(err) => {
                    // The store's own words (addresses, data) stay in the log.
                    tracing::warn!(sale = %id, error = %err, "live feed: cannot read the sale");
                    LiveTick::Unavailable {
                        seq,
                        message: "the store cannot be read; the next tick tries again".into(),
                    }
                }
            };
            // Nobody left since the check: the next tick lets go.
            let _ = ticks.send(Arc::new(tick));
        }
    }

    /// Removes the sale's feed if it has no watcher; decided under the
    /// feeds' lock, which [`LiveFeeds::watch`] subscribes under, so a
    /// console arriving now either is counted here or starts a new feed.
    fn let_go_if_unwatched(&self, id: &SaleId, ticks: &broadcast::Sender<Arc<LiveTick>>) -> bool {
        let mut feeds = self.feeds.lock();
        if ticks.receiver_count() > 0 {
            return false;
        }
        if feeds
            .by_sale
            .get(id)
            .is_some_and(|feed| feed.ticks.same_channel(ticks))
        {
            feeds.by_sale.remove(id);
        }
        true
    }
}

/// Units ever taken from the sale's stock: each reservation's units are
/// reserved, then paid, cancelled or expired, and a paid one may be
/// refunded (a late payment's units stay counted where they were), so
/// this only grows.
fn units_taken(stats: &SaleStats) -> i64 {
    stats.reserved + stats.paid + stats.cancelled + stats.expired + stats.refunded
}

impl LiveSale {
    fn measured(seq: u64, read: SaleRead, previous: Option<&Sample>, now: &Sample) -> Self {
        let SaleRead { view, queue } = read;
        let Some(previous) = previous else {
            return Self {
                seq,
                view,
                queue,
                sold_per_sec: 0.0,
                shed_429_per_sec: 0.0,
                shed_503_per_sec: 0.0,
            };
        };
        let secs = now.at.duration_since(previous.at).as_secs_f64();
        let per_sec = |delta: f64| if secs > 0.0 { delta / secs } else { 0.0 };
        let count = |now: u64, before: u64| per_sec(now.saturating_sub(before) as f64);
        Self {
            seq,
            view,
            queue,
            sold_per_sec: per_sec((now.units_taken - previous.units_taken).max(0) as f64),
            shed_429_per_sec: count(now.sheds.status_429, previous.sheds.status_429),
            shed_503_per_sec: count(now.sheds.status_503, previous.sheds.status_503),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);

    fn view(id: &SaleId, reserved: i64) -> SaleView {
        crate::sales::test_view(id, 100, reserved)
    }

    /// A read that counts itself in `reads` and finds `reserved` units
    /// reserved.
    fn counted(reads: &Arc<AtomicUsize>, reserved: &Arc<AtomicI64>) -> ReadSale {
        let (reads, reserved) = (Arc::clone(reads), Arc::clone(reserved));
        Arc::new(move |id| {
            reads.fetch_add(1, Ordering::SeqCst);
            let view = view(&id, reserved.load(Ordering::SeqCst));
            Box::pin(async move { Ok(Some(SaleRead { view, queue: None })) })
        })
    }

    /// Goal: a tick reads a queued sale's line, not an open sale's, and
    /// a sale that is gone is gone. Method: the embedded store.
    #[tokio::test]
    async fn the_read_carries_a_queued_sales_line() {
        use crate::domain::{AdmissionMode, AdmissionSettings};
        use crate::store::EmbeddedStore;

        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::new());
        let read = read_from(&store);
        let open = view(&SaleId::generate(), 0).sale;
        let mut queued = view(&SaleId::generate(), 0).sale;
        queued.admission = queued
            .admission
            .apply(&AdmissionSettings {
                mode: AdmissionMode::Queue,
                prequeue_opens_secs: None,
                admit_per_sec: None,
                token_ttl_secs: None,
            })
            .unwrap();
        for sale in [&open, &queued] {
            store.create_sale(sale).await.unwrap();
        }
        let line = |id: &SaleId| {
            let read = Arc::clone(&read);
            let id = id.clone();
            async move { read(id).await.unwrap().map(|read| read.queue) }
        };
        assert_eq!(line(&open.id).await, Some(None), "an open sale has no line");
        assert_eq!(
            line(&queued.id).await,
            Some(Some(QueueStats::default())),
            "nobody joined yet"
        );
        assert_eq!(line(&SaleId::generate()).await, None, "no such sale");
    }

    #[test]
    fn units_taken_only_grow_as_orders_move_on() {
        let reserved = SaleStats {
            reserved: 3,
            ..SaleStats::default()
        };
        let paid_one_cancelled_one = SaleStats {
            reserved: 1,
            paid: 1,
            cancelled: 1,
            ..SaleStats::default()
        };
        let refunded = SaleStats {
            paid: 0,
            refunded: 1,
            restocked: 1,
            ..paid_one_cancelled_one
        };
        let taken: Vec<i64> = [reserved, paid_one_cancelled_one, refunded]
            .iter()
            .map(units_taken)
            .collect();
        assert_eq!(taken, [3, 3, 3]);
    }

    fn feeds(read: ReadSale, sheds: Arc<Sheds>, watchers_max: usize) -> LiveFeeds {
        LiveFeeds::new(
            read,
            sheds,
            LiveSettings {
                interval: INTERVAL,
                watchers_max,
            },
        )
    }

    /// Goal: two consoles on one sale cost one store read per interval.
    /// Method: paused clock; two watchers take five ticks each; every tick
    /// is the same broadcast value and the read count is the tick count.
    #[tokio::test(start_paused = true)]
    async fn two_watchers_share_one_read_per_interval() {
        let (reads, reserved) = (Arc::default(), Arc::default());
        let feeds = feeds(counted(&reads, &reserved), Arc::default(), 4);
        let id = SaleId::generate();
        let mut first = feeds.watch(&id).expect("first watcher");
        let mut second = feeds.watch(&id).expect("second watcher");
        for seq in 1..=5 {
            let a = first.next().await.expect("a tick");
            let b = second.next().await.expect("a tick");
            assert_eq!(a.seq(), seq);
            assert!(Arc::ptr_eq(&a, &b), "one read, broadcast to both");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 5, "one read per tick");
        assert_eq!(feeds.feeds(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_carry_units_and_sheds_per_second() {
        let (reads, reserved) = (Arc::default(), Arc::new(AtomicI64::new(0)));
        let sheds = Arc::new(Sheds::default());
        let feeds = feeds(counted(&reads, &reserved), Arc::clone(&sheds), 4);
        let mut watcher = feeds.watch(&SaleId::generate()).expect("watcher");
        let Some(LiveTick::Sale(first)) = watcher.next().await.as_deref().cloned() else {
            panic!("a sale tick");
        };
        assert_eq!(first.sold_per_sec, 0.0, "nothing to compare the first with");
        reserved.store(7, Ordering::SeqCst);
        for status in [429, 429, 503, 200, 409] {
            sheds.count(status);
        }
        let Some(LiveTick::Sale(second)) = watcher.next().await.as_deref().cloned() else {
            panic!("a sale tick");
        };
        assert_eq!(second.sold_per_sec, 7.0);
        assert_eq!(second.shed_429_per_sec, 2.0);
        assert_eq!(second.shed_503_per_sec, 1.0);
        assert_eq!(second.view.stats.remaining, 93);
    }

    /// Goal: feeds and watchers are bounded and nothing outlives its
    /// watchers. Method: fill the watcher slots, leave, and let ticks pass.
    #[tokio::test(start_paused = true)]
    async fn watchers_are_bounded_and_an_unwatched_feed_stops_reading() {
        let (reads, reserved) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        let feeds = feeds(counted(&reads, &reserved), Arc::default(), 2);
        let (one, other) = (SaleId::generate(), SaleId::generate());
        let mut first = feeds.watch(&one).expect("a slot");
        let second = feeds.watch(&other).expect("a slot");
        assert!(matches!(feeds.watch(&one), Err(WatchError::Full(2))));
        assert_eq!(feeds.feeds(), 2);
        first.next().await.expect("a tick");
        drop((first, second));
        tokio::time::sleep(INTERVAL * 3).await;
        assert_eq!(feeds.feeds(), 0, "both publishers let go");
        let reads_after = reads.load(Ordering::SeqCst);
        tokio::time::sleep(INTERVAL * 3).await;
        assert_eq!(reads.load(Ordering::SeqCst), reads_after, "no more reads");

        let mut again = feeds.watch(&one).expect("slots are free again");
        assert_eq!(again.next().await.expect("a new feed").seq(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_every_watcher_and_refuses_new_ones() {
        let (reads, reserved) = (Arc::default(), Arc::default());
        let feeds = feeds(counted(&reads, &reserved), Arc::default(), 4);
        let id = SaleId::generate();
        let mut watcher = feeds.watch(&id).expect("watcher");
        watcher.next().await.expect("a tick");
        feeds.close();
        assert!(watcher.next().await.is_none(), "the feed ended");
        assert!(matches!(feeds.watch(&id), Err(WatchError::Closed)));
    }
}
