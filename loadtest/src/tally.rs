//! What the suite saw during the attack, shared by every goose user: each
//! answer by route, status and error code, the orders its 201s named, the
//! shoppers who played (with their tokens, for the verdict), requests
//! that got no answer, the WeChat Pay orders the engine's `/wechatpay`
//! answers named, and each `queue` shopper's way through the waiting
//! room. goose's own metrics count requests and latencies;
//! this counts what the answers meant.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use parking_lot::Mutex;

/// What an answer means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// 2xx.
    Success,
    /// A documented refusal of the race (409 `sold_out`, `ended`,
    /// `not_started`, `limit_exceeded`), or the WeChat Pay stand-in's 409
    /// `ORDER_CLOSED`: the shopper paid after the engine had closed the
    /// WeChat Pay order to expire it (too late, as in WeChat).
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
            (409, "sold_out" | "ended" | "not_started" | "limit_exceeded" | "ORDER_CLOSED") => {
                Self::Refused
            }
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
    /// Buy-and-pay orders left unpaid on purpose, by id.
    pub abandoned: BTreeSet<String>,
    /// Order id → the `package` (`prepay_id=...`) of every 200 of its
    /// `/wechatpay`.
    pub prepays: BTreeMap<String, BTreeSet<String>>,
    /// Spike shoppers who arrived after the sale had opened.
    pub spike_late: u64,
    /// `campaign` users who first looked at a round after it had ended.
    pub campaign_rounds_missed: u64,
    /// `queue` shoppers by id: their way through the waiting room.
    pub queue: BTreeMap<String, QueueVisit>,
    /// When the last order on the queued sale was paid for (its sell-out,
    /// once the verdict finds no stock left).
    pub queue_last_order: Option<Instant>,
}

/// One `queue` shopper's way through the waiting room.
#[derive(Debug, Clone)]
pub struct QueueVisit {
    /// Planned to join before the opening (the pre-queue the shuffle places).
    pub prequeue: bool,
    /// 0-based rank of its join's answer among every joiner's.
    pub join_seq: u64,
    pub joined_at: Instant,
    /// Its place in the line, once the engine gave one.
    pub position: Option<u64>,
    /// Polls after the join.
    pub polls: u64,
    /// The final answer (`admitted`, `sold_out`, `ended`) and when it came.
    pub outcome: Option<(String, Instant)>,
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

    pub fn campaign_round_missed(&self) {
        self.seen.lock().campaign_rounds_missed += 1;
    }

    pub fn abandoned(&self, order_id: &str) {
        self.seen.lock().abandoned.insert(order_id.to_owned());
    }

    /// The engine's `/wechatpay` answered for `order_id` with `package`.
    pub fn prepay(&self, order_id: &str, package: &str) {
        self.seen
            .lock()
            .prepays
            .entry(order_id.to_owned())
            .or_default()
            .insert(package.to_owned());
    }

    /// A `queue` shopper's join was answered.
    pub fn queue_joined(&self, shopper: &str, prequeue: bool) {
        let mut seen = self.seen.lock();
        let join_seq = seen.queue.len() as u64;
        seen.queue.insert(
            shopper.to_owned(),
            QueueVisit {
                prequeue,
                join_seq,
                joined_at: Instant::now(),
                position: None,
                polls: 0,
                outcome: None,
            },
        );
    }

    /// A `queue` shopper's answer after its join (`poll`: to a poll, which
    /// counts whatever the answer): its place and, when final, its outcome
    /// (`status` is empty for an answer that is not a place).
    pub fn queue_answer(&self, shopper: &str, poll: bool, position: Option<u64>, status: &str) {
        let mut seen = self.seen.lock();
        let Some(visit) = seen.queue.get_mut(shopper) else {
            return;
        };
        visit.polls += u64::from(poll);
        visit.position = position.or(visit.position);
        if !matches!(status, "waiting" | "") && visit.outcome.is_none() {
            visit.outcome = Some((status.to_owned(), Instant::now()));
        }
    }

    pub fn queue_order(&self) {
        self.seen.lock().queue_last_order = Some(Instant::now());
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
        assert_eq!(Kind::of(409, "ORDER_CLOSED"), Kind::Refused);
        assert_eq!(Kind::of(409, "ORDERPAID"), Kind::Unexpected);
    }
}
