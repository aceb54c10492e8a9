//! The waiting room of queued sales: join and poll, each written once,
//! and the line's counts for its merchant.
//! The line itself lives in the store (`Store::queue_join`,
//! `Store::queue_poll`, atomic on the store's clock, shared by every
//! engine node); this service adds what one node owns: the shuffle key of
//! a pre-queue joiner (from the sale's secret seed), the advice on when to
//! poll, and the memory of each shopper's last answer, which answers a
//! poll that comes before its `poll_after_ms` without reaching the store
//! (a shopper not in the line, or a poll the store failed, for
//! `FLASHSALE_QUEUE_POLL_MS_MIN`, until they join). That memory is what
//! bounds the store's polling load: at most one store call per shopper
//! per `FLASHSALE_QUEUE_POLL_MS_MIN` on each node, in the line or not,
//! the store answering or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::domain::{shuffle_key, PollAdvice, QueuePlace, QueueStats, SaleId, ShopperId};
use crate::sales::Sales;
use crate::store::{not_queued, QueueRules, Store, StoreError};

/// Deployment-wide settings of waiting rooms.
#[derive(Debug, Clone, Copy)]
pub struct WaitingRoomSettings {
    pub rules: QueueRules,
    /// The shortest `poll_after_ms` advised, and so the shortest interval
    /// between one shopper's store calls on one node.
    pub poll_ms_min: u64,
    /// The longest `poll_after_ms` advised (also the advice on a final
    /// answer).
    pub poll_ms_max: u64,
    /// The most shoppers whose last answer one node remembers.
    pub pollers_max: usize,
}

/// A shopper's place with the advice given with it.
#[derive(Debug, Clone)]
pub struct QueueAnswer {
    pub place: QueuePlace,
    pub advice: PollAdvice,
    /// Answered from this node's memory, not the store.
    pub remembered: bool,
}

/// Why a shopper's poll gets no place.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not in the line: never joined, or the admission expired unused.
    #[error("not in this sale's queue: join it first (an admission that expired unused gave its place away)")]
    NotInLine,
    /// This node remembers as many pollers as it may: poll again later.
    #[error("too many shoppers are polling this engine node; poll again shortly")]
    Busy,
    /// The store could not be reached at the shopper's last poll, this
    /// long ago at most: poll again after `retry_after_secs`.
    #[error("the store could not be reached at this shopper's last poll")]
    Unreachable { retry_after_secs: u64 },
}

struct Remembered {
    until: Instant,
    answer: Last,
}

/// A shopper's last answer from the store.
enum Last {
    Place(QueueAnswer),
    NotInLine,
    /// The store could not be reached (its error's words are in the log).
    Unavailable,
}

pub struct WaitingRooms {
    store: Arc<dyn Store>,
    settings: WaitingRoomSettings,
    /// (sale, shopper) -> the last answer and until when it stands.
    memory: DashMap<(SaleId, ShopperId), Remembered>,
    /// When a new poller last found the memory full and had it pruned:
    /// a full memory is walked at most once per `poll_ms_min` (no answer
    /// remembered for less runs out sooner), not by every refused poll.
    full_pruned_at: Mutex<Option<Instant>>,
}

impl WaitingRooms {
    pub fn new(store: Arc<dyn Store>, settings: WaitingRoomSettings) -> Self {
        Self {
            store,
            settings,
            memory: DashMap::new(),
            full_pruned_at: Mutex::new(None),
        }
    }

    /// Joins the sale's line (again: the same place), then answers the
    /// place as a poll would, fresh from the store.
    ///
    /// A shopper whose admission expired unused is still named in the line
    /// until a poll frees the place, so the join finds them there and the
    /// poll after it frees them: they join once more, at the back, as after
    /// a poll's 404.
    pub async fn join(
        &self,
        sales: &Sales,
        sale: &SaleId,
        shopper: &ShopperId,
    ) -> Result<QueueAnswer, QueueError> {
        // The seed never changes once the sale has one, so a view up to a
        // poll interval old has the right one; a view without one may be
        // of the sale before it was switched to its waiting room (by
        // another node), so the store is asked. Still without one, the
        // sale had no waiting room when read, as the store would answer:
        // a join keyed without the seed never reaches it.
        let mut view = sales.polled_view(sale).await?;
        if view.sale.admission.seed.is_empty() {
            view = sales.view(sale).await?;
        }
        if view.sale.admission.seed.is_empty() {
            return Err(QueueError::Store(not_queued()));
        }
        let key = shuffle_key(&view.sale.admission.seed, shopper.as_str()).unwrap_or_default();
        let mut freed_once = false;
        loop {
            self.store
                .queue_join(sale, shopper, &key, &self.settings.rules)
                .await?;
            let key = (sale.clone(), shopper.clone());
            self.memory.remove(&key);
            // From the store, whatever a poll still in flight remembers
            // meanwhile.
            match self.poll_store(key, Instant::now()).await {
                Err(QueueError::NotInLine) if !freed_once => freed_once = true,
                answer => return answer,
            }
        }
    }

    /// The shopper's place: from this node's memory until the last
    /// answer's `poll_after_ms` has passed (`NotInLine` for
    /// `poll_ms_min`), else from the store (which admits whoever's turn
    /// has come first).
    pub async fn poll(
        &self,
        sale: &SaleId,
        shopper: &ShopperId,
    ) -> Result<QueueAnswer, QueueError> {
        let key = (sale.clone(), shopper.clone());
        let now = Instant::now();
        if let Some(remembered) = self.memory.get(&key) {
            if let Some(left) = remembered.until.checked_duration_since(now) {
                let mut answer = match &remembered.answer {
                    Last::Place(answer) => answer.clone(),
                    Last::NotInLine => return Err(QueueError::NotInLine),
                    Last::Unavailable => {
                        return Err(QueueError::Unreachable {
                            retry_after_secs: left.as_secs_f64().ceil() as u64,
                        })
                    }
                };
                answer.remembered = true;
                answer.advice.poll_after_ms = u64::try_from(left.as_millis()).unwrap_or(0).max(1);
                return Ok(answer);
            }
        }
        self.poll_store(key, now).await
    }

