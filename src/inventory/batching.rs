//! Natural batching: what memory cannot answer joins a queue. While the
//! actor's store call is in flight (`store_calls` of them at most), the next
//! requests wait; when a call returns, everything that waited, up to
//! `batch_max`, goes to the store in one atomic call, first come first
//! served, and each caller gets its own answer. Nothing waits on a timer: a
//! lone buyer on an idle sale is sent at once. Before a request is sent,
//! memory is asked again (the last call may have sold the sale out) and a
//! caller that gave up is dropped. Past `in_flight_max` requests waiting or
//! in calls, 503 `overloaded` at once.
//!
//! This module keeps the queue and its bounds; the actor makes the calls.

use std::collections::VecDeque;

use super::inbox::ReserveReply;
use crate::domain::ReserveRequest;

/// A reservation waiting for the actor's next store call.
pub struct Waiting {
    pub request: ReserveRequest,
    pub reply: ReserveReply,
}

/// One sale's reservations waiting for or in store calls.
pub struct ReserveQueue {
    /// Reservations waiting for a store call, first come first.
    waiting: VecDeque<Waiting>,
    /// Reservations in store calls now.
    reservations_in_calls: usize,
    store_calls_in_flight: usize,
    in_flight_max: usize,
    batch_max: usize,
    store_calls: usize,
}

impl ReserveQueue {
    /// An empty queue that holds at most `in_flight_max` reservations
    /// (waiting or in calls) and sends at most `batch_max` of them in each
    /// of at most `store_calls` calls at once.
    pub fn new(in_flight_max: usize, batch_max: usize, store_calls: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            reservations_in_calls: 0,
            store_calls_in_flight: 0,
            in_flight_max,
            batch_max,
            store_calls,
        }
    }

    /// Whether one more reservation may wait: fewer than `in_flight_max`
    /// wait or are in calls.
    pub fn has_room(&self) -> bool {
        self.held() < self.in_flight_max
    }

    /// Reservations waiting or in calls.
    pub fn held(&self) -> usize {
        self.waiting.len() + self.reservations_in_calls
    }

    /// Whether a store call may be sent now.
    pub fn has_free_call_slot(&self) -> bool {
        self.store_calls_in_flight < self.store_calls
    }

    /// Queues `waiting` behind the others (see [`has_room`](Self::has_room)).
    pub fn push(&mut self, waiting: Waiting) {
        self.waiting.push_back(waiting);
    }

    /// The next store call's batch, if a call slot is free: up to
    /// `batch_max` reservations, oldest first, of those `still_needed`
    /// gives back (it answers and drops the ones that need no call any
    /// more). `None` when no slot is free or no reservation needs the store.
    /// The batch counts as in a call until [`call_returned`](Self::call_returned).
    pub fn next_batch(
        &mut self,
        mut still_needed: impl FnMut(Waiting) -> Option<Waiting>,
    ) -> Option<Vec<Waiting>> {
        if !self.has_free_call_slot() {
            return None;
        }
        let mut batch = Vec::new();
        while batch.len() < self.batch_max {
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            batch.extend(still_needed(waiting));
        }
        if batch.is_empty() {
            return None;
        }
        self.store_calls_in_flight += 1;
        self.reservations_in_calls += batch.len();
        Some(batch)
    }

    /// A call of `reservations` returned: its slot is free again.
    pub fn call_returned(&mut self, reservations: usize) {
        self.store_calls_in_flight -= 1;
        self.reservations_in_calls -= reservations;
    }

    /// Nothing waits and no call is in flight.
    pub fn is_idle(&self) -> bool {
        self.store_calls_in_flight == 0 && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::inventory::memory::tests::{ask, view};

    fn waiting(shopper: &str) -> Waiting {
        Waiting {
            request: ask(&view(-1_000, 10).sale, shopper, 1, None),
            reply: oneshot::channel().0,
        }
    }

    fn shoppers(batch: &[Waiting]) -> Vec<&str> {
        batch
            .iter()
            .map(|waiting| waiting.request.shopper_id.as_str())
            .collect()
    }

    #[test]
    fn past_in_flight_max_there_is_no_room() {
        let mut queue = ReserveQueue::new(2, 1, 1);
        queue.push(waiting("a"));
        assert!(queue.has_room());
        queue.push(waiting("b"));
        assert!(!queue.has_room(), "two waiting");
        let batch = queue.next_batch(Some).expect("a free slot");
        assert!(!queue.has_room(), "one waiting, one in a call");
        queue.call_returned(batch.len());
        assert!(queue.has_room());
    }

    #[test]
    fn batches_go_oldest_first_one_per_free_call_slot() {
        let mut queue = ReserveQueue::new(10, 2, 1);
        for shopper in ["a", "b", "c"] {
            queue.push(waiting(shopper));
        }
        let first = queue.next_batch(Some).expect("a free slot");
        assert_eq!(shoppers(&first), ["a", "b"], "batch_max, oldest first");
        assert!(queue.next_batch(Some).is_none(), "the one slot is taken");
        assert!(!queue.is_idle());
        queue.call_returned(first.len());
        let second = queue.next_batch(Some).expect("the slot is free again");
        assert_eq!(shoppers(&second), ["c"]);
        queue.call_returned(second.len());
        assert!(queue.is_idle());
        assert!(queue.next_batch(Some).is_none(), "nothing waits");
    }

    #[test]
    fn reservations_answered_on_the_way_leave_their_place_to_later_ones() {
        let mut queue = ReserveQueue::new(10, 2, 1);
        for shopper in ["a", "b", "c"] {
            queue.push(waiting(shopper));
        }
        let answered_b =
            |waiting: Waiting| (waiting.request.shopper_id.as_str() != "b").then_some(waiting);
        let batch = queue.next_batch(answered_b).expect("a free slot");
        assert_eq!(shoppers(&batch), ["a", "c"]);
        assert!(queue.next_batch(Some).is_none());
    }
}
