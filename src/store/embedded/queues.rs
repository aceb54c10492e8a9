//! The embedded store's twins of the two queues the order service works
//! through on Redis: the sale's reservation stream with its consumer group
//! (`XREADGROUP` of new entries or of a consumer's own pending ones,
//! `XAUTOCLAIM`, `lua/ack_reservations.lua`) and the outbox
//! (hand-offs to the merchant's webhook, refund calls, a campaign round's
//! reminder) with its dead letters (the
//! `outbox`, `attempts` and `dead_letters` keys, `lua/claim_deliveries.lua`,
//! `lua/dead_letter.lua`). Both live in the sale's record, under its lock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use smol_str::SmolStr;

use crate::domain::{Millis, OrderEvent, OrderId};
use crate::store::{DeadLetter, Delivery, DeliveryFailure, Errand, StreamEntry, StreamRead};

/// The semantics of a Redis stream with one consumer group: entries are
/// delivered once to some consumer, stay pending until acknowledged, and
/// can be claimed by another consumer once idle. As on Redis, one entry
/// carries the orders one reserve call made, read as one [`StreamEntry`]
/// per order.
#[derive(Default)]
pub(super) struct ReservationStream {
    next_seq: u64,
    /// Entries not yet acknowledged, by sequence number.
    entries: BTreeMap<u64, Vec<OrderId>>,
    /// The group's cursor: entries after it were never delivered.
    delivered_up_to: Option<u64>,
    /// Delivered, unacknowledged entries: consumer and delivery time.
    pending: BTreeMap<u64, (String, Instant)>,
}

impl ReservationStream {
    /// Entries not yet acknowledged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The orders of every entry not yet acknowledged, oldest first.
    pub fn orders(&self) -> impl Iterator<Item = &OrderId> {
        self.entries.values().flatten()
    }

    /// One entry for the orders of one reserve call; none when it made
    /// none.
    pub fn append(&mut self, orders: Vec<OrderId>) {
        if !orders.is_empty() {
            self.entries.insert(self.next_seq, orders);
            self.next_seq += 1;
        }
    }

    fn entry(&self, seq: u64) -> impl Iterator<Item = StreamEntry> + '_ {
        self.entries
            .get(&seq)
            .into_iter()
            .flatten()
            .map(move |order_id| StreamEntry {
                id: smol_str::format_smolstr!("0-{seq}"),
                order_id: Some(order_id.clone()),
            })
    }

    pub fn read(&mut self, consumer: &str, which: StreamRead, count: usize) -> Vec<StreamEntry> {
        let seqs: Vec<u64> = match which {
            StreamRead::New => {
                let from = self.delivered_up_to.map_or(0, |seq| seq + 1);
                let seqs: Vec<u64> = self
                    .entries
                    .range(from..)
                    .map(|(seq, _)| *seq)
                    .take(count)
                    .collect();
                self.delivered_up_to = seqs.last().copied().or(self.delivered_up_to);
                seqs
            }
            StreamRead::OwnPending => self
                .pending
                .iter()
                .filter(|(_, (owner, _))| owner == consumer)
                .map(|(seq, _)| *seq)
                .take(count)
                .collect(),
        };
        self.deliver(consumer, &seqs)
    }

    pub fn claim(&mut self, consumer: &str, idle_min: Duration, count: usize) -> Vec<StreamEntry> {
        let now = Instant::now();
        let idle: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, delivered))| now.duration_since(*delivered) >= idle_min)
            .map(|(seq, _)| *seq)
            .take(count)
            .collect();
        self.deliver(consumer, &idle)
    }

    /// Makes these entries pending on `consumer`, delivered now.
    fn deliver(&mut self, consumer: &str, seqs: &[u64]) -> Vec<StreamEntry> {
        let now = Instant::now();
        for seq in seqs {
            self.pending.insert(*seq, (consumer.to_owned(), now));
        }
        seqs.iter().flat_map(|seq| self.entry(*seq)).collect()
    }

    pub fn ack(&mut self, ids: &[SmolStr]) {
        for seq in ids
            .iter()
            .filter_map(|id| id.strip_prefix("0-")?.parse::<u64>().ok())
        {
            self.pending.remove(&seq);
            self.entries.remove(&seq);
        }
    }
}

/// The sale's outbox entries by errand (an order's hand-off or refund
/// call, a campaign round's reminder), each with when its next attempt is
/// due (store clock) and the attempts so far; and the dead letters,
/// entries taken out after they failed for good.
#[derive(Default)]
pub(super) struct Outbox {
    hand_offs: HashMap<Errand, HandOff>,
    dead: HashMap<Errand, DeadLetter>,
}

/// A hand-off waiting for (another) attempt.
struct HandOff {
    due: Millis,
    attempts: u32,
}

impl Outbox {
    /// Hand-offs not yet delivered (dead letters aside).
    pub fn len(&self) -> usize {
        self.hand_offs.len()
    }

    /// Queues a hand-off, due `now`, unless it is queued already.
    pub fn queue(&mut self, event: OrderEvent, id: &OrderId, now: Millis) {
        self.hand_offs
            .entry(Errand::Order(event, id.clone()))
            .or_insert(HandOff {
                due: now,
                attempts: 0,
            });
    }