    /// The shopper's place from the store, remembered (asked at `now`).
    async fn poll_store(
        &self,
        key: (SaleId, ShopperId),
        now: Instant,
    ) -> Result<QueueAnswer, QueueError> {
        let (sale, shopper) = (&key.0, &key.1);
        if !self.memory.contains_key(&key)
            && self.memory.len() >= self.settings.pollers_max
            && !self.pruned_when_full()
        {
            return Err(QueueError::Busy);
        }
        let polled = self
            .store
            .queue_poll(sale, shopper, &self.settings.rules)
            .await;
        let place = match polled {
            Ok(Some(place)) => place,
            Ok(None) => {
                self.remember_unless_fresher(key, now, Last::NotInLine);
                return Err(QueueError::NotInLine);
            }
            Err(err @ StoreError::Unavailable(_)) => {
                self.remember_unless_fresher(key, now, Last::Unavailable);
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };
        let advice = place.advice(self.settings.poll_ms_min, self.settings.poll_ms_max);
        let answer = QueueAnswer {
            place,
            advice,
            remembered: false,
        };
        self.memory.insert(
            key,
            Remembered {
                until: now + Duration::from_millis(advice.poll_after_ms),
                answer: Last::Place(answer.clone()),
            },
        );
        Ok(answer)
    }

    /// The sale's line in counts, from the store (see
    /// [`Store::queue_stats`]).
    pub async fn stats(&self, sale: &SaleId) -> Result<QueueStats, StoreError> {
        self.store.queue_stats(sale).await
    }

    /// Remembers `answer` (not in the line, or the store unreachable) for
    /// `poll_ms_min` from now, unless a fresher answer came since `asked`:
    /// a join's, while this poll was in flight, must not be hidden by it.
    fn remember_unless_fresher(&self, key: (SaleId, ShopperId), asked: Instant, answer: Last) {
        let remembered = Remembered {
            until: Instant::now() + Duration::from_millis(self.settings.poll_ms_min),
            answer,
        };
        match self.memory.entry(key) {
            Entry::Occupied(mut kept) if kept.get().until <= asked => {
                kept.insert(remembered);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(remembered);
            }
        }
    }

    /// The memory found full by a new poller: prunes it unless it was
    /// pruned so less than `poll_ms_min` ago (or is being pruned now);
    /// whether there is room after.
    fn pruned_when_full(&self) -> bool {
        let Some(mut pruned_at) = self.full_pruned_at.try_lock() else {
            return false;
        };
        let now = Instant::now();
        let interval = Duration::from_millis(self.settings.poll_ms_min);
        if pruned_at.is_some_and(|at| now.duration_since(at) < interval) {
            return false;
        }
        *pruned_at = Some(now);
        drop(pruned_at);
        self.prune() < self.settings.pollers_max
    }

    /// Forgets the answers whose time has passed; returns how many are
    /// left (run by the same upkeep as the rate limiters').
    pub fn prune(&self) -> usize {
        let now = Instant::now();
        self.memory.retain(|_, remembered| remembered.until > now);
        self.memory.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn shopper(name: &str) -> ShopperId {
        ShopperId::parse(name).expect("a valid shopper id")
    }

    /// A memory of one poller whose answer stands for a minute.
    fn full_rooms(sale: &SaleId) -> WaitingRooms {
        let rooms = WaitingRooms::new(
            Arc::new(EmbeddedStore::new()),
            WaitingRoomSettings {
                rules: QueueRules {
                    size_max: 10,
                    headroom_pct: 100,
                    expiry_grace_ms: 5_000,
                },
                poll_ms_min: 60_000,
                poll_ms_max: 60_000,
                pollers_max: 1,
            },
        );
        rooms.memory.insert(
            (sale.clone(), shopper("held")),
            Remembered {
                until: Instant::now() + Duration::from_secs(60),
                answer: Last::NotInLine,
            },
        );
        rooms
    }

    /// A new poller that finds the memory full is refused; the memory is
    /// walked for answers that ran out at most once per `poll_ms_min`, not
    /// by every refused poll (a walk of up to `pollers_max` entries).
    #[tokio::test]
    async fn a_full_memory_is_walked_at_most_once_per_interval() {
        let sale = SaleId::generate();
        let rooms = full_rooms(&sale);
        let busy =
            |polled: &Result<QueueAnswer, QueueError>| matches!(polled, Err(QueueError::Busy));
        let polled = rooms.poll(&sale, &shopper("first")).await;
        assert!(busy(&polled), "{polled:?}");

        // The remembered answer runs out: within the interval a new poller
        // is still refused, and nothing was walked.
        rooms
            .memory
            .get_mut(&(sale.clone(), shopper("held")))
            .expect("remembered")
            .until = Instant::now();
        let polled = rooms.poll(&sale, &shopper("second")).await;
        assert!(busy(&polled), "{polled:?}");
        assert_eq!(rooms.memory.len(), 1, "walked within the interval");

        // Past the interval the next new poller has it walked, and asks
        // the store (which knows no such sale).
        *rooms.full_pruned_at.lock() = Instant::now().checked_sub(Duration::from_secs(61));
        let polled = rooms.poll(&sale, &shopper("third")).await;
        assert!(
            matches!(polled, Err(QueueError::Store(StoreError::NotFound(_)))),
            "{polled:?}"
        );
    }
}
