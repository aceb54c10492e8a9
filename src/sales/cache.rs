//! The sale as shoppers poll it, per engine node: read from the store at
//! most once per `fresh_for` however many shoppers ask. While a sale's
//! countdown runs, every waiting shopper polls it; one store read per poll
//! would make the countdown cost more than the race.
//!
//! A cached view is aged on the way out: its `now` (the store's clock at
//! the read) moves on by the time since the middle of the read, on this
//! process's steady clock, so `server_time` and the status (upcoming,
//! live, ended) stay exact to half the store read;
//! only `remaining` may be up to `fresh_for` old, as the contract allows on
//! public routes. Only sales that exist are kept, so the cache holds at
//! most one entry per sale (one deleted by retention is dropped at its
//! next read), and only those asked for lately: one not read from the
//! store for [`UNREAD_KEPT`] is dropped when the node prunes (see
//! [`Slots::prune`]).
//!
//! The list of open sales (`GET /api/v1/sales`) is kept the same way, as
//! one entry: read from the store's index of open sales at most once per
//! `fresh_for`, each view aged on the way out.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::domain::{SaleId, SaleView};
use crate::store::StoreError;

/// How long a node keeps a sale's view or a campaign's page it has not
/// read from the store (see [`Slots::prune`]).
pub(crate) const UNREAD_KEPT: Duration = Duration::from_secs(600);

/// A last read, and the lock that lets one caller at a time read again.
pub(crate) struct Slot<T> {
    pub(crate) last: RwLock<Option<(T, Instant)>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            last: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T: Clone> Slot<T> {
    /// The last read and its age, if it is fresh.
    fn fresh(&self, fresh_for: Duration) -> Option<(T, Duration)> {
        let last = self.last.read();
        let (value, read_at) = last.as_ref()?;
        let age = read_at.elapsed();
        (age < fresh_for).then(|| (value.clone(), age))
    }

    fn keep(&self, value: T, read_at: Instant) {
        *self.last.write() = Some((value, read_at));
    }

    /// The last read if fresh, else `read`'s answer (one caller at a time;
    /// the others wait and share it), with its age. Errors are not kept.
    pub(crate) async fn get<F, Fut>(
        &self,
        fresh_for: Duration,
        read: F,
    ) -> Result<(T, Duration), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        if let Some(fresh) = self.fresh(fresh_for) {
            return Ok(fresh);
        }
        let _reading = self.refreshing.lock().await;
        if let Some(fresh) = self.fresh(fresh_for) {
            return Ok(fresh);
        }
        // The store's clock was read somewhere during the read: its middle
        // is where the value's age counts from (off by half the read at
        // most, either way).
        let started = Instant::now();
        let value = read().await?;
        self.keep(value.clone(), started + started.elapsed() / 2);
        Ok((value, Duration::ZERO))
    }
}

/// A [`Slot`] per key, kept once a read of the key found something: a key
/// the store has nothing for, or whose first read failed, leaves nothing
/// behind, so the slots are at most one per thing that exists (one the
/// store no longer has is dropped at its next read). A first read is one
/// reader's too: the others wait for it.
pub(crate) struct Slots<K, T> {
    slots: DashMap<K, Arc<Slot<T>>>,
    /// What a read that finds nothing answers: `NotFound(missing)`.
    missing: &'static str,
}

impl<K: Eq + Hash + Clone, T: Clone> Slots<K, T> {
    pub(crate) fn new(missing: &'static str) -> Self {
        Self {
            slots: DashMap::new(),
            missing,
        }
    }

