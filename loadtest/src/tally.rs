//! What the suite saw during the attack, shared by every goose user: each
//! answer by route, status and error code, the orders its 201s named, the
//! shoppers who played (with their tokens, for the verdict), and requests
//! that got no answer. goose's own metrics count requests and latencies;
//! this counts what the answers meant.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

/// What an answer means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// 2xx.
    Success,
    /// A documented refusal of the race (409 `sold_out`, `ended`,
    /// `not_started`, `limit_exceeded`).
    Refused,
    /// 429 `rate_limited`: retried after `Retry-After`.
    RateLimited,
    /// 503 `overloaded` or `unavailable`: documented load shedding, retried.
    Shed,
    /// Anything else (a 5xx, an undocumented code, a 4xx the suite never
    /// provokes): a failure.
    Unexpected,
}

impl Kind {
    /// Classifies an answer by its status and error code.
    pub fn of(status: u16, code: &str) -> Self {
        match (status, code) {
            (200..=299, _) => Self::Success,
            (409, "sold_out" | "ended" | "not_started" | "limit_exceeded") => Self::Refused,
            (429, "rate_limited") => Self::RateLimited,
            (503, "overloaded" | "unavailable") => Self::Shed,
            _ => Self::Unexpected,
        }
    }
}

/// One line of the answer table: route (goose's request name), status, code.
pub type AnswerKey = (String, u16, String);

/// Everything seen so far.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub answers: BTreeMap<AnswerKey, u64>,
    /// Requests that got no HTTP answer (connection refused, reset, timeout).
    pub no_answer: BTreeMap<String, u64>,
    /// (shopper, sale id, order id) of every 201 from the order route.
    pub orders: BTreeSet<(String, String, String)>,
    /// Shopper id → token.
    pub shoppers: BTreeMap<String, String>,
    /// Buy-and-pay orders left unpaid on purpose.
    pub abandoned: u64,
    /// Spike shoppers who arrived after the sale had opened.
    pub spike_late: u64,
}

#[derive(Debug, Default)]
pub struct Tally {
    seen: Mutex<Snapshot>,
}

impl Tally {
    pub fn answer(&self, route: &str, status: u16, code: &str) {
        *self
            .seen
            .lock()
            .answers
            .entry((route.to_owned(), status, code.to_owned()))
            .or_default() += 1;
    }

    pub fn no_answer(&self, route: &str) {
        *self
            .seen
            .lock()
            .no_answer
            .entry(route.to_owned())
            .or_default() += 1;
    }

    pub fn order(&self, shopper: &str, sale_id: &str, order_id: &str) {
        self.seen.lock().orders.insert((
            shopper.to_owned(),
            sale_id.to_owned(),
            order_id.to_owned(),
        ));
    }

    pub fn shopper(&self, shopper: &str, token: &str) {
        self.seen
            .lock()
            .shoppers
            .entry(shopper.to_owned())
            .or_insert_with(|| token.to_owned());
    }

    pub fn spike_late(&self) {
        self.seen.lock().spike_late += 1;
    }

    pub fn abandoned(&self) {
        self.seen.lock().abandoned += 1;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.seen.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documented_answers_pass() {
        // Goal: 429 and documented 503s are their own kinds; other 5xx fail.
        assert_eq!(Kind::of(201, ""), Kind::Success);
        assert_eq!(Kind::of(409, "sold_out"), Kind::Refused);
        assert_eq!(Kind::of(429, "rate_limited"), Kind::RateLimited);
        assert_eq!(Kind::of(503, "overloaded"), Kind::Shed);
        assert_eq!(Kind::of(503, "internal"), Kind::Unexpected);
        assert_eq!(Kind::of(500, "internal"), Kind::Unexpected);
        assert_eq!(Kind::of(409, "conflict"), Kind::Unexpected);
    }
}