    /// Queues a campaign round's reminder due at `due`, its attempts from
    /// zero (one queued already moves), as `queue_reminder` in `lua/common.lua`.
    pub fn schedule_reminder(&mut self, due: Millis) {
        self.hand_offs
            .insert(Errand::RoundStarting, HandOff { due, attempts: 0 });
    }

    /// Drops the round's reminder, if queued.
    pub fn drop_reminder(&mut self) {
        self.hand_offs.remove(&Errand::RoundStarting);
    }

    /// Drops every entry (a sale called off before it started holds at
    /// most a round's reminder), as `cancel_sale.lua`.
    pub fn clear(&mut self) {
        self.hand_offs.clear();
    }

    /// Leases up to `limit` hand-offs due at `now`, earliest first: each
    /// is due again `lease` from `now` and counts one more attempt.
    pub fn claim(&mut self, now: Millis, limit: usize, lease: Duration) -> Vec<Delivery> {
        let mut due: Vec<(Millis, Errand)> = self
            .hand_offs
            .iter()
            .filter(|(_, hand_off)| hand_off.due <= now)
            .map(|(key, hand_off)| (hand_off.due, key.clone()))
            .collect();
        due.sort_by_key(|(due, _)| *due);
        due.into_iter()
            .take(limit)
            .filter_map(|(_, key)| {
                let hand_off = self.hand_offs.get_mut(&key)?;
                hand_off.due = later(now, lease);
                hand_off.attempts += 1;
                Some(Delivery {
                    errand: key,
                    attempt: hand_off.attempts,
                })
            })
            .collect()
    }

    /// The hand-off `delivery` leased, while its attempts have not moved
    /// on (queued again, or leased again once the lease ran out): an
    /// attempt's result applies to no other (see `lua/delivered.lua`).
    fn leased(&mut self, delivery: &Delivery) -> Option<&mut HandOff> {
        self.hand_offs
            .get_mut(&delivery.errand)
            .filter(|hand_off| hand_off.attempts == delivery.attempt)
    }

    /// Forgets a delivered hand-off.
    pub fn remove(&mut self, delivery: &Delivery) {
        if self.leased(delivery).is_some() {
            self.hand_offs.remove(&delivery.errand);
        }
    }

    /// Makes a queued hand-off due `after` from `now` (one no longer
    /// queued stays gone).
    pub fn postpone(&mut self, delivery: &Delivery, now: Millis, after: Duration) {
        if let Some(hand_off) = self.leased(delivery) {
            hand_off.due = later(now, after);
        }
    }
}

impl Outbox {
    /// Takes a queued hand-off out onto the dead letters, stamped `now`;
    /// returns whether it was still queued.
    pub fn dead_letter(
        &mut self,
        delivery: &Delivery,
        failure: &DeliveryFailure,
        now: Millis,
    ) -> bool {
        let Some(attempts) = self.leased(delivery).map(|hand_off| hand_off.attempts) else {
            return false;
        };
        let key = delivery.errand.clone();
        self.hand_offs.remove(&key);
        let letter = DeadLetter {
            errand: key.clone(),
            attempts,
            failure: failure.clone(),
            at: now,
        };
        self.dead.insert(key, letter);
        true
    }

    /// The dead letters, in no particular order.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.values().cloned().collect()
    }

    /// Whether a refund call is among the dead letters: money owed to a
    /// shopper, which keeps the sale from retention.
    pub fn holds_a_dead_refund(&self) -> bool {
        self.dead
            .keys()
            .any(|errand| matches!(errand, Errand::Order(OrderEvent::Refund, _)))
    }

    /// Whether the order's refund call is queued (due, leased, or waiting
    /// to ask WeChat Pay again).
    pub fn holds_refund_call(&self, id: &OrderId) -> bool {
        self.hand_offs.contains_key(&refund_call(id))
    }

    /// Takes the order's refund call out, whichever attempt holds it, as
    /// `lua/end_refund_call.lua`.
    pub fn end_refund_call(&mut self, id: &OrderId) {
        self.hand_offs.remove(&refund_call(id));
    }

    /// Drops the order's refund call from the dead letters, if there.
    pub fn drop_dead_refund(&mut self, id: &OrderId) {
        self.dead.remove(&refund_call(id));
    }

    /// Queues every dead letter again, due `now`, with no attempts yet;
    /// returns how many.
    pub fn redrive(&mut self, now: Millis) -> usize {
        let moved = self.dead.len();
        for (key, _) in self.dead.drain() {
            self.hand_offs.insert(
                key,
                HandOff {
                    due: now,
                    attempts: 0,
                },
            );
        }
        moved
    }
}

/// The outbox entry of an order's refund call.
fn refund_call(id: &OrderId) -> Errand {
    Errand::Order(OrderEvent::Refund, id.clone())
}

/// `after` from `now`, in the store clock's milliseconds.
pub(super) fn later(now: Millis, after: Duration) -> Millis {
    now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
}