    /// The value of `key` if fresh, else `read`'s answer (see
    /// [`Slot::get`]), with its age.
    pub(crate) async fn get<F, Fut>(
        &self,
        key: &K,
        fresh_for: Duration,
        read: F,
    ) -> Result<(T, Duration), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        let kept = self.slots.get(key).map(|slot| Arc::clone(&slot));
        let slot = kept.unwrap_or_else(|| Arc::clone(&self.slots.entry(key.clone()).or_default()));
        // Also when this call is dropped mid-read (its request timed out).
        let unread = DropUnread {
            slots: self,
            key,
            slot: &slot,
        };
        let read = || async { read().await?.ok_or(StoreError::NotFound(self.missing)) };
        let got = slot.get(fresh_for, read).await;
        if let Err(StoreError::NotFound(_)) = &got {
            unread.drop_slot();
        }
        got
    }

    /// Drops what was read of `key`.
    pub(crate) fn forget(&self, key: &K) {
        self.slots.remove(key);
    }

    /// Drops every slot last read from the store `unread_for` ago or more:
    /// nobody asked for it since (a polled one is read again every
    /// `fresh_for`). A slot whose first read is under way stays. Without
    /// this, a node would keep a slot for every sale or campaign it ever
    /// served, long after retention deleted it.
    pub(crate) fn prune(&self, unread_for: Duration) {
        self.slots.retain(|_, slot| {
            slot.last
                .read()
                .as_ref()
                .is_none_or(|(_, read_at)| read_at.elapsed() < unread_for)
        });
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Drops `slot` from `slots` when it goes out of scope still holding
/// nothing read (its first read failed, or the call was dropped midway),
/// or when told to (the store has nothing for the key). Only that slot: one
/// made since by another call stays.
struct DropUnread<'a, K: Eq + Hash + Clone, T: Clone> {
    slots: &'a Slots<K, T>,
    key: &'a K,
    slot: &'a Arc<Slot<T>>,
}

impl<K: Eq + Hash + Clone, T: Clone> DropUnread<'_, K, T> {
    fn drop_slot(&self) {
        self.slots
            .slots
            .remove_if(self.key, |_, kept| Arc::ptr_eq(kept, self.slot));
    }
}

impl<K: Eq + Hash + Clone, T: Clone> Drop for DropUnread<'_, K, T> {
    fn drop(&mut self) {
        if self.slot.last.read().is_none() {
            self.drop_slot();
        }
    }
}

/// `view` as it stands `age` after it was read.
pub(crate) fn aged(view: &SaleView, age: Duration) -> SaleView {
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    SaleView {
        now: view.now.saturating_add(age_ms),
        ..view.clone()
    }
}

pub struct SaleViewCache {
    fresh_for: Duration,
    slots: Slots<SaleId, SaleView>,
    /// The open sales, as one list.
    open: Slot<Arc<Vec<SaleView>>>,
}

impl SaleViewCache {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            slots: Slots::new("sale"),
            open: Slot::default(),
        }
    }

    /// How long a read is served.
    pub fn fresh_for(&self) -> Duration {
        self.fresh_for
    }

    /// The sale's view, fresh from this cache, or from `read` (one caller
    /// per sale at a time; the others wait and share its answer). A sale
    /// the store no longer has (retention deleted it) is forgotten here.
    pub async fn view<F, Fut>(&self, id: &SaleId, read: F) -> Result<SaleView, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<SaleView>, StoreError>>,
    {
        let (view, age) = self.slots.get(id, self.fresh_for, read).await?;
        Ok(aged(&view, age))
    }

    /// The open sales (see [`Store::open_sale_ids`](crate::store::Store)),
    /// fresh from this cache, or from `read` (one caller at a time), each
    /// aged to now.
    pub async fn open_sales<F, Fut>(&self, read: F) -> Result<Vec<SaleView>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<SaleView>, StoreError>>,
    {
        let (views, age) = self
            .open
            .get(self.fresh_for, || async { read().await.map(Arc::new) })
            .await?;
        Ok(views.iter().map(|view| aged(view, age)).collect())
    }

    /// Forgets what this node read of the sale, and its list of open
    /// sales (a merchant created or changed the sale here).
    pub fn forget(&self, id: &SaleId) {
        self.slots.forget(id);
        *self.open.last.write() = None;
    }

    /// Forgets the sales not read from the store for [`UNREAD_KEPT`].
    pub fn prune(&self) {
        self.slots.prune(UNREAD_KEPT);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::join_all;

    use super::*;

    fn view(id: &SaleId, now: i64) -> SaleView {
        SaleView {
            now,
            ..crate::sales::test_view(id, 1, 0)
        }
    }

    /// A store read of the sale `id` at store instant 1,000 that counts
    /// itself in `reads` (and yields once, as a real read would).
    fn counted_read<'a>(
        id: &'a SaleId,
        reads: &'a AtomicUsize,
    ) -> impl Fn() -> futures::future::BoxFuture<'a, Result<Option<SaleView>, StoreError>> + 'a
    {
        move || {
            Box::pin(async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(Some(view(id, 1_000)))
            })
        }
    }

    #[tokio::test]
    async fn many_concurrent_polls_read_the_store_once() {
        let cache = SaleViewCache::new(Duration::from_secs(60));
        let id = SaleId::generate();
        let reads = AtomicUsize::new(0);
        let read = counted_read(&id, &reads);
        cache.view(&id, &read).await.expect("first read");
        let polls = join_all((0..100).map(|_| cache.view(&id, &read))).await;
        assert!(polls.iter().all(Result::is_ok));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one store read in all");
    }

    #[tokio::test]
    async fn a_stale_view_is_read_again_once_and_a_served_one_is_aged() {
        let cache = SaleViewCache::new(Duration::from_millis(30));
        let id = SaleId::generate();
        let reads = AtomicUsize::new(0);
        let read = counted_read(&id, &reads);
        cache.view(&id, &read).await.expect("read");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let served = cache.view(&id, &read).await.expect("served");
        assert!(served.now >= 1_010, "aged by the time since the read");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let stale = join_all((0..10).map(|_| cache.view(&id, &read))).await;
        assert!(stale.iter().all(Result::is_ok));
        assert_eq!(reads.load(Ordering::SeqCst), 2, "read again once");
    }

    #[tokio::test]
    async fn slots_unread_for_long_are_dropped_and_read_again() {
        let cache = SaleViewCache::new(Duration::from_millis(5));
        let (polled, unpolled) = (SaleId::generate(), SaleId::generate());
        let reads = AtomicUsize::new(0);
        cache
            .view(&polled, counted_read(&polled, &reads))
            .await
            .expect("read");
        cache
            .view(&unpolled, counted_read(&unpolled, &reads))
            .await
            .expect("read");
        cache.prune();
        assert_eq!(cache.slots.slots.len(), 2, "both read just now");
        tokio::time::sleep(Duration::from_millis(30)).await;
        cache
            .view(&polled, counted_read(&polled, &reads))
            .await
            .expect("read again");
        cache.slots.prune(Duration::from_millis(20));
        assert!(cache.slots.slots.contains_key(&polled), "read just now");
        assert!(
            !cache.slots.slots.contains_key(&unpolled),
            "unread for 30 ms"
        );
        cache
            .view(&unpolled, counted_read(&unpolled, &reads))
            .await
            .expect("read again");
        assert_eq!(
            reads.load(Ordering::SeqCst),
            4,
            "each dropped one read again"
        );
    }

    #[tokio::test]
    async fn unknown_sales_are_not_kept() {
        let cache = SaleViewCache::new(Duration::from_secs(60));
        let id = SaleId::generate();
        let missing = cache.view(&id, || async { Ok(None) }).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
        assert!(cache.slots.is_empty());
    }

    #[tokio::test]
    async fn concurrent_first_reads_read_the_store_once() {
        let cache = SaleViewCache::new(Duration::from_secs(60));
        let id = SaleId::generate();
        let reads = AtomicUsize::new(0);
        let read = counted_read(&id, &reads);
        let polls = join_all((0..100).map(|_| cache.view(&id, &read))).await;
        assert!(polls.iter().all(Result::is_ok));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "one store read in all");
    }

    #[tokio::test]
    async fn a_failed_read_keeps_nothing() {
        let slots: Slots<SaleId, SaleView> = Slots::new("sale");
        let id = SaleId::generate();
        let failed = slots
            .get(&id, Duration::from_secs(60), || async {
                Err(StoreError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Unavailable(_))));
        assert!(slots.is_empty(), "one entry per id asked for, otherwise");

        // A first read dropped midway (its request timed out) keeps
        // nothing either.
        let pending = slots.get(&id, Duration::from_secs(60), || {
            futures::future::pending::<Result<Option<SaleView>, StoreError>>()
        });
        let dropped = tokio::time::timeout(Duration::from_millis(10), pending).await;
        assert!(dropped.is_err());
        assert!(slots.is_empty(), "a dropped read keeps nothing");
    }
}
